"""The transforms that training, evaluation and serving share: the normaliser (its statistics travel inside
every checkpoint), image conversions between uint8 camera frames and the model's [-1, 1] tensors, and the
random-shift augmentation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
        """The first x.shape[-1] state entries, normalised (a model may read fewer than the data holds)."""
        d = x.shape[-1]
        return (x - self.state_mean[:d]) / self.state_std[:d]

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
