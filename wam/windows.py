"""Training windows served exactly as the model config declares them, and the normaliser.

For a frame t of an episode, a window holds: the context frames at t + context_offsets (clamped to the
episode's first frame), the future frames at t + future_offsets (masked past the episode's end), the
action chunk t .. t+k-1 (masked past the end), the state at t and the instruction's embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

from wam.config import ModelConfig
from wam.dataset import Demonstrations
from wam.model import Context


class Normalizer:
    """State: zero mean, unit std. Actions: min/max -> [-1, 1]. Travels inside every checkpoint."""

    KEYS = ("state_mean", "state_std", "action_min", "action_max")

    def __init__(self, state_mean, state_std, action_min, action_max):
        self.state_mean = torch.as_tensor(state_mean, dtype=torch.float32)
        self.state_std = torch.as_tensor(state_std, dtype=torch.float32).clamp_min(1e-4)
        self.action_min = torch.as_tensor(action_min, dtype=torch.float32)
        self.action_max = torch.as_tensor(action_max, dtype=torch.float32)
        span = self.action_max - self.action_min
        self.action_max = torch.where(span < 1e-4, self.action_min + 1.0, self.action_max)

    @classmethod
    def from_stats(cls, stats: dict) -> "Normalizer":
        s, a = stats["observation.state"], stats["action"]
        return cls(s["mean"], s["std"], a["min"], a["max"])

    def state(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.state_mean) / self.state_std

    def actions(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * (x - self.action_min) / (self.action_max - self.action_min) - 1

    def unactions(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2 * (self.action_max - self.action_min) + self.action_min

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"normalizer.{k}": getattr(self, k).clone() for k in self.KEYS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Normalizer":
        missing = [k for k in cls.KEYS if f"normalizer.{k}" not in tensors]
        if missing:
            raise ValueError(f"checkpoint has no normalisation statistics {missing}; it was not written by wam")
        return cls(*(tensors[f"normalizer.{k}"] for k in cls.KEYS))


def images_to_model(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]"""
    return x.movedim(-1, -3).float() / 127.5 - 1


def images_from_model(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)"""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).numpy()


def shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random-shift augmentation (pad with edge pixels, crop back; DrQ). images (b, n, v, 3, H, W): one shift
    per sample and view, shared by its n frames, so context and future frames stay aligned."""
    b, n, v, ch, H, W = images.shape
    x = images.permute(0, 2, 1, 3, 4, 5).reshape(b * v, n * ch, H, W)
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b * v), generator=generator).tolist()
    x = torch.stack([x[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(b * v)])
    return x.reshape(b, v, n, ch, H, W).permute(0, 2, 1, 3, 4, 5)


@dataclass
class Batch:
    context: Context
    video: torch.Tensor  # (b, f, v, 3, s, s) future frames in [-1, 1]
    video_mask: torch.Tensor  # (b, f) 1 where the future frame lies inside the episode
    actions: torch.Tensor  # (b, k, a) normalised
    action_mask: torch.Tensor  # (b, k)
    has_actions: torch.Tensor  # (b,) bool: False for samples from action-free episodes
    future_state: torch.Tensor | None = None  # (b, state_dim) normalised state at the last future frame
    steps_left: torch.Tensor | None = None  # (b,) steps from this frame to the episode's last


class Windows:
    def __init__(self, demos: Demonstrations, cfg: ModelConfig, normalizer: Normalizer, text: torch.Tensor,
                 latents: torch.Tensor | None = None):
        """latents (N, v, z, h, w): a pretrained backbone's VAE latents of every frame (latents.py); the windows
        then carry latent context (Context.latents) and latent future frames instead of pixels."""
        missing = [c for c in cfg.cameras if c not in demos.cameras]
        if missing:
            raise ValueError(f"the model reads cameras {list(cfg.cameras)} but the dataset {demos.root} has "
                             f"{list(demos.cameras)}; collect with --cameras {','.join(cfg.cameras)}")
        if demos.image_size != cfg.image_size:
            raise ValueError(f"the model reads {cfg.image_size} px images but {demos.root} holds {demos.image_size} px; "
                             f"collect at --image-size {cfg.image_size} (evaluation renders at the model's size, so "
                             f"training on resized frames would not match it)")
        views = [demos.cameras.index(c) for c in cfg.cameras]
        self.cfg, self.norm, self.text = cfg, normalizer, text
        self.images = demos.images if views == list(range(len(demos.cameras))) else demos.images[views]  # (v, N, H, W, 3)
        self.state = torch.from_numpy(demos.state)
        self.actions = torch.from_numpy(demos.action)
        self.task = torch.from_numpy(np.array(demos.task_index))
        ep = demos.episode_index
        self.ep_from = demos.episode_from[ep]  # (N,) first index of each frame's episode
        self.ep_to = demos.episode_to[ep]  # (N,) one past its last
        self.labelled = torch.from_numpy(demos.has_actions[ep])  # (N,) bool
        self.latents = latents
        self.n = len(ep)

    def __len__(self) -> int:
        return self.n

    def get(self, idx: np.ndarray, shift_px: int = 0, generator: torch.Generator | None = None) -> Batch:
        """The windows at global frame indices `idx`, optionally random-shift augmented by up to `shift_px`."""
        cfg = self.cfg
        idx = np.asarray(idx)
        lo, hi = self.ep_from[idx], self.ep_to[idx]
        ctx_i = np.maximum(idx[:, None] + np.asarray(cfg.context_offsets)[None], lo[:, None])  # (b, c)
        fut_i = idx[:, None] + np.asarray(cfg.future_offsets, dtype=np.int64).reshape(1, -1)  # (b, f)
        fut_ok = fut_i < hi[:, None]
        fut_i = np.minimum(fut_i, hi[:, None] - 1)
        act_i = idx[:, None] + np.arange(cfg.action_horizon)[None]  # (b, k)
        act_ok = act_i < hi[:, None]  # action-free samples are masked by `has_actions` in the loss
        act_i = np.minimum(act_i, hi[:, None] - 1)

        frames = np.concatenate([ctx_i, fut_i], axis=1)  # (b, c+f)
        extras = {"future_state": self.norm.state(self.state[fut_i[:, -1] if fut_i.shape[1] else idx]),
                  "steps_left": torch.from_numpy(hi - 1 - idx)}
        if self.latents is not None:  # pretrained backbone: latent frames, no pixel augmentation
            c = cfg.context_frames
            lat = self.latents[torch.from_numpy(frames)].float()  # (b, c+f, v, z, h, w)
            images = images_to_model(torch.from_numpy(self.images[:, ctx_i]).permute(1, 2, 0, 3, 4, 5))
            context = Context(images=images, state=self.norm.state(self.state[idx]), text=self.text[self.task[idx]],
                              latents=lat[:, :c])
            return Batch(context=context, video=lat[:, c:], video_mask=torch.from_numpy(fut_ok).float(),
                         actions=self.norm.actions(self.actions[act_i]), action_mask=torch.from_numpy(act_ok).float(),
                         has_actions=self.labelled[idx], **extras)
        images = images_to_model(torch.from_numpy(self.images[:, frames]).permute(1, 2, 0, 3, 4, 5))  # (b, c+f, v, 3, H, W)
        if shift_px:
            images = shift(images, shift_px, generator)
        c, b = cfg.context_frames, len(idx)
        future = images[:, c:].flatten(0, 2)  # (b*f*v, 3, H, W)
        future = F.avg_pool2d(future, cfg.image_size // cfg.future_size) if len(future) else future
        future = future.reshape(b, cfg.future_frames, cfg.views, 3, cfg.future_size, cfg.future_size)
        context = Context(images=images[:, :c], state=self.norm.state(self.state[idx]), text=self.text[self.task[idx]])
        return Batch(context=context, video=future, video_mask=torch.from_numpy(fut_ok).float(),
                     actions=self.norm.actions(self.actions[act_i]), action_mask=torch.from_numpy(act_ok).float(),
                     has_actions=self.labelled[idx], **extras)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    tensors = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name != "context"}
    return replace(batch, context=batch.context.apply(lambda x: x.to(device)),
                   **{k: v.to(device) for k, v in tensors.items() if v is not None})


def fake_batch(cfg: ModelConfig, b: int = 2, seed: int = 0) -> Batch:
    """A random batch with the shapes the config declares (for tests)."""
    g = torch.Generator().manual_seed(seed)
    s, H = cfg.future_size, cfg.image_size
    ctx = Context(images=torch.rand(b, cfg.context_frames, cfg.views, 3, H, H, generator=g) * 2 - 1,
                  state=torch.randn(b, cfg.state_dim, generator=g), text=torch.randn(b, cfg.text_dim, generator=g))
    return Batch(context=ctx, video=torch.rand(b, cfg.future_frames, cfg.views, 3, s, s, generator=g) * 2 - 1,
                 video_mask=torch.ones(b, cfg.future_frames), actions=torch.rand(b, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1,
                 action_mask=torch.ones(b, cfg.action_horizon), has_actions=torch.ones(b, dtype=torch.bool))
