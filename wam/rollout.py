"""One rollout loop over the `Env` and `Policy` protocols (types.py), and recording as a wrapper.

    rollout(env, policy, seed, max_steps)      one episode: reset both with the seed, then observe -> act
                                               until the task is solved or max_steps run out

The policy returns actions (k, a); the loop executes the first one each step, so a chunk policy is wrapped in
a chunk executor first (runtime.closed_loop). `Recorder` wraps any policy and keeps, for every step, the real
camera frames side by side with the predicted future frames of the chunk being executed below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wam.types import Env, Observation, Policy, PolicyMetadata, PolicyOutput


@dataclass
class Rollout:
    success: bool
    steps: int
    """Control steps executed (the step that solved the task included)."""
    infer_ms: list[float] = field(default_factory=list)
    """Milliseconds of each new chunk's inference."""


def rollout(env: Env, policy: Policy, seed: int, max_steps: int, prompt: str | None = None) -> Rollout:
    """One episode on variation `seed`; `prompt` replaces the environment's instruction (phrasing robustness)."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    policy.reset(seed)
    obs = env.reset(seed)
    ms, success, steps = [], False, 0
    for steps in range(1, max_steps + 1):
        if prompt is not None:
            obs = obs.replace(prompt=prompt)
        out = policy.infer(obs)
        if out.fresh and out.infer_ms is not None:
            ms.append(out.infer_ms)
        obs, success = env.step(out.actions[0])
        if success:
            break
    return Rollout(success=bool(success), steps=steps, infer_ms=ms)


def compose_frame(real: np.ndarray, predicted: np.ndarray | None) -> np.ndarray:
    """Real views (v, H, W, 3) side by side on top; each predicted future frame (f, v, s, s, 3) as a row below."""
    top = np.concatenate(list(real), axis=1)
    if predicted is None:
        return top
    H = real.shape[1]
    rep = H // predicted.shape[2]
    rows = [np.concatenate([np.kron(p, np.ones((rep, rep, 1), np.uint8)) for p in frame], axis=1) for frame in predicted]
    return np.concatenate([top, *rows], axis=0)


class Recorder:
    """A policy that records what the policy inside saw and predicted, one composed frame per step."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.frames: list[np.ndarray] = []

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def reset(self, seed: int | None = None) -> None:
        self.frames = []
        self.policy.reset(seed)

    def infer(self, obs: Observation) -> PolicyOutput:
        out = self.policy.infer(obs)
        real = np.stack([obs.current(c) for c in self.metadata.cameras])
        self.frames.append(compose_frame(real, out.frames))
        return out

    def video(self) -> np.ndarray:
        """(T, H', W', 3) uint8: the episode so far."""
        return np.stack(self.frames)
