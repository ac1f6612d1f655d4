"""Distribution shifts at evaluation (wam/envs/shift.py), checked on rendered pixels in the real simulator.

Renders are deterministic (the same scene renders to the same bytes), so a shift that changed nothing would show
a difference of exactly 0. MIN_CHANGE asks more: a mean absolute difference of 2 grey levels out of 255 over the
whole frame, e.g. a tenth of the pixels changed by 20 levels. The smallest per-camera differences measured on
this task over its first 20 evaluation seeds at 64 px (cameras oblique, top, corner3) were 11.2 (colour), 2.9
(light: bright surfaces saturate, so brightening shows less than dimming) and 3.3 (camera: a draw near zero on
every axis), and another seed's draw on the same layout differed from a seed's own by at least 13.4, 2.9 and
7.4: the threshold sits below every one of them, and far above the exact 0 of no change.
"""

import mujoco
import numpy as np
import pytest

from wam.envs.metaworld import MetaWorldEnv
from wam.envs.shift import SHIFTS, VISUAL_SHIFTS, check_shift, robot_geoms
from wam.envs.tasks import INSTRUCTIONS, REWORDED

TASK, SIZE = "drawer-close-v3", 64
CAMERAS = ("oblique", "top", "corner3")  # the two default free cameras and one of Meta-World's fixed ones
A, B = 100_000, 100_001  # the first evaluation seeds
MIN_CHANGE = 2.0


def _change(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(x.astype(np.int16) - y).mean())


def _same(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(np.array_equal(x[c], y[c]) for c in x)


@pytest.fixture(scope="module")
def default():
    """The default scene's frames for seeds A and B."""
    env = MetaWorldEnv(TASK, CAMERAS, SIZE)
    frames = {s: env.reset(s).images for s in (A, B)}
    env.close()
    return frames


def test_shift_names_and_their_error():
    assert SHIFTS == ("colour", "light", "camera", "instruction") and set(VISUAL_SHIFTS) < set(SHIFTS)
    assert check_shift("light") == "light" and check_shift(None) is None
    with pytest.raises(ValueError, match="unknown shift 'color'; valid shifts are: colour, light, camera, instruction"):
        check_shift("color")
    with pytest.raises(ValueError, match="unknown shift"):
        MetaWorldEnv(TASK, ("top",), 32, shift="fog")


def test_every_task_has_three_rewordings():
    assert set(REWORDED) == set(INSTRUCTIONS)
    for task, phrasings in REWORDED.items():
        assert len(phrasings) == 3 and len(set(phrasings)) == 3, task
        assert INSTRUCTIONS[task] not in phrasings and all(len(p.split()) >= 2 for p in phrasings), task


@pytest.mark.parametrize("shift", VISUAL_SHIFTS)
def test_a_visual_shift_changes_the_frames_per_seed_reproducibly(shift, default):
    env = MetaWorldEnv(TASK, CAMERAS, SIZE, shift)
    a = env.reset(A).images
    for c in CAMERAS:
        assert _change(a[c], default[A][c]) > MIN_CHANGE, (shift, c, _change(a[c], default[A][c]))
    assert _same(env.reset(A).images, a)  # the same seed, the same frames
    b = env.reset(B).images
    assert all(_change(b[c], default[B][c]) > MIN_CHANGE for c in CAMERAS)
    assert _same(env.reset(A).images, a)  # reused across seeds: A, B, A gives A's frames again
    # another seed's draw on this seed's layout: the shift itself differs from seed to seed
    env._scene.apply(shift, B)
    mujoco.mj_forward(env._env.model, env._env.data)  # places the moved cameras and lights
    other = env.render()
    for c in CAMERAS:
        assert _change(other[c], a[c]) > MIN_CHANGE, (shift, c, _change(other[c], a[c]))
    env.step(np.zeros(4))
    again = MetaWorldEnv(TASK, CAMERAS, SIZE, shift)  # reproducible in a new env (another worker, another run)
    assert _same(again.reset(A).images, a)
    env.close(), again.close()
    plain = MetaWorldEnv(TASK, CAMERAS, SIZE)  # after a shifted episode, no shift is the default scene exactly
    assert _same(plain.reset(A).images, default[A])
    plain.close()


def _robot_pixels(env) -> dict:
    """camera -> bool (H, W): the pixels that show the robot, from MuJoCo's segmentation rendering."""
    robot, renderer, masks = robot_geoms(env._env.model), env._renderer, {}
    renderer.enable_segmentation_rendering()
    for name, cam in zip(env.cameras, env._cams):
        renderer.update_scene(env._env.data, camera=cam)
        ids = renderer.render()
        masks[name] = (ids[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & robot[ids[..., 0].clip(0)]
    renderer.disable_segmentation_rendering()
    return masks


def test_colour_leaves_the_robot_alone(default):
    env = MetaWorldEnv(TASK, CAMERAS, SIZE, "colour")
    plain = MetaWorldEnv(TASK, CAMERAS, SIZE)
    shifted, masks = env.reset(A).images, _robot_pixels(env)
    plain.reset(A)
    robot = robot_geoms(env._env.model)
    assert robot.sum() > 20 and (~robot).sum() > 5  # the Sawyer's geoms, and the table's, walls' and drawer's
    rgba, rgba0 = env._env.model.geom_rgba, plain._env.model.geom_rgba
    np.testing.assert_array_equal(rgba[robot], rgba0[robot])
    assert not np.isclose(rgba[~robot, :3], rgba0[~robot, :3]).all(axis=1).any()  # every other geom recoloured
    for c in CAMERAS:  # the arm's pixels are the same bytes; the rest of the frame changed
        assert 100 < masks[c].sum() < 0.5 * SIZE * SIZE, c
        np.testing.assert_array_equal(shifted[c][masks[c]], default[A][c][masks[c]])
        assert _change(shifted[c][~masks[c]], default[A][c][~masks[c]]) > MIN_CHANGE
    env.close(), plain.close()


def _expert(env, seed: int) -> tuple[bool, np.ndarray]:
    obs, states, success = env.reset(seed), [], False
    for _ in range(150):
        states.append(obs.state)
        obs, success = env.step(env.expert_action())
        if success:
            break
    return success, np.stack(states)


def test_the_task_and_its_success_are_unaffected():
    plain = MetaWorldEnv(TASK, ("top",), 32)
    reference = {s: _expert(plain, s) for s in (A, B)}
    plain.close()
    assert all(ok for ok, _ in reference.values())
    for shift, seed in zip(SHIFTS, (A, B, A, B)):  # every shift, a couple of seeds: the same physics, step by step
        env = MetaWorldEnv(TASK, ("top",), 32, shift)
        success, states = _expert(env, seed)
        env.close()
        assert success and np.array_equal(states, reference[seed][1]), shift


def test_instruction_is_reworded_per_seed(default):
    env = MetaWorldEnv(TASK, CAMERAS, SIZE, "instruction")
    obs = env.reset(A)
    assert obs.prompt != INSTRUCTIONS[TASK] and obs.prompt in REWORDED[TASK]
    assert _same(obs.images, default[A])  # nothing visual changes
    assert env.step(np.zeros(4))[0].prompt == obs.prompt  # the whole episode
    prompts = [env.reset(s).prompt for s in range(A, A + 6)]
    assert prompts[0] == obs.prompt and set(prompts) <= set(REWORDED[TASK]) and len(set(prompts)) > 1
    env.close()


def test_make_env_passes_a_shift_only_to_a_factory_that_takes_one(monkeypatch):
    from wam.envs import ENVS, make_env

    env = make_env(f"metaworld:{TASK}", ("top",), 32, shift="instruction")
    assert env.shift == "instruction" and env.reset(A).prompt in REWORDED[TASK]
    env.close()
    monkeypatch.setitem(ENVS, "plain", lambda task, cameras, image_size: (task, cameras, image_size))
    assert make_env("plain:x", ("top",), 32) == ("x", ("top",), 32)
    with pytest.raises(ValueError, match="plain envs take no shift"):
        make_env("plain:x", ("top",), 32, shift="colour")


def test_eval_shift_names_a_bad_shift_in_one_line(cli_error, tmp_path):
    line = cli_error(["eval", str(tmp_path), "--shift", "bogus"])
    assert "unknown shift 'bogus'; valid shifts are: colour, light, camera, instruction" in line
    line = cli_error(["eval", str(tmp_path), "--shift", "instruction", "--instruction", "close it"])
    assert "--instruction replaces every prompt" in line


def test_eval_under_a_shift_records_it_and_keeps_an_env_per_shift(tiny_dataset, tmp_path, monkeypatch):
    import json
    from dataclasses import replace

    import wam.evaluate
    from wam.config import preset
    from wam.evaluate import EpisodeJob, EvalConfig, evaluate
    from wam.testing import concrete
    from wam.train import train

    workers = []

    class Kept(wam.evaluate.Worker):  # the evaluation's own worker, kept to look at its envs
        def __init__(self, setup):
            super().__init__(setup)
            workers.append(self)

    monkeypatch.setattr(wam.evaluate, "Worker", Kept)
    P = concrete(preset("tiny"))
    ckpt = train(replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=1), P.model, P.sampler, progress=False)
    summary = evaluate(EvalConfig(checkpoint=ckpt, tasks=TASK, episodes=2, max_steps=2, workers=1, videos=0,
                                  shift="colour", out=tmp_path / "eval"), progress=False)
    assert summary["shift"] == json.loads((tmp_path / "eval/results.json").read_text())["shift"] == "colour"
    assert "Shift at evaluation: <b>colour</b>" in (tmp_path / "eval/report.html").read_text()
    (worker,) = workers
    name = f"metaworld:{TASK}"
    assert set(worker.envs) == {(name, "colour")} and worker.envs[name, "colour"].shift == "colour"
    worker.run(EpisodeJob(env=name, task=TASK, seed=A, max_steps=1))
    assert set(worker.envs) == {(name, "colour"), (name, None)} and worker.envs[name, None].shift is None
    for env in worker.envs.values():
        env.close()
