"""The policy boundary and the closed-loop wrappers: typed observations checked against what a policy declares,
frame history and chunk execution as policies around a policy (with a stub that records what it was asked),
and the WAM policy itself."""

import json

import numpy as np
import pytest

from wam.runtime import AsyncChunkExecutor, ChunkExecutor, FrameHistory, closed_loop
from wam.types import Observation, ObservationError, PolicyMetadata, PolicyOutput
from wam.testing import concrete

SPEC = PolicyMetadata(cameras=("top",), image_size=(2, 2), context_offsets=(-4, 0), state_dim=4, action_dim=4,
                      action_horizon=6)


class Stub:
    """A chunk policy: chunk n's action i is 10 n + i. It records the images it was given."""

    def __init__(self, k=6, accepts_guide=False):
        self.k, self.calls, self.seeds, self.guides = k, [], [], []
        self._metadata = SPEC.replace(action_horizon=k, accepts_guide=accepts_guide)

    @property
    def metadata(self):
        return self._metadata

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.calls = []

    def infer(self, obs):
        obs = obs.check(self._metadata)
        self.calls.append(obs.images["top"].copy())
        self.guides.append(obs.guide)
        n = len(self.calls)
        return PolicyOutput(actions=np.stack([np.full(4, 10 * n + i, np.float32) for i in range(self.k)]),
                            timing={"infer_ms": 1.0})


def _obs(t):
    return Observation(images={"top": np.full((2, 2, 3), t, np.uint8)}, state=np.zeros(4, np.float32), prompt="do it")


def _run(policy, steps):
    return [policy.infer(_obs(t)) for t in range(steps)]


def _first(outs):
    return [o.actions[0, 0] for o in outs]


def test_replans_every_execute_steps_and_keeps_order():
    policy = Stub()
    ex = FrameHistory(ChunkExecutor(policy, execute=3))
    ex.reset(7)
    outs = _run(ex, 7)
    assert policy.seeds == [7]  # the seed reaches the policy inside
    assert _first(outs) == [10, 11, 12, 20, 21, 22, 30]  # first 3 of each chunk, in order
    assert [o.fresh for o in outs] == [True, False, False, True, False, False, True]
    assert all(o.actions.shape == (1, 4) for o in outs)
    assert outs[0].timing["infer_ms"] == 1.0 and "infer_ms" not in outs[1].timing and outs[1].timing["step_ms"] >= 0


def test_history_is_padded_with_the_first_frame_then_strided():
    policy = Stub()
    ex = FrameHistory(ChunkExecutor(policy, execute=3))
    ex.reset()
    _run(ex, 7)
    first, second, third = policy.calls
    assert [f[0, 0, 0] for f in first] == [0, 0]  # t=0: nothing 4 steps back yet -> frame 0 twice
    assert [f[0, 0, 0] for f in second] == [0, 3]  # t=3: offset -4 clamps to frame 0
    assert [f[0, 0, 0] for f in third] == [2, 6]  # t=6: frames 2 and 6


def test_reset_clears_queue_and_history():
    policy = Stub()
    ex = FrameHistory(ChunkExecutor(policy, execute=5))
    ex.reset()
    ex.infer(_obs(9))
    ex.reset()
    out = ex.infer(_obs(1))
    assert out.fresh and [f[0, 0, 0] for f in policy.calls[-1]] == [1, 1]


def test_wrappers_declare_what_they_take_and_return():
    runner = closed_loop(Stub(k=8, accepts_guide=True), execute=4, delay=2, blend=2)
    meta = runner.metadata
    assert meta.context_offsets == (0,) and meta.action_horizon == 1 and not meta.accepts_guide
    assert meta.cameras == SPEC.cameras and meta.state_dim == 4
    with pytest.raises(ObservationError, match=r"observation/images/top: expected uint8 \(2, 2, 3\)"):
        runner.infer(Observation(images={"top": np.zeros((2, 2, 2, 3), np.uint8)}, state=np.zeros(4), prompt="x"))


def test_async_chunks_switch_every_replan_steps_after_the_delay():
    policy = Stub(k=8)
    ex = FrameHistory(AsyncChunkExecutor(policy, replan=4, delay=2))
    ex.reset()
    out = _run(ex, 12)
    # inferences start at steps 0 (the robot waits for the first), 2, 6, 10: each `delay` before its switch
    assert [c[-1][0, 0, 0] for c in policy.calls] == [0, 2, 6, 10]
    # chunk n's action i is 10 n + i; a chunk started at step s is executed from index s' - s at step s'
    assert _first(out) == [10, 11, 12, 13, 22, 23, 24, 25, 32, 33, 34, 35]
    assert [o.fresh for o in out] == [True, False, False, False] * 3


def test_async_with_no_delay_is_the_synchronous_executor():
    a, b = Stub(k=6), Stub(k=6)
    sync, asyn = FrameHistory(ChunkExecutor(a, execute=3)), FrameHistory(AsyncChunkExecutor(b, replan=3, delay=0))
    sync.reset(), asyn.reset()
    assert _first(_run(sync, 10)) == _first(_run(asyn, 10))
    assert [c[-1][0, 0, 0] for c in a.calls] == [c[-1][0, 0, 0] for c in b.calls] == [0, 3, 6, 9]


def test_async_guides_a_policy_that_accepts_it_with_the_actions_being_executed():
    policy = Stub(k=8, accepts_guide=True)
    ex = FrameHistory(AsyncChunkExecutor(policy, replan=4, delay=2, blend=2))
    ex.reset()
    out = _run(ex, 6)
    assert policy.guides[0] is None  # nothing executes before the first chunk
    g = policy.guides[1]  # started at step 2: steps 2, 3 run chunk 1's actions 2, 3 (held), 4, 5 are blended
    assert [a[0] for a in g.actions] == [12, 13, 14, 15]
    assert np.allclose(g.weights, [1, 1, 2 / 3, 1 / 3])
    assert _first(out) == [10, 11, 12, 13, 22, 23]  # a guided chunk is executed as sampled


def test_async_cross_fades_a_policy_without_guidance():
    policy = Stub(k=8)
    ex = FrameHistory(AsyncChunkExecutor(policy, replan=4, delay=2, blend=2))
    ex.reset()
    out = _first(_run(ex, 8))
    assert out[:4] == [10, 11, 12, 13]
    assert np.isclose(out[4], 2 / 3 * 14 + 1 / 3 * 22) and np.isclose(out[5], 1 / 3 * 15 + 2 / 3 * 23)
    assert out[6:] == [24, 25]
    assert policy.guides == [None, None, None]  # a policy that does not accept a guide is never sent one


def test_async_refuses_impossible_timing():
    with pytest.raises(ValueError, match="must not exceed replan"):
        AsyncChunkExecutor(Stub(), replan=2, delay=3)
    ex = FrameHistory(AsyncChunkExecutor(Stub(k=4), replan=4, delay=2))
    ex.reset()
    with pytest.raises(ValueError, match="replan \\+ delay = 6"):
        _run(ex, 1)


# ----------------------------------------------------------------------------- observations on the wire
def test_from_dict_checks_every_key_and_names_it():
    spec = SPEC.replace(context_offsets=(0,), state_names=("x", "y", "z", "g"))
    good = {"observation/images/top": np.zeros((2, 2, 3), np.uint8), "observation/state": np.zeros(4),
            "prompt": "open the drawer"}
    obs = Observation.from_dict(good, spec)
    assert obs.state.dtype == np.float32 and obs.prompt == "open the drawer"
    assert Observation.from_dict(obs.to_dict(), spec).to_dict().keys() == good.keys()  # round trip
    bad = [
        ({**good, "observation/state": np.zeros(7)}, r"observation/state: expected float32 \(4,\) \(x, y, z, g\), got float64 \(7,\)"),
        ({k: v for k, v in good.items() if k != "observation/state"}, "observation/state is missing"),
        ({**good, "observation/images/top": np.zeros((2, 2, 3), np.float32)}, r"observation/images/top: expected uint8 \(2, 2, 3\), got float32"),
        ({**good, "observation/images/wrist": np.zeros((2, 2, 3), np.uint8)}, r"unknown key\(s\) \['observation/images/wrist'\]"),
        ({k: v for k, v in good.items() if k != "observation/images/top"}, "observation/images/top is missing"),
        ({k: v for k, v in good.items() if k != "prompt"}, "prompt is missing"),
        ({**good, "prompt": ""}, "prompt: expected the instruction as a non-empty str"),
        ({**good, "observation/state": np.array([0, 1, np.nan, 0])}, "expected finite values"),
        ({**good, "guide/actions": np.zeros((2, 4)), "guide/weights": np.ones(2)}, "unknown key"),
        ("not a dict", "an observation is a dict"),
    ]
    for data, message in bad:
        with pytest.raises(ObservationError, match=message):
            Observation.from_dict(data, spec)
    guided = spec.replace(accepts_guide=True)
    g = Observation.from_dict({**good, "guide/actions": np.zeros((2, 4)), "guide/weights": np.ones(2)}, guided).guide
    assert g.actions.shape == (2, 4) and g.weights.dtype == np.float32
    with pytest.raises(ObservationError, match="guide/actions/guide/weights: expected float32 \\(n, 4\\)"):
        Observation.from_dict({**good, "guide/actions": np.zeros((2, 3)), "guide/weights": np.ones(2)}, guided)
    with pytest.raises(ObservationError, match="needs both"):
        Observation.from_dict({**good, "guide/actions": np.zeros((2, 4))}, guided)


def test_policy_output_to_dict():
    out = PolicyOutput(actions=np.zeros((3, 4)), frames=np.zeros((1, 2, 4, 4, 3), np.uint8), value=0.5,
                       timing={"infer_ms": 2.0})
    d = out.to_dict()
    assert d["actions"].dtype == np.float32 and d["value"] == 0.5 and d["frames"].shape == (1, 2, 4, 4, 3)
    assert d["timing"] == {"infer_ms": 2.0} and d["fresh"] is True
    assert "frames" not in out.to_dict(frames=False) and "value" not in PolicyOutput(actions=np.zeros((1, 4))).to_dict()


@pytest.mark.slow
def test_compiled_policy_gives_the_same_actions():
    """torch.compile of the blocks (compiles C++ on CPU: about 20 s) changes nothing but speed."""
    import torch

    from wam.config import SamplerConfig, preset
    from wam.data.transforms import Normalizer
    from wam.models.transformer import WAMTransformer
    from wam.policy import WAMPolicy
    from wam.testing import fake_observation

    cfg = concrete(preset("tiny")).model
    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    actions = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = WAMTransformer(cfg).eval()
        with torch.no_grad():  # off the adaLN-Zero start, so the network's output is not trivially zero
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        policy = WAMPolicy(model, norm, {}, SamplerConfig(steps=4, compile=compile_))
        actions.append(policy.infer(fake_observation(policy.metadata)).actions)
    assert np.allclose(actions[0], actions[1], atol=1e-5)


def _random_policy(sampler):
    import torch

    from wam.config import preset
    from wam.data.transforms import Normalizer
    from wam.models.transformer import WAMTransformer
    from wam.policy import WAMPolicy
    from wam.testing import fake_observation

    cfg = concrete(preset("tiny")).model
    torch.manual_seed(0)
    model = WAMTransformer(cfg).eval()
    with torch.no_grad():  # off the adaLN-Zero start, so the network's output is not trivially zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    policy = WAMPolicy(model, Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4)),
                       {"data": {"fps": 80, "state_names": ["hand_x", "hand_y", "hand_z", "gripper"]}}, sampler)
    return policy, fake_observation(policy.metadata)


def test_wam_policy_declares_its_inputs_and_checks_them():
    from wam.config import SamplerConfig

    policy, obs = _random_policy(SamplerConfig(steps=2))
    meta = policy.metadata
    cfg = policy.cfg
    assert meta.cameras == cfg.cameras and meta.image_size == (cfg.image_size, cfg.image_size)
    assert meta.context_offsets == cfg.context_offsets and meta.state_dim == 4 and meta.fps == 80
    assert meta.action_horizon == cfg.action_horizon and meta.future_offsets == cfg.future_offsets
    assert meta.recipe == "decoupled" and "world_model" in meta.modes and meta.accepts_guide
    assert json.loads(json.dumps(meta.to_dict()))["cameras"] == list(cfg.cameras)  # JSON-ready
    assert PolicyMetadata.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta  # and back
    with pytest.raises(ObservationError, match=r"observation/state: expected float32 \(4,\) \(hand_x, hand_y"):
        policy.infer(obs.replace(state=np.zeros(7, np.float32)))  # was a raw torch size error
    single = obs.replace(images={c: x[-1] for c, x in obs.images.items()})
    with pytest.raises(ObservationError, match="2 context frames .* through a FrameHistory wrapper"):
        policy.infer(single)
    out = closed_loop(policy, execute=2).infer(single)  # the wrapper stacks them
    assert out.actions.shape == (1, 4) and out.fresh and out.frames.shape[0] == cfg.future_frames


def test_the_prompt_travels_in_each_observation():
    from wam.config import SamplerConfig

    policy, obs = _random_policy(SamplerConfig(steps=2))

    def act(prompt):
        policy.reset(3)  # the same noise each time
        return policy.infer(obs.replace(prompt=prompt)).actions

    a, b, again = act("close the drawer"), act("press the button"), act("close the drawer")
    assert np.allclose(a, again) and not np.allclose(a, b)  # each message's own instruction reaches the model
    assert list(policy._text) == ["press the button", "close the drawer"]  # each embedded once, kept by use


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
