"""The Meta-World environment wrapper, in the real simulator."""

import numpy as np
import pytest

from wam.envs.metaworld import MetaWorldEnv
from wam.envs.tasks import INSTRUCTIONS, instruction, parse_tasks


def test_every_task_has_a_written_instruction():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert set(INSTRUCTIONS) == set(ALL_V3_ENVIRONMENTS)
    for name, text in INSTRUCTIONS.items():  # a sentence, not the task name spelled out
        assert text != name.removesuffix("-v3").replace("-", " ") and len(text.split()) >= 3, name
    assert len(set(INSTRUCTIONS.values())) == len(INSTRUCTIONS)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid tasks are: .*reach-v3"):
        instruction("reach-v9")
    with pytest.raises(ValueError, match="unknown Meta-World task 'nope'"):
        parse_tasks("drawer-close-v3,nope")


def test_reset_step_and_seeded_variations():
    env = MetaWorldEnv("reach-v3", ("oblique", "top"), 32)
    a = env.reset(3)
    assert set(a.images) == {"oblique", "top"} and a.state.shape == (4,) and a.prompt == instruction("reach-v3")
    assert all(x.shape == (32, 32, 3) and x.dtype == np.uint8 for x in a.images.values())
    goal_a = env._env._target_pos.copy()
    env.reset(4)
    goal_b = env._env._target_pos.copy()
    env.reset(3)
    assert np.allclose(env._env._target_pos, goal_a) and not np.allclose(goal_a, goal_b)
    obs, success = env.step(np.zeros(4))
    assert obs.images["top"].shape == (32, 32, 3) and success in (True, False)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    env.close()


def test_the_near_oblique_camera_shows_reachs_goal_larger_than_the_oblique_one():
    """oblique_near is framed on the back half of the workspace: the goal marker covers more pixels there (seen by
    rendering the same state with the goal site shown and hidden)."""
    env = MetaWorldEnv("reach-v3", ("oblique", "oblique_near"), 96)
    model = env._env.model
    goal = [model.site(i).name for i in range(model.nsite)].index("goal")
    shown = env.reset(100000).images
    model.site_rgba[goal, 3] = 0.0
    hidden = env.render()
    env.close()
    covered = {c: int((np.abs(shown[c].astype(int) - hidden[c].astype(int)).sum(-1) > 30).sum()) for c in shown}
    assert covered["oblique"] > 5 and covered["oblique_near"] > 1.5 * covered["oblique"], covered


def test_scripted_expert_solves_drawer_close():
    env = MetaWorldEnv("drawer-close-v3", ("top",), 32)
    env.reset(0)
    for _ in range(200):
        _, success = env.step(env.expert_action())
        if success:
            break
    env.close()
    assert success


# ----------------------------------------------------------------------------- envs by name, one rollout loop
def test_make_env_by_name_and_its_errors():
    from wam.envs import make_env

    env = make_env("metaworld:drawer-close-v3", ("top",), 32)
    assert env.reset(0).prompt == instruction("drawer-close-v3")
    env.close()
    with pytest.raises(ValueError, match="expected KIND:TASK, e.g. metaworld:reach-v3"):
        make_env("reach-v3", ("top",), 32)
    with pytest.raises(ValueError, match="unknown env kind 'mujoco'.*registered kinds are: metaworld"):
        make_env("mujoco:reach-v3", ("top",), 32)
    with pytest.raises(ValueError, match="unknown Meta-World task 'reach'"):
        make_env("metaworld:reach", ("top",), 32)


class _Expert:
    """Meta-World's scripted expert as a Policy (it reads the simulator's full state, as no policy may)."""

    def __init__(self, env):
        from wam.types import PolicyMetadata

        self.env = env
        self.metadata = PolicyMetadata(cameras=("top",), image_size=(32, 32), context_offsets=(0,), state_dim=4,
                                       action_dim=4, action_horizon=1)
        self.seeds = []

    def reset(self, seed=None):
        self.seeds.append(seed)

    def infer(self, obs):
        from wam.types import PolicyOutput

        obs.check(self.metadata)
        return PolicyOutput(actions=self.env.expert_action()[None], frames=None, timing={"infer_ms": 0.5})


def test_rollout_runs_any_policy_until_success_and_records_as_a_wrapper():
    from wam.envs import make_env
    from wam.rollout import Recorder, rollout

    env = make_env("metaworld:drawer-close-v3", ("top",), 32)
    expert = _Expert(env)
    recorder = Recorder(expert)
    r = rollout(env, recorder, seed=0, max_steps=300)
    assert r.success and 1 < r.steps < 300 and expert.seeds == [0]
    assert len(r.infer_ms) == r.steps and r.infer_ms[0] == 0.5
    assert recorder.video().shape == (r.steps, 32, 32, 3)
    cut = rollout(env, expert, seed=0, max_steps=3)
    assert not cut.success and cut.steps == 3
    env.close()


def test_benchmark_names_are_metaworlds_own_task_sets():
    import metaworld.env_dict as mw

    from wam.envs.tasks import BENCHMARKS

    assert set(BENCHMARKS["MT10"]) == set(mw.MT10_V3) and set(BENCHMARKS["MT50"]) == set(mw.MT50_V3)
    for n in ("ML10", "ML45"):
        for split in ("train", "test"):
            assert set(BENCHMARKS[f"{n}-{split}"]) == set(getattr(mw, f"{n}_V3")[split]), (n, split)
    assert parse_tasks("MT10") == BENCHMARKS["MT10"] and len(parse_tasks("MT50")) == 50
    assert parse_tasks("reach-v3,ML10-test")[0] == "reach-v3" and len(parse_tasks("ML10-test,drawer-open-v3")) == 5
    with pytest.raises(ValueError, match="pass ML45-train or ML45-test"):
        parse_tasks("ML45")
    with pytest.raises(ValueError, match="or a benchmark: MT10, MT50, ML10-train"):
        parse_tasks("MT11")


def test_collect_help_lists_the_benchmarks(capsys):
    from wam.cli import main

    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    out = capsys.readouterr().out
    assert "MT10" in out and "ML45-test" in out


def test_collect_keeps_other_counts_for_the_tasks_named(tmp_path):
    """--task-episodes TASK=N replaces --episodes for that task only; a task not collected or a bad count is refused."""
    from wam.data.collect import CollectConfig, collect
    from wam.data.reader import read_dataset

    cfg = CollectConfig(out=tmp_path / "d", tasks="drawer-close-v3,reach-v3", episodes=1, task_episodes="reach-v3=3",
                        cameras=("top",), image_size=32, max_steps=200, workers=1)
    assert cfg.counts() == {"drawer-close-v3": 1, "reach-v3": 3}
    d = read_dataset(collect(cfg, progress=False))
    assert sorted(d.env_tasks) == ["drawer-close-v3", "reach-v3", "reach-v3", "reach-v3"]
    for bad, match in (("door-open-v3=2", "not collected; the tasks are: drawer-close-v3, reach-v3"),
                       ("reach-v3=0", "expected TASK=N with N >= 1"), ("reach-v3", "expected TASK=N")):
        with pytest.raises(ValueError, match=match):
            CollectConfig(tasks="drawer-close-v3,reach-v3", task_episodes=bad)
