"""lerobot's normalisation of the state and the actions as wam's `Normalizer`, and back (numpy, no lerobot).

lerobot's NormalizerProcessorStep maps each feature by the mode its type has in the policy's
`normalization_mapping`: MEAN_STD (x - mean) / (std + eps); MIN_MAX, QUANTILES and QUANTILE10 2 (x - lo) / d - 1
with d = hi - lo, or eps where hi == lo (lo, hi: min and max, q01 and q99, q10 and q90); IDENTITY, or a feature
without statistics, x itself. Each is the affine map (x - center) / scale of wam's Normalizer (data/transforms.py):

    MEAN_STD                        center = mean,        scale = std + eps
    MIN_MAX, QUANTILES, QUANTILE10  center = lo + d / 2,  scale = d / 2
    IDENTITY                        center = 0,           scale = 1

so `normalizer` turns a lerobot-trained policy's statistics into the Normalizer that wam evaluates and serves it
with: lerobot's own transform, to float rounding. `lerobot_stats` goes the other way: statistics that lerobot's
step, with eps = 0, maps exactly as the wam Normalizer does (a `wam train` checkpoint converted for lerobot).

The action guard (wam/safety.py) clips to the demonstrations' range, which a Normalizer keeps beside its affine
map; it travels as two more statistics of the action, `guard_min` and `guard_max`, which lerobot ignores.
Without them (statistics lerobot took from a dataset) the guard uses the action's `min` and `max`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wam.data.transforms import Normalizer

BOUNDS = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}
"""lerobot's range modes and the statistics they read (lo, hi)."""
MODES = ("IDENTITY", "MEAN_STD", *BOUNDS)
FROM_WAM = {"mean_std": "MEAN_STD", "min_max": "MIN_MAX", "quantiles": "QUANTILES"}
"""wam's normalisation names (DataConfig.state_norm / action_norm) as lerobot's modes."""
GUARD = ("guard_min", "guard_max")


def _vector(stats: dict, name: str) -> np.ndarray:
    return np.asarray(stats[name], np.float32).reshape(-1)


def affine(stats: dict | None, mode: str, eps: float, key: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale), float32 (dim,), of lerobot's normalisation of feature `key` by `mode`, from its statistics
    (stat name -> array; None: the feature has none, and lerobot leaves it as it is)."""
    if mode not in MODES:
        raise ValueError(f"{key}: normalisation mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "IDENTITY" or not stats:
        return np.zeros(dim, np.float32), np.ones(dim, np.float32)
    need = ("mean", "std") if mode == "MEAN_STD" else BOUNDS[mode]
    missing = [n for n in need if n not in stats]
    if missing:
        raise ValueError(f"{key}: normalising by {mode} needs the statistics {'/'.join(need)}; it has "
                         f"{', '.join(sorted(stats))}")
    a, b = _vector(stats, need[0]), _vector(stats, need[1])
    if len(a) != dim or len(b) != dim:
        raise ValueError(f"{key}: its statistics have {len(a)} entries; expected {dim}, the feature's size")
    eps = np.float32(eps)
    if mode == "MEAN_STD":
        return a, b + eps
    d = b - a
    d = np.where(d == 0, eps, d).astype(np.float32)
    return a + d / 2, d / 2


@dataclass(frozen=True)
class NormStep:
    """One of lerobot's (un)normalizer steps as saved: its statistics {feature: {stat: array}} (the step's
    safetensors), and from its config the features {feature: {"type": ..., "shape": [...]}}, the norm_map
    {feature type: mode} and eps."""

    stats: dict
    features: dict
    norm_map: dict
    eps: float = 1e-8


def normalizer(state: NormStep | None, action: NormStep, state_key: str | None,
               action_key: str = "action") -> Normalizer:
    """The wam Normalizer of a lerobot policy: the state as its preprocessor's normalizer step maps it, the actions
    as its postprocessor's unnormalizer step maps them back. `state_key`: the state feature the model reads (None:
    it reads none)."""
    if action_key not in action.features:
        raise ValueError(f"the unnormalizer has no {action_key!r} feature (it has {', '.join(action.features)}): "
                         f"a policy's output is its action")
    a_dim = int(np.prod(action.features[action_key]["shape"]))
    a_stats = action.stats.get(action_key) or {}
    if state_key is not None:
        if state is None or state_key not in state.features:
            raise ValueError(f"the preprocessor's normalizer has no {state_key!r} feature: expected the state the "
                             f"model reads")
        s_dim = int(np.prod(state.features[state_key]["shape"]))
        sc, ss = affine(state.stats.get(state_key), state.norm_map.get("STATE", "IDENTITY"), state.eps, state_key, s_dim)
    else:
        sc, ss = np.zeros(0, np.float32), np.ones(0, np.float32)
    ac, as_ = affine(a_stats, action.norm_map.get("ACTION", "IDENTITY"), action.eps, action_key, a_dim)
    names = GUARD if all(n in a_stats for n in GUARD) else ("min", "max")
    if not all(n in a_stats for n in names):
        raise ValueError(f"{action_key}: the statistics have no min/max ({', '.join(sorted(a_stats)) or 'none'}); "
                         f"the action guard clips to the demonstrations' range")
    return Normalizer(sc, ss, ac, as_, _vector(a_stats, names[0]), _vector(a_stats, names[1]))


def lerobot_stats(norm: Normalizer, state_key: str | None, state_mode: str, action_key: str = "action",
                  action_mode: str = "MIN_MAX") -> dict[str, dict[str, np.ndarray]]:
    """Statistics that lerobot's normalizer step, with eps = 0 and these modes, maps as `norm` does, with the
    guard's bounds (module docstring)."""

    def stats_of(center, scale, mode: str, key: str) -> dict[str, np.ndarray]:  # tensors or arrays
        c, s = np.asarray(center, np.float32), np.asarray(scale, np.float32)
        if mode == "MEAN_STD":
            return {"mean": c, "std": s}
        if mode in BOUNDS:
            lo, hi = BOUNDS[mode]
            return {lo: c - s, hi: c + s}
        if mode == "IDENTITY" and np.all(c == 0) and np.all(s == 1):
            return {}
        raise ValueError(f"{key}: cannot write wam's normalisation as lerobot's {mode!r}; expected one of "
                         f"{', '.join(m for m in MODES if m != 'IDENTITY')}")

    out = {action_key: {**stats_of(norm.action_center, norm.action_scale, action_mode, action_key),
                        GUARD[0]: norm.action_min.numpy().astype(np.float32),
                        GUARD[1]: norm.action_max.numpy().astype(np.float32)}}
    if state_key is not None:
        out[state_key] = stats_of(norm.state_center, norm.state_scale, state_mode, state_key)
    return out

