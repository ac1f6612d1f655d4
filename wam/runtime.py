"""Closed-loop runtimes: wrappers around any `Policy` that turn action chunks into one action per control step.

`ChunkExecutor` is synchronous: when its queue runs out it calls `infer` (the robot waits) and executes the
first `execute` actions of the chunk.

`AsyncChunkExecutor` infers the next chunk while the current one executes, as a real-time controller must.
Time is counted in control steps. An inference started at step s reads the observation of step s and takes
`delay` steps, so its chunk is switched in at s + delay, from its action `delay` on (the first `delay` actions
were meant for steps the old chunk already covered). A new inference starts every `replan` steps. At the
boundary the chunks are made to agree in the manner of real-time chunking (Black et al. 2025): for a policy
that accepts a `guide` (inpainting), the new chunk is sampled with its first `delay` actions held to the ones
being executed and the next `blend` softly pulled towards the old chunk; for any other policy the two chunks
are cross-faded over `blend` steps. In simulation `delay` is a fixed number of steps (reproducible); on a
robot it is the inference latency divided by the control period.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from wam.policy import Guide, Policy, PolicyOutput


class _History:
    """The frames a policy's `context_offsets` ask for; before the episode has them, the first frame stands
    in (as in the training windows)."""

    def __init__(self, offsets: tuple[int, ...]):
        self.offsets = offsets
        self.frames: deque = deque(maxlen=1 - min(offsets))

    def clear(self) -> None:
        self.frames.clear()

    def add(self, images: np.ndarray) -> None:
        self.frames.append(images)

    def context(self) -> np.ndarray:
        hist = list(self.frames)
        return np.stack([hist[max(0, len(hist) - 1 + o)] for o in self.offsets])


class ChunkExecutor:
    """Runs any policy in closed loop: re-plans every `execute` steps, open loop in between."""

    def __init__(self, policy: Policy, execute: int):
        self.policy, self.execute = policy, execute
        self.history = _History(policy.context_offsets)
        self.queue: deque = deque()
        self.last: PolicyOutput | None = None

    def reset(self, instruction: str) -> None:
        self.policy.reset(instruction)
        self.history.clear()
        self.queue.clear()
        self.last = None

    def act(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, bool]:
        """The next action, and whether a new chunk was inferred for it."""
        self.history.add(obs["images"])
        fresh = not self.queue
        if fresh:
            self.last = self.policy.infer({"images": self.history.context(), "state": obs["state"]})
            self.queue.extend(self.last.actions[: self.execute])
        return self.queue.popleft(), fresh


@dataclass
class _Chunk:
    actions: np.ndarray  # (k, a)
    start: int  # the control step its action 0 is for
    output: PolicyOutput


class AsyncChunkExecutor:
    """Runs any policy with inference overlapping execution (see the module docstring)."""

    def __init__(self, policy: Policy, replan: int, delay: int, blend: int = 0):
        if replan < 1 or delay < 0 or blend < 0:
            raise ValueError(f"need replan >= 1, delay >= 0, blend >= 0; got {replan}, {delay}, {blend}")
        if delay > replan:
            raise ValueError(f"delay ({delay}) must not exceed replan ({replan}): one inference runs at a time")
        self.policy, self.replan, self.delay, self.blend = policy, replan, delay, blend
        self.guided = bool(getattr(policy, "accepts_guide", False))
        self.history = _History(policy.context_offsets)
        self.reset_state()

    def reset_state(self) -> None:
        self.history.clear()
        self.step = 0
        self.current: _Chunk | None = None
        self.pending: _Chunk | None = None
        self.previous: _Chunk | None = None  # the chunk being cross-faded out
        self.switched_at = -1
        self.next_switch = 0
        self.last: PolicyOutput | None = None

    def reset(self, instruction: str) -> None:
        self.policy.reset(instruction)
        self.reset_state()

    def _infer(self, obs: dict[str, np.ndarray]) -> _Chunk:
        s = self.step
        guide = None
        if self.guided and self.current is not None:
            n = self.delay + self.blend
            idx = np.arange(s, s + n) - self.current.start
            ok = idx < len(self.current.actions)
            if ok.any():
                weights = np.array([1.0 if j < self.delay else 1 - (j - self.delay + 1) / (self.blend + 1)
                                    for j in range(n)], np.float32)[ok]
                guide = Guide(actions=self.current.actions[idx[ok]], weights=weights)
        ctx = {"images": self.history.context(), "state": obs["state"]}
        out = self.policy.infer(ctx, guide=guide) if guide is not None else self.policy.infer(ctx)
        if len(out.actions) < self.replan + self.delay:
            raise ValueError(f"the policy returned {len(out.actions)} actions; replan + delay = "
                             f"{self.replan + self.delay} are needed to cover the steps until the next chunk arrives")
        return _Chunk(actions=np.asarray(out.actions), start=s, output=out)

    def _switch(self) -> None:
        self.previous, self.current, self.pending = self.current, self.pending, None
        self.switched_at = self.step
        self.next_switch += self.replan
        self.last = self.current.output

    def act(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, bool]:
        """The action for this control step, and whether a new chunk was switched in at it.

        Chunks are switched in every `replan` steps; the inference for the switch at step T starts at T - delay."""
        self.history.add(obs["images"])
        s, before = self.step, self.switched_at
        if self.current is None:  # episode start: nothing to execute yet, the robot waits for the first chunk
            self.current = self._infer(obs)
            self.switched_at, self.next_switch, self.last = s, s + self.replan, self.current.output
        elif self.pending is not None and s == self.next_switch:
            self._switch()
        if self.pending is None and s == self.next_switch - self.delay:
            self.pending = self._infer(obs)
            if self.delay == 0:
                self._switch()
        action = self.current.actions[s - self.current.start]
        j = s - self.switched_at
        if not self.guided and self.blend and self.previous is not None and j < self.blend:
            i = s - self.previous.start
            if i < len(self.previous.actions):
                w = (j + 1) / (self.blend + 1)
                action = (1 - w) * self.previous.actions[i] + w * action
        self.step += 1
        return action, self.switched_at != before
