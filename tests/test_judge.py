"""The world model as judge (wam/judge): ranking statistics, the success head's labels, weakened policies, imagined
rollouts on the tiny preset (deterministic; with the simulator standing in for the world model they reproduce the
real rollout), and the CLI."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from wam.config import preset
from wam.judge.rank import agreement, episode_agreement, mmrv, pairwise_accuracy, pearson, ranks, spearman, violations
from wam.testing import concrete

P = concrete(preset("tiny"))


# ----------------------------------------------------------------------------------------- ranking statistics
def test_rank_statistics_against_their_closed_forms():
    real = [0.1, 0.4, 0.5, 0.9]
    assert spearman(real, [0.0, 0.2, 0.3, 0.8]) == pytest.approx(1.0)
    assert spearman(real, [0.8, 0.3, 0.2, 0.0]) == pytest.approx(-1.0)
    assert pearson(real, [2 * x + 1 for x in real]) == pytest.approx(1.0)
    assert mmrv(real, real) == 0.0 and pairwise_accuracy(real, real) == 1.0
    # one swap, of the two best: each of them is violated by the real gap 0.4, the others by nothing
    imagined = [0.1, 0.4, 0.9, 0.5]
    assert mmrv(real, imagined) == pytest.approx((0 + 0 + 0.4 + 0.4) / 4)
    assert violations(real, imagined) == [(0.0, None), (0.0, None), (pytest.approx(0.4), 3), (pytest.approx(0.4), 2)]
    assert pairwise_accuracy(real, imagined) == pytest.approx(5 / 6)
    # Spearman = 1 - 6 sum d^2 / (n (n^2 - 1)) without ties: d = (0, 0, 1, -1)
    assert spearman(real, imagined) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert list(ranks([0.2, 0.1, 0.2])) == [2.5, 1.0, 2.5]
    # a tie in the imagined rates counts half a pair
    assert pairwise_accuracy([0.1, 0.9], [0.5, 0.5]) == 0.5
    stats = agreement(real, imagined)
    assert set(stats) >= {"spearman", "pearson", "mmrv", "pairwise_accuracy"} and stats["policies"] == 4
    with pytest.raises(ValueError, match="two equal-length"):
        spearman([0.1], [0.2])
    # per episode: 3 real successes (2 imagined solved), 2 real failures (1 imagined failed)
    e = episode_agreement([(True, True), (True, True), (True, False), (False, True), (False, False)])
    assert e["agree"] == pytest.approx(3 / 5) and e["successes_imagined_solved"] == pytest.approx(2 / 3)
    assert e["failures_imagined_failed"] == 0.5 and e["balanced_accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert episode_agreement([(True, True)])["failures_imagined_failed"] is None


def test_ranking_stats_assemble_the_bench_statistics_from_policies_and_episodes():
    from wam.judge.rank import ranking_stats

    # two tasks, three policies; per task 2 episodes: cells are the episodes' means, a policy's rate the cells' mean
    pairs = {"a": [(1, 1), (1, 0), (0, 0), (0, 0), (1, 1), (1, 1)], "b": [(0, 1), (0, 0), (1, 1), (0, 0), (1, 1), (1, 0)]}
    rows = []
    for i in range(3):
        tasks = {t: {"real": np.mean([r for r, _ in pairs[t][2 * i:2 * i + 2]]),
                     "imagined": np.mean([m for _, m in pairs[t][2 * i:2 * i + 2]])} for t in pairs}
        rows.append({"policy": str(i), "real": np.mean([c["real"] for c in tasks.values()]),
                     "imagined": np.mean([c["imagined"] for c in tasks.values()]), "tasks": tasks})
    stats = ranking_stats(rows, pairs)
    real, imagined = [0.5, 0.25, 1.0], [0.5, 0.25, 0.75]
    assert [r["real"] for r in rows] == real and [r["imagined"] for r in rows] == imagined
    assert stats["spearman"] == pytest.approx(1.0) and stats["mmrv"] == 0.0
    assert stats["mean_abs_error"] == pytest.approx(0.25 / 3)
    assert stats["cells"]["policies"] == 6 and stats["per_task"]["b"]["mean_imagined"] == pytest.approx(0.5)
    # episodes: a 4 successes (3 imagined solved), 2 failures (both failed); b 3 successes (2), 3 failures (2)
    assert stats["per_episode"]["per_task"]["a"]["balanced_accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    assert stats["per_episode"]["all"]["episodes"] == 12
    assert stats["per_episode"]["all"]["balanced_accuracy"] == pytest.approx((5 / 7 + 4 / 5) / 2)


# ----------------------------------------------------------------------------------------- the success head
def test_solved_labels_mark_the_frames_within_the_horizon_of_success():
    from wam.judge.head import solved_labels

    # episode 0: solved after the action of frame 5 (frames 0..7); episode 1 never solved (frames 8..11)
    success = np.zeros(12, bool)
    success[5:8] = True
    labels = solved_labels(success, np.array([0, 8]), np.array([8, 12]), horizon=2)
    # frame t is solved when the task is solved within 2 actions of it: frames 4 (after actions 4, 5) onwards
    assert labels.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_policy_specs_parse_and_refuse_what_they_do_not_know(tmp_path):
    from wam.judge.policies import PolicySpec

    spec = PolicySpec.parse(f"{tmp_path}#noise=0.5#instruction=other")
    assert spec.noise == 0.5 and spec.instruction == "other" and str(spec) == f"{tmp_path}#noise=0.5#instruction=other"
    assert PolicySpec.parse(str(tmp_path)).noise == 0.0
    with pytest.raises(ValueError, match="unknown weakening"):
        PolicySpec.parse(f"{tmp_path}#speed=2")
    with pytest.raises(ValueError, match="not a number"):
        PolicySpec.parse(f"{tmp_path}#noise=lots")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        PolicySpec.parse(str(tmp_path / "nowhere"))
    served = PolicySpec.parse("ws://127.0.0.1:8000")
    assert served.kind == "remote" and str(served) == "ws://127.0.0.1:8000"
    with pytest.raises(ValueError, match="judged as it is served"):
        PolicySpec.parse("ws://127.0.0.1:8000#noise=0.5")
    with pytest.raises(ValueError, match="is not a lerobot checkpoint"):
        PolicySpec.parse(f"lerobot:{tmp_path}#noise=0.5")
    (tmp_path / "config.json").write_text(json.dumps({"type": "act"}))
    if importlib.util.find_spec("lerobot") is not None:  # lerobot's venv
        peer = PolicySpec.parse(f"lerobot:{tmp_path}/#noise=0.5")
        assert peer.kind == "lerobot" and peer.path == tmp_path and str(peer) == f"lerobot:{tmp_path}#noise=0.5"
    else:
        with pytest.raises(ImportError, match="scripts/lerobot-venv.sh"):
            PolicySpec.parse(f"lerobot:{tmp_path}/#noise=0.5")


def test_swapped_instructions_give_every_task_another_ones():
    from wam.envs.tasks import instruction, swapped_instructions

    tasks = ("drawer-close-v3", "reach-v3", "button-press-topdown-v3")
    swapped = swapped_instructions(tasks)
    assert sorted(swapped.values()) == sorted(instruction(t) for t in tasks)
    assert all(swapped[instruction(t)] != instruction(t) for t in tasks)
    with pytest.raises(ValueError, match="two tasks or more"):
        swapped_instructions(("reach-v3",))


def test_weakened_policy_adds_noise_drawn_from_the_episode_seed():
    from wam.runtime import Weakened
    from wam.types import Observation, PolicyMetadata, PolicyOutput

    class Zero:
        metadata = PolicyMetadata(cameras=("a",), image_size=(4, 4), context_offsets=(0,), state_dim=0, action_dim=2,
                                  action_horizon=3)
        prompts: list = []

        def reset(self, seed=None):
            pass

        def infer(self, obs):
            self.prompts.append(obs.prompt)
            return PolicyOutput(actions=np.zeros((3, 2), np.float32))

    inner = Zero()
    weak = Weakened(inner, noise=0.5, prompts={"open": "close"})
    obs = Observation(images={"a": np.zeros((4, 4, 3), np.uint8)}, prompt="open")
    weak.reset(7)
    a = weak.infer(obs).actions
    weak.reset(7)
    assert np.array_equal(a, weak.infer(obs).actions) and 0.1 < a.std() < 1.5
    weak.reset(8)
    assert not np.array_equal(a, weak.infer(obs).actions)
    assert inner.prompts == ["close"] * 3


# ----------------------------------------------------------------------------------------- imagined rollouts
@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A failure-rich tiny dataset, a tiny world model (decoupled) trained on it, and its fitted head."""
    from wam.data.collect import CollectConfig, collect
    from wam.judge.head import FitConfig, fit_head
    from wam.train import train

    m = P.model
    root = tmp_path_factory.mktemp("judge")
    data = collect(CollectConfig(out=root / "data", tasks="drawer-close-v3,reach-v3", episodes=2, cameras=m.cameras,
                                 image_size=m.image_size, workers=1, failures=True, action_noise=1.0, max_steps=40),
                   progress=False)
    world = train(replace(P.train, data=data, out=root / "world", steps=2), m, P.sampler, progress=False)
    metrics = fit_head(FitConfig(data=data, out=root / "head", size=m.future_size, steps=5, batch_size=8),
                       progress=False)  # the default: the data records the objects and goal, so the head reads them
    fit_head(FitConfig(data=data, out=root / "head-robot", size=m.future_size, steps=5, batch_size=8,
                       environment=False), progress=False)  # the robot state alone (and then the frames)
    return {"data": data, "world": world, "head": root / "head", "head_robot": root / "head-robot", "metrics": metrics,
            "root": root}


def test_failures_collect_keeps_every_episode_with_its_executed_actions(judged):
    from wam.data.reader import read_dataset

    rec = read_dataset(judged["data"])
    info = json.loads((judged["data"] / "meta/info.json").read_text())["wam"]
    assert info["failures"] is True and len(rec.episode_ids) == 4 and rec.success is not None
    # executed (noisy) actions are recorded: not the expert's saturated +-1 commands only
    assert np.abs(rec.action[:, :3]).max() <= 1 and len(np.unique(rec.action[:, 0].round(3))) > 10


def test_collect_records_policy_rollouts_beside_the_perturbed_expert(judged, tmp_path):
    """--policies: each named checkpoint (weakened as named) runs `policy_episodes` episodes per task, every one
    kept; the recorded actions are the ones executed (replayed in the simulator from the same seed they give back the
    recorded states); `wam/source` names the behaviour behind each episode; --policies needs --failures."""
    import glob

    import pandas as pd

    from wam.data.collect import CollectConfig, collect
    from wam.data.reader import read_dataset
    from wam.envs import make_env
    from wam.judge.policies import collector

    m, world = P.model, str(judged["world"])
    cfg = CollectConfig(out=tmp_path / "mixed", tasks="reach-v3", episodes=1, cameras=m.cameras, image_size=m.image_size,
                        workers=1, failures=True, action_noise=1.0, max_steps=12, policies=(world, f"{world}#noise=0.5"),
                        policy_episodes=2)
    with pytest.raises(ValueError, match="--policies needs a way to run a checkpoint"):
        collect(cfg, progress=False)
    out = collect(cfg, progress=False, make_policy=collector)
    rec = read_dataset(out)
    episodes = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(str(out / "meta/episodes/*/*.parquet")))])
    assert list(episodes["wam/source"]) == ["expert", world, world, f"{world}#noise=0.5", f"{world}#noise=0.5"]
    assert rec.seeds == [0, 0, 1, 0, 1]
    info = json.loads((out / "meta/info.json").read_text())["wam"]
    assert info["policies"] == [world, f"{world}#noise=0.5"] and set(info["policy_solved"][world]) == {"reach-v3"}
    first, second = (slice(rec.episode_from[i], rec.episode_to[i]) for i in (1, 3))  # seed 0: clean, then noisy
    assert not np.allclose(rec.action[first], rec.action[second])
    env = make_env("metaworld:reach-v3", m.cameras, m.image_size)
    obs = env.reset(0)
    for t in range(first.start, first.stop):
        np.testing.assert_allclose(obs.state, rec.state[t], atol=1e-5)
        np.testing.assert_allclose(env.environment_state(), rec.environment_state[t], atol=1e-5)
        obs, _ = env.step(rec.action[t])
    env.close()
    with pytest.raises(ValueError, match="--policies records rollouts that may fail: it needs --failures"):
        CollectConfig(out=tmp_path / "x", policies=(world,))
    with pytest.raises(FileNotFoundError, match="is not a checkpoint folder"):  # before anything is written
        collect(replace(cfg, out=tmp_path / "x", policies=(str(tmp_path / "none"),)), progress=False, make_policy=collector)
    assert not (tmp_path / "x").exists()


def test_fit_head_writes_a_head_that_loads_and_scores(judged):
    from wam.judge.head import JudgeHead

    head = JudgeHead.load(judged["head"])
    assert head.cfg.size == P.model.future_size and head.cfg.cameras == tuple(P.model.cameras)
    assert {"accuracy", "auc", "state_r2"} <= set(head.meta["validation"]) or head.meta["validation"] == {}
    b, v, s = 3, len(P.model.cameras), P.model.future_size
    d = head.cfg.full_dim  # the robot state and the environment's (the fixture's data records it)
    p = head.solved(torch.zeros(b, v, 3, s, s), torch.zeros(b, d), torch.zeros(b, 384))
    assert p.shape == (b,) and ((p >= 0) & (p <= 1)).all()
    assert head.step(torch.zeros(b, d), torch.zeros(b, 4)).shape == (b, d)


def test_the_head_reads_and_steps_the_environment_state_where_the_data_records_it(judged, tmp_path):
    """`wam collect` data records observation.environment_state: by default the state model steps the objects and
    the goal with the arm and the success head reads them and no frames; --environment False: the robot state and
    the frames; --frames True: both."""
    from wam.data.reader import read_dataset
    from wam.judge.head import FitConfig, JudgeHead, fit_head

    rec = read_dataset(judged["data"])
    z = rec.environment_state.shape[1]
    head = JudgeHead.load(judged["head"])  # the fixture's head: the default
    assert (head.cfg.environment_dim, head.cfg.frames) == (z, False) and head.success.conv is None
    assert (head.meta["fit"]["environment"], head.meta["fit"]["frames"]) == (True, False)  # the defaults resolved
    b, v, s = 3, len(P.model.cameras), P.model.future_size
    full = torch.as_tensor(np.concatenate([rec.state[:b], rec.environment_state[:b]], 1))
    assert head.step(full, torch.zeros(b, 4)).shape == (b, 4 + z)
    robot = JudgeHead.load(judged["head_robot"])  # --environment False
    assert robot.cfg.environment_dim == 0 and robot.step(full[:, :4], torch.zeros(b, 4)).shape == (b, 4)
    assert robot.cfg.frames and robot.success.conv is not None
    fit_head(FitConfig(data=judged["data"], out=tmp_path / "both", size=s, steps=2, batch_size=8, frames=True),
             progress=False)
    both = JudgeHead.load(tmp_path / "both")
    assert both.success.conv is not None and both.cfg.environment_dim == z
    blind = head
    text = torch.zeros(b, 384)
    p = blind.solved(None, full, text)  # frames unread: none needed
    torch.testing.assert_close(p, blind.solved(torch.rand(b, v, 3, s, s), full, text))
    moved = full.clone()
    moved[:, 4:] += 0.2  # the objects and the goal elsewhere: the head sees it
    assert not torch.allclose(p, blind.solved(None, moved, text))


def test_offsets_are_the_pairwise_offsets_and_distances_of_the_named_positions(judged, tmp_path):
    """--offsets: the positions come from the data's entry names; the head reads their pairwise offsets and distances
    (decimetres, closed form below); without --environment the robot state names one position only: a clear error."""
    from wam.data.reader import read_dataset
    from wam.judge.head import FitConfig, JudgeHead, fit_head, offsets, positions

    assert positions(["hand_x", "hand_y", "hand_z", "gripper", "goal_x", "goal_y", "goal_z"]) == (0, 4)
    assert positions(["x", "y", "z", "a_x", "a_z", "a_y"]) == ()  # no P_ prefix, or out of order: not a position
    state = torch.tensor([[0.0, 0.0, 0.0, 9.0, 0.03, 0.04, 0.0, 0.1, 0.0, 0.0]])
    got = offsets(state, (0, 4, 7))  # pairs (0, 4), (0, 7), (4, 7)
    want = torch.tensor([[-0.3, -0.4, 0.0, 0.5, -1.0, 0.0, 0.0, 1.0, -0.7, 0.4, 0.0, (0.49 + 0.16) ** 0.5]])
    torch.testing.assert_close(got, want)

    rec = read_dataset(judged["data"])
    fit_head(FitConfig(data=judged["data"], out=tmp_path / "rel", size=P.model.future_size, steps=2, batch_size=8,
                       offsets=True), progress=False)
    head = JudgeHead.load(tmp_path / "rel")  # the starts survive the JSON round trip as a tuple
    assert head.cfg.offsets == (0, 4, 11, 18) and head.success.state.in_features == 21 + 6 * 4
    full = torch.as_tensor(np.concatenate([rec.state[:3], rec.environment_state[:3]], 1))
    text = torch.zeros(3, 384)
    with torch.no_grad():  # the offsets reach the head: zeroing their weights changes its verdicts
        p = head.solved(None, full, text)
        head.success.state.weight[:, 21:] = 0
    assert not torch.allclose(p, head.solved(None, full, text))
    with pytest.raises(ValueError, match="--offsets needs two or more 3-d positions.*with --environment"):
        fit_head(FitConfig(data=judged["data"], out=tmp_path / "no", steps=2, environment=False, frames=False,
                           offsets=True), progress=False)


def test_the_state_model_reads_the_arms_last_change_with_motion_and_older_heads_load(judged, tmp_path):
    """With --motion the state models read the arm's last change (None: at rest), not the objects'; the default
    ignores it; a head written before motion and offsets existed (no such keys in head.json) loads as one without."""
    import shutil

    from wam.judge.head import FitConfig, JudgeHead, fit_head

    fit_head(FitConfig(data=judged["data"], out=tmp_path / "moving", size=P.model.future_size, steps=2, batch_size=8,
                       motion=True), progress=False)
    head = JudgeHead.load(tmp_path / "moving")
    b, d = 3, head.cfg.full_dim
    s, a, v = torch.zeros(b, d), torch.zeros(b, 4), torch.full((b, d), 0.01)
    assert head.cfg.motion and head.dynamics.net[0].in_features == 2 * 4 + 4
    assert head.environment.net[0].in_features == d + 4 + 4  # the arm's last change, not the objects'
    assert not torch.allclose(head.step(s, a), head.step(s, a, v))
    objects_moving = v.clone()
    objects_moving[:, 4:] = 0.05
    torch.testing.assert_close(head.step(s, a, v), head.step(s, a, objects_moving))
    torch.testing.assert_close(head.step(s, a), head.step(s, a, torch.zeros(b, d)))
    still = JudgeHead.load(judged["head"])  # the default
    assert not still.cfg.motion
    torch.testing.assert_close(still.step(s, a), still.step(s, a, v))
    shutil.copytree(judged["head"], tmp_path / "old")
    meta = json.loads((tmp_path / "old/head.json").read_text())
    del meta["config"]["motion"], meta["config"]["offsets"]
    (tmp_path / "old/head.json").write_text(json.dumps(meta))
    old = JudgeHead.load(tmp_path / "old")
    assert (old.cfg.motion, old.cfg.offsets) == (False, ())
    torch.testing.assert_close(old.step(s, a), still.step(s, a))
    # roll: the steps one after another, carrying the last change; a roll split in two and resumed with the change
    # it returned is the same roll
    g = torch.Generator().manual_seed(0)
    s0, actions = torch.randn(b, d, generator=g) * 0.1, torch.rand(b, 6, 4, generator=g) * 2 - 1
    states, last = head.roll(s0, actions)
    x, m = s0, torch.zeros(b, d)
    for t in range(6):
        nxt = head.step(x, actions[:, t], m)
        x, m = nxt, nxt - x
        torch.testing.assert_close(states[:, t], x)
    torch.testing.assert_close(last, m)
    first, mid = head.roll(s0, actions[:, :2])
    rest, end = head.roll(first[:, -1], actions[:, 2:], mid)
    torch.testing.assert_close(torch.cat([first, rest], 1), states)
    torch.testing.assert_close(end, last)
    with pytest.raises(ValueError, match="roll expects actions"):
        head.roll(s0, actions[0])


def test_the_rolled_out_loss_steps_as_the_judge_steps(judged, tmp_path):
    """--rollout K trains the state models on their own K-step predictions: the loss is the error of exactly the
    states `JudgeHead.roll` gives (what a judge steps), and a fit with it records the setting."""
    from wam.data.reader import read_dataset
    from wam.judge.head import FitConfig, JudgeHead, fit_head, judge_state, rolled_loss

    fit_head(FitConfig(data=judged["data"], out=tmp_path / "rolled", size=P.model.future_size, steps=2, batch_size=8,
                       motion=True, rollout=3), progress=False)
    head = JudgeHead.load(tmp_path / "rolled")
    assert head.meta["fit"]["rollout"] == 3
    rec = read_dataset(judged["data"])
    state, action = judge_state(rec, True), rec.action.astype(np.float32)
    previous = np.zeros_like(state)
    previous[1:] = state[1:] - state[:-1]
    previous[rec.episode_from] = 0
    starts = np.array([rec.episode_from[0], rec.episode_from[0] + 2])
    with torch.no_grad():
        loss = rolled_loss(head, state, action, previous, starts, 3)
        states, _ = head.roll(torch.from_numpy(state[starts]), torch.from_numpy(np.stack([action[starts + k] for k in range(3)], 1)),
                              torch.from_numpy(previous[starts]))
        want = sum(torch.nn.functional.mse_loss(head.norm(states[:, k]), head.norm(torch.from_numpy(state[starts + k + 1])))
                   for k in range(3)) / 3
    torch.testing.assert_close(loss, want)
    with pytest.raises(ValueError, match="--rollout 0"):
        FitConfig(data=judged["data"], out=tmp_path / "x", rollout=0)


def test_history_carries_the_past_actions_as_training_reads_them_and_bounded_keeps_the_recorded_range(judged, tmp_path):
    """--history K: the state models read the K actions before the current one (newest first, none before an
    episode's start); a roll carries them in its memory exactly as `past_actions` lays them out for training.
    --bounded: stepped states stay within the training states' range; a head saved before the bounds loads unbounded."""
    from safetensors.torch import load_file, save_file

    from wam.data.reader import read_dataset
    from wam.judge.head import FitConfig, JudgeHead, fit_head, judge_state, past_actions

    action = np.arange(10, dtype=np.float32).reshape(5, 2)  # two episodes: steps 0-2 and 3-4
    got = past_actions(action, np.array([0, 3]), 2)
    want = np.array([[0, 0, 0, 0], [0, 1, 0, 0], [2, 3, 0, 1], [0, 0, 0, 0], [6, 7, 0, 0]], np.float32)
    np.testing.assert_array_equal(got, want)

    fit_head(FitConfig(data=judged["data"], out=tmp_path / "hist", size=P.model.future_size, steps=2, batch_size=8,
                       motion=True, history=3, bounded=True, rollout=2), progress=False)
    head = JudgeHead.load(tmp_path / "hist")
    d = head.cfg.full_dim
    assert (head.cfg.history, head.cfg.bounded, head.cfg.memory_dim) == (3, True, d + 3 * 4)
    assert head.dynamics.net[0].in_features == 4 + 4 + 4 * 4  # state, last change, action, three past actions
    rec = read_dataset(judged["data"])
    state, a, b = judge_state(rec, True), rec.episode_from[0], rec.episode_to[0]
    actions = torch.from_numpy(rec.action[a:b - 1][None].astype(np.float32))
    states, memory = head.roll(torch.from_numpy(state[a:a + 1]), actions)
    layout = past_actions(rec.action.astype(np.float32), rec.episode_from, 3)
    np.testing.assert_allclose(memory[0, d:].numpy(), layout[b - 1])  # the memory a roll ends with = training's
    torch.testing.assert_close(memory[0, :d], states[0, -1] - states[0, -2])
    half, mid = head.roll(torch.from_numpy(state[a:a + 1]), actions[:, :5])  # resumed from its memory: the same roll
    rest, _ = head.roll(half[:, -1], actions[:, 5:], mid)
    torch.testing.assert_close(torch.cat([half, rest], 1), states)
    s0, push = torch.from_numpy(state[a:a + 1]), torch.zeros(1, 4)
    other = memory.clone()
    other[:, d:] = 1.0  # other past actions: another step
    assert not torch.allclose(head.step(s0, push, memory), head.step(s0, push, other))
    # bounded: whatever the model predicts, the stepped state stays within the training states' range
    with torch.no_grad():
        head.dynamics.net[-1].bias += 50.0
        head.environment.net[-1].bias -= 50.0
    far = head.step(s0, push)
    assert (far <= head.state_high).all() and (far >= head.state_low).all()
    moved = head.delta_std > 1e-4  # entries the data moves (not a second object a task lacks): pushed to the edge
    assert moved[:3].all() and torch.equal(far[0, :3], head.state_high[:3])
    assert torch.equal(far[0, 4:][moved[4:]], head.state_low[4:][moved[4:]])
    assert (head.state_low.numpy() >= state.min(0) - 1e-6).all() and (head.state_high.numpy() <= state.max(0) + 1e-6).all()
    weights = load_file(judged["head"] / "head.safetensors")  # written before bounds existed: no such tensors
    old = tmp_path / "old"
    old.mkdir()
    (old / "head.json").write_text((judged["head"] / "head.json").read_text())
    save_file({k: v for k, v in weights.items() if k not in ("state_low", "state_high")}, old / "head.safetensors")
    unbounded = JudgeHead.load(old)
    assert not unbounded.cfg.bounded and torch.isinf(unbounded.state_high).all()
    with pytest.raises(ValueError, match="--history -1"):
        FitConfig(data=judged["data"], out=tmp_path / "x", history=-1)


def test_relative_and_gated_state_models(judged, tmp_path):
    """--relative: the environment's state model reads the offsets between the positions --offsets finds (zeroing
    their weights changes its step); --gated: an environment entry moves only where its logit says so, and the fit
    learns that logit from whether the recorded entry moved."""
    from wam.data.reader import read_dataset
    from wam.judge.head import STILL, FitConfig, JudgeHead, fit_head, judge_state

    fit_head(FitConfig(data=judged["data"], out=tmp_path / "rel", size=P.model.future_size, steps=2, batch_size=8,
                       offsets=True, relative=True, gated=True), progress=False)
    head = JudgeHead.load(tmp_path / "rel")
    d, z = head.cfg.full_dim, head.cfg.environment_dim
    assert head.cfg.relative and head.cfg.gated and head.environment.net[0].in_features == d + 6 * 4 + 4
    assert head.environment.net[-1].out_features == 2 * z
    rec = read_dataset(judged["data"])
    state = torch.from_numpy(judge_state(rec, True)[:5])
    push = torch.full((5, 4), 0.5)
    with torch.no_grad():
        before = head.step(state, push)
        head.environment.net[0].weight[:, d:d + 24] = 0
        assert not torch.allclose(before[:, 4:], head.step(state, push)[:, 4:])
        head.environment.net[-1].bias[z:] = -100.0  # every entry says it stands still: the objects do not move
        torch.testing.assert_close(head.step(state, push)[:, 4:], state[:, 4:])
        head.environment.net[-1].bias[z:] = 100.0
        assert not torch.allclose(head.step(state, push)[:, 4:], state[:, 4:])
    # the logits are learned from whether the recorded entries moved: the goal never moves in the data
    fit_head(FitConfig(data=judged["data"], out=tmp_path / "gate", size=P.model.future_size, steps=150, batch_size=32,
                       gated=True), progress=False)
    gate = JudgeHead.load(tmp_path / "gate")
    all_states = torch.from_numpy(judge_state(rec, True))
    with torch.no_grad():
        _, _, moves = gate.parts(gate.norm(all_states), torch.from_numpy(rec.action.astype(np.float32)))
    within = np.ones(len(all_states) - 1, bool)
    within[rec.episode_to[:-1] - 1] = False  # not from one episode's last frame to the next one's first
    goal_moved = np.abs(np.diff(rec.environment_state[:, -3:], axis=0))[within].max()
    assert goal_moved <= STILL and (moves[:, -3:] < 0).all()
    with pytest.raises(ValueError, match="--relative reads the offsets"):
        FitConfig(data=judged["data"], out=tmp_path / "x", relative=True)


def test_coupled_environment_model_reads_the_arms_predicted_change(judged, tmp_path):
    """--coupled: the environment's state model also reads the arm's change as the robot's state model predicts it at
    this step: changing the robot's model changes the objects' step (not without --coupled), and the fit refuses data
    without the environment state."""
    from wam.data.reader import read_dataset
    from wam.judge.head import FitConfig, JudgeHead, fit_head, judge_state

    rec = read_dataset(judged["data"])
    state = torch.from_numpy(judge_state(rec, True)[:5])
    push = torch.full((5, 4), 0.5)
    for coupled in (True, False):
        fit_head(FitConfig(data=judged["data"], out=tmp_path / str(coupled), size=P.model.future_size, steps=2,
                           batch_size=8, coupled=coupled), progress=False)
        head = JudgeHead.load(tmp_path / str(coupled))
        assert head.cfg.coupled == coupled
        assert head.environment.net[0].in_features == head.cfg.full_dim + 4 + 4 * coupled
        with torch.no_grad():
            before = head.step(state, push)
            head.dynamics.net[-1].bias += 1.0  # the arm's predicted change moves
            after = head.step(state, push)
        assert not torch.allclose(before[:, :4], after[:, :4])
        assert torch.allclose(before[:, 4:], after[:, 4:]) != coupled
    with pytest.raises(ValueError, match="--coupled"):
        fit_head(FitConfig(data=judged["data"], out=tmp_path / "x", size=P.model.future_size, steps=2, batch_size=8,
                           coupled=True, environment=False), progress=False)


def test_the_judged_policy_never_sees_the_environment_state_the_head_reads(judged):
    """The initial environment state reaches the head (a goal moved changes its verdicts), never the policy (its
    actions unchanged); a head that reads it refuses to judge without it."""
    from wam.envs.tasks import instruction
    from wam.judge.dream import World, dream
    from wam.judge.head import JudgeHead
    from wam.judge.judge import first_observations
    from wam.judge.policies import PolicySpec, contender

    m, seeds, execute = P.model, [100_000, 100_001], P.model.future_offsets[0]
    world, head = World(judged["world"]), JudgeHead.load(judged["head"])
    first, environment = first_observations("reach-v3", tuple(m.cameras), m.image_size, seeds)
    assert environment.shape == (2, head.cfg.environment_dim)
    seen = []

    class Recording:  # the contender, recording what the policy is given and returns
        def __init__(self, inner):
            self.inner, self.metadata, self.lockstep = inner, inner.metadata, True

        def start(self, seeds):
            return self.inner.start(seeds)

        def act(self, episodes, observations, execute):
            out = self.inner.act(episodes, observations, execute)
            seen.append(([o.state.copy() for o in observations], out.copy()))
            return out

    def run(env_state):
        seen.clear()
        judged_policy = Recording(contender(PolicySpec.parse(str(judged["world"])), ("drawer-close-v3", "reach-v3")))
        dreams = dream(world, head, judged_policy, first, seeds, instruction("reach-v3"), 12, execute,
                       threshold=1.0, environment=env_state)  # never solved: every episode runs every chunk
        return dreams, [(list(x), y) for x, y in seen]

    a, seen_a = run(environment)
    moved = environment.copy()
    moved[:, -3:] += 0.3  # the goal 30 cm away
    b, seen_b = run(moved)
    assert all(st.shape == (4,) for states, _ in seen_a for st in states)  # the robot state only
    assert len(seen_a) == len(seen_b) == 3  # 12 steps of `execute` = 4
    for (sa, xa), (sb, xb) in zip(seen_a, seen_b):  # equal up to the rounding of two runs of the same products
        np.testing.assert_allclose(xa, xb, atol=1e-6)
        np.testing.assert_allclose(np.stack(sa), np.stack(sb), atol=1e-6)
    assert [d.probability for d in a] != [d.probability for d in b]
    with pytest.raises(ValueError, match="environment state"):
        dream(world, head, contender(PolicySpec.parse(str(judged["world"])), ("reach-v3",)), first, seeds,
              instruction("reach-v3"), 8, execute)


def test_judge_is_deterministic_and_writes_its_report(judged, tmp_path):
    from wam.judge.judge import JudgeConfig, judge

    cfg = JudgeConfig(policies=(str(judged["world"]), f"{judged['world']}#noise=0.5"), world=judged["world"],
                      head=judged["head"], episodes=2, max_steps=8, execute=P.model.future_offsets[0], videos=1,
                      out=tmp_path / "a")
    a = judge(cfg, progress=False)
    b = judge(replace(cfg, out=tmp_path / "b"), progress=False)
    # the same verdicts, steps and rates; the head's probabilities the same up to the rounding of MKL's matrix
    # products, which depends on memory alignment and can differ between two calls in one process (about 1e-7)
    def verdicts(s):
        return [{t: {k: v if k != "episodes_detail" else [{f: x for f, x in e.items() if f != "probability"} for e in v]
                     for k, v in r["tasks"][t].items() if k != "seconds"} for t in r["tasks"]} for r in s["policies"]]

    assert verdicts(a) == verdicts(b)
    probs = [e["probability"] for r in a["policies"] for t in r["tasks"].values() for e in t["episodes_detail"]]
    again = [e["probability"] for r in b["policies"] for t in r["tasks"].values() for e in t["episodes_detail"]]
    assert [len(p) for p in probs] == [len(p) for p in again]
    assert np.allclose(np.concatenate(probs), np.concatenate(again), rtol=0, atol=1e-5)
    assert all(len(p) >= 1 for p in probs)
    assert (tmp_path / "a/report.html").is_file() and (tmp_path / "a/judge.json").is_file()
    assert len(list((tmp_path / "a/videos").glob("*.mp4"))) == 2 * 2  # one per policy and task
    # the noise changed what was imagined: this world model ignores the actions, the state model does not (seen here
    # through the head on the robot state alone, whose 4 inputs move its verdicts more than the default's 21 do)
    c = judge(replace(cfg, head=judged["head_robot"], out=tmp_path / "c"), progress=False)
    probs = [e["probability"] for r in c["policies"] for t in r["tasks"].values() for e in t["episodes_detail"]]
    assert probs[:4] != probs[4:]


def test_a_judged_policy_is_closed_when_judging_it_fails(judged, tmp_path, monkeypatch):
    """A served policy's connection or a lerobot model is released even when its episodes raise."""
    import wam.judge.policies as policies
    from wam.judge.judge import JudgeConfig, judge

    made, load = [], policies.contender

    def failing(spec, tasks, sampler=None):
        judged_policy = load(spec, tasks, sampler)
        closed = judged_policy.close

        def act(*args):
            raise RuntimeError("the policy broke")

        def close():
            made.append("closed")
            closed()

        judged_policy.act, judged_policy.close = act, close
        return judged_policy

    monkeypatch.setattr("wam.judge.policies.contender", failing)
    cfg = JudgeConfig(policies=(str(judged["world"]),), world=judged["world"], head=judged["head"], episodes=1,
                      max_steps=4, execute=P.model.future_offsets[0], out=tmp_path)
    with pytest.raises(RuntimeError, match="the policy broke"):
        judge(cfg, progress=False)
    assert made == ["closed"]


class SimulatorWorld:
    """The simulator standing in for a world model: it executes each episode's actions and returns the real frames
    and state; `SimulatorHead` reads whether the task was solved. A perfect world model and a perfect head."""

    def __init__(self, cfg, task, seeds):
        from wam.envs import make_env

        self.cfg = cfg
        self.envs = [make_env(f"metaworld:{task}", cfg.cameras, cfg.image_size) for _ in seeds]
        self.first = [env.reset(s) for env, s in zip(self.envs, seeds)]
        self.solved: list[bool] = []

    def text(self, prompt):
        return torch.zeros(1, 384)

    def predict(self, images, state, prompt, actions, generator, rows, execute):
        from wam.data.transforms import images_to_model

        m = self.cfg
        small, big, states, self.solved = [], [], [], []
        for r, i in enumerate(rows):
            solved = False
            for a in actions[r, :execute]:
                obs, ok = self.envs[i].step(a)
                solved |= ok
            now = np.stack([obs.images[c] for c in m.cameras])  # (v, H, W, 3)
            pooled = torch.nn.functional.avg_pool2d(images_to_model(torch.from_numpy(now)), m.image_size // m.future_size)
            small.append(pooled[None].repeat(m.future_frames, 1, 1, 1, 1))  # only the frame at `execute` is read
            big.append(np.stack([now] * m.future_frames))
            states.append(obs.state)
            self.solved.append(solved)
        return torch.stack(small), np.stack(big), np.stack(states)


def test_with_the_simulator_as_world_model_imagined_success_is_real_success(judged):
    """The dream loop (chunks, frame history, state, sampling and weakening noise, swapped prompts) against `wam
    eval`'s closed loop: with the simulator in place of the world model and its success flag in place of the head,
    every episode ends as the real one does, at the same chunk."""
    from wam.envs.tasks import instruction, swapped_instructions
    from wam.evaluate import EpisodeJob, Worker, WorkerSetup
    from wam.judge.dream import dream
    from wam.judge.head import HeadConfig
    from wam.judge.policies import Contender, PolicySpec

    tasks, seeds, execute = ("drawer-close-v3", "reach-v3"), [100_000, 100_001, 100_002], P.model.future_offsets[0]
    sampler = replace(P.sampler, execute=execute)
    spec = PolicySpec.parse(f"{judged['world']}#noise=0.3#instruction=other")
    contender = Contender(spec, tasks, sampler)
    sim = SimulatorWorld(contender.policy.cfg, tasks[0], seeds)

    class SimulatorHead:
        cfg = HeadConfig(cameras=tuple(P.model.cameras), size=P.model.future_size, state_dim=4, action_dim=4, horizon=1)

        def solved(self, frames, state, text):
            return torch.tensor([float(x) for x in sim.solved])

    dreams = dream(sim, SimulatorHead(), contender, sim.first, seeds, instruction(tasks[0]), 80, execute)
    # the real episodes, as `wam eval --action-noise 0.3 --swap-instructions` runs each of them
    worker = Worker(WorkerSetup(checkpoint=str(judged["world"]), sampler=contender.policy.sampler, action_noise=0.3))
    swapped = swapped_instructions(tasks)[instruction(tasks[0])]
    for d, seed, env in zip(dreams, seeds, sim.envs):
        job = EpisodeJob(env=f"metaworld:{tasks[0]}", task=tasks[0], seed=seed, max_steps=80, prompt=swapped)
        real = worker.run(job)
        assert d.success == real.success
        # solved within the same chunk (the dream checks at chunk ends, the real rollout at every step)
        assert d.steps == (-(-real.steps // execute) * execute if real.success else 80)
        if not real.success:  # both ran all 80 steps: the arm ended in the same place (the same actions executed)
            np.testing.assert_allclose(env._observe().state, worker.envs[(job.env, None)]._observe().state, atol=1e-4)


class Queued:
    """A step-level policy as lerobot's ACT is one: every `n` steps it computes a chunk from the observation (with the
    wrapped checkpoint) and queues its first `n` actions; in between it pops one action per step, observation unread."""

    def __init__(self, policy, n: int):
        self.policy, self.n, self.queue = policy, n, []
        self.calls = 0

    @property
    def metadata(self):
        return self.policy.metadata.replace(action_horizon=1)

    def reset(self, seed=None):
        self.queue = []
        self.policy.reset(seed)

    def infer(self, obs):
        from wam.types import PolicyOutput

        fresh = not self.queue
        if fresh:
            self.calls += 1
            self.queue = list(self.policy.infer(obs).actions[:self.n])
        return PolicyOutput(actions=np.asarray(self.queue.pop(0))[None], fresh=fresh)


def test_a_step_level_policy_judged_with_the_simulator_as_world_model_lives_its_real_episodes(judged):
    """Any `Policy`, one episode at a time (PolicyContender, as a lerobot policy is judged): a step-level policy that
    computes a chunk every 8 steps, weakened, asked `execute` times per imagined chunk, against the same policy in
    `wam eval`'s rollout loop with a frame history; the simulator stands in for the world model and the head."""
    from wam.envs import make_env
    from wam.envs.tasks import instruction, swapped_instructions
    from wam.judge.dream import dream
    from wam.judge.head import HeadConfig
    from wam.judge.policies import PolicyContender, PolicySpec
    from wam.policy import WAMPolicy
    from wam.rollout import rollout
    from wam.runtime import FrameHistory, Weakened
    from wam.safety import ActionGuard, Guarded

    tasks, seeds, execute = ("drawer-close-v3", "reach-v3"), [100_000, 100_001], P.model.future_offsets[0]
    prompts = swapped_instructions(tasks)

    def weakened():
        inner = Queued(WAMPolicy.from_checkpoint(judged["world"], replace(P.sampler, execute=execute)), 2 * execute)
        return inner, Guarded(Weakened(inner, 0.3, prompts), ActionGuard.from_normalizer(inner.policy.norm))

    inner, policy = weakened()
    judged_policy = PolicyContender(PolicySpec(str(judged["world"]), kind="lerobot"), policy)
    real_inner, real_policy = weakened()
    env = make_env(f"metaworld:{tasks[0]}", P.model.cameras, P.model.image_size)
    for seed in seeds:  # one episode at a time, as `wam judge` runs such a policy (judge.imagine_task)
        sim = SimulatorWorld(inner.policy.cfg, tasks[0], [seed])

        class SimulatorHead:
            cfg = HeadConfig(cameras=tuple(P.model.cameras), size=P.model.future_size, state_dim=4, action_dim=4, horizon=1)

            def solved(self, frames, state, text, sim=sim):
                return torch.tensor([float(x) for x in sim.solved])

        (d,) = dream(sim, SimulatorHead(), judged_policy, sim.first, [seed], instruction(tasks[0]), 60, execute)
        real = rollout(env, FrameHistory(real_policy), seed, 60, prompt=prompts[instruction(tasks[0])])
        assert d.success == real.success
        assert d.steps == (-(-real.steps // execute) * execute if real.success else 60)
        if not real.success:  # the same actions executed: the arm ended in the same place
            np.testing.assert_allclose(sim.envs[0]._observe().state, env._observe().state, atol=1e-4)
    assert inner.calls >= 2 * len(seeds)
    assert real_inner.calls == inner.calls  # the network ran as often, on the same observations
    env.close()


def test_an_imagined_episode_does_not_depend_on_the_others_in_its_batch(judged):
    """Each episode draws the world model's noise from its own seed: imagined alone or beside others, it is the same."""
    from wam.envs.tasks import instruction
    from wam.judge.dream import World, dream
    from wam.judge.head import JudgeHead
    from wam.judge.judge import first_observations
    from wam.judge.policies import PolicySpec, contender

    m, seeds, execute = P.model, [100_000, 100_001, 100_002], P.model.future_offsets[0]
    world, head = World(judged["world"]), JudgeHead.load(judged["head"])
    first, environment = first_observations("reach-v3", tuple(m.cameras), m.image_size, seeds)
    judged_policy = contender(PolicySpec.parse(str(judged["world"])), ("drawer-close-v3", "reach-v3"))
    batch = dream(world, head, judged_policy, first, seeds, instruction("reach-v3"), 12, execute, environment=environment)
    alone = dream(world, head, judged_policy, first[1:2], seeds[1:2], instruction("reach-v3"), 12, execute,
                  environment=environment[1:2])
    # the same up to the rounding of batched matrix products (about 1e-7 here)
    np.testing.assert_allclose(batch[1].probability, alone[0].probability, atol=1e-5)
    assert len(alone[0].probability) >= 2 and (batch[1].success, batch[1].steps) == (alone[0].success, alone[0].steps)
    assert not np.allclose(batch[0].probability, batch[1].probability, rtol=0, atol=1e-5)  # other seeds, other noise


def test_judging_a_served_checkpoint_equals_judging_it_in_process(judged, tmp_path):
    """`wam judge ws://HOST:PORT`: a running `wam serve`, judged one episode at a time, gives what the checkpoint
    judged in process (in lockstep) gives, episode for episode."""
    from wam.judge.judge import JudgeConfig, judge
    from wam.serve.server import ServeConfig, from_checkpoint, running

    cfg = JudgeConfig(policies=(str(judged["world"]),), world=judged["world"], head=judged["head"], episodes=2,
                      max_steps=12, execute=P.model.future_offsets[0], videos=1, out=tmp_path / "local")
    local = judge(cfg, progress=False)
    server = from_checkpoint(ServeConfig(judged["world"], port=0))
    with running(server) as port:
        url = f"ws://127.0.0.1:{port}"
        served = judge(replace(cfg, policies=(url,), out=tmp_path / "served"), progress=False)
    server.close()
    detail = lambda s: {t: [(e["seed"], e["success"], e["steps"]) for e in r["episodes_detail"]]  # noqa: E731
                        for t, r in s["policies"][0]["tasks"].items()}
    probabilities = lambda s: [p for r in s["policies"][0]["tasks"].values() for e in r["episodes_detail"]  # noqa: E731
                               for p in e["probability"]]
    assert served["policies"][0]["policy"] == url
    np.testing.assert_allclose(probabilities(served), probabilities(local), atol=1e-5)  # batched in process: rounding
    assert [len(r["videos"]) for r in served["policies"][0]["tasks"].values()] == [1, 1]
    assert detail(served) == detail(local) and len(detail(local)) == 2


# ----------------------------------------------------------------------------------------- failure localisation
def test_snapshot_restores_the_simulator_exactly_and_the_expert_look_ahead_leaves_it_unchanged():
    from wam.envs import make_env
    from wam.judge.failure import expert_future

    m = P.model
    env = make_env("metaworld:drawer-close-v3", m.cameras, m.image_size)
    obs = env.reset(100_003)
    for _ in range(6):
        obs, _ = env.step(env.expert_action())
    snap = env.snapshot()
    actions = [np.random.default_rng(i).uniform(-1, 1, 4).astype(np.float32) for i in range(12)]
    first = [env.step(a)[0] for a in actions]
    back = env.restore(snap)
    assert all(np.array_equal(back.images[c], obs.images[c]) for c in m.cameras) and np.array_equal(back.state, obs.state)
    again = [env.step(a)[0] for a in actions]  # the same future from the restored state
    assert all(np.array_equal(x.images[c], y.images[c]) for x, y in zip(first, again) for c in m.cameras)
    env.restore(snap)
    frames, expert = expert_future(env, m.future_offsets, m.cameras, m.future_size, 3)
    assert frames.shape == (len(m.future_offsets), len(m.cameras), m.future_size, m.future_size, 3) and expert.shape == (3, 4)
    now = env.render()
    assert all(np.array_equal(now[c], obs.images[c]) for c in m.cameras)  # the look-ahead was undone
    env.close()


def test_constructed_failures_land_in_their_classes(judged, monkeypatch):
    """A plan fault (mirrored plan) and a decoding fault (negated x/y), each in a policy whose inverse dynamics is
    exact (the expert's own actions stand in for what it decodes from the expert's frames): the oracle swap then
    rescues the plan fault (mirrored, or frozen at the current frame) and not the decoding fault."""
    from wam.envs import make_env
    from wam.judge.failure import Faulty, diagnose
    from wam.safety import ActionGuard, Guarded

    m = P.model
    env = make_env("metaworld:reach-v3", m.cameras, m.image_size)

    class Exact(Faulty):
        def inverse_dynamics(self, obs, frames, generator=None):
            a = np.repeat(env.expert_action()[None], self.cfg.action_horizon, 0)
            if self.fault == "action":
                a[:, :2] = -a[:, :2]
            return a

    for fault, plan_fault in (("plan", "mirror"), ("plan", "freeze"), ("action", "mirror")):
        policy = Exact.build(judged["world"], fault, replace(P.sampler, execute=m.future_offsets[0]), plan_fault)
        d = diagnose(Guarded(policy, ActionGuard.from_normalizer(policy.norm)), policy, env, "reach-v3", 100_000,
                     60, m.future_offsets[0])
        assert d.verdict == fault, (fault, plan_fault, d)
        if fault == "plan" and plan_fault == "freeze":  # the frozen plan is the copy of the current frame, exactly
            assert d.plan_error == d.copy_error
        else:
            assert d.plan_error > d.copy_error  # the tiny model's plan is no plan at all
    with pytest.raises(ValueError, match="plan_fault must be one of mirror, freeze"):
        Exact.build(judged["world"], "plan", plan_fault="shuffle")
    env.close()


def test_eval_diagnose_says_why_in_the_report(judged, tmp_path):
    from wam.evaluate import EvalConfig, evaluate
    from wam.judge.failure import NOT_APPLICABLE, VERDICTS

    summary = evaluate(EvalConfig(checkpoint=judged["world"], tasks="reach-v3", episodes=1, max_steps=8, diagnose=1,
                                  out=tmp_path, videos=0, workers=1), progress=False)
    (d,) = summary["failures"]["episodes"]
    assert d["verdict"] in (*VERDICTS, NOT_APPLICABLE) and d["moment"] is not None
    assert (tmp_path / d["evidence"]).is_file()
    assert sum(summary["failures"]["counts"]["reach-v3"].values()) == 1
    assert "Why rollouts failed" in (tmp_path / "report.html").read_text()


def test_world_steps_set_the_world_models_denoising_steps(judged):
    """--world-steps below the checkpoint's action steps is not lifted back to them (modes.video_steps gives the
    world_model mode at least as many frame steps as action steps)."""
    from wam.judge.dream import World
    from wam.modes import video_steps

    for steps in (1, 3):
        w = World(judged["world"], steps)
        assert video_steps(w.sampler, w.cfg.recipe, "world_model") == steps


def test_check_world_scores_an_action_blind_world_model_as_blind(judged, monkeypatch):
    """A world model that copies the current frame whatever the actions: each error, PSNR and SSIM is the copy's,
    exactly; the predicted change is none (cosine 0) and the recorded actions win half the time (every comparison a
    tie). The tiny trained world model gives finite scores in range, and with a deadzone larger than any change it
    predicts the current frame: the copy's PSNR and SSIM."""
    import torch.nn.functional as F

    from wam import modes
    from wam.judge.sensitivity import CONDITIONS, CheckWorldConfig, check_world

    cfg = CheckWorldConfig(world=judged["world"], data=judged["data"], windows=6, batch=4)
    real = check_world(cfg, progress=False)
    assert real["windows"] == 6 and real["offsets"] == list(P.model.future_offsets)
    assert all(0 <= w <= 1 for w in real["wins"]) and all(np.isfinite(real["mse"][c]).all() for c in CONDITIONS)
    assert set(real["psnr"]) == set(real["ssim"]) == {"copy", *CONDITIONS} and real["deadzone"] == 0
    assert all(0 < p < 99 for p in real["psnr"]["recorded"]) and all(-1 <= q <= 1 for q in real["ssim"]["recorded"])
    held = check_world(replace(cfg, deadzone=2.0), progress=False)  # every change in [-2, 2] dropped
    assert held["deadzone"] == 2.0 and held["ssim"]["copy"] == real["ssim"]["copy"]
    for c in CONDITIONS:
        np.testing.assert_allclose(held["psnr"][c], held["psnr"]["copy"], atol=0.05)
        np.testing.assert_allclose(held["ssim"][c], held["ssim"]["copy"], atol=1e-3)

    def copy(model, mode, ctx, sampler, actions=None, generator=None):
        assert mode == "world_model" and actions is not None
        m = model.cfg
        now = F.avg_pool2d(ctx.images[:, -1].flatten(0, 1), m.image_size // m.future_size)
        now = now.reshape(*ctx.images.shape[:1], -1, *now.shape[1:])
        return torch.stack([now] * len(m.future_offsets), 1), None

    monkeypatch.setattr(modes, "run", copy)
    blind = check_world(cfg, progress=False)
    for c in CONDITIONS:
        np.testing.assert_allclose(blind["mse"][c], blind["copy_mse"], rtol=1e-6)
        assert blind["cosine"][c] == [0.0] * len(blind["offsets"])
        assert blind["psnr"][c] == blind["psnr"]["copy"] and blind["ssim"][c] == blind["ssim"]["copy"]
    assert blind["wins"] == [0.5] * len(blind["offsets"]) and blind["copy_mse"] == real["copy_mse"]


def test_judge_cli_errors_are_one_line(cli_error, judged, tmp_path):
    world, head = str(judged["world"]), str(judged["head"])
    assert "at least one policy" in cli_error(["judge", "--world", world, "--head", head])
    assert "not a checkpoint folder" in cli_error(["judge", str(tmp_path / "nowhere"), "--world", world, "--head", head])
    assert "unknown weakening" in cli_error(["judge", f"{world}#speed=2", "--world", world, "--head", head])
    assert "not a lerobot checkpoint" in cli_error(["judge", f"lerobot:{tmp_path}", "--world", world, "--head", head])
    if importlib.util.find_spec("lerobot") is None:  # this venv (lerobot lives in its own, scripts/lerobot-venv.sh)
        peer = tmp_path / "act"
        peer.mkdir()
        (peer / "config.json").write_text(json.dumps({"type": "act"}))
        assert "scripts/lerobot-venv.sh" in cli_error(["judge", f"lerobot:{peer}", "--world", world, "--head", head])
    assert "judged as it is served" in cli_error(["judge", "ws://127.0.0.1:9#noise=1", "--world", world, "--head", head])
    assert "head.json is missing" in cli_error(["judge", world, "--world", world, "--head", str(tmp_path)])
    so100 = Path(__file__).parent / "fixtures/lerobot/so100"  # written by lerobot: no next.success column
    assert "no next.success column" in cli_error(["judge", "fit", "--data", str(so100), "--out", str(tmp_path / "h")])
    assert "pick one" in cli_error(["judge", "fit", "--data", str(judged["data"]), "--frames", "False", "--world", world])
    assert "need windows >= 2" in cli_error(["judge", "check-world", "--world", world, "--data", str(judged["data"]),
                                             "--windows", "1"])
    assert "selects no episodes" in cli_error(
        ["judge", "check-world", "--world", world, "--data", str(judged["data"]), "--episodes", "3:3"])


def test_calibrated_thresholds_are_read_exactly_from_episodes_judged_at_a_high_threshold(judged, tmp_path):
    """An imagined episode judged at 0.99 runs on; re-deciding it at a lower threshold gives what judging at that
    threshold gives. `wam judge calibrate` finds the threshold that separates real successes from failures, `wam judge
    rescore` and `wam judge --calibration` apply it, and a threshold above the judged one is refused."""
    from wam.judge.calibrate import calibrate, read_bench, read_calibration, rescore, solved
    from wam.judge.judge import JudgeConfig, judge

    bench = tmp_path / "bench"
    specs = (str(judged["world"]), f"{judged['world']}#noise=0.5")
    base = JudgeConfig(policies=specs[:1], world=judged["world"], head=judged["head_robot"], episodes=3, max_steps=16,
                       execute=P.model.future_offsets[0], videos=0, threshold=0.99, out=tmp_path)
    high = [judge(replace(base, policies=(s,), out=bench / "imagined" / f"{i:02d}"), progress=False)
            for i, s in enumerate(specs)]
    tasks = high[0]["tasks"]
    episodes = {t: [e for h in high for e in h["policies"][0]["tasks"][t]["episodes_detail"]] for t in tasks}
    # per task, a threshold between the 3rd and 4th highest peak probability of its 6 episodes: 3 pass it, 3 do not
    peaks = {t: sorted(max(e["probability"]) for e in episodes[t]) for t in tasks}
    assert all(p[3] - p[2] > 1e-6 for p in peaks.values())  # far wider than the rounding of batched products
    cut = {t: (peaks[t][2] + peaks[t][3]) / 2 for t in tasks}
    for i, h in enumerate(high):  # the real outcomes, made to be what the threshold `cut` separates
        real = [{"task": t, "seed": e["seed"], "success": solved(e["probability"], cut[t])}
                for t in tasks for e in h["policies"][0]["tasks"][t]["episodes_detail"]]
        (bench / "real" / f"{i:02d}").mkdir(parents=True)
        (bench / "real" / f"{i:02d}" / "results.json").write_text(json.dumps({"episodes": real}))
    # judging at `cut` decides as re-deciding the 0.99 episodes at `cut` does, on the same probabilities
    (tmp_path / "cut.json").write_text(json.dumps({"thresholds": cut}))
    direct = judge(replace(base, policies=specs[:1], calibration=tmp_path / "cut.json", out=tmp_path / "direct"),
                   progress=False)
    assert direct["thresholds"] == cut
    for t in tasks:
        for d, h in zip(direct["policies"][0]["tasks"][t]["episodes_detail"], high[0]["policies"][0]["tasks"][t]["episodes_detail"]):
            assert d["success"] == solved(h["probability"], cut[t])
            assert np.allclose(d["probability"], h["probability"][:len(d["probability"])], atol=1e-5)
    judged_episodes = read_bench(bench)
    assert len(judged_episodes) == 2 * len(tasks) * 3
    for t in tasks:  # all solved at 0.01, none at 0.98: only `cut` separates them
        cal = calibrate([e for e in judged_episodes if e.task == t], (0.01, cut[t], 0.98))["tasks"][t]
        assert cal["threshold"] == cut[t] and cal["calibrated"]["balanced_accuracy"] == 1.0
        assert cal["balanced_accuracy"][str(0.01)] == cal["balanced_accuracy"][str(0.98)] == 0.5
    (tmp_path / "cal.json").write_text(json.dumps({"thresholds": cut}))
    scored = rescore(judged_episodes, read_calibration(tmp_path / "cal.json"))
    assert scored["per_episode"]["all"]["balanced_accuracy"] == 1.0
    assert [r["imagined"] for r in scored["policies"]] == [r["real"] for r in scored["policies"]]
    with pytest.raises(ValueError, match="cannot be re-decided"):
        rescore(judged_episodes, {tasks[0]: 0.995})
    from wam.cli import main  # the commands: a file of thresholds from GRID, the statistics at them

    main(["judge", "calibrate", "--bench", str(bench), "--out", str(tmp_path / "grid.json")])
    assert sorted(json.loads((tmp_path / "grid.json").read_text())["thresholds"]) == sorted(tasks)
    main(["judge", "rescore", "--bench", str(bench), "--calibration", str(tmp_path / "cal.json"), "--out",
          str(tmp_path / "rescored.json")])
    assert json.loads((tmp_path / "rescored.json").read_text())["per_episode"]["all"]["balanced_accuracy"] == 1.0
    with pytest.raises(ValueError, match="real successes and failures"):
        calibrate([replace(e, real=True) for e in judged_episodes])
