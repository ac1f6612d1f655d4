"""A policy trained by lerobot (`lerobot-train`: ACT, Diffusion Policy) behind our `Policy` protocol, so that
`wam eval --policy lerobot:PATH` scores it on the same held-out variations, cameras and success metric as our own
checkpoints (the peer baseline, `wam bench peers`).

PATH is the `pretrained_model` folder lerobot saves (config.json with its "type", model.safetensors, the pre- and
post-processor pipelines, and train_config.json naming the dataset it was trained on). lerobot itself loads the
policy and both pipelines; this adapter only turns our `Observation` into lerobot's batch (float CHW images in
[0, 1] under `observation.images.<camera>`, `observation.state`, the instruction as `task`) and back.

Execution is lerobot's own: `select_action` every control step, with the policy's own queues (ACT's
`n_action_steps` of each chunk, Diffusion Policy's `n_obs_steps` observation history), exactly as
`lerobot-eval` drives it. So the adapter is a step-level policy (action_horizon 1): it is not wrapped in our
chunk executor, and an output is `fresh` (with `infer_ms`) only on the steps where the network ran, so that
ms per chunk means the same thing as for our policies.

lerobot is not a dependency of `wam`: it lives in the separate venv scripts/lerobot-venv.sh builds, and only
this module imports it, lazily.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from wam.types import Observation, PolicyMetadata, PolicyOutput

IMAGE_PREFIX = "observation.images."
KNOWN_TYPES = ("act", "diffusion")
"""The lerobot policy types this adapter drives (their `select_action` queues are read to tell a new chunk)."""


class LeRobotCheckpointError(ValueError):
    """A folder that is not a lerobot checkpoint this adapter can run (the message says what was expected)."""


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(config.json, train_config.json) of a lerobot `pretrained_model` folder, checked without importing lerobot."""
    path = Path(path)
    file = path / "config.json"
    if not file.is_file():
        raise LeRobotCheckpointError(f"{path} is not a lerobot checkpoint: {file} is missing (expected the "
                                     f"pretrained_model folder lerobot-train saves, e.g. OUT/checkpoints/last/pretrained_model)")
    config = json.loads(file.read_text())
    kind = config.get("type")
    if kind is None:
        raise LeRobotCheckpointError(f"{file} has no \"type\": it is not a lerobot policy config (a wam checkpoint "
                                     f"is evaluated as `wam eval {path}`, without --policy)")
    if kind == "wam":
        raise LeRobotCheckpointError(f"{path} is a lerobot checkpoint of a wam policy: evaluate it natively with "
                                     f"`wam eval {path}` (no --policy lerobot:)")
    if kind not in KNOWN_TYPES:
        raise LeRobotCheckpointError(f"{path}: lerobot policy type {kind!r} is not supported; expected one of "
                                     f"{', '.join(KNOWN_TYPES)}")
    train_file = path / "train_config.json"
    train = json.loads(train_file.read_text()) if train_file.is_file() else {}
    return config, train


def dataset_root(path: str | Path, train: dict) -> Path:
    """The dataset the checkpoint was trained on (train_config.json's dataset.root), which must still be on disk:
    its tasks and variation seeds say what to evaluate on and which seeds are held out."""
    root = (train.get("dataset") or {}).get("root")
    if not root:
        raise LeRobotCheckpointError(f"{Path(path) / 'train_config.json'} names no dataset root: wam eval needs the "
                                     f"dataset the policy was trained on (lerobot-train --dataset.root DIR)")
    root = Path(root)
    if not (root / "meta" / "info.json").is_file():
        raise LeRobotCheckpointError(f"the dataset {path} was trained on, {root}, is not on this machine "
                                     f"(no {root / 'meta' / 'info.json'}); run from the folder lerobot-train ran in")
    return root


def metadata_of(config: dict, fps: float | None = None) -> PolicyMetadata:
    """What the lerobot policy reads, from its config.json's input and output features."""
    features = config.get("input_features") or {}
    cameras, sizes = [], set()
    for key, ft in features.items():
        if ft.get("type") == "VISUAL":
            if not key.startswith(IMAGE_PREFIX):
                raise LeRobotCheckpointError(f"the lerobot policy reads camera {key!r}; expected keys "
                                             f"{IMAGE_PREFIX}<camera> naming one of our simulator's cameras")
            cameras.append(key[len(IMAGE_PREFIX):])
            sizes.add(tuple(ft["shape"][-2:]))
    if not cameras:
        raise LeRobotCheckpointError("the lerobot policy reads no camera: expected at least one VISUAL feature")
    privileged = [key for key, ft in features.items() if ft.get("type") == "ENV"]
    if privileged:  # lerobot-train lists it by itself where the dataset has it, as `wam collect`'s data does
        raise LeRobotCheckpointError(
            f"the lerobot policy reads {privileged[0]} (privileged simulator state: object poses, goal), which no "
            f"policy is given at evaluation; train it on the cameras and robot state only (lerobot-train "
            f"--policy.input_features=JSON; wam.bench.peers.policy_inputs writes that JSON for a dataset)")
    if len(sizes) > 1:
        raise LeRobotCheckpointError(f"the lerobot policy reads cameras of different sizes {sorted(sizes)}; "
                                     f"our simulator renders every camera at one size")
    state = features.get("observation.state")
    action = (config.get("output_features") or {}).get("action")
    if action is None:
        raise LeRobotCheckpointError("the lerobot policy has no 'action' output feature")
    (size,) = sizes
    return PolicyMetadata(cameras=tuple(cameras), image_size=(int(size[0]), int(size[1])), context_offsets=(0,),
                          state_dim=int(state["shape"][0]) if state else 0, action_dim=int(action["shape"][0]),
                          action_horizon=1, fps=fps, recipe=f"lerobot-{config['type']}", modes=("policy",))


def check_installed(path: str | Path) -> None:
    """A clear error where lerobot is not importable (it lives in its own venv), before anything heavy loads."""
    import importlib.util

    if importlib.util.find_spec("lerobot") is None:
        raise ImportError(f"lerobot:{path} needs lerobot, which is not installed beside this wam: build its venv with "
                          f"scripts/lerobot-venv.sh and run wam from there (.venv-lerobot/bin/wam)")


class LeRobotPolicy:
    """A lerobot policy and its processors, one observation -> one action (see the module docstring)."""

    def __init__(self, path: str | Path, device: str = "cpu", denoising_steps: int | None = None):
        """`denoising_steps`: Diffusion Policy's inference steps per chunk (default: its config's, which is its
        training schedule's 100)."""
        import torch

        check_installed(path)
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.path = Path(path)
        self.config_json, self.train_json = read_checkpoint(self.path)
        root = dataset_root(self.path, self.train_json)
        self.dataset = root
        info = json.loads((root / "meta" / "info.json").read_text())
        self._metadata = metadata_of(self.config_json, fps=info.get("fps"))
        cls = get_policy_class(self.config_json["type"])
        self.policy = cls.from_pretrained(str(self.path))
        if denoising_steps is not None:
            if not hasattr(self.policy.config, "num_inference_steps"):
                raise LeRobotCheckpointError(f"{self.config_json['type']} has no denoising steps to set")
            self.policy.config.num_inference_steps = denoising_steps
            self.policy.diffusion.num_inference_steps = denoising_steps
        self.policy.config.device = device
        self.policy.to(device).eval()
        self.pre, self.post = make_pre_post_processors(self.policy.config, pretrained_path=str(self.path),
                                                       preprocessor_overrides={"device_processor": {"device": device}})
        self._torch = torch
        self._queue = self._action_queue()

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def _action_queue(self):
        """The deque lerobot's select_action pops from: empty means the next call runs the network."""
        p = self.policy
        if hasattr(p, "_action_queue"):  # ACT
            return lambda: p._action_queue
        if hasattr(p, "_queues"):  # Diffusion Policy
            return lambda: p._queues["action"]
        raise LeRobotCheckpointError(f"{type(p).__name__} keeps no action queue this adapter knows "
                                     f"(lerobot's ACT and Diffusion Policy of lerobot 0.4.x do)")

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset()
        if seed is not None:  # Diffusion Policy draws its noise from torch's global generator
            self._torch.manual_seed(seed)

    def infer(self, obs: Observation) -> PolicyOutput:
        torch, meta = self._torch, self._metadata
        obs = obs.check(meta)
        batch = {f"{IMAGE_PREFIX}{c}": torch.from_numpy(np.ascontiguousarray(obs.images[c])).permute(2, 0, 1).float() / 255
                 for c in meta.cameras}
        if meta.state_dim:
            batch["observation.state"] = torch.from_numpy(obs.state).float()
        batch["task"] = obs.prompt
        fresh = len(self._queue()) == 0
        start = time.perf_counter()
        with torch.inference_mode():
            action = self.post(self.policy.select_action(self.pre(batch)))
        ms = (time.perf_counter() - start) * 1000
        actions = action.reshape(1, -1).float().cpu().numpy()
        return PolicyOutput(actions=actions, timing={"infer_ms": ms} if fresh else {}, fresh=fresh)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The demonstrations' action min and max (meta/stats.json), which the action guard clips to (with its
        margin), as for our own checkpoints."""
        return action_bounds(self.dataset)


def action_bounds(root: Path) -> tuple[np.ndarray, np.ndarray]:
    stats = json.loads((Path(root) / "meta" / "stats.json").read_text())["action"]
    return np.asarray(stats["min"], np.float32).reshape(-1), np.asarray(stats["max"], np.float32).reshape(-1)


def parameter_count(path: Path) -> int:
    """Parameters in model.safetensors, from its header (no tensors read)."""
    with open(Path(path) / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(int(np.prod(t["shape"])) for k, t in header.items() if k != "__metadata__")


def eval_facts(path: str | Path) -> dict:
    """What `wam eval` reads from a checkpoint's config.json, for a lerobot policy: the tasks and the variation seeds
    of the dataset it was trained on (so the evaluation runs on those tasks, on seeds outside the training range),
    its fps and cameras. No lerobot import: this runs in the evaluating process before any worker starts."""
    from wam.config import DataConfig
    from wam.data.reader import read_dataset

    path = Path(path)
    config, train = read_checkpoint(path)
    root = dataset_root(path, train)
    meta = metadata_of(config)
    rec = read_dataset(root, DataConfig(state_key="observation.state" if meta.state_dim else ""))
    missing = [c for c in meta.cameras if c not in rec.camera_names]
    if missing:
        raise LeRobotCheckpointError(f"{path} reads cameras {list(meta.cameras)} but its dataset {root} has "
                                     f"{list(rec.camera_names)}")
    return {"data": {"root": str(root), "tasks": sorted({t for t in rec.env_tasks if t}),
                     "seeds": [min(rec.seeds), max(rec.seeds)], "fps": rec.fps, "cameras": list(meta.cameras),
                     "robot_type": rec.info.get("robot_type")},
            "model": {"recipe": meta.recipe}, "sampler": {}, "step": train.get("steps"),
            "parameters": parameter_count(path)}
