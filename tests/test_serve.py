"""Tier 3, serving: `wam serve` over loopback (127.0.0.1 only, ports picked free), through the real
openpi-client and our own RemotePolicy; every wait is bounded."""

import threading
import urllib.error
import urllib.request
from dataclasses import replace

import msgpack
import numpy as np
import pytest
import torch
from websockets.sync.client import connect

from wam.config import SamplerConfig, preset
from wam.data.transforms import Normalizer
from wam.models.transformer import WAMTransformer
from wam.policy import PolicySession, WAMPolicy
from wam.runtime import FrameHistory
from wam.serve import wire
from wam.serve.client import RemotePolicy
from wam.serve.errors import TYPES
from wam.data.resize import fit
from wam.safety import ActionGuard, Guarded, NonFiniteAction
from wam.serve.batcher import Batcher
from wam.serve.server import PolicyServer, running
from wam.testing import concrete, RecordingEnv, fake_observation
from wam.types import Guide, Observation, ObservationError, PolicyMetadata, PolicyOutput

TIMEOUT = 30  # seconds any one wait may take


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model = WAMTransformer(concrete(preset("tiny")).model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    return WAMPolicy(model, norm, {}, SamplerConfig(steps=2, execute=2))


def _in_process(policy, seed: int = 0):
    """What a served session computes, in process: the policy's session behind the server's action guard."""
    return Guarded(PolicySession(policy, seed), ActionGuard.from_normalizer(policy.norm))


def _server(policy, **kw):
    return PolicyServer(policy.session, ActionGuard.from_normalizer(policy.norm), {"fingerprint": "test"}, **kw)


@pytest.fixture(scope="module")
def port(policy):
    server = _server(policy, max_message_mb=1.0)
    with running(server) as port:
        yield port
    server.close()


def _frame(policy, seed=0, prompt="close the drawer"):
    """One step's observation as a client sends it: the current frame of each camera."""
    return fake_observation(FrameHistory(policy).metadata, seed=seed, prompt=prompt)


class Raw:
    """A plain websocket client, to send anything at all."""

    def __init__(self, port, query=""):
        self.ws = connect(f"ws://127.0.0.1:{port}/{query}", open_timeout=TIMEOUT, max_size=None)
        self.metadata = wire.unpack(self.ws.recv(timeout=TIMEOUT))

    def ask(self, message):
        self.ws.send(message)
        reply = self.ws.recv(timeout=TIMEOUT)
        return reply if isinstance(reply, str) else wire.unpack(reply)

    def infer(self, obs: Observation):
        return self.ask(wire.pack(obs.to_dict()))

    def close(self):
        self.ws.close()


def _ok(reply, policy):
    assert "error" not in reply, reply
    meta = policy.metadata
    assert reply["actions"].dtype == np.float32 and reply["actions"].shape == (meta.action_horizon, meta.action_dim)
    assert np.isfinite(reply["actions"]).all()


# ------------------------------------------------------------------------------ the wire
def test_the_codec_reads_and_writes_openpis_encoding():
    msgpack_numpy = pytest.importorskip("openpi_client.msgpack_numpy", reason="openpi-client is not installed "
                                        "(pip install openpi-client==0.1.2 --no-deps; .ci/run does)")
    x = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros((2, 2, 3), np.uint8), "s": np.int64(3), "p": "x"}
    for packed in (msgpack_numpy.packb(x), wire.pack(x)):
        for got in (wire.unpack(packed), msgpack_numpy.unpackb(packed)):
            assert got["p"] == "x" and got["s"] == 3 and got["s"].dtype == np.int64
            for k in ("a", "b"):
                assert got[k].dtype == x[k].dtype and np.array_equal(got[k], x[k])
    for dtype in ("O", "V8", "c8", "<U3", "(2,)f4", "f4,f4", "M8[s]"):
        with pytest.raises(Exception) as e:
            wire.unpack(msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": dtype, b"shape": [1]}))
        assert getattr(e.value, "kind", None) == "bad_array", dtype
    with pytest.raises(TypeError, match="not sent"):
        wire.pack(np.array([1 + 2j]))


def test_fit_keeps_the_aspect_ratio_by_padding_or_crops_the_centre():
    image = np.full((20, 40, 3), 200, np.uint8)
    out = fit(image, (32, 32), "pad")
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out[8:24] == 200).all() and (out[:8] == 0).all() and (out[24:] == 0).all()  # 16 rows of image, centred
    assert fit(out, (32, 32)) is out
    stacked = fit(np.stack([image, image // 2]), (32, 32))
    assert stacked.shape == (2, 32, 32, 3) and (stacked[1, 8:24] == 100).all()
    image[:, :8] = 0  # a dark left fifth: cropped away
    assert (fit(image, (32, 32), "crop") >= 199).all()


# ------------------------------------------------------------------------------ the real openpi client
def test_openpi_client_handshake_and_infer(port, policy):
    client_mod = pytest.importorskip("openpi_client.websocket_client_policy", reason="openpi-client is not "
                                     "installed (pip install openpi-client==0.1.2 --no-deps; .ci/run does)")
    client = client_mod.WebsocketClientPolicy("127.0.0.1", port)
    meta = client.get_server_metadata()
    assert meta["cameras"] == list(policy.metadata.cameras) and meta["context_offsets"] == [0]
    assert meta["model_context_offsets"] == list(policy.metadata.context_offsets)
    assert meta["action_horizon"] == 4 and meta["fingerprint"] == "test" and meta["history"] == "server"
    out = client.infer(_frame(policy).to_dict())
    _ok(out, policy)
    assert out["policy_timing"]["infer_ms"] > 0 and out["server_timing"]["total_ms"] >= out["policy_timing"]["infer_ms"]
    assert "frames" not in out  # only with --return-frames
    bad = client.infer({"prompt": "close the drawer"})  # an unmodified client gets the typed error as a dict
    assert bad["error"]["type"] == "invalid_observation" and "actions" not in bad
    _ok(client.infer(_frame(policy, 1).to_dict()), policy)
    text = client_mod.WebsocketClientPolicy(f"ws://127.0.0.1:{port}/?errors=text")  # or has it raised
    with pytest.raises(RuntimeError, match="invalid_observation.*observation/state is missing"):
        text.infer({k: v for k, v in _frame(policy).to_dict().items() if k != "observation/state"})
    _ok(text.infer(_frame(policy).to_dict()), policy)


def test_healthz_answers_200_once_loaded(policy):
    server = _server(policy)
    with running(server) as port:
        url = f"http://127.0.0.1:{port}/healthz"
        assert urllib.request.urlopen(url, timeout=TIMEOUT).status == 200
        server.ready.clear()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=TIMEOUT)
        assert e.value.code == 503
    server.close()


# ------------------------------------------------------------------------------ sessions
def _episode(p, seed, prompts):
    p.reset(seed)
    return [p.infer(_frame_of(p, i, prompt)).actions for i, prompt in enumerate(prompts)]


def _frame_of(p, i, prompt):
    return fake_observation(p.metadata, seed=i, prompt=prompt)


def test_sessions_are_isolated_and_match_in_process(port, policy):
    prompts = {0: ["close the drawer"] * 3, 1: ["press the button"] * 2 + ["close the drawer"], 2: ["reach"] * 3}
    alone = {s: _episode(FrameHistory(_in_process(policy)), s, prompts[s]) for s in prompts}  # in process
    got, errors = {}, []

    def client(seed):
        try:
            with RemotePolicy(f"ws://127.0.0.1:{port}", timeout=TIMEOUT) as remote:
                got[seed] = _episode(remote, seed, prompts[seed])
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=client, args=(s,)) for s in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not errors and not any(t.is_alive() for t in threads)
    for s in prompts:  # the same as each session alone in process (client 1's last step: see below)
        for a, b in zip(got[s][:2] if s == 1 else got[s], alone[s][:2] if s == 1 else alone[s], strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[0][0], got[2][0])  # the seeds (and prompts) really differ
    # the session's history resets on a new prompt: step 2 of client 1 is a first step
    fresh = FrameHistory(_in_process(policy))
    fresh.reset(1)
    fresh.infer(_frame_of(fresh, 0, "press the button")), fresh.infer(_frame_of(fresh, 1, "press the button"))
    fresh.frames.clear()
    np.testing.assert_array_equal(got[1][2], fresh.infer(_frame_of(fresh, 2, "close the drawer")).actions)


# ------------------------------------------------------------------------------ batching across sessions
def _requests(policy):
    """Three requests of different prompts, histories and seeds; the second with a guide (real-time chunking)."""
    obs = [fake_observation(policy.metadata, seed=i, prompt=p) for i, p in enumerate(["close the drawer", "reach", "close the drawer"])]
    obs[1] = obs[1].replace(guide=Guide(actions=np.full((2, 4), 0.3, np.float32), weights=np.array([1.0, 0.5], np.float32)))
    return obs


def test_infer_batch_equals_each_request_alone(policy):
    obs = _requests(policy)
    alone = [policy.infer(o, torch.Generator().manual_seed(10 + i)) for i, o in enumerate(obs)]
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    together = policy.infer_batch(obs, gens)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
        assert a.frames is None or np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
    np.testing.assert_allclose(together[1].actions[0], 0.3, atol=1e-5)  # the guide held only its own request
    assert not np.allclose(together[0].actions[0], 0.3, atol=1e-3)
    # each generator moved on exactly as the unbatched path moves it
    after = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    for o, g in zip(obs, after):
        policy.infer(o, g)
    assert all(torch.equal(g.get_state(), h.get_state()) for g, h in zip(gens, after))


def _concurrently(fns, timeout=TIMEOUT):
    """Runs the functions on threads released together; returns their results (or exceptions)."""
    barrier, got = threading.Barrier(len(fns)), [None] * len(fns)

    def run(i):
        barrier.wait(timeout)
        try:
            got[i] = fns[i]()
        except Exception as e:  # noqa: BLE001 (returned)
            got[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads)
    return got


def test_the_batcher_batches_sessions_and_a_bad_request_gets_only_its_own_error(policy):
    batcher = Batcher(policy, max_batch=8, max_wait_ms=500)  # a long wait: the four requests surely meet
    try:
        sessions = [batcher.session(seed=20 + i) for i in range(4)]
        obs = _requests(policy)
        bad = obs[0].replace(images={})  # no camera: fails its check inside the batch
        got = _concurrently([lambda s=s, o=o: s.infer(o) for s, o in zip(sessions, [*obs, bad])])
        assert isinstance(got[3], ObservationError) and "is missing" in str(got[3])
        for i in range(3):
            alone = policy.infer(obs[i], torch.Generator().manual_seed(20 + i))
            np.testing.assert_allclose(got[i].actions, alone.actions, atol=1e-5)
        assert (batcher.batches, batcher.requests) == (1, 3)  # one forward pass for the three good ones
        assert sessions[3].infer(obs[0]).actions.shape == (4, 4)  # the failing session goes on working
    finally:
        batcher.close()
    single = Batcher(policy, max_batch=1)
    try:
        sessions = [single.session(seed=i) for i in range(3)]
        _concurrently([lambda s=s, o=o: s.infer(o) for s, o in zip(sessions, obs)])
        assert (single.batches, single.requests) == (3, 3)  # max_batch 1: no batching
    finally:
        single.close()


def test_a_batch_that_fails_is_rerun_alone_from_the_same_noise(policy, monkeypatch):
    batcher = Batcher(policy, max_batch=8, max_wait_ms=500)
    real = policy.infer_batch

    def fails_when_batched(observations, generators):
        for g in generators:
            torch.randn(3, generator=g)  # draws some noise first, as a real failure might
        if len(observations) > 1:
            raise RuntimeError("a batch-only failure")
        return real(observations, generators)

    monkeypatch.setattr(policy, "infer_batch", fails_when_batched)
    try:
        sessions = [batcher.session(seed=30 + i) for i in range(2)]
        obs = _requests(policy)[:2]
        got = _concurrently([lambda s=s, o=o: s.infer(o) for s, o in zip(sessions, obs)])
        monkeypatch.setattr(policy, "infer_batch", real)
        for i in range(2):
            g = torch.Generator().manual_seed(30 + i)
            torch.randn(3, generator=g)
            np.testing.assert_allclose(got[i].actions, policy.infer(obs[i], g).actions, atol=1e-5)
    finally:
        batcher.close()


def test_a_closed_batcher_answers_instead_of_hanging(policy):
    batcher = Batcher(policy, max_batch=2)
    session = batcher.session()
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.infer(_requests(policy)[0])


def test_batched_server_sessions_match_in_process_and_a_bad_client_is_answered_alone(policy):
    batcher = Batcher(policy, max_batch=8, max_wait_ms=200)
    server = PolicyServer(batcher.session, ActionGuard.from_normalizer(policy.norm), {"fingerprint": "test"}, batcher=batcher)
    prompts = {0: ["close the drawer"] * 3, 1: ["press the button"] * 3, 2: ["reach"] * 3}
    alone = {s: _episode(FrameHistory(_in_process(policy)), s,
                         prompts[s]) for s in prompts}
    with running(server) as port:
        def client(seed):
            with RemotePolicy(f"ws://127.0.0.1:{port}", timeout=TIMEOUT) as remote:
                return _episode(remote, seed, prompts[seed])

        def bad_client():
            raw = Raw(port)
            try:
                obs = _frame(policy).to_dict()
                obs["observation/state"] = np.full(4, np.nan, np.float32)
                return [raw.ask(wire.pack(obs)) for _ in range(3)] + [raw.infer(_frame(policy))]
            finally:
                raw.close()

        got = _concurrently([lambda s=s: client(s) for s in prompts] + [bad_client])
    server.close()
    assert all(r["error"]["type"] == "invalid_observation" for r in got[3][:3]), got[3]
    _ok(got[3][3], policy)  # and its connection keeps working
    for s in prompts:
        for a, b in zip(got[s], alone[s], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert batcher.batches < batcher.requests  # some requests really shared a forward pass


def test_remote_policy_metadata_and_errors(port, policy):
    with RemotePolicy(f"ws://127.0.0.1:{port}", history="client", timeout=TIMEOUT) as remote:
        assert remote.metadata == policy.metadata
        obs = fake_observation(policy.metadata)
        remote.reset(3)
        session = _in_process(policy)
        session.reset(3)
        np.testing.assert_array_equal(remote.infer(obs).actions, session.infer(obs).actions)
        with pytest.raises(ObservationError, match="observation/state: expected float32 \\(4,\\)"):
            remote.infer(obs.replace(state=np.zeros(7, np.float32)))
        big = obs.replace(images={c: np.zeros((2, 64, 96, 3), np.uint8) for c in obs.images})  # resized client side
        assert remote.infer(big).actions.shape == (4, 4)


def test_guide_passes_through_to_guided_inference(port, policy):
    obs = fake_observation(policy.metadata)
    guide = {"guide/actions": np.full((2, 4), 0.5, np.float32), "guide/weights": np.ones(2, np.float32)}
    raw = Raw(port, "?history=client")
    raw.ask(wire.pack({"endpoint": "reset", "seed": 5}))
    reply = raw.ask(wire.pack({**obs.to_dict(), **guide}))
    session = _in_process(policy, 5)
    want = session.infer(Observation.from_dict({**obs.to_dict(), **guide}, policy.metadata)).actions
    np.testing.assert_array_equal(reply["actions"], want)
    raw.ask(wire.pack({"endpoint": "reset", "seed": 5}))
    assert not np.array_equal(raw.infer(obs)["actions"], want)  # the guide changed the chunk
    raw.close()


# ------------------------------------------------------------------------------ bad input
def _bad_messages(policy):
    good = _frame(policy).to_dict()
    cam = next(k for k in good if k.startswith("observation/images/"))
    drop = lambda key: wire.pack({k: v for k, v in good.items() if k != key})  # noqa: E731
    with_ = lambda **kw: wire.pack({**good, **{k.replace("__", "/"): v for k, v in kw.items()}})  # noqa: E731
    return {
        "missing state": (drop("observation/state"), "invalid_observation", "observation/state is missing"),
        "missing camera": (drop(cam), "invalid_observation", f"{cam} is missing"),
        "missing prompt": (drop("prompt"), "invalid_observation", "prompt is missing"),
        "unknown key": (with_(**{"observation__wrist": good[cam]}), "invalid_observation", "unknown key"),
        "image dtype": (wire.pack({**good, cam: good[cam].astype(np.float32)}), "invalid_observation", "expected uint8"),
        "image shape": (wire.pack({**good, cam: good[cam][:, :, 0]}), "invalid_observation", "expected uint8"),
        "state size": (with_(observation__state=np.zeros(7, np.float32)), "invalid_observation", "expected float32 \\(4,\\)"),
        "state dtype": (with_(observation__state="1,2,3,4"), "invalid_observation", "observation/state"),
        "NaN state": (with_(observation__state=np.array([0, np.nan, 0, 0], np.float32)), "invalid_observation", "finite"),
        "prompt not str": (with_(prompt=12), "invalid_observation", "prompt: expected the instruction"),
        "not msgpack": (b"\xc1\xff\x00", "not_msgpack", "not one msgpack object"),
        "truncated": (wire.pack(good)[:-5], "not_msgpack", "not one msgpack object"),
        "text frame": ("hello", "text_frame", "binary msgpack"),
        "too large": (wire.pack({**good, "pad": b"\0" * (3 * 2**19)}), "message_too_large", "over the server's"),
        "unknown endpoint": (with_(endpoint="train"), "unknown_endpoint", "'train'"),
        "not a dict": (wire.pack([1, 2]), "bad_message", "dict of str keys"),
        "bad seed": (wire.pack({"endpoint": "reset", "seed": "x"}), "bad_message", "seed"),
        "object array": (msgpack.packb({**{k: v for k, v in good.items() if k != cam}, cam: {
            b"__ndarray__": True, b"data": b"", b"dtype": "O", b"shape": [0]}}, default=wire._encode), "bad_array", "refused"),
        "size mismatch": (msgpack.packb({"x": {b"__ndarray__": True, b"data": b"\0" * 3, b"dtype": "<f4", b"shape": [2]}}),
                          "bad_array", "needs 8 bytes"),
    }


def test_every_bad_input_gets_its_typed_error_and_the_connection_keeps_working(port, policy):
    raw, other = Raw(port), Raw(port)
    cases = _bad_messages(policy)
    for name, (message, kind, match) in cases.items():
        reply = raw.ask(message)
        assert reply.get("error", {}).get("type") == kind, (name, reply)
        assert set(reply["error"]) == {"type", "message"}
        import re

        assert re.search(match, reply["error"]["message"]), (name, reply["error"]["message"])
        _ok(raw.infer(_frame(policy, 1)), policy)  # the same connection keeps working
    _ok(other.infer(_frame(policy, 2)), policy)  # and another client noticed nothing
    # images of another size are resized on the server (letterbox), not refused
    frame = _frame(policy)
    _ok(raw.infer(frame.replace(images={c: np.zeros((48, 64, 3), np.uint8) for c in frame.images})), policy)
    raw.close(), other.close()


def test_a_message_over_twice_the_limit_closes_only_its_connection(port, policy):
    raw, other = Raw(port), Raw(port)
    raw.ws.send(b"\0" * (2 * 2**20 + 1))
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as e:
        raw.ws.recv(timeout=TIMEOUT)
    assert e.value.rcvd.code == 1009  # message too big
    _ok(other.infer(_frame(policy)), policy)
    other.close()


# ------------------------------------------------------------------------------ fuzz
def _fuzz(port, policy, examples):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    good = _frame(policy).to_dict()
    keys = [*good, "endpoint", "seed", "guide/actions", "guide/weights", "observation/images/wrist"]
    def array(dtype, shape, fill):
        with np.errstate(all="ignore"):
            return np.full(shape, fill).astype(dtype)

    arrays = st.builds(array,
                       st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "float16"]),
                       st.lists(st.integers(0, 5), max_size=4).map(tuple),
                       st.sampled_from([0, 1, 255, -1, np.nan, np.inf, 1e30]))
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(), st.text(max_size=20),
                       st.binary(max_size=40), arrays, st.sampled_from(list(good.values())),
                       st.sampled_from(["infer", "reset", "bench", ""]))
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                          max_leaves=8)
    mutated = st.builds(lambda drop, add: {**{k: v for k, v in good.items() if k not in drop}, **add},
                        st.sets(st.sampled_from(list(good))), st.dictionaries(st.sampled_from(keys), values, max_size=3))
    hostile_arrays = st.builds(lambda d, dt, sh: {b"__ndarray__": True, b"data": d, b"dtype": dt, b"shape": sh},
                               st.binary(max_size=64), st.sampled_from(["<f4", "|u1", "O", "V4", "<c8", "x", "<U2", "|b1"]),
                               st.lists(st.integers(-2, 2**40), max_size=3))
    messages = st.one_of(
        st.binary(max_size=200),
        st.text(max_size=50),
        values.map(lambda v: msgpack.packb(v, default=wire._encode)),
        mutated.map(lambda v: msgpack.packb(v, default=wire._encode)),
        st.dictionaries(st.sampled_from(keys), hostile_arrays, min_size=1, max_size=2).map(msgpack.packb),
    )
    raw = Raw(port)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(messages)
    def one(message):
        reply = raw.ask(message)
        assert isinstance(reply, dict)
        if "error" in reply:
            assert reply["error"]["type"] in TYPES and reply["error"]["type"] != "internal_error", reply
        elif "actions" in reply:
            assert np.isfinite(reply["actions"]).all()
        else:
            assert reply.get("reset") is True

    one()
    _ok(raw.infer(_frame(policy)), policy)  # the fuzzed connection still answers
    fresh = Raw(port)
    _ok(fresh.infer(_frame(policy)), policy)  # and so does a new one
    raw.close(), fresh.close()


def test_fuzz_hostile_messages(port, policy):
    _fuzz(port, policy, 300)


@pytest.mark.slow
def test_fuzz_hostile_messages_long(port, policy):
    _fuzz(port, policy, 10_000)


# ------------------------------------------------------------------------------ safety
class _Fixed:
    """A stub policy that returns the given chunk, whatever it sees."""

    def __init__(self, actions, value=None):
        self.actions, self.value = np.asarray(actions, np.float32), value
        self.metadata = PolicyMetadata(cameras=("top",), image_size=(8, 8), context_offsets=(0,), state_dim=0,
                                       action_dim=self.actions.shape[1], action_horizon=len(self.actions))

    def reset(self, seed=None):
        pass

    def infer(self, obs):
        return PolicyOutput(actions=self.actions.copy(), value=self.value, timing={"infer_ms": 0.1})


def _stub_obs():
    return {"observation/images/top": np.zeros((8, 8, 3), np.uint8), "prompt": "go"}


def test_action_guard_clips_to_the_bounds_with_a_margin_and_refuses_non_finite():
    guard = ActionGuard([-1, 0], [1, 2], margin=0.05)
    np.testing.assert_allclose(guard(np.array([[5, -5], [0.5, 1]])), [[1.1, -0.1], [0.5, 1]], rtol=1e-6)
    for bad in (np.array([[np.nan, 0]]), np.array([[0, np.inf]])):
        with pytest.raises(NonFiniteAction, match="non-finite"):
            guard(bad)
    with pytest.raises(NonFiniteAction, match="non-finite value"):
        guard(np.zeros((1, 2)), value=float("nan"))


def test_the_server_clips_and_never_sends_nan(caplog):
    clip = PolicyServer(lambda: _Fixed([[3.0, -3.0]]), ActionGuard([-1, -1], [1, 1]))
    nan = PolicyServer(lambda: _Fixed([[np.nan, 0.0]]), ActionGuard([-1, -1], [1, 1]))
    with running(clip) as port:
        reply = Raw(port).ask(wire.pack(_stub_obs()))
        np.testing.assert_allclose(reply["actions"], [[1.1, -1.1]], rtol=1e-6)
    with running(nan) as port, caplog.at_level("ERROR", logger="wam.serve"):
        raw = Raw(port)
        for _ in range(2):  # logged, answered with a typed error, and the server stays up
            reply = raw.ask(wire.pack(_stub_obs()))
            assert reply["error"]["type"] == "non_finite_action" and "actions" not in reply
        assert "non_finite_action" in caplog.text
        assert Raw(port).ask(wire.pack({"endpoint": "reset"})) == {"reset": True, "seed": None}
    clip.close(), nan.close()


# ------------------------------------------------------------------------------ the API key
def test_api_key_is_required_when_set(policy):
    from websockets.exceptions import InvalidStatus

    server = _server(policy, api_key="s3cret")
    with running(server) as port:
        url = f"ws://127.0.0.1:{port}"
        for key in (None, "wrong"):
            with pytest.raises(InvalidStatus) as e:
                RemotePolicy(url, api_key=key, timeout=TIMEOUT)
            assert e.value.response.status_code == 401
        with RemotePolicy(url, api_key="s3cret", timeout=TIMEOUT) as remote:
            assert remote.infer(_frame(policy)).actions.shape == (4, 4)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT).status == 200
        try:
            from openpi_client.websocket_client_policy import WebsocketClientPolicy
        except ImportError:
            return
        with pytest.raises(InvalidStatus):
            WebsocketClientPolicy("127.0.0.1", port)
        _ok(WebsocketClientPolicy("127.0.0.1", port, api_key="s3cret").infer(_frame(policy).to_dict()), policy)
    server.close()


# ------------------------------------------------------------------------------ wam eval --remote
def test_eval_remote_equals_in_process(tiny_dataset, tmp_path, port):
    from wam.checkpoint import read_config
    from wam.config import model_from_dict
    from wam.envs import make_env
    from wam.evaluate import EpisodeJob, EvalConfig, Worker, WorkerSetup, evaluate
    from wam.serve.server import ServeConfig, from_checkpoint
    from wam.train import train

    P = concrete(preset("tiny"))
    ckpt = train(replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2), P.model, P.sampler, progress=False)
    config = read_config(ckpt)
    sampler = SamplerConfig(**config["sampler"]).resolve(model_from_dict(config["model"]).recipe)
    server = from_checkpoint(ServeConfig(ckpt, port=0))
    with running(server) as served:
        url = f"ws://127.0.0.1:{served}"
        kw = dict(checkpoint=ckpt, tasks="drawer-close-v3,button-press-topdown-v3", episodes=2, max_steps=8,
                  workers=1, videos=0)
        local = evaluate(EvalConfig(**kw, out=tmp_path / "local"), progress=False)
        remote = evaluate(EvalConfig(**kw, out=tmp_path / "remote", remote=url), progress=False)
        same = lambda s: [(e["task"], e["seed"], e["success"], e["steps"]) for e in s["episodes"]]  # noqa: E731
        assert same(local) == same(remote) and len(same(local)) == 4
        assert remote["remote"] == url and remote["server"]["fingerprint"] == server.info["fingerprint"]
        # the executed actions, step by step, through the evaluation's own worker
        executed = []
        for setup in (WorkerSetup(str(ckpt), sampler), WorkerSetup(str(ckpt), sampler, remote=url)):
            worker = Worker(setup)
            env = worker.envs["metaworld:drawer-close-v3", None] = RecordingEnv(make_env("metaworld:drawer-close-v3", P.model.cameras, P.model.image_size))
            worker.run(EpisodeJob(env="metaworld:drawer-close-v3", task="drawer-close-v3", seed=100_001, max_steps=7))
            executed.append(np.stack(env.actions))
            env.close()
        assert executed[0].shape == (7, 4) and len({a.tobytes() for a in executed[0]}) > 1
        np.testing.assert_array_equal(executed[0], executed[1])
        with pytest.raises(ValueError, match="server's sampler is used; --sampler.steps"):
            evaluate(EvalConfig(**kw, remote=url, sampler=replace(EvalConfig(ckpt).sampler, steps=3)), progress=False)
    server.close()
    with pytest.raises(ValueError, match="serves weights test, not this checkpoint's"):
        evaluate(EvalConfig(**kw, remote=f"ws://127.0.0.1:{port}"), progress=False)


def test_cli_serve_has_its_flags(capsys):
    from wam.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--return-frames", "--max-message-mb", "--api-key", "--sampler.device", "--max-batch",
                 "--max-wait-ms"):
        assert flag in text, flag
    from pathlib import Path

    from wam.serve.server import ServeConfig

    with pytest.raises(ValueError, match="max_batch >= 1"):
        ServeConfig(Path("ckpt"), max_batch=0)
