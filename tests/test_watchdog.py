"""Tier 1, the robot-side watchdog executor against a stub policy whose infer sleeps past the deadline; every
wait is bounded (the stub sleeps at most 0.3 s, a test runs well under 3 s)."""

import logging
import threading
import time

import numpy as np
import pytest

from wam.serve.watchdog import Watchdog
from wam.types import Observation, PolicyMetadata, PolicyOutput

META = PolicyMetadata(cameras=("cam",), image_size=(4, 4), context_offsets=(0,), state_dim=0, action_dim=2,
                      action_horizon=4)
OBS = Observation(images={"cam": np.zeros((4, 4, 3), np.uint8)}, prompt="hold still")


class Stub:
    """Chunk n is full of n + 1; call n sleeps delays[n] (0 past the list), or raises where that is an exception."""

    metadata = META

    def __init__(self, delays):
        self.delays, self.calls, self.resets = list(delays), 0, []

    def reset(self, seed=None):
        self.resets.append(seed)

    def infer(self, obs):
        n, self.calls = self.calls, self.calls + 1
        delay = self.delays[n] if n < len(self.delays) else 0.0
        if isinstance(delay, Exception):
            raise delay
        time.sleep(delay)
        return PolicyOutput(actions=np.full((4, 2), n + 1, np.float32), timing={"infer_ms": delay * 1000})


def _run(watchdog, steps):
    outs = [watchdog.infer(OBS) for _ in range(steps)]
    return [float(o.actions[0, 0]) for o in outs], [o.held for o in outs]


def test_a_late_chunk_is_held_with_zeros_and_answers_recover(caplog):
    stub = Stub([0.0, 0.3])  # the second chunk is late
    dog = Watchdog(stub, execute=2, deadline_s=0.1, hold="zero")
    assert dog.metadata.action_horizon == 1
    with caplog.at_level(logging.INFO, logger="wam.serve"):
        start = time.perf_counter()
        actions, held = _run(dog, 3)  # chunk 1, 1, then late: hold
        assert actions == [1, 1, 0] and held == [False, False, True]
        assert 0.08 < time.perf_counter() - start < 0.3  # waited for the deadline, not for the late chunk
        time.sleep(0.3)  # the late chunk arrives meanwhile: it is dropped, a new request is sent
        actions, held = _run(dog, 3)
    assert actions == [3, 3, 4] and held == [False, False, False] and stub.calls == 4
    assert "watchdog: holding (no chunk within the 0.1 s deadline)" in caplog.text and "answers are back" in caplog.text
    dog.close()


def test_hold_last_repeats_the_last_action_sent_and_errors_hold_too():
    stub = Stub([0.0, RuntimeError("connection lost"), 0.3, 0.0])
    dog = Watchdog(stub, execute=1, deadline_s=0.1, hold="last")
    actions, held = _run(dog, 3)  # chunk 1; an error: hold 1; late: hold 1
    assert actions == [1, 1, 1] and held == [False, True, True]
    outs = [dog.infer(OBS) for _ in range(2)]  # still in flight: hold; ...
    assert outs[0].held and outs[0].actions.shape == (1, 2) and outs[0].actions.dtype == np.float32
    time.sleep(0.3)
    assert not dog.infer(OBS).held  # ... then a fresh request answers in time
    dog.reset(seed=5)
    assert stub.resets == [5] and not dog.queue
    dog.close()


def test_reset_waits_for_a_request_in_flight_and_bad_arguments_are_refused():
    stub = Stub([0.2])
    dog = Watchdog(stub, execute=2, deadline_s=0.05)
    assert dog.infer(OBS).held
    dog.reset(1)  # waits the late request out, so the policy never sees two calls at once
    assert stub.resets == [1] and dog.pending is None and threading.active_count() < 50
    assert _run(dog, 1) == ([2.0], [False])
    dog.close()
    with pytest.raises(ValueError, match="hold in"):
        Watchdog(stub, execute=2, deadline_s=0.1, hold="brake")
