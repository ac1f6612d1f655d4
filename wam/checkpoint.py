"""Checkpoints: safetensors + JSON, never pickles. A checkpoint folder holds

    config.json             model / train / sampler configs, dataset facts (cameras, tasks, seeds), step
    model.safetensors       EMA weights (used for evaluation and serving) + normalisation statistics
    train_state.safetensors raw weights and AdamW state, for exact resume

Folders are written under NAME.tmp and renamed into place, so a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wam.config import ModelConfig, model_from_dict


def save(path: Path, *, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer,
         normalizer, config: dict, step: int) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous().clone() for k, v in ema.state_dict().items()}
    save_file({**weights, **normalizer.tensors()}, tmp / "model.safetensors", metadata={"format": "pt", "step": str(step)})
    state = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for i, s in opt["state"].items():
        for k, v in s.items():
            state[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous().clone()
    save_file(state, tmp / "train_state.safetensors")
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
    (tmp / "config.json").write_text(json.dumps({**config, "step": step, "optimizer_groups": groups}, indent=2))
    # Swap in: there is always one complete checkpoint on disk, PATH or PATH.old (see `latest`).
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def latest(path: Path) -> Path | None:
    """PATH if it is a complete checkpoint, else PATH.old left by a save that was cut off, else None."""
    for candidate in (Path(path), Path(path).with_name(Path(path).name + ".old")):
        if (candidate / "config.json").is_file() and (candidate / "train_state.safetensors").is_file():
            return candidate
    return None


def check_resumable(saved: dict, train_cfg, frames: int, episodes: int) -> None:
    """Refuse to resume onto other data or another seed or batch size: the run would not be the same run."""
    problems = []
    if saved["data"]["frames"] != frames or saved["data"]["episodes"] != episodes:
        problems.append(f"data: {saved['data']['episodes']} episodes / {saved['data']['frames']} frames saved, "
                        f"{episodes} / {frames} now")
    for key in ("seed", "batch_size"):
        if saved["train"][key] != getattr(train_cfg, key):
            problems.append(f"{key}: {saved['train'][key]} saved, {getattr(train_cfg, key)} now")
    if problems:
        raise ValueError("cannot resume from a run with different settings (" + "; ".join(problems)
                         + "); pick another --train.out or pass --train.no-resume")


def load_normalizer(path: Path):
    from wam.windows import Normalizer

    return Normalizer.from_tensors(load_file(Path(path) / "model.safetensors"))


def read_config(path: Path) -> dict:
    path = Path(path)
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a wam checkpoint: {file} is missing")
    return json.loads(file.read_text())


def load_model(path: Path) -> tuple[torch.nn.Module, "object", dict]:
    """(EMA model in eval mode, normalizer, config dict) from a checkpoint folder."""
    from wam import finetune
    from wam.backbone import build
    from wam.windows import Normalizer

    config = read_config(path)
    cfg = model_from_dict(config["model"])
    file = Path(path) / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the checkpoint is incomplete")
    tensors = load_file(file)
    model = build(cfg)  # a pretrained backbone's folder supplies its VAE and text encoder
    train = config.get("train", {})
    finetune.apply(model, train.get("finetune", "full"), train.get("lora_rank", 16))  # the same modules (LoRA layers)
    weights = {k: v for k, v in tensors.items() if not k.startswith("normalizer.")}
    _load_strict(model, weights, file)
    model.eval().requires_grad_(False)
    return model, Normalizer.from_tensors(tensors), config


def load_train_state(path: Path, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     model_cfg: ModelConfig) -> int:
    """Restore weights, EMA and optimizer in place; returns the step to continue from."""
    config = read_config(path)
    saved = model_from_dict(config["model"])
    if saved != model_cfg:
        diff = {k: (getattr(saved, k), getattr(model_cfg, k)) for k in config["model"] if getattr(saved, k) != getattr(model_cfg, k)}
        raise ValueError(f"checkpoint {path} was trained with a different model config (saved, requested): {diff}")
    ema_w = {k: v for k, v in load_file(Path(path) / "model.safetensors").items() if not k.startswith("normalizer.")}
    _load_strict(ema, ema_w, Path(path) / "model.safetensors")
    state = load_file(Path(path) / "train_state.safetensors")
    _load_strict(model, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, Path(path) / "train_state.safetensors")
    opt_state: dict[int, dict] = {}
    for k, v in state.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    sd = optimizer.state_dict()
    groups = [{**g, **saved_g} for g, saved_g in zip(sd["param_groups"], config["optimizer_groups"])]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return int(config["step"])


def load_init(path: Path, model: torch.nn.Module, model_cfg: ModelConfig) -> list[str]:
    """Load a checkpoint's EMA weights into `model` to start a new run from them (e.g. video pretraining
    then fine-tuning with actions). The model configs must agree on everything but the recipe; weights the
    new model lacks (the frame stream, for an action-only model) are dropped and returned by name."""
    path = Path(path)
    config = read_config(path)
    saved = model_from_dict(config["model"])
    diff = {k: (getattr(saved, k), getattr(model_cfg, k)) for k in config["model"]
            if k not in ("recipe", "future_frames") and getattr(saved, k) != getattr(model_cfg, k)}
    if diff:
        raise ValueError(f"cannot initialise from {path}: its model config differs (saved, requested): {diff}")
    weights = {k: v for k, v in load_file(path / "model.safetensors").items() if not k.startswith("normalizer.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    if missing:
        raise ValueError(f"cannot initialise from {path}: it has no weights for {missing[:5]}")
    dropped = sorted(set(weights) - set(own))
    model.load_state_dict({k: weights[k] for k in own})
    return dropped


def _load_strict(module: torch.nn.Module, weights: dict, file: Path) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    bad = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"{file} does not match the model config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, shape mismatch {[(k, tuple(weights[k].shape), tuple(own[k].shape)) for k in bad[:5]]}")
    module.load_state_dict(weights)
