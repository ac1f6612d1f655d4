"""`wam collect`: Meta-World's scripted experts record demonstrations into a LeRobotDataset v3.0 folder.

Each task gets `episodes` successful episodes, from variation seeds `seed, seed+1, ...`. An expert episode
that does not succeed is discarded (and counted in meta/info.json), and the next seed is tried.
With `action_noise > 0` the executed action is the expert's plus Gaussian noise while the recorded label
stays the expert's clean action, so the policy sees states off the expert's path and how to recover
(DART, Laskey et al. 2017).

With `failures` the data is failure-rich instead (for a world model that must imagine failures, and the success
head that judges them, wam/judge): every episode is kept, solved or not; each draws its noise std uniformly from
[0, action_noise] and a speed uniformly from [0.2, 1] (the expert's xyz action scaled by it: slow, hesitant
behaviour that runs out of time); half the episodes also take a detour, a random stretch of steps in which the
hand steers to a random point of the workspace instead (a policy heading the wrong way), so the data spans clean to badly perturbed behaviour; the recorded action is the executed one
(noise included, what the world model must learn the effect of); and a solved episode goes on for
`AFTER_SUCCESS` more steps, so the solved state is seen, not only approached.

`--policies` adds rollouts of learned policies to such data (`policy_episodes` per task and policy, every one kept,
recorded the same way): checkpoint folders, weakened as `wam judge` names them (PATH#noise=0.5,
PATH#instruction=other), each run as `wam eval` runs it (the serving guard, chunks of its sampler's `execute`
actions). A perturbed expert fails in its own ways; a weak policy fails in others (a hand passing over the drawer
it should push, hovering short of the goal), and a judge's state model learns what does not happen there only from
seeing it. The column `wam/source` says which behaviour recorded each episode ("expert" or the policy as named).

Every frame also records the objects' poses and the goal as observation.environment_state (LeRobot's name;
`MetaWorldEnv.environment_state`): privileged simulator state that no policy reads, an auxiliary training target
(`wam train --train.environment-state-weight`).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from wam.data.writer import DatasetSpec, DatasetWriter, Episode
from wam.envs import make_env
from wam.envs.metaworld import DEFAULT_CAMERAS, ENVIRONMENT_STATE_NAMES, MAX_EPISODE_STEPS, MetaWorldEnv, check_cameras
from wam.envs.tasks import instruction, parse_tasks
from wam.types import Observation, Policy

DEFAULT_TASKS = "button-press-topdown-v3,drawer-close-v3,reach-v3"
STATE_NAMES = ("hand_x", "hand_y", "hand_z", "gripper")
ACTION_NAMES = ("delta_x", "delta_y", "delta_z", "gripper")
AFTER_SUCCESS = 8  # steps recorded after a --failures episode is solved
FPS = 80  # Meta-World steps at 80 Hz (frame_skip 5 x 2.5 ms)
START_LOW, START_HIGH = np.array([-0.15, -0.1, -0.08]), np.array([0.15, 0.1, 0.08])  # random-start box, metres


@dataclass(frozen=True)
class CollectConfig:
    out: Path = Path("runs/data/metaworld")
    """Dataset folder to create (LeRobotDataset v3.0 layout)."""
    tasks: str = DEFAULT_TASKS
    """Comma-separated Meta-World v3 task names, or benchmarks: MT10, MT50, ML10-train, ML10-test, ML45-train,
    ML45-test (see wam/envs/tasks.py)."""
    episodes: int = 50
    """Successful expert episodes per task."""
    task_episodes: str = ""
    """Other counts for some of the tasks, replacing `episodes` for them: TASK=N[,TASK=N...] (--task-episodes
    reach-v3=400). A task whose variations differ continuously (reach's goal anywhere in a 20 x 10 x 25 cm box) needs
    more of them than one whose object only moves."""
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    image_size: int = 96
    seed: int = 0
    """First variation seed; evaluation uses seeds from 100000 on, so keep demos below that."""
    action_noise: float = 0.0
    """Std of Gaussian noise added to the executed xyz action; labels stay the expert's."""
    random_start: int = 0
    """Steps spent steering the hand to a random point (within +-15/10/8 cm of its start) before recording,
    so demonstrations begin from diverse hand positions and the arm's pose alone cannot tell where an
    episode is heading. Evaluation always starts from Meta-World's own initial pose."""
    failures: bool = False
    """Failure-rich data (module docstring): keep every episode, solved or not, with the executed actions and a
    noise std and a speed drawn per episode; `episodes` then counts attempts, not successes."""
    policies: tuple[str, ...] = ()
    """With --failures: also record rollouts of these checkpoints (module docstring), `policy_episodes` per task and
    policy, from the same variation seeds as the expert's."""
    policy_episodes: int = 20
    """Rollouts per task and policy named by --policies."""
    action_free: bool = False
    """Keep the videos and states but no actions: stand-ins for action-free video, which trains only the
    future-frame stream (e.g. video pretraining on other tasks before fine-tuning with a few labelled demos)."""
    max_steps: int = MAX_EPISODE_STEPS
    workers: int = 2
    overwrite: bool = False

    def __post_init__(self):
        parse_tasks(self.tasks)
        check_cameras(self.cameras)
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        self.counts()
        if not 16 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {self.image_size}")
        if not 1 <= self.max_steps <= MAX_EPISODE_STEPS:
            raise ValueError(f"max_steps must be in [1, {MAX_EPISODE_STEPS}], got {self.max_steps}")
        if self.failures and (self.action_noise <= 0 or self.action_free):
            raise ValueError("--failures needs --action-noise > 0 (the largest noise std; each episode draws its own) "
                             "and actions (not --action-free)")
        if self.policies and not self.failures:
            raise ValueError("--policies records rollouts that may fail: it needs --failures (every episode kept)")
        if self.policy_episodes < 1:
            raise ValueError(f"--policy-episodes must be >= 1, got {self.policy_episodes}")

    def counts(self) -> dict[str, int]:
        """Episodes to keep per task: `episodes`, or the task's count in `task_episodes`."""
        tasks = parse_tasks(self.tasks)
        counts = dict.fromkeys(tasks, self.episodes)
        for item in filter(None, (x.strip() for x in self.task_episodes.split(","))):
            task, _, n = item.partition("=")
            task = task.strip()
            if not n.strip().isdigit() or int(n) < 1:
                raise ValueError(f"--task-episodes {item!r}: expected TASK=N with N >= 1, e.g. reach-v3=400")
            if task not in counts:
                raise ValueError(f"--task-episodes names {task!r}, which is not collected; the tasks are: {', '.join(tasks)}")
            counts[task] = int(n)
        return counts


_ENVS: dict[tuple, MetaWorldEnv] = {}


def expert_episode(task: str, seed: int, cameras: tuple[str, ...], image_size: int,
                   action_noise: float, max_steps: int, random_start: int = 0, failures: bool = False) -> Episode | None:
    """Roll out the scripted expert on variation `seed`; None if it did not succeed (with `failures`, never None:
    see the module docstring)."""
    key = (task, cameras, image_size)
    env = _ENVS.get(key) or _ENVS.setdefault(key, make_env(f"metaworld:{task}", cameras, image_size))
    rng = np.random.default_rng([seed, 7])
    obs = env.reset(seed)
    if random_start:  # steer the hand to a random point near its start before recording
        target = obs.state[:3] + rng.uniform(START_LOW, START_HIGH)
        for _ in range(random_start):
            move = np.clip(10.0 * (target - obs.state[:3]), -1, 1)
            obs, success = env.step(np.append(move, -1.0).astype(np.float32))
            if success:  # solved by chance: not a demonstration
                return None
    speed, detour, detour_to = 1.0, range(0), None
    if failures:
        action_noise, speed = float(rng.uniform(0.0, action_noise)), float(rng.uniform(0.2, 1.0))
        if rng.random() < 0.5:
            start = int(rng.integers(0, max_steps // 2))
            detour = range(start, start + int(rng.integers(20, max_steps)))
            detour_to = obs.state[:3] + rng.uniform(2 * START_LOW, 2 * START_HIGH)

    def act(t: int, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        action = env.expert_action()
        executed = action.copy()
        executed[:3] *= speed
        if t in detour:
            executed[:3] = np.clip(10.0 * (detour_to - obs.state[:3]), -1, 1)
        if action_noise > 0:
            executed[:3] += rng.normal(0.0, action_noise, 3)
        return executed, np.clip(executed if failures else action, -1, 1)

    steps = min(max_steps, MAX_EPISODE_STEPS - random_start)  # Meta-World truncates at 500 steps
    arrays = record(env, obs, act, steps, AFTER_SUCCESS if failures else 0)
    if not failures and not arrays["success"][-1]:
        return None
    return Episode(**arrays, task=instruction(task), columns={"wam/env_task": task, "wam/seed": seed})


def record(env: MetaWorldEnv, obs: Observation, act: Callable[[int, Observation], tuple[np.ndarray, np.ndarray]],
           steps: int, after: int) -> dict[str, np.ndarray | dict]:
    """Step `env` from `obs` for at most `steps` steps, `act(t, obs)` giving (the action to execute, the action to
    record), and stop `after` steps past the first success. Every step records the frames, the robot state and the
    environment state it acted on: the arrays of an `Episode` (images, state, action, success, environment_state)."""
    images, states, actions, successes, environment = {c: [] for c in obs.images}, [], [], [], []
    solved_at = None
    for t in range(steps):
        executed, recorded = act(t, obs)
        for c, frames in images.items():
            frames.append(obs.images[c])
        states.append(obs.state)
        environment.append(env.environment_state())
        actions.append(recorded)
        obs, success = env.step(executed)
        successes.append(success)
        if success and solved_at is None:
            solved_at = t
        if solved_at is not None and t - solved_at >= after:
            break
    return {"images": {c: np.stack(frames) for c, frames in images.items()}, "state": np.stack(states),
            "action": np.stack(actions), "success": np.asarray(successes), "environment_state": np.stack(environment)}


_RUNNERS: dict[tuple, Policy] = {}
MakePolicy = Callable[[str, tuple[str, ...], tuple[str, ...], int], Policy]
"""(the policy as named on the command line, the collected tasks, the cameras, the image size) -> a closed-loop
Policy (one action per step; `wam collect` passes wam.judge.policies.collector). The data layer records what a
policy does and never loads one itself; a module-level function, so that the collection's workers receive it."""


def policy_runner(make_policy: MakePolicy, text: str, tasks: tuple[str, ...], cameras: tuple[str, ...],
                  image_size: int) -> Policy:
    """`make_policy`'s policy for `text`, made once per process."""
    key = (text, tasks, cameras, image_size)
    if key not in _RUNNERS:
        _RUNNERS[key] = make_policy(text, tasks, cameras, image_size)
    return _RUNNERS[key]


def policy_episode(make_policy: MakePolicy, text: str, tasks: tuple[str, ...], task: str, seed: int,
                   cameras: tuple[str, ...], image_size: int, max_steps: int) -> Episode:
    """One rollout of the policy `text` names on variation `seed`, kept whatever its outcome: the executed
    actions (clipped to the action space, as the simulator applies them), `AFTER_SUCCESS` steps past a success."""
    runner = policy_runner(make_policy, text, tasks, cameras, image_size)
    key = (task, cameras, image_size)
    env = _ENVS.get(key) or _ENVS.setdefault(key, make_env(f"metaworld:{task}", cameras, image_size))
    obs = env.reset(seed)
    runner.reset(seed)

    def act(t: int, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        executed = np.clip(np.asarray(runner.infer(obs).actions[0], np.float32), -1, 1)
        return executed, executed

    return Episode(**record(env, obs, act, max_steps, AFTER_SUCCESS), task=instruction(task),
                   columns={"wam/env_task": task, "wam/seed": seed, "wam/source": text})


def _job(args):
    kind, rest = args[0], args[1:]
    if kind == "policy":
        if mp.current_process().name != "MainProcess":  # one thread per worker: the workers share the cores
            import torch

            torch.set_num_threads(1)
        return args[:1] + args[2:], policy_episode(*rest)
    ep = expert_episode(*rest)
    return args, ep


def collect(cfg: CollectConfig, progress: bool = True, make_policy: MakePolicy | None = None) -> Path:
    """Write the dataset `cfg` describes; `make_policy` runs the checkpoints of `cfg.policies` (MakePolicy)."""
    from tqdm import tqdm

    tasks = parse_tasks(cfg.tasks)
    if cfg.policies:
        if make_policy is None:
            raise ValueError("--policies needs a way to run a checkpoint: collect(cfg, make_policy=...) "
                             "(`wam collect` passes wam.judge.policies.collector)")
        for text in cfg.policies:  # each loaded once here: a bad name fails before anything is written
            policy_runner(make_policy, text, tasks, tuple(cfg.cameras), cfg.image_size)
    columns = ("wam/env_task", "wam/seed") + (("wam/source",) if cfg.policies else ())
    spec = DatasetSpec(fps=FPS, cameras=dict.fromkeys(cfg.cameras, (cfg.image_size, cfg.image_size)),
                       state_names=STATE_NAMES, action_names=ACTION_NAMES, robot_type="sawyer", success=True,
                       episode_columns=columns, environment_state_names=ENVIRONMENT_STATE_NAMES)
    writer = DatasetWriter(cfg.out, spec, overwrite=cfg.overwrite,
                           extra={"cameras": list(cfg.cameras), "image_size": cfg.image_size, "env": "metaworld-v3",
                                  "action_noise": cfg.action_noise, "random_start": cfg.random_start,
                                  "action_free": cfg.action_free, "failures": cfg.failures,
                                  **({"policies": list(cfg.policies), "policy_episodes": cfg.policy_episodes} if cfg.policies else {})})
    want = cfg.counts()
    budget = {t: 3 * n + 10 for t, n in want.items()}  # attempts per task before giving up
    kept = {t: 0 for t in tasks}
    failed = {t: 0 for t in tasks}
    solved = {t: 0 for t in tasks}
    next_seed = {t: cfg.seed for t in tasks}
    rollouts = [("policy", make_policy, p, tasks, t, cfg.seed + i, tuple(cfg.cameras), cfg.image_size, cfg.max_steps)
                for p in cfg.policies for t in tasks for i in range(cfg.policy_episodes)]
    policy_solved = {p: dict.fromkeys(tasks, 0) for p in cfg.policies}
    bar = tqdm(total=sum(want.values()) + len(rollouts), desc="collect", unit="ep", disable=not progress)
    pool = mp.get_context("spawn").Pool(cfg.workers) if cfg.workers > 1 else None
    try:
        # Waves: each asks for exactly the episodes still missing; results are added in (task, seed)
        # order, so the dataset does not depend on which worker finished first.
        while True:
            jobs = []
            for t in tasks:
                need = min(want[t] - kept[t], cfg.seed + budget[t] - next_seed[t])
                jobs += [("expert", t, next_seed[t] + i, tuple(cfg.cameras), cfg.image_size, cfg.action_noise, cfg.max_steps,
                          cfg.random_start, cfg.failures) for i in range(max(need, 0))]
                next_seed[t] += max(need, 0)
            jobs, rollouts = jobs + rollouts, []  # every rollout is kept: they all go in the first wave
            if not jobs:
                break
            for (kind, *args), ep in (pool.imap(_job, jobs) if pool else map(_job, jobs)):
                if kind == "policy":
                    writer.add(ep)
                    policy_solved[args[0]][args[2]] += bool(ep.success.any())
                    bar.update(1)
                    continue
                task = args[0]
                if ep is None:
                    failed[task] += 1
                    continue
                if cfg.policies:
                    ep = replace(ep, columns={**ep.columns, "wam/source": "expert"})
                writer.add(replace(ep, action=None) if cfg.action_free else ep)
                kept[task] += 1
                solved[task] += bool(ep.success.any())
                bar.update(1)
                bar.set_postfix(discarded=sum(failed.values()))
        short = {t: f"{k} of {want[t]}" for t, k in kept.items() if k < want[t]}
        if short:
            raise RuntimeError(f"the scripted expert succeeded too rarely to fill the episodes asked for: {short}")
        writer.extra["discarded_failures"] = failed
        if cfg.failures:
            writer.extra["solved"] = solved
        if cfg.policies:
            writer.extra["policy_solved"] = policy_solved
        writer.extra["seeds"] = [cfg.seed, cfg.seed + max(*budget.values(), cfg.policy_episodes if cfg.policies else 0)]
        return writer.finish()
    except BaseException:
        if pool:
            pool.terminate()
        writer.abort()
        raise
    finally:
        bar.close()
        if pool:
            pool.close()
            pool.join()
