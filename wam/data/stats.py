"""Feature statistics for meta/stats.json and the episode rows (lerobot 0.4.4's keys and shapes).

Per episode, `feature_stats` reduces the episode's own values over its frames: min, max, mean, std (population),
count and the quantiles q01 q10 q50 q90 q99. `RunningStats` folds those per-episode dicts into the dataset's, in
memory that does not grow with the number of episodes:

- count, min, max, mean and std are exact: counts, means and sums of squared deviations combine pairwise in float64
  (Chan, Golub & LeVeque 1979), so they equal numpy on the concatenated data up to float64 rounding;
- each quantile is the count-weighted mean of the per-episode quantiles, as lerobot's `aggregate_stats` computes
  it: an approximation (exact when every episode has the same distribution), cheap and order-independent.

Camera frames are reduced per channel, in [0, 1], from `image_pixels`: a bounded subsample of each episode (a few
evenly spaced frames, every s-th pixel), with stats shaped (3, 1, 1) and `count` the number of frames sampled.
Every sampled frame of a camera has the same number of pixels, so weighting by frames is weighting by pixels and
the aggregate is exact over the subsample.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # lerobot's DEFAULT_QUANTILES
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
IMAGE_FRAMES = 8  # frames sampled per episode and camera for the image statistics
IMAGE_SIDE = 64  # ... each strided down to at most this many pixels a side


def feature_stats(x: np.ndarray) -> dict[str, list]:
    """Statistics of x (n, d) over its n rows, as lists (JSON and parquet ready); count is [n]."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected values of shape (n >= 1, d), got {x.shape}")
    quantiles = np.quantile(x, QUANTILES, axis=0)
    stats = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
             "count": [len(x)]}
    stats.update({k: q.tolist() for k, q in zip(QUANTILE_KEYS, quantiles)})
    return stats


def image_pixels(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """A bounded per-channel subsample of uint8 frames (T, H, W, 3): ((n, 3) float64 in [0, 1], frames sampled)."""
    t, h, w = frames.shape[:3]
    picked = np.unique(np.linspace(0, t - 1, min(t, IMAGE_FRAMES)).round().astype(int))
    stride = -(-max(h, w) // IMAGE_SIDE)
    return frames[picked, ::stride, ::stride].reshape(-1, 3) / 255.0, len(picked)


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel statistics of camera frames (T, H, W, 3) uint8, from `image_pixels`, each shaped (3, 1, 1)."""
    pixels, n = image_pixels(frames)
    stats = {k: np.asarray(v).reshape(3, 1, 1).tolist() for k, v in feature_stats(pixels).items() if k != "count"}
    return {**stats, "count": [n]}


class RunningStats:
    """The dataset statistics of one feature, folded from its per-episode statistics (see the module notes)."""

    def __init__(self):
        self.count = 0
        self.mean = self.m2 = self.min = self.max = None
        self.quantiles: dict[str, np.ndarray] = {}  # count-weighted sums

    def add(self, stats: dict[str, list]) -> None:
        n = int(stats["count"][0])
        mean, std = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
        weighted = {k: n * np.asarray(stats[k], np.float64) for k in QUANTILE_KEYS}
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, n * std**2
            self.min, self.max = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
            self.quantiles = weighted
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + n * std**2 + delta**2 * (self.count * n / total)
        self.min, self.max = np.minimum(self.min, stats["min"]), np.maximum(self.max, stats["max"])
        self.quantiles = {k: self.quantiles[k] + weighted[k] for k in QUANTILE_KEYS}
        self.count = total

    def result(self) -> dict[str, list]:
        if self.count == 0:
            raise ValueError("no statistics were added")
        out = {"min": self.min.tolist(), "max": self.max.tolist(), "mean": self.mean.tolist(),
               "std": np.sqrt(np.maximum(self.m2 / self.count, 0.0)).tolist(), "count": [self.count]}
        out.update({k: (v / self.count).tolist() for k, v in self.quantiles.items()})
        return out
