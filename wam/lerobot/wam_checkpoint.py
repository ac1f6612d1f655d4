"""A `wam` policy as lerobot saves it (the lerobot_policy_wam plugin, packages/lerobot_policy_wam), read as a wam
checkpoint with JSON and safetensors alone, no lerobot: `wam eval`, `wam serve`, `wam imagine` and `wam train
--train.init` take it wherever they take a `wam train` checkpoint (wam.checkpoint reads both).

    OUT/checkpoints/STEP/pretrained_model/       (lerobot-train's folder; lerobot-eval --policy.path takes it)
        config.json                  the policy config: "type": "wam", the model's fields, input_features,
                                     output_features, normalization_mapping
        model.safetensors            the policy module's weights: "model." + wam's own names
        policy_preprocessor.json     its steps, among them normalizer_processor (features, norm_map, eps) ...
        policy_preprocessor_step_K_normalizer_processor.safetensors      ... with its statistics
        policy_postprocessor.json    unnormalizer_processor: how the actions come back to the robot's units
        policy_postprocessor_step_K_unnormalizer_processor.safetensors
        train_config.json            lerobot's training config: the dataset (repo_id, root), steps, batch size
    OUT/checkpoints/STEP/training_state/training_step.json   the step

Both formats name their config config.json; a lerobot policy's has a "type" key. What lerobot does not record
(the simulator tasks and variation seeds of the demonstrations, fps, state and action names, instructions) is
read from the dataset that train_config.json names, as `wam train` records it from its own (train.data_summary).
The normaliser is lerobot's normalisation, as its saved steps do it (normalize.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from wam.config import LEGACY_MODEL_FIELDS, DataConfig, ModelConfig, SamplerConfig, to_dict
from wam.lerobot.normalize import FROM_WAM, NormStep, normalizer

TYPE = "wam"
"""The policy type lerobot_policy_wam registers (`--policy.type=wam`)."""
PREFIX = "model."
"""The policy module holds the network as its `model`: its weights are wam's names under this prefix."""
IMAGE_PREFIX = "observation.images."
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig)
                     if f.name not in ("cameras", "backbone", "backbone_path", "text_tokens"))
"""The ModelConfig fields the policy config carries under the same names. The cameras come from its visual input
features; only wam's own backbone is trained through lerobot (a pretrained one needs its diffusers folder)."""
PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor.json", "policy_postprocessor.json"


def is_lerobot(config: dict) -> bool:
    """A config.json written by lerobot (a policy config has its "type"), not by `wam train`."""
    return "type" in config


def check_type(config: dict, path: Path) -> None:
    if config.get("type") != TYPE:
        raise ValueError(f"{path} is a lerobot {config.get('type')!r} policy; wam reads lerobot checkpoints of type "
                         f"{TYPE!r} (lerobot_policy_wam); evaluate lerobot's own policies with wam eval --policy "
                         f"lerobot:{path}")


# ============================================================================================ the policy config
def features(config: dict) -> tuple[list[str], str | None, int, int]:
    """(camera feature keys in order, the state key or None, the state's size, the action's size) from a policy
    config's input and output features ({"type": ..., "shape": [...]} each, as config.json holds them)."""
    inputs, outputs = config.get("input_features") or {}, config.get("output_features") or {}
    cameras = [k for k, f in inputs.items() if f["type"] == "VISUAL"]
    state_key = "observation.state" if inputs.get("observation.state", {}).get("type") == "STATE" else None
    if "action" not in outputs:
        raise ValueError(f"the policy config's output features are {list(outputs) or 'none'}; expected 'action'")
    if not cameras:
        raise ValueError(f"the policy config's input features {list(inputs) or '(none)'} hold no camera (a VISUAL "
                         f"feature); a World-Action Model reads at least one")
    state = int(np.prod(inputs[state_key]["shape"])) if state_key else 0
    return cameras, state_key, state, int(np.prod(outputs["action"]["shape"]))


def camera_name(key: str) -> str:
    """What the model and wam's policies call a camera: its feature key after observation.images. (as the reader)."""
    return key.removeprefix(IMAGE_PREFIX)


def model_config(fields: dict, cameras: list[str], state_dim: int, action_dim: int) -> ModelConfig:
    """The resolved model config of a policy config's fields (MODEL_FIELDS; None: wam's default) for a data
    contract: the camera feature keys, the state's and the action's sizes. The fields' state_dim and action_dim,
    where set, must agree with it (ModelConfig.for_data)."""
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in MODEL_FIELDS and v is not None}
    given = {**{k: v for k, v in LEGACY_MODEL_FIELDS.items() if k not in fields}, **given}
    return ModelConfig(**given).for_data(tuple(camera_name(c) for c in cameras), state_dim, action_dim).resolved()


def sampler_config(fields: dict) -> SamplerConfig:
    """The policy config's sampler: `num_steps` and `video_steps` Euler steps, `n_action_steps` executed per chunk."""
    return SamplerConfig(steps=fields.get("num_steps"), video_steps=fields.get("video_steps"),
                         execute=fields.get("n_action_steps") or SamplerConfig.execute)


# ============================================================================================ reading a checkpoint
def read_json(path: Path, what: str) -> dict:
    """A JSON file, or one line saying it is missing or broken and what it should hold."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: expected {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); expected {what}") from None


def _step(path: Path, pipeline: str, registry_name: str) -> NormStep | None:
    """The (un)normalizer step of a saved processor pipeline, with its statistics; None if it has none."""
    from safetensors.numpy import load_file

    saved = read_json(path / pipeline, f"the policy's processor pipeline ({pipeline.removesuffix('.json')})")
    for step in saved.get("steps", []):
        if step.get("registry_name") == registry_name:
            cfg = step.get("config") or {}
            stats: dict[str, dict[str, np.ndarray]] = {}
            if step.get("state_file"):
                for flat, value in load_file(path / step["state_file"]).items():
                    key, stat = flat.rsplit(".", 1)
                    stats.setdefault(key, {})[stat] = value
            return NormStep(stats=stats, features=cfg.get("features") or {}, norm_map=cfg.get("norm_map") or {},
                            eps=float(cfg.get("eps", 1e-8)))
    return None


def read_normalizer(path: Path, config: dict):
    """The wam Normalizer of a lerobot `wam` checkpoint: its saved steps' statistics, by lerobot's own formulas."""
    _, state_key, _, _ = features(config)
    action = _step(path, POSTPROCESSOR, "unnormalizer_processor")
    if action is None:
        raise ValueError(f"{path / POSTPROCESSOR} has no unnormalizer_processor step: expected the one that maps "
                         f"the policy's actions back to the robot's units")
    state = _step(path, PREPROCESSOR, "normalizer_processor") if state_key else None
    return normalizer(state, action, state_key)


def served_tensors(path: Path) -> dict:
    """What a `wam train` checkpoint's model.safetensors holds, from a lerobot one: the network's weights under
    wam's names and the normaliser's `normalizer.*` tensors."""
    from safetensors.torch import load_file

    path = Path(path)
    config = policy_config(path)
    file = path / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the lerobot checkpoint is incomplete")
    weights = load_file(file)
    other = sorted(k for k in weights if not k.startswith(PREFIX))
    if other:
        raise ValueError(f"{file} holds weights outside the policy's network ({other[:5]}); expected only "
                         f"{PREFIX}* (lerobot_policy_wam's WAMPolicy)")
    return {**{k[len(PREFIX):]: v for k, v in weights.items()}, **read_normalizer(path, config).tensors()}


def policy_config(path: Path) -> dict:
    """config.json of a lerobot checkpoint of type wam (any other type is refused, naming it)."""
    config = read_json(Path(path) / "config.json", "the policy's config")
    check_type(config, Path(path))
    return config


def dataset_root(train: dict, path: Path) -> Path:
    """Where the dataset of train_config.json is: its `dataset.root`, else lerobot's cache of its repo_id. A
    dataset no longer on disk is an error saying where it was looked for."""
    dataset = train.get("dataset") or {}
    repo = dataset.get("repo_id")
    if dataset.get("root"):
        root = Path(dataset["root"]).expanduser()
    else:
        home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "lerobot"
        root = Path(os.environ.get("HF_LEROBOT_HOME", home)).expanduser() / str(repo)
    if not (root / "meta/info.json").is_file():
        raise FileNotFoundError(f"{path} was trained on the dataset {repo!r} at {root}, which is not on disk (no "
                                f"meta/info.json): wam reads the tasks, seeds, fps and names from it; put it back "
                                f"or set dataset.root in {path / 'train_config.json'}")
    return root


def data_summary(root: Path, cameras: list[str], state_key: str | None, fields: dict, episodes: list[int] | None,
                 state_dim: int) -> dict:
    """What a wam checkpoint records about its data (train.data_summary's keys), from the dataset's metadata."""
    from wam.data.reader import read_episode_table, read_info, read_tasks

    info = read_info(root)
    table = read_episode_table(root)
    if episodes is not None:
        table = table[table["episode_index"].isin(episodes)]
    norm = fields.get("normalization_mapping") or {}
    back = {v: k for k, v in FROM_WAM.items()}

    def names(key: str | None) -> list[str]:
        got = info["features"].get(key, {}).get("names") if key else None
        if isinstance(got, dict):  # lerobot sometimes nests them: {"motors": [...]}
            got = next(iter(got.values()), None)
        return [str(n) for n in got] if isinstance(got, list) else []

    data = DataConfig(cameras=tuple(cameras), state_key=state_key or "", resize=fields.get("resize") or "pad",
                      state_norm=back.get(norm.get("STATE"), "mean_std"), action_norm=back.get(norm.get("ACTION"), "min_max"),
                      episodes=",".join(str(e) for e in episodes) if episodes is not None else None)
    seeds = [int(s) for s in table["wam/seed"]] if "wam/seed" in table.columns else [-1]
    return {"root": str(root), "config": to_dict(data), "cameras": [camera_name(c) for c in cameras],
            "camera_keys": list(cameras), "camera_shapes": [list(info["features"][c]["shape"][:2]) for c in cameras],
            "fps": float(info["fps"]), "robot_type": info.get("robot_type"), "env": (info.get("wam") or {}).get("env"),
            "state_names": names(state_key)[:state_dim], "action_names": names("action"),
            "instructions": read_tasks(root),
            "tasks": sorted({str(t) for t in table["wam/env_task"] if t}) if "wam/env_task" in table.columns else [],
            "seeds": [min(seeds), max(seeds)], "episodes": len(table), "action_free_episodes": 0,
            "frames": int(table["length"].sum()), "val_episodes": [], "skipped": []}


def read_config(path: Path) -> dict:
    """A lerobot `wam` checkpoint's config as a `wam train` checkpoint's config.json has it: model, train, sampler
    and data, the step and the parameter count."""
    from safetensors import safe_open

    path = Path(path)
    config = policy_config(path)
    cameras, state_key, state, action = features(config)
    model = model_config(config, cameras, state, action)
    train = read_json(path / "train_config.json", "lerobot's training config, naming the dataset the policy was "
                                              "trained on")
    step_file = path.parent / "training_state" / "training_step.json"
    step = json.loads(step_file.read_text())["step"] if step_file.is_file() else train.get("steps")
    with safe_open(path / "model.safetensors", "pt") as f:
        parameters = int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))
    trained = {k: config[k] for k in ("lr", "min_lr", "warmup", "weight_decay", "grad_clip", "video_weight",
                                      "action_weight", "augment_shift") if k in config}
    return {"model": to_dict(model), "sampler": to_dict(sampler_config(config)),
            "train": {"finetune": "full", "steps": train.get("steps"), "batch_size": train.get("batch_size"),
                      "seed": train.get("seed"), **trained},
            "data": data_summary(dataset_root(train, path), cameras, state_key, config,
                                 (train.get("dataset") or {}).get("episodes"), model.state_dim),
            "step": step, "parameters": parameters, "trainable": parameters, "total": parameters,
            "lerobot": {"type": TYPE, "repo_id": (train.get("dataset") or {}).get("repo_id"), "path": str(path)}}
