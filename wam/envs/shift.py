"""Distribution shifts at evaluation time, without retraining: `MetaWorldEnv(task, ..., shift="colour")`.

    colour       the table, floor, walls and the task's objects recoloured (never the robot, never the goal
                 markers, which are sites and which instructions name by colour: "the red goal marker")
    light        the scene's lights and headlight brighter or dimmer, with a colour cast, and ambient light added;
                 each light's direction tilted and its position moved
    camera       every camera moved: a free camera's lookat, azimuth, elevation and distance; a fixed camera's
                 position and orientation (Meta-World's own, in their body's frame)
    instruction  the instruction reworded: one of the task's three hand-written phrasings (tasks.REWORDED)

A shift is drawn per episode from the episode's variation seed, `np.random.default_rng([seed, salt])` with one
fixed salt per shift, so 20 evaluation episodes see 20 colourings or camera offsets, and the same 20 on every
run. It changes one env's own MuJoCo model and cameras, never the simulation: Meta-World builds a model per env,
and `Scene` keeps that env's defaults from its construction and writes defaults + this episode's draw at every
`reset(seed)`, so an env reused across episodes (as evaluation workers do) carries nothing from one to the next.
The magnitudes below are draws uniform in [-X, X] (or the range given), independently per light, camera or colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

COLOUR_RGB = (0.15, 1.0)
"""Each of a recoloured material's red, green and blue, uniform in this range (dark enough to differ from the
white wood and metal textures, bright enough to stay visible under the scene's lights). One colour per body and
material: the parts of one object that shared a colour still share one."""
LIGHT_SCALE = (1.25, 1.6)
"""The scene's brightness: every light's diffuse and specular and the headlight's three terms multiplied by one
factor, brighter (1.25 to 1.6) or dimmer (1 / 1.6 to 1 / 1.25), log-uniform, never close to unchanged."""
LIGHT_TINT = 0.2
"""A colour cast on all of them: each colour channel further multiplied by a factor in [1 - 0.2, 1 + 0.2]."""
LIGHT_AMBIENT = 0.15
"""Ambient light added to each light, up to (Meta-World's lights have none; its headlight's is 0.4)."""
LIGHT_TILT_DEG = 25.0
"""Each light's direction tilted by up to this angle, towards a random side."""
LIGHT_MOVE_M = 0.3
"""Each light's position moved by up to this, per axis (Meta-World's lights are directional: this shows only if
a light is not)."""
CAMERA_MOVE_M = 0.03
"""A free camera's lookat, or a fixed camera's position, moved by up to 3 cm per axis."""
CAMERA_TURN_DEG = 5.0
"""A free camera's azimuth and elevation turned by up to 5 degrees each; a fixed camera rotated by up to 5
degrees about a random axis."""
CAMERA_ZOOM = 0.05
"""A free camera's distance scaled by a factor in [1 - 0.05, 1 + 0.05]."""

_MODEL_FIELDS = ("geom_rgba", "light_diffuse", "light_ambient", "light_specular", "light_pos", "light_dir", "cam_pos",
                 "cam_quat")
_HEADLIGHT = ("ambient", "diffuse", "specular")


class Scene:
    """What a shift may change in one env: its MuJoCo `model` and its free cameras (mujoco.MjvCamera, or None for a
    camera of the model's own), with their defaults as they were when the scene was made. `apply` writes defaults
    + one episode's draw; `prompt` is the episode's instruction."""

    def __init__(self, model, free_cameras: list, task: str, instruction: str):
        self.model, self.free_cameras, self.task, self.instruction = model, list(free_cameras), task, instruction
        self.prompt = instruction
        self._defaults = {f: getattr(model, f).copy() for f in _MODEL_FIELDS}
        self._defaults.update({f"headlight.{f}": getattr(model.vis.headlight, f).copy() for f in _HEADLIGHT})
        self._free = [None if c is None else (c.lookat.copy(), c.distance, c.azimuth, c.elevation)
                      for c in free_cameras]
        self.robot = robot_geoms(model)

    def default(self, field: str) -> np.ndarray:
        """A model field's default (a copy): `geom_rgba`, ..., or `headlight.ambient` for model.vis.headlight's."""
        return self._defaults[field].copy()

    def restore(self) -> None:
        for f, value in self._defaults.items():
            owner, _, name = f.rpartition(".")
            getattr(self.model.vis.headlight if owner else self.model, name)[:] = value
        for cam, saved in zip(self.free_cameras, self._free):
            if cam is not None:
                cam.lookat[:], cam.distance, cam.azimuth, cam.elevation = saved
        self.prompt = self.instruction

    def apply(self, shift: str | None, seed: int) -> None:
        """The defaults, then (unless `shift` is None) the shift drawn for variation `seed`."""
        self.restore()
        if shift is not None:
            spec = REGISTRY[check_shift(shift)]
            spec.apply(self, np.random.default_rng([int(seed), spec.salt]))


def robot_geoms(model) -> np.ndarray:
    """Bool (ngeom,): the geoms of the robot, i.e. of the body tree holding Sawyer's `right_hand`, and of mocap
    bodies (the invisible handle the hand is driven by)."""
    import mujoco

    hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "right_hand")
    if hand < 0:
        raise ValueError("no body 'right_hand' in the model: expected Meta-World's Sawyer robot")
    body = model.geom_bodyid
    return (model.body_rootid[body] == model.body_rootid[hand]) | (model.body_mocapid[body] >= 0)


# ------------------------------------------------------------------------------ the shifts
def _colour(scene: Scene, rng: np.random.Generator) -> None:
    model = scene.model
    rgba = scene.default("geom_rgba")
    # MuJoCo draws a geom in its material's colour unless its own rgba differs from the default (0.5, 0.5, 0.5, 1);
    # the alpha kept is the one it is drawn with, so an invisible geom stays invisible.
    unset = np.all(rgba == np.float32([0.5, 0.5, 0.5, 1.0]), axis=1) & (model.geom_matid >= 0)
    alpha = np.where(unset, model.mat_rgba[model.geom_matid, 3], rgba[:, 3])
    keys = sorted({(int(model.geom_bodyid[g]), int(model.geom_matid[g])) for g in np.flatnonzero(~scene.robot)})
    colours = {k: rng.uniform(*COLOUR_RGB, size=3) for k in keys}
    for g in np.flatnonzero(~scene.robot):
        rgba[g] = (*colours[int(model.geom_bodyid[g]), int(model.geom_matid[g])], alpha[g])
    model.geom_rgba[:] = rgba


def _tilt(v: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vector `v` turned by `degrees` towards a random direction perpendicular to it."""
    side = np.cross(v, rng.normal(size=3))
    side /= np.linalg.norm(side)
    a = np.radians(degrees)
    return v * np.cos(a) + side * np.sin(a)


def _light(scene: Scene, rng: np.random.Generator) -> None:
    model = scene.model
    low, high = np.log(LIGHT_SCALE)
    brightness = np.exp(rng.choice([-1, 1]) * rng.uniform(low, high))
    scale = brightness * rng.uniform(1 - LIGHT_TINT, 1 + LIGHT_TINT, size=3)
    for f in _HEADLIGHT:
        getattr(model.vis.headlight, f)[:] = scene.default(f"headlight.{f}") * scale
    for i in range(model.nlight):
        model.light_diffuse[i] = scene.default("light_diffuse")[i] * scale
        model.light_specular[i] = scene.default("light_specular")[i] * scale
        model.light_ambient[i] = scene.default("light_ambient")[i] + rng.uniform(0, LIGHT_AMBIENT) * scale
        d = scene.default("light_dir")[i]
        model.light_dir[i] = _tilt(d / np.linalg.norm(d), rng.uniform(0, LIGHT_TILT_DEG), rng)
        model.light_pos[i] = scene.default("light_pos")[i] + rng.uniform(-LIGHT_MOVE_M, LIGHT_MOVE_M, size=3)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions, MuJoCo's convention."""
    w1, v1, w2, v2 = a[0], a[1:], b[0], b[1:]
    return np.concatenate([[w1 * w2 - v1 @ v2], w1 * v2 + w2 * v1 + np.cross(v1, v2)])


def _camera(scene: Scene, rng: np.random.Generator) -> None:
    model = scene.model
    for cam in scene.free_cameras:
        if cam is not None:  # its defaults were just restored
            cam.lookat[:] = cam.lookat + rng.uniform(-CAMERA_MOVE_M, CAMERA_MOVE_M, size=3)
            cam.azimuth += rng.uniform(-CAMERA_TURN_DEG, CAMERA_TURN_DEG)
            cam.elevation += rng.uniform(-CAMERA_TURN_DEG, CAMERA_TURN_DEG)
            cam.distance *= rng.uniform(1 - CAMERA_ZOOM, 1 + CAMERA_ZOOM)
    for i in range(model.ncam):
        model.cam_pos[i] = scene.default("cam_pos")[i] + rng.uniform(-CAMERA_MOVE_M, CAMERA_MOVE_M, size=3)
        axis = rng.normal(size=3)
        half = np.radians(rng.uniform(-CAMERA_TURN_DEG, CAMERA_TURN_DEG)) / 2
        turn = np.concatenate([[np.cos(half)], np.sin(half) * axis / np.linalg.norm(axis)])
        model.cam_quat[i] = _quat_mul(scene.default("cam_quat")[i], turn)  # about the camera's own axes


def _instruction(scene: Scene, rng: np.random.Generator) -> None:
    from wam.envs.tasks import REWORDED

    phrasings = REWORDED[scene.task]
    scene.prompt = phrasings[int(rng.integers(len(phrasings)))]


@dataclass(frozen=True)
class Shift:
    """One named shift: `apply(scene, rng)` writes its draw over the scene's restored defaults."""

    salt: int
    """Mixed with the episode's seed, so each shift draws its own numbers from the same seed."""
    apply: Callable[[Scene, np.random.Generator], None]


REGISTRY: dict[str, Shift] = {
    "colour": Shift(salt=0xC010, apply=_colour),
    "light": Shift(salt=0x1167, apply=_light),
    "camera": Shift(salt=0xCA4E, apply=_camera),
    "instruction": Shift(salt=0x1257, apply=_instruction),
}
SHIFTS: tuple[str, ...] = tuple(REGISTRY)
VISUAL_SHIFTS = ("colour", "light", "camera")
"""The shifts that change what the cameras see (the other one changes what the policy is told)."""


def check_shift(name: str | None) -> str | None:
    """`name` if it is a shift (None, for no shift, passes through), else a ValueError listing the valid names."""
    if name is not None and name not in REGISTRY:
        raise ValueError(f"unknown shift {name!r}; valid shifts are: {', '.join(SHIFTS)}")
    return name
