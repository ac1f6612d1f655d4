"""Checkpoints: safetensors + JSON, never pickles. A checkpoint folder holds

    config.json             model / train / sampler configs, dataset facts (cameras, tasks, seeds), step
    model.safetensors       EMA weights (used for evaluation and serving) + normalisation statistics
    train_state.safetensors raw weights and AdamW state, for exact resume
    train_state/            the same, sharded, from an FSDP run (torch.distributed.checkpoint; fsdp.py)

Weights that a run does not train (a frozen or LoRA fine-tune's pretrained backbone) are not saved: loading
rebuilds the model from the backbone folder, whose fingerprint the config records, and reads the rest.
Folders are written under NAME.tmp and renamed into place, so a crash never leaves a half checkpoint.

A `wam` policy saved by lerobot (lerobot-train with the lerobot_policy_wam plugin: its pretrained_model/ folder)
reads here too, as a checkpoint to evaluate, serve or initialise from: `read_config` and `served_tensors` tell the
two apart by config.json (a lerobot policy's has a "type") and wam/lerobot/wam_checkpoint.py reads lerobot's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from wam.config import ModelConfig, model_from_dict


def served_weights(model: torch.nn.Module, ema: dict[str, torch.Tensor], keep: bool = True) -> dict[str, torch.Tensor]:
    """What evaluation and serving load: the state dict without frozen weights, trained ones from the EMA, as
    whole CPU tensors. With a sharded model every rank must call it (it gathers one tensor at a time); only
    ranks with `keep` hold on to the result."""
    from wam.fsdp import full

    frozen, out = frozen_names(model), {}
    for k, v in model.state_dict().items():
        if k not in frozen:
            t = full(ema[k] if k in ema else v)
            if keep:
                out[k] = t.detach().cpu().contiguous().clone()
    return out


def frozen_names(model: torch.nn.Module) -> set[str]:
    """Parameters a run does not train: they come from the backbone folder, not from the checkpoint."""
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def save(path: Path, *, model: torch.nn.Module, ema: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
         normalizer, config: dict, step: int, sharded: bool = False) -> Path:
    """Write the checkpoint PATH. `ema`: EMA copies of the trained parameters, by name. With `sharded`
    (an FSDP model) every rank calls this: the shards are written by all, the rest by rank 0."""
    path = Path(path)
    lead = not sharded or dist.get_rank() == 0
    tmp = path.with_name(path.name + ".tmp")
    if lead:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    served = served_weights(model, ema, keep=lead)
    if sharded:
        from wam import fsdp

        dist.barrier()  # the folder exists before anyone writes into it
        fsdp.save(tmp / "train_state", model, optimizer, ema)
    if lead:
        save_file({**served, **normalizer.tensors()}, tmp / "model.safetensors", metadata={"format": "pt", "step": str(step)})
        opt = optimizer.state_dict()
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
        if not sharded:
            frozen = frozen_names(model)
            state = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items() if k not in frozen}
            for i, s in opt["state"].items():
                for k, v in s.items():
                    state[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous().clone()
            save_file(state, tmp / "train_state.safetensors")
        (tmp / "config.json").write_text(json.dumps({**config, "step": step, "optimizer_groups": groups}, indent=2))
        # Swap in: there is always one complete checkpoint on disk, PATH or PATH.old (see `latest`).
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    if sharded:
        dist.barrier()
    return path


def latest(path: Path) -> Path | None:
    """PATH if it is a complete checkpoint, else PATH.old left by a save that was cut off, else None."""
    for candidate in (Path(path), Path(path).with_name(Path(path).name + ".old")):
        if (candidate / "config.json").is_file() and ((candidate / "train_state.safetensors").is_file()
                                                      or (candidate / "train_state" / ".metadata").is_file()):
            return candidate
    return None


READ_THE_SAME = ("state_key", "action_key", "resize", "state_norm", "action_norm", "episodes", "val_episodes",
                 "val_fraction", "video_only_episodes")
"""The data-config fields a resumed run must share with the run it continues (workers, cache folder and skipping
may change)."""


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ValueError("cannot resume from a run with different settings (" + "; ".join(problems)
                         + "); pick another --train.out or pass --train.no-resume")


def check_same_data(saved: dict, data: dict) -> None:
    """Refuse to resume onto data read another way (`data`: the new run's data summary, train.data_summary): other
    feature keys, resize, normalisation, episodes or cameras. Checked before the frame cache is built."""
    if "config" not in saved["data"]:
        return
    old, new = saved["data"]["config"], data["config"]
    problems = [f"--data.{k.replace('_', '-')}: {old.get(k)!r} saved, {new.get(k)!r} now" for k in READ_THE_SAME
                if old.get(k) != new.get(k)]
    if saved["data"].get("camera_keys") != data.get("camera_keys"):
        problems.append(f"cameras: {saved['data'].get('camera_keys')} saved, {data.get('camera_keys')} now")
    _refuse(problems)


def check_resumable(saved: dict, train_cfg, frames: int, episodes: int) -> None:
    """Refuse to resume onto other data or another seed, batch size or environment-state weight (a model with or
    without its head), or with pose labels made another way (the saved OUT/labels/pose.npz would be read back as
    they are): the run would not be the same run."""
    _refuse(resume_problems(saved, train_cfg, frames, episodes))


def resume_problems(saved: dict, train_cfg, frames: int, episodes: int) -> list[str]:
    """What keeps a run with `train_cfg` on `frames` / `episodes` from resuming the checkpoint whose config is `saved`
    (check_resumable); empty when nothing does."""
    problems = []
    if saved["data"]["frames"] != frames or saved["data"]["episodes"] != episodes:
        problems.append(f"data: {saved['data']['episodes']} episodes / {saved['data']['frames']} frames saved, "
                        f"{episodes} / {frames} now")
    keys = ["seed", "batch_size", "environment_state_weight"]
    if saved["train"].get("pose_labels") or train_cfg.pose_labels:  # labels made another way
        keys += ["pose_labels", "pose_label_steps", "pose_label_smooth", "pose_label_match_jitter"]
    for key in keys:
        was = saved["train"].get(key, BEFORE.get(key, 0.0))  # what checkpoints from before the key existed trained with
        if was != getattr(train_cfg, key):
            problems.append(f"{key}: {was} saved, {getattr(train_cfg, key)} now")
    return problems


BEFORE = {"environment_state_weight": 0.0, "pose_labels": False, "pose_label_smooth": 0.0,
          "pose_label_match_jitter": False}
"""Training settings that a checkpoint written before they existed trained with (check_resumable)."""


def load_normalizer(path: Path):
    from wam.data.transforms import Normalizer

    return Normalizer.from_tensors(served_tensors(path))


def fingerprint(path: Path) -> str:
    """The first 16 hex digits of the sha256 of a checkpoint's model.safetensors: which weights are served."""
    import hashlib

    h = hashlib.sha256()
    with open(Path(path) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _saved_config(path: Path) -> dict:
    """config.json as written, by `wam train` or by lerobot; a folder that is neither is refused in one line."""
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a wam checkpoint: {file} is missing (expected a `wam train` "
                                f"checkpoint or a lerobot `wam` policy's pretrained_model/ folder)")
    from wam.lerobot.wam_checkpoint import read_json

    config = read_json(file, "a checkpoint's config")
    if not isinstance(config, dict) or ("type" not in config and "model" not in config):
        raise ValueError(f"{path} is neither a `wam train` checkpoint nor a lerobot policy: its config.json has "
                         f"neither 'model' (wam) nor 'type' (lerobot)")
    return config


def read_config(path: Path) -> dict:
    """The run config of a checkpoint folder (model, train, sampler, data, step, ...); a lerobot `wam` policy's is
    read into the same keys (wam/lerobot/wam_checkpoint.py)."""
    path = Path(path)
    config = _saved_config(path)
    if "type" in config:
        from wam.lerobot import wam_checkpoint

        return wam_checkpoint.read_config(path)
    return config


def served_tensors(path: Path) -> dict[str, torch.Tensor]:
    """What evaluation and serving load from a checkpoint: the served weights and the normaliser's tensors
    (`normalizer.*`), from a `wam train` checkpoint's model.safetensors or a lerobot `wam` policy's folder."""
    path = Path(path)
    if "type" in _saved_config(path):
        from wam.lerobot import wam_checkpoint

        return wam_checkpoint.served_tensors(path)
    file = path / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the checkpoint is incomplete")
    return load_file(file)


def load_model(path: Path, backbone_path: str | Path | None = None) -> tuple[torch.nn.Module, "object", dict]:
    """(EMA model in eval mode, normalizer, config dict) from a checkpoint folder. A pretrained backbone is read from
    `backbone_path` (default: the folder the checkpoint records), which must hold the transformer it was trained on;
    the returned config names the folder used."""
    from wam import finetune
    from wam.backbones import build
    from wam.data.transforms import Normalizer

    config = read_config(path)
    cfg = model_from_dict(config["model"])
    if cfg.backbone_path is not None:
        root = Path(backbone_path or cfg.backbone_path)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: the backbone folder {'given' if backbone_path else 'this checkpoint records'} "
                                    f"does not exist; pass --backbone-path DIR (the {cfg.backbone} folder it was trained on)")
        cfg = dataclasses.replace(cfg, backbone_path=str(root))
        config = {**config, "model": {**config["model"], "backbone_path": str(root)}}
        check_backbone(config)
    elif backbone_path is not None:
        raise ValueError(f"--backbone-path {backbone_path}: {path} is a {cfg.backbone!r} checkpoint, it reads no backbone folder")
    file = Path(path) / "model.safetensors"
    tensors = served_tensors(path)
    model = build(cfg)  # a pretrained backbone's folder supplies its VAE and text encoder
    train = config.get("train", {})
    finetune.apply(model, train.get("finetune", "full"), train.get("lora_rank", 16))  # the same modules (LoRA layers)
    weights = {k: v for k, v in tensors.items() if not k.startswith("normalizer.")}
    frozen = frozen_names(model)
    _load_strict(model, weights, file, frozen)
    model.eval().requires_grad_(False)
    return model, Normalizer.from_tensors(tensors), config


def load_train_state(path: Path, model: torch.nn.Module, ema: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                     model_cfg: ModelConfig, sharded: bool = False) -> int:
    """Restore weights, EMA and optimizer in place; returns the step to continue from. `sharded`: the model
    is FSDP-sharded and every rank calls this."""
    path = Path(path)
    config = read_config(path)
    saved, model_cfg = model_from_dict(config["model"]), model_cfg.resolved()
    if saved != model_cfg:
        diff = {k: (getattr(saved, k), getattr(model_cfg, k)) for k in config["model"] if getattr(saved, k) != getattr(model_cfg, k)}
        raise ValueError(f"checkpoint {path} was trained with a different model config (saved, requested): {diff}")
    frozen = frozen_names(model)
    if frozen:
        check_backbone(config)
    if (path / "train_state").is_dir() != sharded:
        raise ValueError(f"{path} was written by a{'n FSDP' if not sharded else ' single-process or DDP'} run: "
                         f"resume it with --train.parallel {'fsdp' if not sharded else 'ddp'}")
    if sharded:
        from wam import fsdp

        fsdp.load(path / "train_state", model, optimizer, ema)
        return int(config["step"])
    served = load_file(path / "model.safetensors")
    missing = sorted(set(ema) - set(served))
    if missing:
        raise ValueError(f"{path / 'model.safetensors'} has no EMA weights for {missing[:5]}")
    with torch.no_grad():
        for k, v in ema.items():
            v.copy_(served[k])
    state = load_file(path / "train_state.safetensors")
    _load_strict(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, path / "train_state.safetensors",
                 frozen)
    opt_state: dict[int, dict] = {}
    for k, v in state.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    sd = optimizer.state_dict()
    groups = [{**g, **saved_g} for g, saved_g in zip(sd["param_groups"], config["optimizer_groups"])]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return int(config["step"])


def check_backbone(config: dict) -> None:
    """The weights the checkpoint does not hold come from the backbone folder (config["model"]["backbone_path"]):
    refuse a folder that is not the one the run trained on, by the fingerprint the checkpoint records."""
    want = config.get("backbone_fingerprint")
    if want is None:  # a full fine-tune saved every weight; the folder supplies only the VAE and text encoder
        return
    from wam.models.folders import fingerprint_of

    root = config["model"]["backbone_path"]
    got = fingerprint_of(config["model"]["backbone"], root)
    if got != want:
        raise ValueError(f"{root} is not the backbone this checkpoint was fine-tuned from (fingerprint "
                         f"{got}, trained on {want}): its frozen weights are read from that folder, not saved")


def load_init(path: Path, model: torch.nn.Module, model_cfg: ModelConfig) -> list[str]:
    """Load a checkpoint's EMA weights into `model` to start a new run from them (e.g. video pretraining
    then fine-tuning with actions). The model configs must agree on everything but the recipe; weights the
    new model lacks (the frame stream, for an action-only model) are dropped and returned by name."""
    path = Path(path)
    config = read_config(path)
    saved, model_cfg = model_from_dict(config["model"]), model_cfg.resolved()
    diff = {k: (getattr(saved, k), getattr(model_cfg, k)) for k in config["model"]
            if k not in ("recipe", "future_frames") and getattr(saved, k) != getattr(model_cfg, k)}
    if diff:
        raise ValueError(f"cannot initialise from {path}: its model config differs (saved, requested): {diff}")
    weights = {k: v for k, v in served_tensors(path).items() if not k.startswith("normalizer.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(weights) - frozen_names(model))
    if missing:
        raise ValueError(f"cannot initialise from {path}: it has no weights for {missing[:5]}")
    dropped = sorted(set(weights) - set(own))
    model.load_state_dict({k: weights[k] for k in own if k in weights}, strict=False)
    return dropped


def _load_strict(module: torch.nn.Module, weights: dict, file: Path, frozen: set[str] = frozenset()) -> None:
    """Load `weights` and check they are exactly the module's, but for `frozen` parameters, which may be left out
    (they come from the backbone folder)."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(weights) - frozen), sorted(set(weights) - set(own))
    bad = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{file} does not match the model config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shape mismatch {[(k, tuple(weights[k].shape), tuple(own[k].shape)) for k in bad[:5]]}")
    module.load_state_dict(weights, strict=False)
