"""The chunk executor, with a stub policy that records what it was asked."""

import numpy as np

from wam.policy import ChunkExecutor, PolicyOutput


class Stub:
    context_offsets = (-4, 0)

    def __init__(self, k=6):
        self.k, self.calls, self.instruction = k, [], None

    def reset(self, instruction):
        self.instruction, self.calls = instruction, []

    def infer(self, obs):
        self.calls.append(obs["images"].copy())
        n = len(self.calls)
        return PolicyOutput(actions=np.stack([np.full(4, 10 * n + i, np.float32) for i in range(self.k)]),
                            frames=None, ms=1.0)


def _obs(t):
    return {"images": np.full((1, 2, 2, 3), t, np.uint8), "state": np.zeros(4, np.float32)}


def test_replans_every_execute_steps_and_keeps_order():
    policy = Stub()
    ex = ChunkExecutor(policy, execute=3)
    ex.reset("do it")
    actions, fresh = zip(*(ex.act(_obs(t)) for t in range(7)))
    assert policy.instruction == "do it"
    assert [a[0] for a in actions] == [10, 11, 12, 20, 21, 22, 30]  # first 3 of each chunk, in order
    assert list(fresh) == [True, False, False, True, False, False, True]


def test_history_is_padded_with_the_first_frame_then_strided():
    policy = Stub()
    ex = ChunkExecutor(policy, execute=3)
    ex.reset("x")
    for t in range(7):
        ex.act(_obs(t))
    first, second, third = policy.calls
    assert [f[0, 0, 0, 0] for f in first] == [0, 0]  # t=0: nothing 4 steps back yet -> frame 0 twice
    assert [f[0, 0, 0, 0] for f in second] == [0, 3]  # t=3: offset -4 clamps to frame 0
    assert [f[0, 0, 0, 0] for f in third] == [2, 6]  # t=6: frames 2 and 6


def test_reset_clears_queue_and_history():
    policy = Stub()
    ex = ChunkExecutor(policy, execute=5)
    ex.reset("a")
    ex.act(_obs(9))
    ex.reset("b")
    _, fresh = ex.act(_obs(1))
    assert fresh and [f[0, 0, 0, 0] for f in policy.calls[-1]] == [1, 1]
