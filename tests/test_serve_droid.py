"""Tier 3, serving the RoboArena/DROID schema, recording and replay, over loopback (127.0.0.1, free ports);
every wait is bounded."""

import json

import numpy as np
import pytest
from test_serve import TIMEOUT, Raw, _ok, _server, policy  # noqa: F401 (policy is a fixture)

from wam.serve import wire
from wam.serve.schemas import DroidMapping, StateSlice, make_schema
from wam.serve.server import running

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
