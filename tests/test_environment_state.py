"""observation.environment_state: `wam collect` records the objects' poses and the goal (privileged simulator state,
LeRobot's key), the reader reads it, and `wam train` (by default where the data records it) trains an auxiliary head on it
that shapes the image encoder and leaves the policy's inputs and outputs unchanged."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from wam.config import TrainConfig, preset
from wam.data.layout import ENVIRONMENT_STATE_KEY
from wam.data.reader import read_dataset
from wam.envs.metaworld import ENVIRONMENT_STATE_NAMES
from wam.testing import concrete, fake_batch
from wam.types import ObservationError

P = preset("tiny")


def test_collect_records_the_environment_state_of_every_frame(tiny_dataset):
    from wam.envs import make_env

    info = json.loads((tiny_dataset / "meta/info.json").read_text())
    assert info["features"][ENVIRONMENT_STATE_KEY]["names"] == list(ENVIRONMENT_STATE_NAMES)
    assert ENVIRONMENT_STATE_KEY in json.loads((tiny_dataset / "meta/stats.json").read_text())
    rec = read_dataset(tiny_dataset)
    assert rec.environment_state.shape == (len(rec.state), len(ENVIRONMENT_STATE_NAMES)) and rec.state.shape[1] == 4
    # the first frame of an episode is its variation's state after reset: the goal and objects of that seed
    m = concrete(P.model)
    env = make_env(f"metaworld:{rec.env_tasks[0]}", m.cameras, m.image_size)
    env.reset(rec.seeds[0])
    np.testing.assert_allclose(rec.environment_state[0], env.environment_state(), atol=1e-6)
    goal = list(ENVIRONMENT_STATE_NAMES).index("goal_x")
    np.testing.assert_allclose(rec.environment_state[0, goal:goal + 3], env._env._target_pos, atol=1e-6)
    # a drawer moves while it is closed: the object's pose changes within the episode
    e = 0
    assert np.ptp(rec.environment_state[rec.episode_from[e]:rec.episode_to[e], :3], axis=0).max() > 0.01
    # hidden with the state of --data.video-only-episodes
    from wam.config import DataConfig

    blind = read_dataset(tiny_dataset, DataConfig(video_only_episodes="0"))
    assert not blind.environment_state[blind.episode_from[0]:blind.episode_to[0]].any()
    assert blind.environment_state[blind.episode_from[1]:].any()


def test_the_point_between_the_fingers_is_the_hand_plus_a_constant_offset():
    """Meta-World decides reach and grasp from `tcp_center`; the state records the hand: FINGERTIP_OFFSET apart,
    whatever the arm and the gripper do."""
    from wam.envs.metaworld import FINGERTIP_OFFSET, MetaWorldEnv

    rng = np.random.default_rng(0)
    for task in ("reach-v3", "drawer-close-v3"):
        env = MetaWorldEnv(task, image_size=16)
        try:
            obs = env.reset(3)
            moved = []
            for _ in range(40):
                obs, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
                deviation = env._env.tcp_center - obs.state[:3] - np.asarray(FINGERTIP_OFFSET)
                assert np.abs(deviation).max() < 0.004, (task, deviation)
                moved.append(obs.state[:3])
            assert np.ptp(np.stack(moved), axis=0).max() > 0.02  # the arm really moved about
        finally:
            env.close()


def test_the_writer_checks_the_environment_state_against_its_spec(tmp_path):
    from wam.data.writer import DatasetSpec, DatasetWriter, Episode, EpisodeMismatch

    spec = DatasetSpec(fps=10, cameras={"cam": (8, 8)}, state_names=("a",), action_names=("b",),
                       environment_state_names=("x", "y"), storage="image")
    t = 3
    ep = Episode(images={"cam": np.zeros((t, 8, 8, 3), np.uint8)}, state=np.zeros((t, 1)), action=np.zeros((t, 1)),
                 task="do it")
    writer = DatasetWriter(tmp_path / "d", spec)
    with pytest.raises(EpisodeMismatch, match=r"observation.environment_state: expected \(3, 2\) .*got none"):
        writer.add(ep)
    with pytest.raises(EpisodeMismatch, match=r"observation.environment_state: expected finite"):
        writer.add(dataclasses.replace(ep, environment_state=np.full((t, 2), np.nan)))
    writer.add(dataclasses.replace(ep, environment_state=np.arange(2 * t, dtype=np.float32).reshape(t, 2)))
    root = writer.finish()
    np.testing.assert_array_equal(read_dataset(root).environment_state, np.arange(6).reshape(3, 2))
    plain = DatasetWriter(tmp_path / "e", dataclasses.replace(spec, environment_state_names=()))
    with pytest.raises(EpisodeMismatch, match="declares no environment_state_names"):
        plain.add(dataclasses.replace(ep, environment_state=np.zeros((t, 2))))
    plain.abort()


def test_the_auxiliary_loss_reaches_the_image_encoder_and_leaves_the_outputs_alone():
    from wam.backbones import build
    from wam.train import loss_terms

    m = dataclasses.replace(concrete(P.model), environment_state_dim=5)
    net = build(m)
    batch = dataclasses.replace(fake_batch(m, b=3), environment_state=torch.randn(3, 5),
                                environment_known=torch.tensor([1.0, 1.0, 0.0]))
    on = TrainConfig(environment_state_weight=2.0)
    terms = loss_terms(net, batch, on, m, torch.Generator().manual_seed(0))
    off = loss_terms(net, batch, TrainConfig(), m, torch.Generator().manual_seed(0))
    assert "environment" not in off and terms["environment"] > 0
    torch.testing.assert_close(terms["loss"], off["loss"] + 2.0 * terms["environment"])
    # its gradient alone reaches the image encoder (the action and frame heads start at zero output)
    net.zero_grad()
    (terms["loss"] - off["loss"]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.stem.parameters())
    # the third sample's state is not a target: changing it changes nothing
    moved = dataclasses.replace(batch, environment_state=batch.environment_state + torch.tensor([0.0, 0.0, 5.0])[:, None])
    torch.testing.assert_close(loss_terms(net, moved, on, m, torch.Generator().manual_seed(0))["environment"],
                               terms["environment"])
    # the head is extra output, not a change of the policy's function
    ctx, t = batch.context, torch.rand(3)
    plain, extra = net(batch.video, batch.actions, t, t, ctx), net(batch.video, batch.actions, t, t, ctx, environment=True)
    assert torch.equal(plain[0], extra[0]) and torch.equal(plain[1], extra[1]) and extra[2].shape == (3, 5)
    with pytest.raises(ValueError, match="only backbone 'wam' has"):
        dataclasses.replace(P.model, backbone="wan", backbone_path="x", environment_state_dim=3)


def test_train_predicts_the_environment_state_by_default_where_the_data_records_it(tiny_dataset, tmp_path, capsys):
    from wam.policy import WAMPolicy
    from wam.train import train
    from wam.testing import fake_observation

    assert P.train.environment_state_weight is None and preset("default").train.environment_state_weight is None
    out = train(dataclasses.replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2), P.model, P.sampler,
                progress=False)
    assert "environment-state loss: on, weight 1.0" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["environment_state_dim"] == len(ENVIRONMENT_STATE_NAMES)
    assert config["train"]["environment_state_weight"] == 1.0  # what ran, not "default"
    rows = [json.loads(r) for r in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert rows and all(r["environment"] > 0 for r in rows)
    policy = WAMPolicy.from_checkpoint(out)  # the head is in the weights; the policy reads images and state only
    obs = fake_observation(policy.metadata)
    assert policy.infer(obs).actions.shape == (policy.cfg.action_horizon, 4)
    # the head reads the context a probe builds with the policy's public context(): the observation, checked
    net, ctx = policy.model, policy.context(obs)
    zeros, t = torch.zeros(1, policy.cfg.action_horizon, 4), torch.zeros(1)
    video = torch.zeros(net.video_shape(1)) if net.n_vid else None
    assert net(video, zeros, t, t, ctx, environment=True)[2].shape == (1, len(ENVIRONMENT_STATE_NAMES))
    one = {k: v[-1] for k, v in obs.images.items()}  # a single frame where the policy reads a stack
    with pytest.raises(ObservationError, match="FrameHistory"):
        policy.context(dataclasses.replace(obs, images=one))
    # resuming that run with the head turned off would be another run (a model without the head): refused
    with pytest.raises(ValueError, match="environment_state_weight: 1.0 saved, 0.0 now"):
        train(dataclasses.replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=3,
                                  environment_state_weight=0.0), P.model, P.sampler, progress=False)
    off = train(dataclasses.replace(P.train, data=tiny_dataset, out=tmp_path / "off", steps=1,
                                    environment_state_weight=0.0), P.model, P.sampler, progress=False)
    assert json.loads((off / "config.json").read_text())["model"]["environment_state_dim"] == 0
    assert "environment-state loss" not in capsys.readouterr().out  # said only when the default decides


def test_the_weight_needs_a_dataset_that_records_the_environment_state_and_the_default_does_without(tmp_path, capsys):
    from pathlib import Path

    from wam.train import train

    so100 = Path(__file__).parent / "fixtures/lerobot/so100"  # written by lerobot: no environment state
    model = dataclasses.replace(P.model, cameras=())
    with pytest.raises(ValueError, match="does not hold; `wam collect` records it"):
        train(dataclasses.replace(P.train, data=so100, out=tmp_path / "run", steps=1, environment_state_weight=1.0),
              model, P.sampler, progress=False)
    # the default trains on a user's data without the key, and says so
    out = train(dataclasses.replace(P.train, data=so100, out=tmp_path / "default", steps=1), model, P.sampler,
                progress=False)
    assert "environment-state loss: off (no observation.environment_state)" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["environment_state_weight"] == 0.0 and config["model"]["environment_state_dim"] == 0


def test_benches_collect_again_data_written_before_the_environment_state(tiny_dataset, tmp_path):
    """The benches and `wam demo` reuse their datasets; one written before `wam collect` recorded the state would
    quietly train without the default's target, so it is collected again (generalise's pools read the same record)."""
    import shutil

    from wam.bench.common import collect_once
    from wam.data.layout import records

    old = tmp_path / "old"
    shutil.copytree(tiny_dataset, old)
    info = json.loads((old / "meta/info.json").read_text())
    del info["features"][ENVIRONMENT_STATE_KEY]
    (old / "meta/info.json").write_text(json.dumps(info))
    assert records(tiny_dataset, ENVIRONMENT_STATE_KEY) and not records(old, ENVIRONMENT_STATE_KEY)
    assert not records(tmp_path / "none", ENVIRONMENT_STATE_KEY)
    p = concrete(P)
    tasks = "drawer-close-v3,button-press-topdown-v3"
    collect_once(old, p, tasks, episodes=2, workers=1)
    assert records(old, ENVIRONMENT_STATE_KEY)
    stamp = (old / "meta/info.json").stat().st_mtime_ns
    collect_once(old, p, tasks, episodes=2, workers=1)  # now reused as it is
    assert (old / "meta/info.json").stat().st_mtime_ns == stamp


def test_a_checkpoint_from_before_the_weight_existed_resumes_only_without_the_head():
    from wam import checkpoint

    saved = {"data": {"frames": 10, "episodes": 2}, "train": {"seed": 0, "batch_size": 4}}  # no weight recorded
    checkpoint.check_resumable(saved, TrainConfig(batch_size=4, environment_state_weight=0.0), frames=10, episodes=2)
    with pytest.raises(ValueError, match="environment_state_weight: 0.0 saved, 1.0 now"):
        checkpoint.check_resumable(saved, TrainConfig(batch_size=4, environment_state_weight=1.0), frames=10, episodes=2)
