"""Tier 3: action-free episodes, video pretraining then fine-tuning, and `wam imagine`, on real tiny data."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from wam.config import preset, with_recipe
from wam.imagine import ImagineConfig, imagine
from wam.train import train
from wam.testing import concrete

P = concrete(preset("tiny"))


@pytest.fixture(scope="module")
def decoupled_checkpoint(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("decoupled")
    return train(replace(P.train, data=tiny_dataset, out=out, steps=3), P.model, P.sampler, progress=False)


def test_imagine_under_recorded_actions_writes_video_and_scores(decoupled_checkpoint, tiny_dataset, tmp_path):
    result = imagine(ImagineConfig(decoupled_checkpoint, data=tiny_dataset, episode=1, horizon=12, out=tmp_path))
    chunk = P.model.future_offsets[-1]
    assert [r["step"] for r in result["frames"]] == list(range(chunk, 12 + 1, chunk))
    assert all(0 < r["psnr"] < 99 for r in result["frames"])
    assert (tmp_path / "imagine.mp4").stat().st_size > 0
    assert json.loads((tmp_path / "imagine.json").read_text())["source"] == str(tiny_dataset)


def test_imagine_over_several_episodes_is_each_episode_imagined_alone(decoupled_checkpoint, tiny_dataset, tmp_path):
    """--episodes loads the model once and imagines each episode as --episode would (same noise, same numbers); the
    summary's means are the means over the episodes."""
    many = imagine(ImagineConfig(decoupled_checkpoint, data=tiny_dataset, episodes="0:2", horizon=8, out=tmp_path / "many"))
    assert many["episodes"] == [0, 1] and len(many["per_episode"]) == 2
    for e, run in zip((0, 1), many["per_episode"]):
        alone = imagine(ImagineConfig(decoupled_checkpoint, data=tiny_dataset, episode=e, horizon=8, out=tmp_path / f"{e}"))
        assert run["episode"] == e and run["frames"] == alone["frames"]
        assert (tmp_path / f"many/episode-{e}/imagine.mp4").stat().st_size > 0
    for k in ("mean_psnr", "mean_ssim", "mean_ssim_static"):
        assert many[k] == pytest.approx(sum(r[k] for r in many["per_episode"]) / 2)
    assert json.loads((tmp_path / "many/imagine.json").read_text())["episodes"] == [0, 1]
    with pytest.raises(ValueError, match="not both"):
        imagine(ImagineConfig(decoupled_checkpoint, data=tiny_dataset, episode=1, episodes="0:2", out=tmp_path / "x"))
    with pytest.raises(ValueError, match="give --data"):
        imagine(ImagineConfig(decoupled_checkpoint, episodes="0:2", out=tmp_path / "x"))


def test_imagine_under_the_policy_executes_the_same_actions_in_the_simulator(decoupled_checkpoint, tmp_path):
    result = imagine(ImagineConfig(decoupled_checkpoint, task="drawer-close-v3", seed=100_003, horizon=8, out=tmp_path))
    assert result["source"] == "policy" and len(result["frames"]) == 8 // P.model.future_offsets[-1]
    # the real frames moved: the policy's actions were executed (the arm is not where it started)
    assert result["frames"][-1]["psnr_static"] < 99


def test_imagine_refuses_a_recipe_without_a_world_model(tiny_dataset, tmp_path):
    p = with_recipe(P, "joint")
    ckpt = train(replace(p.train, data=tiny_dataset, out=tmp_path / "joint", steps=1), p.model, p.sampler, progress=False)
    with pytest.raises(ValueError, match="cannot serve mode 'world_model'"):
        imagine(ImagineConfig(ckpt, data=tiny_dataset, horizon=4, out=tmp_path / "x"))


def test_video_pretraining_on_action_free_episodes_then_fine_tuning(tiny_dataset, tmp_path):
    from wam.data.collect import CollectConfig, collect
    from wam.data.reader import read_dataset

    m = P.model
    video = collect(CollectConfig(out=tmp_path / "video", tasks="reach-v3", episodes=1, cameras=m.cameras,
                                  image_size=m.image_size, workers=1, action_free=True), progress=False)
    demos = read_dataset(video)
    assert not demos.has_actions.any() and (demos.action == 0).all()
    assert json.loads((video / "meta/info.json").read_text())["wam"]["action_free"] is True

    # pretrained with a large step size, so that its weights lie far from the seed's initialisation (which a run
    # from scratch shares): a fine-tuning step from them is then told apart from a step from scratch by a wide margin
    pre = train(replace(P.train, data=video, out=tmp_path / "pre", steps=8, lr=1e-2, min_lr=1e-2), m, P.sampler,
                progress=False)
    rows = [json.loads(r) for r in (tmp_path / "pre/metrics.jsonl").read_text().splitlines()]
    assert all(r["action"] == 0 and r["video"] > 0 for r in rows)  # only the frames were trained
    assert json.loads((pre / "config.json").read_text())["data"]["action_free_episodes"] == 1

    class _Stop(Exception):
        pass

    def first_step(step, ckpt):
        raise _Stop

    with pytest.raises(_Stop):  # stop after one step: the start must be the pretrained weights, moved one step
        train(replace(P.train, data=tiny_dataset, out=tmp_path / "ft", steps=4, init=pre, eval_every=1), m, P.sampler,
              progress=False, eval_hook=first_step)
    cfg = json.loads((tmp_path / "ft/last/config.json").read_text())
    assert cfg["init"] == str(pre)
    a, b = load_file(pre / "model.safetensors"), load_file(tmp_path / "ft/last/model.safetensors")
    scratch = train(replace(P.train, data=tiny_dataset, out=tmp_path / "scratch", steps=1), m, P.sampler, progress=False)
    c = load_file(scratch / "model.safetensors")
    blocks = [k for k in a if k.startswith("blocks.")]
    moved = sum((a[k] - b[k]).abs().sum() for k in blocks)
    fresh = sum((c[k] - b[k]).abs().sum() for k in blocks)
    assert moved < fresh / 10  # one small step from the pretrained start, far from a fresh run's
    with pytest.raises(ValueError, match="model config differs"):
        train(replace(P.train, data=tiny_dataset, out=tmp_path / "bad", steps=1, init=pre), replace(m, width=64),
              P.sampler, progress=False)
