"""lerobot policies in our harness, without lerobot: reading a lerobot checkpoint folder (wam/lerobot/policy.py),
`wam eval --policy lerobot:PATH`'s checks and errors, and `wam bench peers`' table, plot and log parsing. Running
a lerobot policy needs lerobot: tests/test_lerobot_peers.py, in the lerobot venv."""

import json

import pytest
import torch
from safetensors.torch import save_file

from wam.bench.peers import STEP_LOG, PeersBenchConfig, _parse_step, plot, table
from wam.lerobot.policy import LeRobotCheckpointError, eval_facts, metadata_of, parameter_count, read_checkpoint


def _features(cameras=("oblique", "top"), size=(96, 96), state=4, action=4):
    inputs = {f"observation.images.{c}": {"type": "VISUAL", "shape": [3, *size]} for c in cameras}
    if state:
        inputs["observation.state"] = {"type": "STATE", "shape": [state]}
    return {"input_features": inputs, "output_features": {"action": {"type": "ACTION", "shape": [action]}}}


def _folder(tmp_path, kind="act", dataset=None, **features):
    """A lerobot `pretrained_model` folder as lerobot-train writes it (config, train config, weights)."""
    path = tmp_path / "pretrained_model"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"type": kind, "n_obs_steps": 1, **_features(**features)}))
    (path / "train_config.json").write_text(json.dumps({"steps": 30, "dataset": {"root": str(dataset) if dataset else None}}))
    save_file({"a.weight": torch.zeros(3, 5), "b": torch.zeros(7)}, path / "model.safetensors")
    return path


def test_metadata_from_the_features():
    meta = metadata_of({"type": "act", **_features()})
    assert meta.cameras == ("oblique", "top") and meta.image_size == (96, 96)
    assert (meta.state_dim, meta.action_dim, meta.action_horizon, meta.recipe) == (4, 4, 1, "lerobot-act")
    assert metadata_of({"type": "act", **_features(state=0)}).state_dim == 0


def test_features_that_do_not_fit_our_simulator_are_refused():
    bad = _features()
    bad["input_features"]["observation.image"] = bad["input_features"].pop("observation.images.top")
    with pytest.raises(LeRobotCheckpointError, match=r"camera 'observation.image'.*observation.images.<camera>"):
        metadata_of({"type": "act", **bad})
    mixed = _features()
    mixed["input_features"]["observation.images.top"]["shape"] = [3, 64, 64]
    with pytest.raises(LeRobotCheckpointError, match="different sizes"):
        metadata_of({"type": "act", **mixed})
    with pytest.raises(LeRobotCheckpointError, match="reads no camera"):
        metadata_of({"type": "act", **_features(cameras=())})
    privileged = _features()  # what lerobot-train lists by itself on `wam collect`'s data
    privileged["input_features"]["observation.environment_state"] = {"type": "ENV", "shape": [17]}
    with pytest.raises(LeRobotCheckpointError, match="reads observation.environment_state .*--policy.input_features"):
        metadata_of({"type": "act", **privileged})


def test_the_peers_train_their_policies_on_cameras_and_state_only(tiny_dataset, tmp_path):
    """lerobot-train would list observation.environment_state as an input of ACT and Diffusion Policy: the bench
    names the inputs itself, as lerobot would without that key (tests/test_lerobot_peers.py runs it)."""
    from wam.bench.peers import _train_args, policy_inputs
    from wam.config import preset
    from wam.testing import concrete

    features = json.loads((tiny_dataset / "meta/info.json").read_text())["features"]
    assert "observation.environment_state" in features
    inputs = policy_inputs(features)
    m = concrete(preset("tiny")).model  # the tiny dataset's cameras, channel first as lerobot reads them
    assert inputs == _features(cameras=m.cameras, size=(m.image_size, m.image_size))["input_features"]
    assert metadata_of({"type": "act", "input_features": inputs,
                        "output_features": {"action": {"type": "ACTION", "shape": [4]}}}).state_dim == 4
    args = _train_args(PeersBenchConfig(), "act", tiny_dataset, tmp_path / "out", 2, 2)
    assert f"--policy.input_features={json.dumps(inputs)}" in args


def test_unknown_types_and_other_folders_are_refused(tmp_path):
    with pytest.raises(LeRobotCheckpointError, match="config.json is missing"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {}, "train": {}}))  # a wam checkpoint
    with pytest.raises(LeRobotCheckpointError, match="no \"type\".*wam eval"):
        read_checkpoint(tmp_path)
    with pytest.raises(LeRobotCheckpointError, match=r"type 'pi0' is not supported; expected one of act, diffusion"):
        read_checkpoint(_folder(tmp_path / "pi0", kind="pi0"))
    with pytest.raises(LeRobotCheckpointError, match="wam policy: evaluate it natively"):
        read_checkpoint(_folder(tmp_path / "wam", kind="wam"))


def test_eval_facts_come_from_the_training_dataset(tmp_path, tiny_dataset):
    from wam.data.reader import read_dataset

    rec = read_dataset(tiny_dataset)
    folder = _folder(tmp_path, dataset=tiny_dataset, cameras=rec.camera_names, size=rec.cameras[0].shape[:2])
    facts = eval_facts(folder)
    assert facts["data"]["tasks"] == ["button-press-topdown-v3", "drawer-close-v3"]
    assert facts["data"]["seeds"] == [min(rec.seeds), max(rec.seeds)] and facts["model"]["recipe"] == "lerobot-act"
    assert facts["parameters"] == 22 and parameter_count(folder) == 22
    with pytest.raises(LeRobotCheckpointError, match=r"reads cameras \['front'\] but its dataset"):
        eval_facts(_folder(tmp_path / "other", dataset=tiny_dataset, cameras=("front",)))
    with pytest.raises(LeRobotCheckpointError, match="is not on this machine"):
        eval_facts(_folder(tmp_path / "gone", dataset=tmp_path / "nowhere"))
    with pytest.raises(LeRobotCheckpointError, match="names no dataset root"):
        eval_facts(_folder(tmp_path / "none"))


def test_eval_policy_flag_errors_are_one_line(cli_error, tmp_path, tiny_dataset):
    cases = [(["--policy", "openpi:x"], "expected lerobot:PATH"),
             (["runs/x", "--policy", "lerobot:y"], "one of them"),
             (["--policy", f"lerobot:{_folder(tmp_path / 'pi0', kind='pi0', dataset=tiny_dataset)}"], "not supported"),
             (["--policy", f"lerobot:{_folder(tmp_path / 'ok', dataset=tiny_dataset)}", "--sampler.execute", "4"],
              "cannot apply to a lerobot policy")]
    for args, message in cases:
        assert message in cli_error(["eval", *args, "--out", str(tmp_path / "eval")]), args


def test_eval_refuses_cameras_our_simulator_does_not_render(cli_error, tmp_path, tiny_dataset):
    """A policy trained on lerobot's own Meta-World data (one 'observation.image') cannot be scored here."""
    from wam.data.reader import read_dataset

    rec = read_dataset(tiny_dataset)
    folder = _folder(tmp_path, dataset=tiny_dataset, cameras=rec.camera_names, size=rec.cameras[0].shape[:2])
    config = json.loads((folder / "config.json").read_text())
    config["input_features"]["observation.image"] = config["input_features"].pop(f"observation.images.{rec.camera_names[0]}")
    (folder / "config.json").write_text(json.dumps(config))
    assert "observation.images.<camera>" in cli_error(["eval", "--policy", f"lerobot:{folder}", "--out",
                                                       str(tmp_path / "eval")])


def test_lerobot_step_logs_parse():
    line = ("INFO 2026-12-02 03:44:05 ot_train.py:435 step:1K smpl:8K ep:120 epch:0.30 loss:1.033 grdn:9.135 "
            "lr:2.6e-06 updt_s:5.218 data_s:0.012")
    ((step, update, data),) = STEP_LOG.findall(line)
    assert _parse_step(step) == 1000 and float(update) == 5.218 and float(data) == 0.012
    assert _parse_step("200") == 200 and _parse_step("1.2K") == 1200


def test_peers_config_checks():
    with pytest.raises(ValueError, match="unknown lerobot policy 'smolvla'"):
        PeersBenchConfig(peers="act,smolvla")
    assert PeersBenchConfig(peers="").peer_types == ()


def test_table_and_plot(tmp_path):
    tasks = {t: {"success_rate": r, "ci95": [max(0, r - 0.2), min(1, r + 0.2)], "successes": int(20 * r), "episodes": 20}
             for t, r in (("reach-v3", 0.25), ("drawer-close-v3", 1.0))}
    row = {"name": "wam", "label": "wam (decoupled)", "mean_success": 0.625, "tasks": tasks, "train_minutes": 9.8,
           "train_steps": 1700, "ms_per_chunk": 41.0}
    dp = {**row, "name": "lerobot-diffusion", "label": "lerobot DP", "ms_per_chunk_default_steps": 7800.0}
    result = {"budget_minutes": 9.8, "episodes_per_task": 20,
              "policies": [row, dp, {"name": "lerobot-act", "unfinished": True, "train_steps": 10, "of": 100}]}
    text = table(result)
    assert "| wam (decoupled) | **0.62** | 0.25 [0.05, 0.45] | 1.00 [0.80, 1.00] | 9.8 | 1700 | 41 |" in text
    assert "7800 at 100 steps" in text and "unfinished: step 10 of 100" in text
    plot(result, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").stat().st_size > 1000
