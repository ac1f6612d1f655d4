"""Meta-World v3 as a `wam` environment: fast offscreen rendering, seeded task variations, scripted experts.

An observation is a `wam.types.Observation`: `images` uint8 (H, W, 3) by camera name, `state` float32 (4,)
(hand xyz and gripper opening, `obs[:4]`) and the task's written instruction as `prompt`. The scripted expert
sees Meta-World's full state vector; the policy never does. `make_env("metaworld:TASK", ...)` (envs/__init__.py)
builds one by name.

Variations: `reset(seed)` seeds Meta-World's own sampler (`seeded_rand_vec`), so a seed names one
object/goal placement, reproducibly, with Meta-World's own rejection rules. Demonstrations and evaluation
draw seeds from disjoint ranges (see `data/collect.py` and `evaluate.py`).

Shifts: `MetaWorldEnv(..., shift="colour")` (or light, camera, instruction; envs/shift.py) changes what the
cameras see or the instruction the policy reads, drawn afresh from the seed at every `reset(seed)`; the
simulation, the expert and the success flag are Meta-World's own, unchanged.
"""

from __future__ import annotations

import atexit
import copy
import os
import weakref
from dataclasses import dataclass

import numpy as np

from wam.types import Observation

os.environ.setdefault("MUJOCO_GL", "egl")

STATE_DIM = 4
ACTION_DIM = 4
ENVIRONMENT_STATE_NAMES = (
    *(f"object_{k}" for k in ("x", "y", "z", "qx", "qy", "qz", "qw")),
    *(f"object2_{k}" for k in ("x", "y", "z", "qx", "qy", "qz", "qw")),
    "goal_x", "goal_y", "goal_z")
"""What `environment_state()` returns: Meta-World's obs[4:18] (the task's first and second object, position and
quaternion x, y, z, w; zeros where a task has none) and obs[36:39] (the goal). Privileged: the policy never reads it."""
MAX_EPISODE_STEPS = 500  # Meta-World's own max_path_length
FINGERTIP_OFFSET = (0.0, 0.0022, -0.0450)
"""Meta-World's `tcp_center` (the point between the two fingers, from which it decides reach and grasp) minus the
hand position that the state records (obs[:3]), in metres: constant to within 4 mm at the hand's fixed orientation
(tests/test_environment_state.py checks it on the simulator)."""


@dataclass(frozen=True)
class FreeCamera:
    """A MuJoCo free camera looking at the workspace (metres and degrees)."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float


# Cameras framed on the central workspace where most tasks' objects live (x within +-0.2 m, y 0.55-0.95 m);
# the *_wide ones show the whole table, for tasks that reach further out; oblique_near is the oblique view a third
# closer, framed on the back half where the demo's button, drawer and reach goal live (the goal marker twice as
# many pixels). Meta-World's own fixed cameras
# (topview, corner, corner2, corner3, corner4, behindGripper, gripperPOV) can be named as well.
FREE_CAMERAS: dict[str, FreeCamera] = {
    "oblique": FreeCamera(lookat=(0.0, 0.72, 0.12), distance=0.9, azimuth=135.0, elevation=-35.0),
    "top": FreeCamera(lookat=(0.0, 0.72, 0.1), distance=0.7, azimuth=90.0, elevation=-89.0),
    "oblique_near": FreeCamera(lookat=(0.0, 0.78, 0.12), distance=0.6, azimuth=135.0, elevation=-30.0),
    "oblique_wide": FreeCamera(lookat=(0.0, 0.7, 0.1), distance=1.1, azimuth=135.0, elevation=-35.0),
    "top_wide": FreeCamera(lookat=(0.0, 0.7, 0.1), distance=1.0, azimuth=90.0, elevation=-89.0),
    "side": FreeCamera(lookat=(0.0, 0.7, 0.1), distance=1.0, azimuth=180.0, elevation=-30.0),
}
DEFAULT_CAMERAS = ("oblique", "top")
"""What `wam collect` records unless told otherwise."""
METAWORLD_CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")


@dataclass(frozen=True)
class Snapshot:
    """A simulator state to return to (MetaWorldEnv.snapshot / restore)."""

    sim: np.ndarray
    env: dict
    raw: np.ndarray | None
    prompt: str


def _plain(v) -> bool:
    """A value of the task's Python-side state: numbers, arrays, strings, and tuples/lists/dicts of them."""
    if isinstance(v, (bool, int, float, str, np.ndarray, np.generic, type(None))):
        return True
    if isinstance(v, (tuple, list)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def check_cameras(cameras: tuple[str, ...]) -> tuple[str, ...]:
    valid = tuple(FREE_CAMERAS) + METAWORLD_CAMERAS
    for c in cameras:
        if c not in valid:
            raise ValueError(f"unknown camera {c!r}; valid cameras are: {', '.join(valid)}")
    if not cameras:
        raise ValueError("at least one camera is needed")
    return tuple(cameras)


_LIVE: "weakref.WeakSet[MetaWorldEnv]" = weakref.WeakSet()
_CLEANUP_REGISTERED = False


def _close_live() -> None:
    for env in list(_LIVE):
        env.close()


def _register_cleanup() -> None:
    # MuJoCo's EGL module terminates the display at exit; atexit runs handlers last-in first-out, so this
    # one, registered after MuJoCo's, frees our GL contexts while the display still exists.
    global _CLEANUP_REGISTERED
    if not _CLEANUP_REGISTERED:
        atexit.register(_close_live)
        _CLEANUP_REGISTERED = True


class MetaWorldEnv:
    """One Meta-World v3 task rendered from `cameras` at `image_size` px. `step` returns (obs, success).
    `shift` names a distribution shift (envs/shift.py) drawn per episode from the seed of `reset`."""

    def __init__(self, task: str, cameras: tuple[str, ...] = ("oblique", "top"), image_size: int = 96,
                 shift: str | None = None):
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        from wam.envs.shift import Scene, check_shift
        from wam.envs.tasks import check_task, instruction

        self.task = check_task(task)
        self.shift = check_shift(shift)
        self.instruction = instruction(task)
        self.cameras = check_cameras(tuple(cameras))
        self.image_size = image_size
        env = ALL_V3_ENVIRONMENTS[task]()
        env._partially_observable = False  # the scripted expert needs the goal; the policy only sees obs[:4]
        env.__dict__.pop("sawyer_observation_space", None)  # cached for the hidden goal: it would clip it to 0
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        self._env = env
        self._raw: np.ndarray | None = None
        self._expert = None

        # Fast offscreen rendering: buffer shrunk to the output, no shadows, reflections or multisampling.
        model = env.model
        model.vis.global_.offwidth = image_size
        model.vis.global_.offheight = image_size
        model.vis.quality.offsamples = 0
        self._renderer = mujoco.Renderer(model, image_size, image_size)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        _LIVE.add(self)
        _register_cleanup()
        self._cams = []
        for name in self.cameras:
            if name in FREE_CAMERAS:
                spec = FREE_CAMERAS[name]
                cam = mujoco.MjvCamera()
                cam.type = mujoco.mjtCamera.mjCAMERA_FREE
                cam.lookat[:] = spec.lookat
                cam.distance, cam.azimuth, cam.elevation = spec.distance, spec.azimuth, spec.elevation
                self._cams.append(cam)
            else:
                self._cams.append(name)
        # the defaults of what a shift changes, kept from here; each reset writes them + that episode's draw
        self._scene = None if shift is None else Scene(model, [None if isinstance(c, str) else c for c in self._cams],
                                                       self.task, self.instruction)
        self._prompt = self.instruction

    # ---------------------------------------------------------------- protocol
    def reset(self, seed: int) -> Observation:
        if self._scene is not None:  # before Meta-World's reset, whose forward pass places the moved cameras and lights
            self._scene.apply(self.shift, seed)
            self._prompt = self._scene.prompt
        self._env.seed(int(seed))
        self._raw, _ = self._env.reset()
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        if self._raw is None:
            raise RuntimeError("call reset(seed) before step()")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"expected an action of shape ({ACTION_DIM},), got {action.shape}")
        self._raw, _, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        return self._observe(), bool(info["success"])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            self._env.close()
        _LIVE.discard(self)

    # ---------------------------------------------------------------- extras
    def expert_action(self) -> np.ndarray:
        """The scripted Meta-World expert's action for the current state."""
        if self._expert is None:
            from metaworld.policies import ENV_POLICY_MAP

            self._expert = ENV_POLICY_MAP[self.task]()
        return np.asarray(self._expert.get_action(self._raw), dtype=np.float32)

    def environment_state(self) -> np.ndarray:
        """float32 (len(ENVIRONMENT_STATE_NAMES),): the objects' poses and the goal now (what LeRobot datasets call
        observation.environment_state). `wam collect` records it as a training target the policy never reads."""
        if self._raw is None:
            raise RuntimeError("call reset(seed) before environment_state()")
        return np.concatenate([self._raw[4:18], self._raw[36:39]]).astype(np.float32)

    def snapshot(self) -> "Snapshot":
        """Everything the next steps depend on: MuJoCo's integration state (positions, velocities, controls, mocap,
        time) and the task's own Python-side state (path length, the previous observation it stacks, targets)."""
        import mujoco

        model, data = self._env.model, self._env.data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        sim = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, sim, spec)
        plain = {k: copy.deepcopy(v) for k, v in vars(self._env).items() if _plain(v)}
        return Snapshot(sim=sim, env=plain, raw=None if self._raw is None else self._raw.copy(), prompt=self._prompt)

    def restore(self, snap: "Snapshot") -> Observation:
        """Put the simulator back in the state `snapshot()` saw; returns the observation of that moment."""
        import mujoco

        model, data = self._env.model, self._env.data
        mujoco.mj_setState(model, data, snap.sim, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)
        for k, v in snap.env.items():
            setattr(self._env, k, copy.deepcopy(v))
        self._raw = None if snap.raw is None else snap.raw.copy()
        self._prompt = snap.prompt
        return self._observe()

    def render(self) -> dict[str, np.ndarray]:
        """camera -> (H, W, 3) uint8"""
        frames = {}
        for name, cam in zip(self.cameras, self._cams):
            self._renderer.update_scene(self._env.data, camera=cam)
            frames[name] = self._renderer.render()
        return frames

    def _observe(self) -> Observation:
        return Observation(images=self.render(), state=self._raw[:STATE_DIM].astype(np.float32), prompt=self._prompt)
