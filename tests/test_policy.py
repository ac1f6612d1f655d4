"""The chunk executor, with a stub policy that records what it was asked."""

import numpy as np

from wam.policy import PolicyOutput
from wam.runtime import ChunkExecutor


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


# ----------------------------------------------------------------------------- asynchronous execution
import pytest  # noqa: E402

from wam.runtime import AsyncChunkExecutor  # noqa: E402


class GuidedStub(Stub):
    accepts_guide = True

    def __init__(self, k=8):
        super().__init__(k)
        self.guides = []

    def infer(self, obs, guide=None):
        self.guides.append(guide)
        return super().infer(obs)


def _run(ex, steps):
    return [ex.act(_obs(t)) for t in range(steps)]


def test_async_chunks_switch_every_replan_steps_after_the_delay():
    policy = Stub(k=8)
    ex = AsyncChunkExecutor(policy, replan=4, delay=2)
    ex.reset("x")
    out = _run(ex, 12)
    # inferences start at steps 0 (the robot waits for the first), 2, 6, 10: each `delay` before its switch
    assert [c[-1][0, 0, 0, 0] for c in policy.calls] == [0, 2, 6, 10]
    # chunk n's action i is 10 n + i; a chunk started at step s is executed from index s' - s at step s'
    assert [a[0] for a, _ in out] == [10, 11, 12, 13, 22, 23, 24, 25, 32, 33, 34, 35]
    assert [f for _, f in out] == [True, False, False, False] * 3


def test_async_with_no_delay_is_the_synchronous_executor():
    a, b = Stub(k=6), Stub(k=6)
    sync, asyn = ChunkExecutor(a, execute=3), AsyncChunkExecutor(b, replan=3, delay=0)
    sync.reset("x"), asyn.reset("x")
    assert [x[0][0] for x in _run(sync, 10)] == [x[0][0] for x in _run(asyn, 10)]
    assert [c[-1][0, 0, 0, 0] for c in a.calls] == [c[-1][0, 0, 0, 0] for c in b.calls] == [0, 3, 6, 9]


def test_async_guides_a_policy_that_accepts_it_with_the_actions_being_executed():
    policy = GuidedStub(k=8)
    ex = AsyncChunkExecutor(policy, replan=4, delay=2, blend=2)
    ex.reset("x")
    out = _run(ex, 6)
    assert policy.guides[0] is None  # nothing executes before the first chunk
    g = policy.guides[1]  # started at step 2: steps 2, 3 run chunk 1's actions 2, 3 (held), 4, 5 are blended
    assert [a[0] for a in g.actions] == [12, 13, 14, 15]
    assert np.allclose(g.weights, [1, 1, 2 / 3, 1 / 3])
    assert [a[0] for a, _ in out] == [10, 11, 12, 13, 22, 23]  # a guided chunk is executed as sampled


def test_async_cross_fades_a_policy_without_guidance():
    policy = Stub(k=8)
    ex = AsyncChunkExecutor(policy, replan=4, delay=2, blend=2)
    ex.reset("x")
    out = [a[0] for a, _ in _run(ex, 8)]
    assert out[:4] == [10, 11, 12, 13]
    assert np.isclose(out[4], 2 / 3 * 14 + 1 / 3 * 22) and np.isclose(out[5], 1 / 3 * 15 + 2 / 3 * 23)
    assert out[6:] == [24, 25]


def test_async_refuses_impossible_timing():
    with pytest.raises(ValueError, match="must not exceed replan"):
        AsyncChunkExecutor(Stub(), replan=2, delay=3)
    ex = AsyncChunkExecutor(Stub(k=4), replan=4, delay=2)
    ex.reset("x")
    with pytest.raises(ValueError, match="replan \\+ delay = 6"):
        _run(ex, 1)


@pytest.mark.slow
def test_compiled_policy_gives_the_same_actions():
    """torch.compile of the blocks (compiles C++ on CPU: about 20 s) changes nothing but speed."""
    import torch

    from wam.config import SamplerConfig, preset
    from wam.models.transformer import WAMTransformer
    from wam.policy import WAMPolicy
    from wam.data.transforms import Normalizer

    cfg = preset("tiny").model
    norm = Normalizer(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    obs = {"images": np.zeros((cfg.context_frames, cfg.views, cfg.image_size, cfg.image_size, 3), np.uint8),
           "state": np.zeros(4, np.float32)}
    actions = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = WAMTransformer(cfg).eval()
        with torch.no_grad():  # off the adaLN-Zero start, so the network's output is not trivially zero
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        policy = WAMPolicy(model, norm, {}, SamplerConfig(steps=4, compile=compile_))
        policy._text = torch.zeros(1, cfg.text_dim)
        actions.append(policy.infer(obs).actions)
    assert np.allclose(actions[0], actions[1], atol=1e-5)


def _random_policy(sampler):
    import torch

    from wam.config import preset
    from wam.models.transformer import WAMTransformer
    from wam.policy import WAMPolicy
    from wam.data.transforms import Normalizer

    cfg = preset("tiny").model
    torch.manual_seed(0)
    model = WAMTransformer(cfg).eval()
    with torch.no_grad():  # off the adaLN-Zero start, so the network's output is not trivially zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    policy = WAMPolicy(model, Normalizer(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4)), {}, sampler)
    policy._text = torch.zeros(1, cfg.text_dim)
    obs = {"images": np.random.default_rng(0).integers(0, 256, (cfg.context_frames, cfg.views, cfg.image_size,
                                                                cfg.image_size, 3), dtype=np.uint8),
           "state": np.zeros(4, np.float32)}
    return policy, obs


def test_bfloat16_inference_stays_close_to_float32():
    """bf16 autocast (the GPU setting; CPU autocast runs the same code) moves actions by bf16 rounding only."""
    import torch

    from wam.config import SamplerConfig

    outs = {}
    for precision in ("float32", "bfloat16"):
        policy, obs = _random_policy(SamplerConfig(steps=4, precision=precision))
        out = policy.infer(obs)
        assert out.actions.dtype == np.float32 and out.frames.dtype == np.uint8
        outs[precision] = out.actions
    diff = np.abs(outs["float32"] - outs["bfloat16"]).max()
    assert 0 < diff < 0.05, diff  # not identical (bf16 really ran), but close
    assert torch.get_autocast_dtype("cpu") == torch.bfloat16  # autocast left as it was


def test_bad_device_and_precision_are_refused():
    import pytest
    import torch

    from wam.config import SamplerConfig

    with pytest.raises(ValueError, match="precision"):
        SamplerConfig(precision="float16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            _random_policy(SamplerConfig(device="cuda"))
    with pytest.raises(ValueError, match="expected 'cpu' or 'cuda"):
        _random_policy(SamplerConfig(device="meta"))
