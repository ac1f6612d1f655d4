"""Tier 3, serving the RoboArena/DROID schema, recording and replay, over loopback (127.0.0.1, free ports);
every wait is bounded."""

import json

import numpy as np
import pytest
from test_serve import TIMEOUT, Raw, _ok, _server, policy  # noqa: F401 (policy is a fixture)

from wam.serve import wire
from wam.serve.schemas import DroidMapping, StateSlice, make_schema
from wam.serve.server import running
from wam.testing import concrete

MAPPING = {"cameras": {"exterior_image_1_left": "oblique", "wrist_image_left": "top"},
           "state": [{"key": "joint_position", "stop": 3}, {"key": "gripper_position"}], "action_space": "cartesian_velocity"}


def _droid(seed=0, session="a", prompt="close the drawer", size=(180, 320)):
    rng = np.random.default_rng(seed)
    return {"observation/exterior_image_1_left": rng.integers(0, 255, (*size, 3), np.uint8),
            "observation/wrist_image_left": rng.integers(0, 255, (*size, 3), np.uint8),
            "observation/joint_position": rng.normal(size=7).astype(np.float32),
            "observation/gripper_position": np.array([0.5], np.float32),
            "observation/cartesian_position": np.zeros(6, np.float32),
            "prompt": prompt, "session_id": session, "endpoint": "infer"}


def _droid_server(policy, **kw):
    return _server(policy, schema=make_schema("droid", policy.metadata, DroidMapping.from_dict(MAPPING)), **kw)


def test_a_mapping_that_cannot_fit_is_refused_in_one_line(policy, tmp_path):
    with pytest.raises(ValueError, match=r"reads a state of 4, the mapping assembles 8 \(joint_position\[0:7\] \+ gripper"):
        make_schema("droid", policy.metadata)  # the default: all 7 joints and the gripper
    with pytest.raises(ValueError, match=r"reads cameras \['oblique', 'top'\].*unfed \['top'\]"):
        DroidMapping({"exterior_image_1_left": "oblique"}, (StateSlice("joint_position", 0, 4),)).check(policy.metadata)
    with pytest.raises(ValueError, match="outside its 1 values"):
        StateSlice("gripper_position", 0, 2)
    (tmp_path / "m.json").write_text(json.dumps(MAPPING))
    assert make_schema("droid", policy.metadata, tmp_path / "m.json").mapping == DroidMapping.from_dict(MAPPING)


def test_droid_client_gets_actions_and_the_handshake(policy):
    server = _droid_server(policy)
    with running(server) as port:
        client = Raw(port)
        meta = client.metadata
        assert meta["schema"] == "droid" and meta["needs_session_id"] is True and meta["image_resolution"] == [32, 32]
        assert meta["n_external_cameras"] == 1 and meta["needs_wrist_camera"] is True
        assert meta["action_space"] == "cartesian_velocity" and meta["droid_mapping"]["cameras"] == MAPPING["cameras"]
        _ok(client.ask(wire.pack(_droid())), policy)  # 180 x 320 images, letterboxed by the server
        bad = _droid()
        del bad["observation/wrist_image_left"]
        err = client.ask(wire.pack(bad))["error"]
        assert err["type"] == "invalid_observation" and "observation/wrist_image_left is missing" in err["message"]
        bad = {**_droid(), "observation/joint_position": np.zeros(6, np.float32)}
        err = client.ask(wire.pack(bad))["error"]
        assert "observation/joint_position: expected float (7,), got float32 (6,)" in err["message"]
        err = client.ask(wire.pack({**_droid(), "observation/images/top": np.zeros((32, 32, 3), np.uint8)}))["error"]
        assert err["type"] == "invalid_observation" and "['observation/images/top']" in err["message"]
        assert client.ask(wire.pack({"endpoint": "reset", "session_id": "a"}))["reset"] is True
        _ok(client.ask(wire.pack(_droid())), policy)
        client.close()
    server.close()


def test_a_new_session_id_starts_a_new_session(policy):
    """A new session_id on a connection gives what a fresh connection gives (history and generator reset); the
    same session_id goes on."""
    server = _droid_server(policy)
    with running(server) as port:
        def run(client, sessions):
            return [client.ask(wire.pack(_droid(i % 2, s)))["actions"] for i, s in enumerate(sessions)]

        fresh = run(Raw(port), ["x", "x"])
        renewed = run(Raw(port), ["a", "a", "b", "b"])
        for got, want in zip(renewed, fresh + fresh):
            np.testing.assert_array_equal(got, want)
        same = run(Raw(port), ["a", "a", "a", "a"])
        assert not np.array_equal(same[2], fresh[0])
    server.close()


# ------------------------------------------------------------------------------ record and replay
def test_record_then_replay_gives_identical_actions(tiny_dataset, tmp_path):
    from dataclasses import replace

    from wam.config import preset
    from wam.serve.replay import ReplayConfig, read_recording, replay
    from wam.serve.server import ServeConfig, from_checkpoint
    from wam.train import train

    P = concrete(preset("tiny"))
    ckpt = train(replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2), P.model, P.sampler, progress=False)
    (tmp_path / "m.json").write_text(json.dumps(MAPPING))
    rec = tmp_path / "rec"
    server = from_checkpoint(ServeConfig(ckpt, schema="droid", droid_mapping=tmp_path / "m.json", record=rec))
    sent = []
    with running(server) as port:
        client = Raw(port)
        assert client.ask(wire.pack({"endpoint": "reset", "seed": 3, "session_id": "a"}))["reset"] is True
        for i, sid in enumerate(["a", "a", "a", "b", "b"]):
            sent.append(client.ask(wire.pack(_droid(i, sid, size=(48, 64))))["actions"])
        assert "error" in client.ask(wire.pack({**_droid(), "observation/joint_position": "x"}))
        client.close()
        other = Raw(port, "?history=server")
        sent += [other.ask(wire.pack(_droid(i, "z", size=(48, 64))))["actions"] for i in range(2)]
        other.close()
    server.close()
    info, options, messages = read_recording(rec)
    assert info["schema"] == "droid" and sorted(options) == [1, 2] and [len(m) for m in messages.values()] == [7, 2]
    np.testing.assert_array_equal(messages[1][1][1]["actions"], sent[0])
    assert not any(p.suffix in (".npy", ".pkl", ".pickle") for p in rec.iterdir())

    result = replay(ReplayConfig(rec, ckpt))
    assert result["identical"] and result["same_weights"] and result["same_sampler"], result
    assert {k: v["chunks"] for k, v in result["sessions"].items()} == {"c00001/a": 3, "c00001/b": 2, "c00002/z": 2}
    # a recording whose actions differ is reported as such
    reply = next(rec.glob("c00001-s000003-reply.msgpack"))
    changed = wire.unpack(reply.read_bytes())
    changed["actions"] = changed["actions"] + np.float32(0.5)
    reply.write_bytes(wire.pack(changed))
    result = replay(ReplayConfig(rec, ckpt))
    a = result["sessions"]["c00001/a"]
    assert not result["identical"] and not a["identical"] and abs(a["max_abs"] - 0.5) < 1e-5 and 0 < a["mean_abs"] < 0.5
    assert result["sessions"]["c00001/b"]["identical"]


def test_recording_stops_at_its_limit_with_a_log_line(tmp_path, caplog):
    from wam.serve.record import Recorder

    recorder = Recorder(tmp_path / "rec", 0.01, {"schema": "wam"})  # 10 KiB
    conn = recorder.open({"history": "server"})
    recorder.request(conn, 1, b"\x80" * 4000)
    recorder.reply(conn, 1, {"actions": np.zeros((4, 4), np.float32)})
    with caplog.at_level("WARNING", logger="wam.serve"):
        recorder.request(conn, 2, b"\x80" * 8000)
        recorder.reply(conn, 2, {"actions": np.zeros((4, 4), np.float32)})
    assert recorder.stopped and "recording stopped: --record-max-mb 0.0" in caplog.text
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
        "c00001-open.msgpack", "c00001-s000001-reply.msgpack", "c00001-s000001-request.msgpack", "server.msgpack"]
    with pytest.raises(ValueError, match="not empty"):
        Recorder(tmp_path / "rec", 1, {})


def test_cli_has_the_schema_record_and_replay_flags(capsys):
    from wam.cli import main

    for argv, flags in ((["serve", "--help"], ("--schema", "--droid-mapping", "--record", "--record-max-mb")),
                        (["replay", "--help"], ("--record` wrote", "checkpoint", "--sampler.steps"))):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert all(f in text for f in flags), (argv, text)
