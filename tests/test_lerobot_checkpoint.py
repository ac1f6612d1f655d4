"""A `wam` policy that lerobot trained and saved (tests/fixtures/lerobot/wam_policy, written by lerobot-train's own
`train` with the plugin: scripts/lerobot_wam_policy.py) reads as a wam checkpoint without lerobot: its config,
its normaliser by lerobot's formulas, the same actions lerobot's loading gives, and every command that takes a
checkpoint (offline eval, imagine, serve, train --train.init); bad folders get one line naming what was expected."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from wam import checkpoint
from wam.data.resize import fit
from wam.policy import WAMPolicy
from wam.types import Observation

FIXTURES = Path(__file__).parent / "fixtures" / "lerobot"
EXPECTED = json.loads((FIXTURES / "wam_policy" / "expected.json").read_text())


@pytest.fixture
def saved(tmp_path) -> Path:
    """The fixture's pretrained_model/, its train_config.json pointing at this checkout's so100 (as one edits it
    after moving a dataset)."""
    folder = shutil.copytree(FIXTURES / "wam_policy", tmp_path / "wam_policy")
    train = folder / "pretrained_model" / "train_config.json"
    train.write_text(json.dumps({**json.loads(train.read_text()), "dataset": {
        **json.loads(train.read_text())["dataset"], "root": str(FIXTURES / "so100")}}))
    return folder / "pretrained_model"


def _observation(path: Path, size: int | None = None) -> Observation:
    """expected.json's observation (scripts/lerobot_wam_policy.py `observation`), fitted to `size` if given."""
    spec, config = EXPECTED["observation"], json.loads((path / "config.json").read_text())
    frames = np.random.default_rng(spec["frames_seed"])
    images = {k.removeprefix("observation.images."): frames.integers(
        0, 256, (config["context_frames"], f["shape"][1], f["shape"][2], 3), dtype=np.uint8)
        for k, f in config["input_features"].items() if f["type"] == "VISUAL"}
    if size:
        images = {k: fit(x, size, config["resize"]) for k, x in images.items()}
    state = np.random.default_rng(spec["state_seed"]).normal(size=config["input_features"]["observation.state"]["shape"])
    return Observation(images=images, state=state.astype(np.float32), prompt=spec["task"])


def test_reads_the_config_from_the_policy_and_its_dataset(saved):
    config = checkpoint.read_config(saved)
    assert config["model"]["cameras"] == ["front", "wrist"] and config["model"]["image_size"] == 32
    assert config["model"]["state_dim"] == 6 and config["model"]["action_dim"] == 6
    data = config["data"]
    assert data["camera_keys"] == ["observation.images.front", "observation.images.wrist"]
    assert data["camera_shapes"] == [[72, 96], [48, 64]] and data["fps"] == 30.0 and data["episodes"] == 6
    assert data["instructions"] == ["pick up the cube", "push the cube to the left"] and data["tasks"] == []
    assert data["state_names"][0] == "shoulder_pan.pos" and data["config"]["resize"] == "pad"
    assert config["step"] == 4 and config["sampler"]["execute"] == 2 and config["train"]["batch_size"] == 4


def test_the_normaliser_is_lerobots_own_formula(saved):
    norm = checkpoint.load_normalizer(saved)
    pre = load_file(saved / "policy_preprocessor_step_4_normalizer_processor.safetensors")
    post = load_file(saved / "policy_postprocessor_step_0_unnormalizer_processor.safetensors")
    x = torch.randn(5, 6) * 10
    mean, std = (torch.from_numpy(pre[f"observation.state.{k}"]) for k in ("mean", "std"))
    torch.testing.assert_close(norm.state(x), (x - mean) / (std + 1e-8))
    y = torch.rand(5, 6) * 2 - 1
    lo, hi = (torch.from_numpy(post[f"action.{k}"]) for k in ("min", "max"))
    torch.testing.assert_close(norm.unactions(y), (y + 1) / 2 * (hi - lo) + lo)
    assert torch.equal(norm.action_min, lo) and torch.equal(norm.action_max, hi)


def test_wam_gives_the_actions_lerobot_gives(saved):
    policy = WAMPolicy.from_checkpoint(saved, seed=EXPECTED["observation"]["noise_seed"])
    out = policy.infer(_observation(saved, policy.metadata.image_size[0]))
    np.testing.assert_allclose(out.actions, EXPECTED["actions"], rtol=1e-5, atol=1e-4)
    assert policy.metadata.cameras == ("front", "wrist") and policy.metadata.fps == 30.0


def test_offline_eval_imagine_serve_and_init_take_it(saved, tmp_path):
    from wam.config import preset, SamplerConfig
    from wam.imagine import ImagineConfig, imagine
    from wam.models.transformer import WAMTransformer
    from wam.offline import OfflineConfig, evaluate_offline
    from wam.safety import ActionGuard
    from wam.serve.client import RemotePolicy
    from wam.serve.server import ServeConfig, from_checkpoint, running

    data = shutil.copytree(FIXTURES / "so100", tmp_path / "so100")
    summary = evaluate_offline(OfflineConfig(checkpoint=saved, data=data, out=tmp_path / "offline", max_windows=4,
                                             plots=False), progress=False)
    assert np.isfinite(summary["action_mse"])
    result = imagine(ImagineConfig(checkpoint=saved, data=data, episode=0, horizon=8, out=tmp_path / "imagine"))
    assert result["frames"] and np.isfinite(result["mean_psnr"])
    server = from_checkpoint(ServeConfig(saved, port=0))
    guard = ActionGuard.from_normalizer(checkpoint.load_normalizer(saved), 0.05)
    with running(server) as port, RemotePolicy(f"ws://127.0.0.1:{port}", history="client") as remote:
        assert remote.server_info["fingerprint"] == checkpoint.fingerprint(saved)
        out = remote.infer(_observation(saved))  # camera frames at their own sizes: fitted as in training
    server.close()
    np.testing.assert_allclose(out.actions, guard(np.asarray(EXPECTED["actions"], np.float32)), rtol=1e-5, atol=1e-4)
    cfg = checkpoint.read_config(saved)
    from wam.config import model_from_dict

    model = WAMTransformer(model_from_dict(cfg["model"]))
    assert checkpoint.load_init(saved, model, model.cfg) == []
    assert SamplerConfig(**cfg["sampler"]).steps == preset("tiny").sampler.steps


def test_bad_checkpoints_are_one_line_naming_what_was_expected(saved, tmp_path):
    def refused(load, path, error, match) -> None:
        with pytest.raises(error, match=match) as caught:
            load(path)
        assert "\n" not in str(caught.value)

    gone = shutil.copytree(saved, tmp_path / "gone")
    train = json.loads((gone / "train_config.json").read_text())
    train["dataset"]["root"] = str(tmp_path / "nope")
    (gone / "train_config.json").write_text(json.dumps(train))
    refused(checkpoint.read_config, gone, FileNotFoundError,
            r"trained on the dataset 'local/so100' at .*nope, which is not on disk .*set dataset.root in .*train_config")
    act = shutil.copytree(saved, tmp_path / "act")
    (act / "config.json").write_text(json.dumps({**json.loads((act / "config.json").read_text()), "type": "act"}))
    for load in (checkpoint.read_config, checkpoint.load_model):
        refused(load, act, ValueError, r"is a lerobot 'act' policy; wam reads lerobot checkpoints of type 'wam' "
                                       r".*wam eval --policy lerobot:")
    neither = tmp_path / "neither"
    neither.mkdir()
    refused(checkpoint.read_config, neither, FileNotFoundError, "is not a wam checkpoint: .*config.json is missing")
    (neither / "config.json").write_text(json.dumps({"steps": 3}))
    refused(checkpoint.load_model, neither, ValueError, "neither a `wam train` checkpoint nor a lerobot policy")
    cameraless = shutil.copytree(saved, tmp_path / "cameraless")
    config = json.loads((cameraless / "config.json").read_text())
    config["input_features"] = {"observation.state": config["input_features"]["observation.state"]}
    (cameraless / "config.json").write_text(json.dumps(config))
    refused(checkpoint.read_config, cameraless, ValueError, "hold no camera .*reads at least one")
