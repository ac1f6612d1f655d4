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
    assert a["images"].shape == (2, 32, 32, 3) and a["images"].dtype == np.uint8 and a["state"].shape == (4,)
    goal_a = env._env._target_pos.copy()
    env.reset(4)
    goal_b = env._env._target_pos.copy()
    env.reset(3)
    assert np.allclose(env._env._target_pos, goal_a) and not np.allclose(goal_a, goal_b)
    obs, success = env.step(np.zeros(4))
    assert obs["images"].shape == (2, 32, 32, 3) and success in (True, False)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    env.close()


def test_scripted_expert_solves_drawer_close():
    env = MetaWorldEnv("drawer-close-v3", ("top",), 32)
    env.reset(0)
    for _ in range(200):
        _, success = env.step(env.expert_action())
        if success:
            break
    env.close()
    assert success
