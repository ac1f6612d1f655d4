"""`WAMConfig`: a World-Action Model as a lerobot policy config, registered as `--policy.type=wam`.

Its fields are wam's own, under wam's names: the model's (every ModelConfig field but the data contract, which
comes from the dataset's or the environment's features, and the pretrained-backbone ones), the training recipe's
(lr, min_lr, warmup, weight_decay, grad_clip, the loss weights, the shift augmentation) and the sampler's
(num_steps, video_steps, n_action_steps executed per chunk). A field left None takes the value of the named wam
`preset` (wam.config.PRESETS: "default", or "tiny" for tests), and the recipe's consequences are resolved as
`wam train` resolves them, so the config.json lerobot saves is concrete: it reads back the same model whatever
the presets become. wam reads that file itself, without lerobot (wam/lerobot/wam_checkpoint.py).

The optimizer and schedule presets are wam's: AdamW with betas (0.9, 0.95), weight decay on matrices only, and
linear warm-up then cosine decay to min_lr over lerobot's --steps (`WAMCosineSchedulerConfig`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import LRSchedulerConfig

from wam.config import ModelConfig, SamplerConfig, TrainConfig, preset
from wam.data.resize import RESIZE
from wam.lerobot.wam_checkpoint import MODEL_FIELDS, TYPE, features, model_config, sampler_config

TRAIN_FIELDS = ("lr", "min_lr", "warmup", "weight_decay", "grad_clip", "video_weight", "action_weight", "augment_shift")
"""TrainConfig fields the policy config carries: what lerobot's optimizer, schedule and the loss read."""


@LRSchedulerConfig.register_subclass("wam_cosine")
@dataclass
class WAMCosineSchedulerConfig(LRSchedulerConfig):
    """wam's schedule (wam.train.lr_at): linear warm-up over num_warmup_steps, then cosine from peak_lr down to
    min_lr at lerobot's last step."""

    num_warmup_steps: int = 200
    peak_lr: float = 3e-4
    min_lr: float = 1e-5

    def build(self, optimizer, num_training_steps: int):
        from torch.optim.lr_scheduler import LambdaLR

        from wam.train import lr_at

        train = TrainConfig(steps=num_training_steps, lr=self.peak_lr, min_lr=self.min_lr, warmup=self.num_warmup_steps)
        return LambdaLR(optimizer, lambda step: lr_at(step, train) / train.lr)


@PreTrainedConfig.register_subclass(TYPE)
@dataclass
class WAMConfig(PreTrainedConfig):
    preset: str = "default"
    """The wam preset (wam.config.PRESETS) that every field left None takes its value from."""

    # ---- the model: ModelConfig's fields (wam/config.py says what each does); None: the preset's
    image_size: int | None = None
    context_frames: int | None = None
    context_stride: int | None = None
    future_frames: int | None = None
    future_stride: int | None = None
    future_size: int | None = None
    action_horizon: int | None = None
    action_dim: int | None = None
    """None until the policy is built: then the action feature's size, recorded."""
    state_dim: int | None = None
    """Robot state entries the model reads (the first state_dim); None: all of observation.state."""
    text_dim: int | None = None
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    stem_channels: tuple[int, ...] | None = None
    image_encoder: str | None = None
    """conv (trained from scratch) or efficientnet-lite0 (ImageNet weights, fine-tuned)."""
    image_encoder_path: str | None = None
    """The EfficientNet-Lite0 .pth read when training starts; None: the installed weights package's."""
    keypoints: int | None = None
    future_patch: int | None = None
    motion_keypoints: int | None = None
    video_target: str | None = None
    action_target: str | None = None
    video_residual: bool | None = None
    recipe: str | None = None
    """joint, decoupled, flash, video-then-idm, features, action-only (wam/recipes.py); None: the backbone's."""
    prefix_width: int | None = None
    prefix_depth: int | None = None
    action_width: int | None = None
    """Recipe hybrid-mot: the action stream's width."""
    environment_state_dim: int | None = None
    """The environment-state head of a `wam train --train.environment-state-weight` checkpoint (trained by wam;
    lerobot-train does not train it)."""
    actions_see_frames: bool | None = None
    resize: str = "pad"
    """How the preprocessor fits camera frames of another shape to image_size: pad (letterbox) or crop (the
    centre), with wam.data.resize.fit, as `wam train --data.resize` does."""

    # ---- training; None: the preset's (TrainConfig)
    lr: float | None = None
    min_lr: float | None = None
    warmup: int | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    video_weight: float | None = None
    action_weight: float | None = None
    augment_shift: int | None = None
    """Random shift augmentation of the frames, px, in training (0: off)."""

    # ---- the sampler; None: the preset's, then the recipe's (SamplerConfig)
    num_steps: int | None = None
    """Euler steps for the actions."""
    video_steps: int | None = None
    """Euler steps for the future frames (0: none predicted at inference)."""
    n_action_steps: int | None = None
    """Actions of each predicted chunk that select_action executes before predicting the next."""
    prompt: str | None = None
    """Replaces the batch's task text at inference (an environment may describe a task in other words than the
    dataset the policy learned it from); None: the batch's own."""

    normalization_mapping: dict[str, NormalizationMode] = field(default_factory=lambda: {
        "VISUAL": NormalizationMode.IDENTITY,  # the model maps frames to [-1, 1] itself
        "STATE": NormalizationMode.MEAN_STD,
        "ACTION": NormalizationMode.MIN_MAX,
    })
    push_to_hub: bool = False

    def __post_init__(self):
        super().__post_init__()
        base = preset(self.preset)
        given = {k: tuple(v) if isinstance(v, list) else v for k in MODEL_FIELDS if (v := getattr(self, k)) is not None}
        try:
            model = dataclasses.replace(base.model, **given).resolved()
        except ValueError as e:
            raise ValueError(f"--policy.type={TYPE}: {e}") from None
        for k in MODEL_FIELDS:
            setattr(self, k, getattr(model, k))
        for k in TRAIN_FIELDS:
            if getattr(self, k) is None:
                setattr(self, k, getattr(base.train, k))
        sampler = SamplerConfig(steps=self.num_steps if self.num_steps is not None else base.sampler.steps,
                                video_steps=self.video_steps if self.video_steps is not None else base.sampler.video_steps,
                                execute=self.n_action_steps or base.sampler.execute).resolve(model.recipe)
        self.num_steps, self.video_steps, self.n_action_steps = sampler.steps, sampler.video_steps, sampler.execute
        if self.n_action_steps > self.action_horizon:
            raise ValueError(f"--policy.n_action_steps {self.n_action_steps} exceeds the chunk the model predicts "
                             f"(action_horizon {self.action_horizon})")
        if self.resize not in RESIZE:
            raise ValueError(f"--policy.resize {self.resize!r}: expected one of {', '.join(RESIZE)}")

    # ------------------------------------------------------------------ what lerobot asks of a policy config
    @property
    def observation_delta_indices(self) -> list[int]:
        """Every observation at the context offsets, then at the future offsets: one window holds the frames the
        model reads and the frames it learns to predict (wam.data.windows)."""
        m = self._unbound()
        return [*m.context_offsets, *m.future_offsets]

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.action_horizon))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamWConfig:
        from wam.train import BETAS

        return AdamWConfig(lr=self.lr, betas=BETAS, eps=1e-8, weight_decay=self.weight_decay, grad_clip_norm=self.grad_clip)

    def get_scheduler_preset(self) -> WAMCosineSchedulerConfig:
        return WAMCosineSchedulerConfig(num_warmup_steps=self.warmup, peak_lr=self.lr, min_lr=self.min_lr)

    def validate_features(self) -> None:
        """The features give the model a data contract (cameras, state and action sizes) it can be built on, the
        action size it was trained for (lerobot-eval sets the output features from the environment)."""
        action = (self.output_features or {}).get("action")
        if self.action_dim is not None and action is not None and tuple(action.shape) != (self.action_dim,):
            raise ValueError(f"--policy.type={TYPE}: the policy predicts {self.action_dim}-d actions but the "
                             f"environment or dataset has a {tuple(action.shape)} action")
        try:
            self.model_config()
        except ValueError as e:
            raise ValueError(f"--policy.type={TYPE}: {e}") from None

    # ------------------------------------------------------------------ wam's view of it
    def feature_dict(self) -> dict:
        """input_features and output_features as config.json holds them ({"type": ..., "shape": [...]})."""
        def plain(fs):
            return {k: {"type": f.type.value, "shape": list(f.shape)} for k, f in (fs or {}).items()}

        return {"input_features": plain(self.input_features), "output_features": plain(self.output_features)}

    def model_config(self) -> ModelConfig:
        """The resolved wam ModelConfig on these features: what wam builds and what wam's reader rebuilds."""
        cameras, _, state, action = features(self.feature_dict())
        return model_config(self._fields(), cameras, state, action)

    def sampler(self) -> SamplerConfig:
        return sampler_config(self._fields())

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TRAIN_FIELDS})

    def _fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _unbound(self) -> ModelConfig:
        """The model config without a data contract: enough for its windows (offsets, horizon)."""
        return ModelConfig(**{k: getattr(self, k) for k in MODEL_FIELDS})
