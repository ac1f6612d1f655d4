"""`WAMPolicy`: wam's World-Action Model as a lerobot policy (lerobot-train, lerobot-eval, lerobot-record).

Nothing of the model, the loss or the sampler is re-implemented: the network is `wam.backbones.build` of the
config's wam ModelConfig, held as the module's `model` (its weights are saved as "model." + wam's names), the
loss is `wam.train.loss_terms` on a `wam.data.windows.Batch` built from lerobot's window by the same
`pixel_batch` that `wam train` builds its own with, and sampling is `wam.modes.run` in the policy mode.

lerobot's batch (after the preprocessor: frames fitted to the model's size, state and actions normalised):

    observation.images.<cam>   (b, c+f, 3, H, W) in training: the context frames then the future ones
                               (observation_delta_indices), with <cam>_is_pad; (b, 3, H, W) at inference
    observation.state          (b, c+f, S) in training, (b, S) at inference; the model reads the current one
    action                     (b, k, A) with action_is_pad, in training
    task                       list of b instructions

`predict_action_chunk` returns the normalised chunk (b, k, A) (lerobot's postprocessor takes it to the robot's
units); `predict` returns the predicted future frames beside it. `select_action` keeps the frame history the
context offsets read (the first frame standing in before there is one, as in training) and a queue of the
chunk's first n_action_steps actions. A `wam train` checkpoint loads here too: `WAMPolicy.from_pretrained` tells
the formats apart (convert.py). A policy built from scratch (lerobot-train without --policy.path) with
`image_encoder=efficientnet-lite0` starts from the encoder's ImageNet weights, as `wam train` does; a loaded one
from its own.
"""

from __future__ import annotations

import json
from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import Tensor

from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE

from lerobot_policy_wam.configuration_wam import WAMConfig
from wam import modes
from wam.backbones import build
from wam.data.transforms import images_to_model
from wam.data.windows import pixel_batch
from wam.lerobot.wam_checkpoint import TYPE, features
from wam.models.base import Context
from wam.train import loss_terms, param_groups


_RESTORING: ContextVar[bool] = ContextVar("wam_policy_restoring", default=False)
"""True while a policy is built to receive saved weights (from_pretrained, convert.from_wam)."""


@contextmanager
def restoring():
    """Build WAMPolicy objects whose weights come from a checkpoint: the pretrained image encoder's published
    weights are not read (the checkpoint holds the fine-tuned ones, and the weights package need not be installed)."""
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


class WAMPolicy(PreTrainedPolicy):
    """A World-Action Model behind lerobot's policy interface (module docstring)."""

    config_class = WAMConfig
    name = TYPE

    def __init__(self, config: WAMConfig, dataset_stats=None, dataset_meta=None, **kwargs):
        """`dataset_stats` and `dataset_meta` (which lerobot's factory passes) are not used: the statistics live in
        the processors, and the model's data contract comes from the config's features."""
        super().__init__(config)
        config.validate_features()
        self.cfg = config.model_config()  # the resolved wam ModelConfig
        if config.action_dim is None:
            config.action_dim = self.cfg.action_dim  # recorded: an environment's action must match it
        self.camera_keys, self.state_key, self.state_size, _ = features(config.feature_dict())
        self.sampler = config.sampler()
        self.model = build(self.cfg)
        if not _RESTORING.get() and hasattr(self.model, "load_pretrained"):
            self.model.load_pretrained()  # a fresh policy (lerobot-train from scratch): ImageNet weights, as wam train
        self._text: dict[str, Tensor] = {}
        self.reset()

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path, *, config: WAMConfig | None = None, **kwargs) -> WAMPolicy:
        """lerobot's loading, and a `wam train` checkpoint folder too (its config.json has no "type"): its EMA
        weights, with the config convert.py derives from it."""
        path = Path(pretrained_name_or_path)
        if (path / "config.json").is_file() and "type" not in json.loads((path / "config.json").read_text()):
            from lerobot_policy_wam.convert import from_wam

            return from_wam(path, device=config.device if config is not None else None)[0]
        with restoring():
            return super().from_pretrained(pretrained_name_or_path, config=config, **kwargs)

    # ------------------------------------------------------------------ lerobot's protocol
    def get_optim_params(self) -> list[dict]:
        """wam's AdamW groups: weight decay on matrices only (wam.train.param_groups)."""
        trained = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        return param_groups(trained, self.config.weight_decay)

    def reset(self) -> None:
        """A new episode: no frame history, no queued actions."""
        offsets = self.cfg.context_offsets
        self._frames: deque[Tensor] = deque(maxlen=1 - min(offsets))
        self._actions: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        """wam's training loss (wam.train.loss_terms) on lerobot's window: (loss, {"video": ..., "action": ...}).
        The random draws (shift augmentation, noise levels, noise) come from torch's global generator, which
        lerobot seeds."""
        if reduction != "mean":
            raise ValueError(f"reduction={reduction!r}: the wam policy's loss is the masked mean over the batch "
                             f"(wam.train.loss_terms); per-sample weighting (RA-BC) is not supported")
        cfg = self.cfg
        c, window = cfg.context_frames, cfg.context_frames + cfg.future_frames
        frames = self._images(batch, window)  # (b, c+f, v, H, W, 3)
        b, device = frames.shape[0], frames.device
        pad = batch.get(f"{self.camera_keys[0]}_is_pad")
        video_mask = (torch.ones(b, cfg.future_frames, device=device) if pad is None
                      else (~pad[:, c:].bool()).float())
        action_pad = batch.get(f"{ACTION}_is_pad")
        actions = batch[ACTION]
        if actions.shape[1:] != (cfg.action_horizon, cfg.action_dim):
            raise ValueError(f"{ACTION}: expected (b, {cfg.action_horizon}, {cfg.action_dim}) (action_delta_indices), "
                             f"got {tuple(actions.shape)}")
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        wam_batch = pixel_batch(
            cfg, frames, state=self._state(batch, c - 1), text=self._embed(batch, b), actions=actions,
            action_mask=torch.ones(b, cfg.action_horizon, device=device) if action_pad is None else (~action_pad.bool()).float(),
            video_mask=video_mask, has_actions=torch.ones(b, dtype=torch.bool, device=device),
            shift_px=self.config.augment_shift if self.training else 0, generator=g)
        terms = loss_terms(self.model, wam_batch, self.config.train_config(), cfg, g)
        return terms["loss"], {"video": float(terms["video"]), "action": float(terms["action"])}

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor | None, Tensor]:
        """(future frames (b, f, v, 3, s, s) in [-1, 1], or None where the sampler predicts none; normalised
        actions (b, k, A)) from the batch's context frames: (b, c, 3, H, W) per camera, or (b, 3, H, W) for a
        model that reads one frame. The noise comes from `generator` (default: torch's global one), the frames'
        first and then the actions', as wam.policy.WAMPolicy draws them."""
        c = self.cfg.context_frames
        frames = self._images(batch, c)
        return self._sample(frames[:, :c], self._state(batch, c - 1), self._embed(batch, frames.shape[0]), generator)

    def predict_action_chunk(self, batch: dict[str, Tensor], generator: torch.Generator | None = None,
                             **kwargs) -> Tensor:
        """The normalised action chunk (b, k, A) (see `predict`)."""
        return self.predict(batch, generator)[1]

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], generator: torch.Generator | None = None, **kwargs) -> Tensor:
        """One normalised action (b, A) per control step: the frame history is updated every step, a chunk is
        predicted when the queue of n_action_steps actions runs out."""
        now = self._images(batch, 1)[:, -1]  # (b, v, H, W, 3)
        self._frames.append(now)
        if not self._actions:
            hist = list(self._frames)
            context = torch.stack([hist[max(0, len(hist) - 1 + o)] for o in self.cfg.context_offsets], 1)
            _, actions = self._sample(context, self._state(batch, -1), self._embed(batch, now.shape[0]), generator)
            self._actions.extend(actions[:, :self.config.n_action_steps].transpose(0, 1))
        return self._actions.popleft()

    # ------------------------------------------------------------------ lerobot's batch -> wam's tensors
    def _sample(self, frames: Tensor, state: Tensor, text: Tensor, generator: torch.Generator | None):
        cfg, b = self.cfg, frames.shape[0]
        ctx = Context(images=images_to_model(frames), state=state, text=text)  # (b, c, v, 3, H, W) in [-1, 1]
        noise = (torch.randn(self.model.video_shape(b), generator=generator),
                 torch.randn((b, cfg.action_horizon, cfg.action_dim), generator=generator))
        video, actions = modes.run(self.model, "policy", ctx, self.sampler, noise=noise)
        return (video if modes.video_steps(self.sampler, cfg.recipe) else None), actions

    def _images(self, batch: dict[str, Tensor], frames: int) -> Tensor:
        """uint8 (b, t, v, H, W, 3) of every camera the model reads, in its order: t = `frames` from a window
        (b, T >= frames, 3, H, W), or 1 from a single frame (b, 3, H, W) when the model reads one frame (or
        when `frames` is 1)."""
        size = self.cfg.image_size
        missing = [k for k in self.camera_keys if k not in batch]
        if missing:
            given = sorted(k for k in batch if k.startswith("observation.image") and not k.endswith("_is_pad"))
            spare = [k for k in given if k not in self.camera_keys]
            how = (f"map them with --rename_map '{{\"{spare[0]}\": \"{missing[0]}\"}}'" if spare else
                   f"{', '.join(missing)} missing, and no other camera to map onto it with --rename_map")
            raise ValueError(f"the policy reads the cameras {', '.join(self.camera_keys)} but the observation has "
                             f"{', '.join(given) or 'none'}; {how}")
        out = []
        for key in self.camera_keys:
            x = batch[key]
            if x.ndim == 4:
                if frames > 1:
                    raise ValueError(f"{key}: expected a window (b, {frames}, 3, {size}, {size}) of context frames, "
                                     f"got one frame {tuple(x.shape)}; select_action keeps the history")
                x = x[:, None]
            if x.ndim != 5 or x.shape[1] < frames or tuple(x.shape[2:]) != (3, size, size):
                raise ValueError(f"{key}: expected frames (b, {frames}, 3, {size}, {size}) (the preprocessor fits "
                                 f"every camera to {size} px), got {tuple(x.shape)}")
            x = x[:, :frames] if frames > 1 else x
            u8 = x if x.dtype == torch.uint8 else (x * 255).round().clamp(0, 255).to(torch.uint8)
            out.append(u8.movedim(-3, -1))
        return torch.stack(out, 2)

    def _state(self, batch: dict[str, Tensor], at: int) -> Tensor:
        """The normalised state the model reads (b, state_dim): the window's entry `at` (the current frame)."""
        d = self.cfg.state_dim
        if not d:
            ref = batch[self.camera_keys[0]]
            return torch.zeros(ref.shape[0], 0, device=ref.device)
        if OBS_STATE not in batch:
            raise ValueError(f"the policy reads {OBS_STATE} ({self.state_size} entries) but the observation has "
                             f"none (keys {', '.join(sorted(batch))})")
        x = batch[OBS_STATE]
        x = x[:, at] if x.ndim == 3 else x
        if x.ndim != 2 or x.shape[1] != self.state_size:
            raise ValueError(f"{OBS_STATE}: expected (b, {self.state_size}), got {tuple(batch[OBS_STATE].shape)}")
        return x[:, :d].float()

    def _embed(self, batch: dict, b: int) -> Tensor:
        """The instructions' text embeddings (b, ...), each computed once."""
        texts = [self.config.prompt] * b if self.config.prompt is not None else batch.get("task") or [""] * b
        if isinstance(texts, str):
            texts = [texts] * b
        if len(texts) != b:
            raise ValueError(f"task: expected {b} instructions, one per sample, got {len(texts)}")
        device = next(self.model.parameters()).device
        for t in set(texts) - set(self._text):
            self._text[t] = self.model.embed_text([t]).to(device)
        return torch.cat([self._text[t] for t in texts])
