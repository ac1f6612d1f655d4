"""The transforms that training, evaluation and serving share: the normaliser (its statistics travel inside
every checkpoint), image conversions between uint8 camera frames and the model's [-1, 1] tensors, and the
random-shift augmentation. The declared resize of camera images to the model's input is resize.py (numpy only:
the robot-side client uses it too)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


NORMS = ("mean_std", "min_max", "quantiles")
"""How a feature is normalised from the dataset's meta/stats.json: (x - mean) / std; min/max -> [-1, 1];
q01/q99 -> [-1, 1] (robust to a few outliers; values beyond the 1st and 99th percentiles fall outside)."""


def _affine(stats: dict, key: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) with normalised = (x - center) / scale."""
    if mode not in NORMS:
        raise ValueError(f"normalisation {mode!r}: expected one of {', '.join(NORMS)}")
    s = stats.get(key)
    need = ("mean", "std") if mode == "mean_std" else ("min", "max") if mode == "min_max" else ("q01", "q99")
    if s is None or any(k not in s for k in need):
        raise ValueError(f"meta/stats.json has no {'/'.join(need)} for {key!r} (it has {sorted(s or {})}); "
                         f"normalising it by {mode} needs them" + ("; choose mean_std or min_max" if mode == "quantiles" else ""))
    a, b = (np.asarray(s[k], np.float64).reshape(-1) for k in need)
    if mode == "mean_std":
        return a, np.maximum(b, 1e-4)
    b = np.where(b - a < 1e-4, a + 1.0, b)  # a constant dimension maps to -1, not to a division by zero
    return (a + b) / 2, (b - a) / 2


class Normalizer:
    """State and actions to the model's units and back: (x - center) / scale per dimension, with center and scale
    from the dataset's statistics by the mode the data config names (NORMS; default: state by mean/std, actions by
    min/max to [-1, 1]). It also keeps the actions' min and max, the bounds the action guard allows (safety.py).
    Travels inside every checkpoint."""

    KEYS = ("state_center", "state_scale", "action_center", "action_scale", "action_min", "action_max")

    def __init__(self, state_center, state_scale, action_center, action_scale, action_min, action_max):
        t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        self.state_center, self.state_scale = t(state_center), t(state_scale)
        self.action_center, self.action_scale = t(action_center), t(action_scale)
        self.action_min, self.action_max = t(action_min), t(action_max)

    @classmethod
    def standard(cls, state_mean, state_std, action_min, action_max) -> "Normalizer":
        """The default modes from their statistics: state by mean/std, actions by min/max to [-1, 1]."""
        stats = {"s": {"mean": state_mean, "std": state_std}, "a": {"min": action_min, "max": action_max}}
        return cls(*_affine(stats, "s", "mean_std"), *_affine(stats, "a", "min_max"), action_min, action_max)

    @classmethod
    def from_stats(cls, stats: dict, state_key: str = "observation.state", action_key: str = "action",
                   state_norm: str = "mean_std", action_norm: str = "min_max") -> "Normalizer":
        if state_key in stats:
            sc, ss = _affine(stats, state_key, state_norm)
        else:  # a dataset without state (the model then reads none)
            sc, ss = np.zeros(0), np.ones(0)
        ac, as_ = _affine(stats, action_key, action_norm)
        a = stats[action_key]
        if "min" not in a or "max" not in a:
            raise ValueError(f"meta/stats.json has no min/max for {action_key!r}: the action guard clips to the "
                             f"demonstrations' range")
        lo, hi = (np.asarray(a[k], np.float64).reshape(-1) for k in ("min", "max"))
        return cls(sc, ss, ac, as_, lo, hi)

    def state(self, x: torch.Tensor) -> torch.Tensor:
        """The first x.shape[-1] state entries, normalised (a model may read fewer than the data holds)."""
        d = x.shape[-1]
        return (x - self.state_center[:d]) / self.state_scale[:d]

    def actions(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.action_center) / self.action_scale

    def unactions(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.action_scale + self.action_center

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"normalizer.{k}": getattr(self, k).clone() for k in self.KEYS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "Normalizer":
        if all(f"normalizer.{k}" in tensors for k in cls.KEYS):
            return cls(*(tensors[f"normalizer.{k}"] for k in cls.KEYS))
        old = ("state_mean", "state_std", "action_min", "action_max")  # checkpoints before per-mode normalisation
        if all(f"normalizer.{k}" in tensors for k in old):
            return cls.standard(*(tensors[f"normalizer.{k}"].double().numpy() for k in old))
        raise ValueError(f"checkpoint has no normalisation statistics {list(cls.KEYS)}; it was not written by wam")


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
