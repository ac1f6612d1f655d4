"""The policy boundary, at the bottom of the package (numpy only): what a policy declares (`PolicyMetadata`),
reads (`Observation`) and returns (`PolicyOutput`), and the two protocols every loop is written against
(`Policy`, `Env`).

Notation: c context frames, H x W camera image, v cameras, a action size, k actions in a chunk, f predicted
future frames of side s.

An observation stands alone: the camera images by name, the robot state and the instruction (`prompt`) travel
together in every message, as openpi and RoboArena clients send them; a policy caches the prompt's embedding
by its text. `Observation.from_dict` reads the flat wire form (`observation/images/<camera>`,
`observation/state`, `prompt`, optionally `guide/actions` and `guide/weights`) and checks every key, dtype and
shape against what the policy declares; an error names the key, what was expected and what was received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

IMAGE_PREFIX = "observation/images/"
STATE_KEY = "observation/state"
PROMPT_KEY = "prompt"
GUIDE_ACTIONS_KEY = "guide/actions"
GUIDE_WEIGHTS_KEY = "guide/weights"


class ObservationError(ValueError):
    """An observation that does not match what the policy declares (the message names the key)."""


@dataclass(frozen=True)
class PolicyMetadata:
    """What a policy reads and returns, declared once; observations are checked against it."""

    cameras: tuple[str, ...]
    """Camera keys, in the order the policy reads them."""
    image_size: tuple[int, int]
    """(H, W) of every camera's frames."""
    context_offsets: tuple[int, ...]
    """Frames read per camera, as offsets from the current one (oldest first; (0,): the current frame only)."""
    state_dim: int
    """Robot state size (0: the policy reads no state)."""
    action_dim: int
    action_horizon: int
    """Actions per output: the chunk length (1 for a policy that returns one action per control step)."""
    state_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    fps: float | None = None
    """Control rate the policy was trained at (frames per second)."""
    recipe: str | None = None
    modes: tuple[str, ...] = ()
    """What the checkpoint can serve: policy, world_model, inverse_dynamics, video."""
    future_offsets: tuple[int, ...] = ()
    """Future frames it predicts, as offsets from the current one (empty: none)."""
    future_size: int | None = None
    """Side of the predicted future frames, px."""
    accepts_guide: bool = False
    """infer() honours `Observation.guide` (real-time chunking by inpainting)."""
    resize: str = "pad"
    """How a camera image of another shape is fitted to image_size, as in training (data/resize.fit): "pad"
    (letterbox) or "crop" (the centre)."""

    @property
    def context_frames(self) -> int:
        return len(self.context_offsets)

    def image_shape(self) -> tuple[int, ...]:
        """The shape of one camera's entry in an observation: (H, W, 3), or (c, H, W, 3) for c > 1 frames."""
        H, W = self.image_size
        return (H, W, 3) if self.context_frames == 1 else (self.context_frames, H, W, 3)

    def replace(self, **changes) -> PolicyMetadata:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyMetadata:
        """The inverse of to_dict; other entries (a server's handshake carries more) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Guide:
    """Actions a new chunk should agree with (its first len(actions) steps), with a weight each in [0, 1]:
    1 holds the action exactly (it is already being executed), less pulls it softly (runtime.py)."""

    actions: np.ndarray  # (n, a) in the robot's units
    weights: np.ndarray  # (n,)


@dataclass(frozen=True)
class Observation:
    """One control step's input to a policy."""

    images: Mapping[str, np.ndarray]
    """Camera key -> uint8 (H, W, 3), or (c, H, W, 3) when the policy reads c context frames (oldest first)."""
    state: np.ndarray | None = None
    """float32 (state_dim,) in the robot's units; None for a policy that reads no state."""
    prompt: str = ""
    """The instruction."""
    guide: Guide | None = None
    """Real-time chunking: actions the next chunk must agree with (only for policies that accept a guide)."""

    def current(self, camera: str) -> np.ndarray:
        """The newest frame of a camera: (H, W, 3)."""
        x = self.images[camera]
        return x if x.ndim == 3 else x[-1]

    def replace(self, **changes) -> Observation:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ checking
    def check(self, spec: PolicyMetadata) -> Observation:
        """This observation with the state as float32, or an ObservationError naming the key at fault. Cameras
        the policy does not read are left out; every camera it reads must be there."""
        images = {}
        for cam in spec.cameras:
            key = IMAGE_PREFIX + cam
            if cam not in self.images:
                raise ObservationError(f"{key} is missing: the policy reads cameras {list(spec.cameras)}, the "
                                       f"observation has {sorted(self.images)}")
            images[cam] = _image(key, self.images[cam], spec)
        return Observation(images=images, state=_state(self.state, spec), prompt=_prompt(self.prompt),
                           guide=_guide(self.guide, spec))

    # ------------------------------------------------------------------ the wire form
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], spec: PolicyMetadata) -> Observation:
        """Read the flat wire form, refusing unknown keys (a misspelt camera would otherwise go unnoticed)."""
        if not isinstance(data, Mapping):
            raise ObservationError(f"an observation is a dict of keys {_expected_keys(spec)}, got {type(data).__name__}")
        allowed = {IMAGE_PREFIX + c for c in spec.cameras} | {PROMPT_KEY}
        if spec.state_dim:
            allowed.add(STATE_KEY)
        if spec.accepts_guide:
            allowed |= {GUIDE_ACTIONS_KEY, GUIDE_WEIGHTS_KEY}
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise ObservationError(f"unknown key(s) {unknown}; this policy reads {_expected_keys(spec)}")
        if PROMPT_KEY not in data:
            raise ObservationError(f"{PROMPT_KEY} is missing: every observation carries its instruction (a str)")
        if spec.state_dim and STATE_KEY not in data:
            raise ObservationError(f"{STATE_KEY} is missing: expected float32 ({spec.state_dim},)")
        guide = None
        if GUIDE_ACTIONS_KEY in data or GUIDE_WEIGHTS_KEY in data:
            if GUIDE_ACTIONS_KEY not in data or GUIDE_WEIGHTS_KEY not in data:
                raise ObservationError(f"a guide needs both {GUIDE_ACTIONS_KEY} and {GUIDE_WEIGHTS_KEY}")
            guide = Guide(actions=data[GUIDE_ACTIONS_KEY], weights=data[GUIDE_WEIGHTS_KEY])
        images = {c: data[IMAGE_PREFIX + c] for c in spec.cameras if IMAGE_PREFIX + c in data}
        obs = cls(images=images, state=data.get(STATE_KEY), prompt=data[PROMPT_KEY], guide=guide)
        return obs.check(spec)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {IMAGE_PREFIX + c: np.asarray(x) for c, x in self.images.items()}
        if self.state is not None:
            out[STATE_KEY] = np.asarray(self.state, np.float32)
        out[PROMPT_KEY] = self.prompt
        if self.guide is not None:
            out[GUIDE_ACTIONS_KEY] = np.asarray(self.guide.actions, np.float32)
            out[GUIDE_WEIGHTS_KEY] = np.asarray(self.guide.weights, np.float32)
        return out


def _expected_keys(spec: PolicyMetadata) -> list[str]:
    keys = [IMAGE_PREFIX + c for c in spec.cameras] + ([STATE_KEY] if spec.state_dim else []) + [PROMPT_KEY]
    return keys + ([f"{GUIDE_ACTIONS_KEY} (optional)", f"{GUIDE_WEIGHTS_KEY} (optional)"] if spec.accepts_guide else [])


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} {tuple(x.shape)}"
    return type(x).__name__


def _image(key: str, x: Any, spec: PolicyMetadata) -> np.ndarray:
    want = spec.image_shape()
    frames = f" ({spec.context_frames} context frames at offsets {spec.context_offsets}, oldest first)" if len(want) == 4 else ""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != want:
        hint = ""
        if isinstance(x, np.ndarray) and x.shape == want[1:]:
            hint = "; send one frame per step through a FrameHistory wrapper (wam.runtime) to have them stacked"
        raise ObservationError(f"{key}: expected uint8 {want}{frames}, got {_describe(x)}{hint}")
    return x


def _state(x: Any, spec: PolicyMetadata) -> np.ndarray | None:
    if spec.state_dim == 0:
        return None
    want = f"float32 ({spec.state_dim},)" + (f" ({', '.join(spec.state_names)})" if spec.state_names else "")
    if x is None:
        raise ObservationError(f"{STATE_KEY} is missing: expected {want}")
    a = _array(x) if isinstance(x, (np.ndarray, list, tuple)) else None
    if a is None or a.dtype.kind not in "fiu" or a.shape != (spec.state_dim,):
        raise ObservationError(f"{STATE_KEY}: expected {want}, got {_describe(a if a is not None else x)}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ObservationError(f"{STATE_KEY}: expected finite values, got {a.tolist()}")
    return a


def _array(x: Any, dtype=None) -> np.ndarray | None:
    """x as an array, or None where it is not one (ragged lists, dicts inside, strings as numbers)."""
    try:
        return np.asarray(x, dtype)
    except (TypeError, ValueError, OverflowError):
        return None


def _prompt(x: Any) -> str:
    if not isinstance(x, str) or not x.strip():
        raise ObservationError(f"{PROMPT_KEY}: expected the instruction as a non-empty str, got {x!r:.60}")
    return x


def _guide(g: Guide | None, spec: PolicyMetadata) -> Guide | None:
    if g is None:
        return None
    if not spec.accepts_guide:
        raise ObservationError("this policy does not accept a guide (guide/actions, guide/weights)")
    actions, weights = _array(g.actions, np.float32), _array(g.weights, np.float32)
    if actions is None or weights is None or actions.ndim != 2 or actions.shape[1] != spec.action_dim or weights.shape != (len(actions),):
        raise ObservationError(f"{GUIDE_ACTIONS_KEY}/{GUIDE_WEIGHTS_KEY}: expected float32 (n, {spec.action_dim}) and "
                               f"(n,), got {_describe(g.actions)} and {_describe(g.weights)}")
    if not (np.isfinite(actions).all() and np.isfinite(weights).all()):
        raise ObservationError(f"{GUIDE_ACTIONS_KEY}/{GUIDE_WEIGHTS_KEY}: expected finite values")
    return Guide(actions=actions, weights=weights)


@dataclass
class PolicyOutput:
    """What a policy returns for one observation. Predicted frames are a first-class output."""

    actions: np.ndarray
    """float32 (k, a) in the robot's units; k = metadata.action_horizon."""
    frames: np.ndarray | None = None
    """uint8 (f, v, s, s, 3) predicted future frames of the chunk being executed, or None."""
    value: float | None = None
    """The predicted value of the chunk, for models that predict one."""
    timing: dict[str, float] = field(default_factory=dict)
    """Milliseconds: `infer_ms` the model's inference when this output computed a new chunk; wrappers add theirs."""
    fresh: bool = True
    """A new chunk was computed for this output (False: it came from a chunk already being executed)."""

    @property
    def infer_ms(self) -> float | None:
        return self.timing.get("infer_ms")

    def to_dict(self, frames: bool = True) -> dict[str, Any]:
        """The wire form: actions, timing, and the value and (when asked for) the frames where there are any."""
        out: dict[str, Any] = {"actions": np.asarray(self.actions, np.float32), "timing": dict(self.timing),
                               "fresh": self.fresh}
        if self.value is not None:
            out["value"] = float(self.value)
        if frames and self.frames is not None:
            out["frames"] = np.asarray(self.frames, np.uint8)
        return out


class Policy(Protocol):
    """Every policy, and every wrapper around one (runtime.py), follows this."""

    @property
    def metadata(self) -> PolicyMetadata: ...

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (a seed makes its sampling reproducible)."""

    def infer(self, obs: Observation) -> PolicyOutput: ...


class Env(Protocol):
    """Every environment the rollout loop runs: an observation carries its instruction as `prompt`."""

    def reset(self, seed: int) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, bool]:
        """Execute one action; returns the next observation and whether the task is solved."""

    def close(self) -> None: ...
