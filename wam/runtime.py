"""Closed-loop runtimes: `Policy` wrappers around any `Policy` (types.py), each itself a policy, so they stack
and can be served (as openpi's ActionChunkBroker is a policy around a policy).

`FrameHistory` takes one frame per camera per step and hands the policy inside the context frames its
`context_offsets` ask for; before the episode has them, the first frame stands in (as in the training windows).
It must see every step, so it goes outside a chunk executor: `FrameHistory(ChunkExecutor(policy, k))`
(`closed_loop` builds that stack).

`ChunkExecutor` is synchronous: when its queue runs out it calls `infer` (the robot waits) and executes the
first `execute` actions of the chunk, one per step.

`AsyncChunkExecutor` infers the next chunk while the current one executes, as a real-time controller must.
Time is counted in control steps. An inference started at step s reads the observation of step s and takes
`delay` steps, so its chunk is switched in at s + delay, from its action `delay` on (the first `delay` actions
were meant for steps the old chunk already covered). A new inference starts every `replan` steps. At the
boundary the chunks are made to agree in the manner of real-time chunking (Black et al. 2025): for a policy
that accepts a guide (inpainting, `metadata.accepts_guide`), the new chunk is sampled with its first `delay`
actions held to the ones being executed and the next `blend` softly pulled towards the old chunk; for any
other policy the two chunks are cross-faded over `blend` steps. In simulation `delay` is a fixed number of
steps (reproducible); on a robot it is the inference latency divided by the control period.

The chunk executors return one action per step (`actions` of shape (1, a)), the predicted frames of the chunk
being executed, `fresh` when a new chunk was switched in at this step (with the inner policy's timing), and
their own wall-clock time as `timing["step_ms"]`.

`Weakened` is a deliberately worse policy: another instruction in place of the one given, and Gaussian noise on its
actions (the weak policies a world-model judge must rank low; `wam eval --action-noise`, wam/judge).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from wam.types import Guide, Observation, Policy, PolicyMetadata, PolicyOutput


class FrameHistory:
    """Stacks the frames the wrapped policy's `context_offsets` ask for, from one frame per camera per step."""

    def __init__(self, policy: Policy):
        self.policy = policy
        inner = policy.metadata
        self.offsets = inner.context_offsets
        self._metadata = inner.replace(context_offsets=(0,))
        self.frames: deque = deque(maxlen=1 - min(self.offsets))

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def reset(self, seed: int | None = None) -> None:
        self.frames.clear()
        self.policy.reset(seed)

    def infer(self, obs: Observation) -> PolicyOutput:
        obs = obs.check(self._metadata)
        self.frames.append(obs.images)
        hist = list(self.frames)
        picked = [hist[max(0, len(hist) - 1 + o)] for o in self.offsets]
        stacked = {c: np.stack([frame[c] for frame in picked]) for c in self._metadata.cameras}
        if len(self.offsets) == 1:
            stacked = {c: x[0] for c, x in stacked.items()}
        return self.policy.infer(obs.replace(images=stacked))


def _step_output(chunk: PolicyOutput, action: np.ndarray, fresh: bool, start: float) -> PolicyOutput:
    timing = dict(chunk.timing) if fresh else {}
    timing["step_ms"] = (time.perf_counter() - start) * 1000
    return PolicyOutput(actions=np.asarray(action, np.float32)[None], frames=chunk.frames, value=chunk.value,
                        timing=timing, fresh=fresh)


class ChunkExecutor:
    """Runs any policy in closed loop: re-plans every `execute` steps, open loop in between."""

    def __init__(self, policy: Policy, execute: int):
        if execute < 1:
            raise ValueError(f"execute must be >= 1, got {execute}")
        self.policy, self.execute = policy, execute
        self._metadata = policy.metadata.replace(action_horizon=1, accepts_guide=False)
        self.queue: deque = deque()
        self.last: PolicyOutput | None = None

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)
        self.queue.clear()
        self.last = None

    def infer(self, obs: Observation) -> PolicyOutput:
        start = time.perf_counter()
        fresh = not self.queue
        if fresh:
            self.last = self.policy.infer(obs)
            self.queue.extend(self.last.actions[: self.execute])
        return _step_output(self.last, self.queue.popleft(), fresh, start)


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
        self.guided = policy.metadata.accepts_guide
        self._metadata = policy.metadata.replace(action_horizon=1, accepts_guide=False)
        self.reset_state()

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def reset_state(self) -> None:
        self.step = 0
        self.current: _Chunk | None = None
        self.pending: _Chunk | None = None
        self.previous: _Chunk | None = None  # the chunk being cross-faded out
        self.switched_at = -1
        self.next_switch = 0

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)
        self.reset_state()

    def _infer(self, obs: Observation) -> _Chunk:
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
        out = self.policy.infer(obs.replace(guide=guide))
        if len(out.actions) < self.replan + self.delay:
            raise ValueError(f"the policy returned {len(out.actions)} actions; replan + delay = "
                             f"{self.replan + self.delay} are needed to cover the steps until the next chunk arrives")
        return _Chunk(actions=np.asarray(out.actions), start=s, output=out)

    def _switch(self) -> None:
        self.previous, self.current, self.pending = self.current, self.pending, None
        self.switched_at = self.step
        self.next_switch += self.replan

    def infer(self, obs: Observation) -> PolicyOutput:
        """The action for this control step; `fresh` when a new chunk was switched in at it.

        Chunks are switched in every `replan` steps; the inference for the switch at step T starts at T - delay."""
        start = time.perf_counter()
        s, before = self.step, self.switched_at
        if self.current is None:  # episode start: nothing to execute yet, the robot waits for the first chunk
            self.current = self._infer(obs)
            self.switched_at, self.next_switch = s, s + self.replan
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
        return _step_output(self.current.output, action, self.switched_at != before, start)


def closed_loop(policy: Policy, execute: int, delay: int = 0, blend: int = 0) -> Policy:
    """One action per control step from one frame per camera per step: the frame history outside, then
    synchronous chunk execution (delay = blend = 0) or asynchronous execution with real-time chunking."""
    runner = (AsyncChunkExecutor(policy, execute, delay, blend) if delay or blend else ChunkExecutor(policy, execute))
    return FrameHistory(runner)


class Weakened:
    """`policy` with each prompt replaced by `prompts[prompt]` (where given) and Gaussian noise of std `noise` added
    to every action (robot units), drawn from a generator seeded by the episode's seed at `reset(seed)`."""

    def __init__(self, policy: Policy, noise: float = 0.0, prompts: dict[str, str] | None = None):
        self.policy, self.noise, self.prompts = policy, noise, dict(prompts or {})
        self.rng = np.random.default_rng(0)

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)
        if seed is not None:
            self.rng = noise_generator(seed)

    def infer(self, obs: Observation) -> PolicyOutput:
        out = self.policy.infer(obs.replace(prompt=self.prompts.get(obs.prompt, obs.prompt)))
        return dataclasses.replace(out, actions=self.perturb(out.actions, self.rng))

    def perturb(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (actions + rng.normal(0.0, self.noise, actions.shape)).astype(np.float32) if self.noise else actions


def noise_generator(seed: int) -> np.random.Generator:
    """The generator of an episode's weakening noise (`Weakened`), from its variation seed."""
    return np.random.default_rng([int(seed), 11])
