"""`Watchdog`: the robot-side chunk executor with a deadline (numpy and the standard library; no torch).

    policy = Watchdog(RemotePolicy("ws://gpu-box:8000"), execute=8, deadline_s=0.5, hold="zero")
    out = policy.infer(obs)          # one action per control step: out.actions (1, a); out.held

It executes the first `execute` actions of each chunk, one per step, as `runtime.ChunkExecutor` does. When the
queue runs out it asks the wrapped policy for a new chunk on a worker thread and waits at most `deadline_s`
(counted from when the request was sent). If the chunk is late, the step gets the hold action instead, flagged
`held=True`: zeros (hold="zero": zero motion for delta or velocity actions) or the last action sent
(hold="last": for absolute position actions), never the rest of a stale chunk. Each later step holds until
that request ends; an answer that came late, or an error (the connection lost, a typed error), is dropped, and
the next step asks again with its own observation. So the robot recovers by itself once answers come back
within the deadline. `reset` waits for a request in flight (at most `reset_timeout_s`) before resetting."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from wam.types import Observation, Policy, PolicyMetadata, PolicyOutput

log = logging.getLogger("wam.serve")
HOLDS = ("zero", "last")


@dataclass
class WatchdogOutput(PolicyOutput):
    held: bool = False
    """The chunk was late (or its request failed): these actions are the hold action, not the policy's."""


class Watchdog:
    """A chunk executor that holds when its policy misses the deadline (see the module docstring)."""

    def __init__(self, policy: Policy, execute: int, deadline_s: float, hold: str = "zero",
                 reset_timeout_s: float = 30.0):
        if execute < 1 or deadline_s <= 0 or hold not in HOLDS:
            raise ValueError(f"need execute >= 1, deadline_s > 0 and hold in {HOLDS}; got {execute}, {deadline_s}, {hold!r}")
        self.policy, self.execute, self.deadline_s, self.hold = policy, execute, deadline_s, hold
        self.reset_timeout_s = reset_timeout_s
        self._metadata = policy.metadata.replace(action_horizon=1, accepts_guide=False)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="wam-watchdog")
        self.queue: deque = deque()
        self.pending: Future | None = None
        self.sent_at = 0.0
        self.last_action = np.zeros(self._metadata.action_dim, np.float32)
        self.chunk: PolicyOutput | None = None
        self.held_steps = 0

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def reset(self, seed: int | None = None) -> None:
        if self.pending is not None:
            try:
                self.pending.result(self.reset_timeout_s)
            except Exception:  # noqa: BLE001 (late or failed: dropped either way)
                pass
            self.pending = None
        self.worker.submit(self.policy.reset, seed).result(self.reset_timeout_s)
        self.queue.clear()
        self.chunk, self.held_steps = None, 0
        self.last_action = np.zeros(self._metadata.action_dim, np.float32)

    def _hold(self, start: float, why: str) -> WatchdogOutput:
        self.held_steps += 1
        if self.held_steps == 1:
            log.warning("watchdog: holding (%s)", why)
        action = np.zeros_like(self.last_action) if self.hold == "zero" else self.last_action
        return WatchdogOutput(actions=action[None].astype(np.float32), fresh=False, held=True,
                              timing={"step_ms": (time.perf_counter() - start) * 1000})

    def infer(self, obs: Observation) -> WatchdogOutput:
        start = time.perf_counter()
        fresh = False
        if not self.queue:
            if self.pending is not None and self.pending.done():  # a late answer (or a failure): dropped
                self.pending = None
            if self.pending is None:
                self.pending, self.sent_at = self.worker.submit(self.policy.infer, obs), time.perf_counter()
            left = self.deadline_s - (time.perf_counter() - self.sent_at)
            try:
                chunk = self.pending.result(max(left, 0.0))
            except FutureTimeout:
                return self._hold(start, f"no chunk within the {self.deadline_s:g} s deadline")
            except Exception as e:  # noqa: BLE001 (the server's error or a lost connection: hold, ask again)
                self.pending = None
                return self._hold(start, f"{type(e).__name__}: {e}")
            self.pending = None
            if self.held_steps:
                log.info("watchdog: answers are back after %d held steps", self.held_steps)
            self.chunk, self.held_steps, fresh = chunk, 0, True
            self.queue.extend(np.asarray(chunk.actions, np.float32)[: self.execute])
        self.last_action = self.queue.popleft()
        timing = dict(self.chunk.timing) if fresh else {}
        timing["step_ms"] = (time.perf_counter() - start) * 1000
        return WatchdogOutput(actions=self.last_action[None], frames=self.chunk.frames, value=self.chunk.value,
                              timing=timing, fresh=fresh, held=False)

    def close(self) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)
