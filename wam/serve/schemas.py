"""Observation schemas of the wire: how an incoming message is read into the checkpoint's own wire form
(`wam.types.Observation.from_dict`), and what the handshake adds. numpy only.

    wam     the checkpoint's own keys (observation/images/<camera>, observation/state, prompt): passed through
    droid   RoboArena/DROID's keys (observation/exterior_image_1_left, observation/exterior_image_2_left,
            observation/wrist_image_left, observation/joint_position, observation/gripper_position, prompt,
            session_id, endpoint), mapped onto the checkpoint's cameras and state by a declared `DroidMapping`

A `DroidMapping` says which DROID image feeds which checkpoint camera and how the state is assembled from
slices of the DROID state keys, in order. As JSON (`wam serve CKPT --schema droid --droid-mapping FILE`):

    {"cameras": {"exterior_image_1_left": "oblique", "wrist_image_left": "top"},
     "state": [{"key": "joint_position", "stop": 3}, {"key": "gripper_position"}],
     "action_space": "joint_position"}

A mapping that cannot fit the checkpoint (a camera it reads fed by no image, a state of another size) is
refused when the server starts, with a one-line ValueError saying what was expected. The droid handshake adds
RoboArena's `PolicyServerConfig` fields (image_resolution, n_external_cameras, needs_wrist_camera,
needs_stereo_camera, needs_session_id, action_space) and the mapping itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wam.types import IMAGE_PREFIX, PROMPT_KEY, STATE_KEY, ObservationError, PolicyMetadata

DROID_PREFIX = "observation/"
DROID_IMAGES = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
DROID_STATE = {"joint_position": 7, "cartesian_position": 6, "gripper_position": 1}
"""DROID's state keys and their sizes (cartesian_position is read only when a mapping uses it)."""
SESSION_KEY = "session_id"


@dataclass(frozen=True)
class StateSlice:
    """observation/<key>[start:stop] (stop None: to the end)."""

    key: str
    start: int = 0
    stop: int | None = None

    def __post_init__(self):
        if self.key not in DROID_STATE:
            raise ValueError(f"droid mapping: state key {self.key!r}: expected one of {sorted(DROID_STATE)}")
        size = DROID_STATE[self.key]
        stop = size if self.stop is None else self.stop
        if not 0 <= self.start < stop <= size:
            raise ValueError(f"droid mapping: {self.key}[{self.start}:{self.stop}] is empty or outside its {size} values")

    @property
    def size(self) -> int:
        return (DROID_STATE[self.key] if self.stop is None else self.stop) - self.start

    def __str__(self) -> str:
        return f"{self.key}[{self.start}:{DROID_STATE[self.key] if self.stop is None else self.stop}]"


@dataclass(frozen=True)
class DroidMapping:
    """Which DROID image feeds which checkpoint camera, and the state as DROID slices in order."""

    cameras: dict[str, str]
    """DROID image name (exterior_image_1_left, ...) -> checkpoint camera."""
    state: tuple[StateSlice, ...] = (StateSlice("joint_position"), StateSlice("gripper_position"))
    action_space: str = "joint_position"
    """What the checkpoint's actions are, as declared to RoboArena clients (joint_position, joint_velocity, ...)."""

    def __post_init__(self):
        unknown = sorted(set(self.cameras) - set(DROID_IMAGES))
        if unknown:
            raise ValueError(f"droid mapping: unknown image(s) {unknown}; expected some of {list(DROID_IMAGES)}")
        fed = list(self.cameras.values())
        if len(set(fed)) != len(fed):
            raise ValueError(f"droid mapping: a checkpoint camera is fed twice: {self.cameras}")

    @classmethod
    def default(cls, spec: PolicyMetadata) -> DroidMapping:
        """exterior 1, then the wrist, then exterior 2 onto the checkpoint's cameras in order; joints + gripper."""
        order = ("exterior_image_1_left", "wrist_image_left", "exterior_image_2_left")
        return cls(cameras=dict(zip(order, spec.cameras)))

    @classmethod
    def from_dict(cls, d: dict) -> DroidMapping:
        unknown = sorted(set(d) - {"cameras", "state", "action_space"})
        if unknown or not isinstance(d.get("cameras"), dict):
            raise ValueError(f"droid mapping: expected keys cameras (a dict), state (a list), action_space; got {sorted(d)}")
        state = d.get("state")
        parts = (tuple(StateSlice(**s) if isinstance(s, dict) else StateSlice(str(s)) for s in state)
                 if state is not None else cls.state)
        return cls(cameras=dict(d["cameras"]), state=parts, action_space=str(d.get("action_space", cls.action_space)))

    @classmethod
    def load(cls, path: Path) -> DroidMapping:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"droid mapping {path}: {e}") from None

    def to_dict(self) -> dict:
        return {"cameras": dict(self.cameras), "action_space": self.action_space,
                "state": [{"key": s.key, "start": s.start, "stop": s.stop} for s in self.state]}

    @property
    def state_dim(self) -> int:
        return sum(s.size for s in self.state)

    def check(self, spec: PolicyMetadata) -> None:
        """A ValueError (one line, what was expected) where this mapping cannot feed the checkpoint."""
        unfed = [c for c in spec.cameras if c not in self.cameras.values()]
        foreign = sorted(set(self.cameras.values()) - set(spec.cameras))
        if unfed or foreign:
            raise ValueError(f"droid mapping: the checkpoint reads cameras {list(spec.cameras)}, the mapping feeds "
                             f"{sorted(self.cameras.values())} (unfed {unfed}, unknown {foreign})")
        if self.state_dim != spec.state_dim:
            names = f" ({', '.join(spec.state_names)})" if spec.state_names else ""
            raise ValueError(f"droid mapping: the checkpoint reads a state of {spec.state_dim}{names}, the mapping "
                             f"assembles {self.state_dim} ({' + '.join(map(str, self.state)) or 'nothing'})")


class WamSchema:
    """The checkpoint's own keys: messages pass through as they are."""

    name = "wam"

    def check(self, spec: PolicyMetadata) -> None:
        pass

    def handshake(self, spec: PolicyMetadata) -> dict:
        return {"schema": self.name}

    def translate(self, data: dict, spec: PolicyMetadata) -> tuple[dict, Any]:
        """(the message in the checkpoint's wire form, its session id or None)."""
        return data, None


class DroidSchema:
    """RoboArena/DROID's keys, read through a `DroidMapping` (see the module docstring)."""

    name = "droid"

    def __init__(self, mapping: DroidMapping):
        self.mapping = mapping

    def check(self, spec: PolicyMetadata) -> None:
        self.mapping.check(spec)

    def handshake(self, spec: PolicyMetadata) -> dict:
        images = set(self.mapping.cameras)
        return {"schema": self.name, "droid_mapping": self.mapping.to_dict(),
                # RoboArena's PolicyServerConfig
                "image_resolution": list(spec.image_size),
                "n_external_cameras": len(images - {"wrist_image_left"}),
                "needs_wrist_camera": "wrist_image_left" in images, "needs_stereo_camera": False,
                "needs_session_id": True, "action_space": self.mapping.action_space}

    def allowed(self) -> list[str]:
        return ([DROID_PREFIX + k for k in DROID_IMAGES] + [DROID_PREFIX + k for k in DROID_STATE]
                + [PROMPT_KEY, SESSION_KEY, "endpoint", "seed"])

    def translate(self, data: dict, spec: PolicyMetadata) -> tuple[dict, Any]:
        unknown = sorted(k for k in data if k not in self.allowed())
        if unknown:
            raise ObservationError(f"unknown key(s) {unknown}; the droid schema reads {self.allowed()}")
        session = data.get(SESSION_KEY)
        if (session is not None and not isinstance(session, (str, int))) or isinstance(session, bool):
            raise ObservationError(f"{SESSION_KEY}: expected a str or an int, got {type(session).__name__}")
        if data.get("endpoint", "infer") != "infer":  # reset (or an unknown endpoint, for the server to name)
            return {k: data[k] for k in ("endpoint", "seed") if k in data}, session
        if "seed" in data:
            raise ObservationError("seed: only a reset takes a seed")
        out = {k: data[k] for k in ("endpoint", PROMPT_KEY) if k in data}
        for image, camera in self.mapping.cameras.items():
            key = DROID_PREFIX + image
            if key not in data:
                raise ObservationError(f"{key} is missing: the droid mapping feeds camera {camera!r} from it "
                                       f"(uint8 (H, W, 3)); mapped images: {sorted(self.mapping.cameras)}")
            out[IMAGE_PREFIX + camera] = data[key]
        if self.mapping.state:
            parts = []
            for s in self.mapping.state:
                key, size = DROID_PREFIX + s.key, DROID_STATE[s.key]
                x = data.get(key)
                a = np.asarray(x) if isinstance(x, (np.ndarray, list, tuple, float, int)) else None
                if a is None or a.dtype.kind not in "fiu" or a.size != size or a.ndim > 1:
                    got = f"{a.dtype} {a.shape}" if a is not None else ("nothing" if x is None else type(x).__name__)
                    raise ObservationError(f"{key}: expected float ({size},), got {got}")
                parts.append(a.reshape(size)[s.start:s.stop].astype(np.float32))
            out[STATE_KEY] = np.concatenate(parts)
        return out, session


SCHEMAS = ("wam", "droid")


def make_schema(name: str, spec: PolicyMetadata, droid_mapping: Path | DroidMapping | None = None):
    """The schema by name, checked against the checkpoint's spec (a ValueError naming what was expected)."""
    if name not in SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; expected one of {list(SCHEMAS)}")
    if name == "wam":
        if droid_mapping is not None:
            raise ValueError("--droid-mapping is read only with --schema droid")
        return WamSchema()
    if isinstance(droid_mapping, DroidMapping):
        mapping = droid_mapping
    else:
        mapping = DroidMapping.load(droid_mapping) if droid_mapping is not None else DroidMapping.default(spec)
    schema = DroidSchema(mapping)
    schema.check(spec)
    return schema
