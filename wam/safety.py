"""The action guard: every action a policy executes or sends is finite and within the checkpoint's action bounds.

The bounds are the normaliser's min/max (the demonstrations' range, per action dimension) widened by MARGIN of
that range on each side; actions outside are clipped. A NaN or inf anywhere in a chunk (or in its value) means
the model is broken for this input: the chunk is refused (`NonFiniteAction`; `wam serve` answers it with its typed
error `non_finite_action`), never repaired and sent.

`Guarded(policy, guard)` is the policy whose chunks pass the guard: what the server serves, and what the
in-process `wam eval` runs too, so an evaluation measures the actions a robot would get (and `wam eval
--remote` executes the same actions as `wam eval`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from wam.types import Observation, Policy, PolicyMetadata, PolicyOutput

class NonFiniteAction(ValueError):
    """The model produced NaN or inf: nothing may be executed or sent."""


MARGIN = 0.05
"""Fraction of each action dimension's range (max - min) allowed beyond the demonstrations' min and max."""


class ActionGuard:
    def __init__(self, low, high, margin: float = MARGIN):
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        if low.shape != high.shape or low.ndim != 1 or not (np.isfinite(low).all() and np.isfinite(high).all() and (high >= low).all()):
            raise ValueError(f"action bounds must be finite (a,) arrays with low <= high, got {low} and {high}")
        span = high - low
        self.low, self.high, self.margin = low - margin * span, high + margin * span, margin

    @classmethod
    def from_normalizer(cls, norm, margin: float = MARGIN) -> "ActionGuard":
        return cls(norm.action_min.numpy(), norm.action_max.numpy(), margin)

    def __call__(self, actions: np.ndarray, value: float | None = None) -> np.ndarray:
        """float32 (k, a) clipped to the bounds, or NonFiniteAction when anything is not finite."""
        actions = np.asarray(actions, np.float32)
        if actions.ndim != 2 or actions.shape[1] != len(self.low):
            raise ValueError(f"the policy returned actions {actions.shape}, expected (k, {len(self.low)})")
        if not np.isfinite(actions).all() or (value is not None and not np.isfinite(value)):
            bad = int((~np.isfinite(actions)).sum())
            raise NonFiniteAction(f"the model produced {bad} non-finite action value(s)"
                                  f"{'' if value is None or np.isfinite(value) else ' and a non-finite value'}"
                                  "; nothing was sent")
        return np.clip(actions, self.low, self.high)

    def to_dict(self) -> dict:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "margin": self.margin}


class Guarded:
    """A policy whose every chunk is checked and clipped by `guard` (see the module docstring)."""

    def __init__(self, policy: Policy, guard: ActionGuard):
        self.policy, self.guard = policy, guard

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)

    def infer(self, obs: Observation) -> PolicyOutput:
        out = self.policy.infer(obs)
        return dataclasses.replace(out, actions=self.guard(out.actions, out.value))
