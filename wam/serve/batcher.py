"""Cross-session batching: requests from sessions that arrive together go through one forward pass.

A `Batcher` owns the model's one worker thread. Each session (`batcher.session(seed)`, a `PolicySession` with its own
sampling generator, as `WAMPolicy.session`) hands its observation to the batcher and waits for its own output.
The worker takes the first pending request, then collects more until it has `max_batch`, or as many as there are
open sessions, or `max_wait_ms` has passed since the first, whichever comes first (a lone client never waits),
and runs them through `WAMPolicy.infer_batch`: every request's noise comes from its own session's generator, so
each output equals what the same request gets alone with the same generator state. Requests arriving while a
batch runs queue up and form the next batch. `max_batch = 1` turns batching off (one request per pass).

A request that fails its check (`Observation.check`) gets its own ObservationError and is left out of the batch.
Should a whole batch fail anyway, each request is run again alone from its generator's state before the batch,
so only the request at fault gets the error and the others get exactly the outputs they would have got.

Sessions are counted while they are alive (a weak set); the count only decides when to stop waiting for more.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from concurrent.futures import Future

import torch

from wam.policy import PolicySession
from wam.types import Observation, PolicyMetadata, PolicyOutput

_STOP = object()


class Batcher:
    """Runs one WAMPolicy's inferences on one thread, batching those pending together (module docstring)."""

    def __init__(self, policy, max_batch: int = 8, max_wait_ms: float = 2.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch} and {max_wait_ms}")
        self.policy, self.max_batch, self.max_wait = policy, max_batch, max_wait_ms / 1000
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        self.sessions: weakref.WeakSet = weakref.WeakSet()
        self.batches = self.requests = 0  # counters: the mean batch size is requests / batches
        self.closed, self._lock = False, threading.Lock()  # no request is queued once closed: none waits forever
        self.thread = threading.Thread(target=self._loop, name="wam-batch", daemon=True)
        self.thread.start()

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def session(self, seed: int = 0) -> PolicySession:
        """A session whose inferences are batched with the other sessions' (any thread may call its `infer`)."""
        s = PolicySession(self, seed)
        self.sessions.add(s)
        return s

    def infer(self, obs: Observation, generator: torch.Generator) -> PolicyOutput:
        """Blocks until this request's batch has run; raises this request's own error."""
        done: Future = Future()
        with self._lock:
            if self.closed:
                raise RuntimeError("the batcher is closed")
            self.pending.put((obs, generator, done))
        return done.result()

    def close(self) -> None:
        """Stops the worker after the batch it is running; requests still pending get a RuntimeError."""
        with self._lock:
            self.closed = True
            self.pending.put(_STOP)
        self.thread.join(10)
        self._refuse_pending()

    def _refuse_pending(self) -> None:
        with self._lock:
            self.closed = True
        while True:
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item[2].set_exception(RuntimeError("the batcher is closed"))

    # ------------------------------------------------------------------ the worker
    def _loop(self) -> None:
        while True:
            first = self.pending.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < min(self.max_batch, max(1, len(self.sessions))):
                try:
                    item = self.pending.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                self._run(batch)
            except BaseException as e:  # noqa: BLE001 (the worker is going down: no request may wait forever)
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(RuntimeError(f"the batcher stopped: {type(e).__name__}: {e}"))
                self._refuse_pending()
                raise
            if stop:
                return

    def _run(self, batch: list) -> None:
        ok = []
        for obs, generator, done in batch:
            try:
                ok.append((obs.check(self.policy.metadata), generator, done))
            except Exception as e:  # this request's own error; it never enters the batch
                done.set_exception(e)
        if not ok:
            return
        before = [g.get_state() for _, g, _ in ok]
        self.batches, self.requests = self.batches + 1, self.requests + len(ok)
        try:
            outs = self.policy.infer_batch([o for o, _, _ in ok], [g for _, g, _ in ok])
        except Exception as e:
            if len(ok) == 1:
                ok[0][2].set_exception(e)
                return
            for (obs, generator, done), state in zip(ok, before):  # alone, from the same generator states
                generator.set_state(state)
                try:
                    done.set_result(self.policy.infer_batch([obs], [generator])[0])
                except Exception as e1:
                    done.set_exception(e1)
            return
        for (_, _, done), out in zip(ok, outs):
            done.set_result(out)
