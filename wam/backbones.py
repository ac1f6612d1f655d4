"""The networks a World-Action Model can be built on, one row each, selected by name (`--backbone NAME`).

    name     build                              recipes (first: default)       targets (video, action)  frames
    wam      our transformer (models/transformer)  every recipe but cosmos-policy  data | velocity, velocity  pixels
    wan      diffusers WanTransformer3DModel     decoupled, joint, flash         velocity, velocity       latents
    cosmos   diffusers CosmosTransformer3DModel  cosmos-policy                  velocity, velocity       latents
    lite     EfficientNet-Lite0 + MiniLM prefix  vla, hybrid-foresight, hybrid-mot   data, velocity     pixels
    paligemma  transformers PaliGemma prefix     vla, hybrid-foresight, hybrid-mot   data, velocity     pixels
    smolvlm  transformers SmolVLM prefix         vla, hybrid-foresight, hybrid-mot   data, velocity     pixels

The model config's validation (config.ModelConfig) reads this table: the recipe must be one the backbone allows,
the prediction targets ones it can output, and a backbone with `needs_path` a --backbone-path folder. `build(cfg)`
imports the row's module only then, so reading the table imports no heavy module. A new backbone is one row here
and one model file with a `build(cfg)` function whose network declares its `capabilities` (models/base.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import nn

    from wam.config import ModelConfig

Target = Literal["data", "velocity"]
"""What a network outputs for a modality: the clean sample ("data", x-prediction) or the velocity."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: str
    """"module:function" building the network from a model config, imported when called."""
    recipes: tuple[str, ...]
    """The recipes it trains; the first is the default (ModelConfig.recipe None)."""
    video_targets: tuple[Target, ...]
    """The frame targets it can output; the first is the default (ModelConfig.video_target None)."""
    action_targets: tuple[Target, ...]
    """The action targets it can output; the first is the default."""
    frames: Literal["pixels", "latents"]
    """What its future frames are: pixels (predicted at future_size) or VAE latents of the image_size frames."""
    needs_path: bool
    """It is loaded from a folder the user downloaded (--backbone-path DIR): a diffusers pipeline folder (wan,
    cosmos) or a transformers model folder (paligemma, smolvlm)."""
    summary: str

    def make(self, cfg: "ModelConfig") -> "nn.Module":
        module, function = self.build.split(":")
        return getattr(importlib.import_module(module), function)(cfg)


VLM_RECIPES = ("vla", "hybrid-foresight", "hybrid-mot")
"""The recipes of the vision-language backbones (models/vla.py, models/mot.py)."""

BACKBONES: dict[str, BackboneSpec] = {b.name: b for b in [
    BackboneSpec("wam", "wam.models.transformer:build",
                 ("decoupled", "joint", "flash", "video-then-idm", "features", "plan-then-act", "self-label", "action-only",
                  "world-model"),
                 ("data", "velocity"), ("velocity", "data"), "pixels", False,
                 "our transformer, trained from scratch: any recipe its attention mask can express"),
    BackboneSpec("wan", "wam.models.wan:build", ("decoupled", "joint", "flash"), ("velocity",), ("velocity", "data"),
                 "latents", True, "Wan 2.1 / 2.2 (diffusers): attends over the whole sequence, so no recipe that "
                 "hides frames from actions or actions from frames"),
    BackboneSpec("cosmos", "wam.models.cosmos:build", ("cosmos-policy",), ("velocity",), ("velocity",), "latents", True,
                 "Cosmos-Predict2 (diffusers) unchanged: actions, future state and value as extra latent frames"),
    *[BackboneSpec(name, "wam.models.vla:build", VLM_RECIPES, ("data", "velocity"), ("velocity", "data"), "pixels",
                   name != "lite", summary) for name, summary in (
        ("lite", "a vision-language prefix from real pretrained encoders that install offline (EfficientNet-Lite0 "
                 "images, MiniLM words, fusion layers trained here) and an action expert (models/vlm/lite.py)"),
        ("paligemma", "PaliGemma (transformers; π0's VLM) as the prefix of an action expert"),
        ("smolvlm", "SmolVLM (transformers; SmolVLA's VLM) as the prefix of an action expert"))],
]}


def backbone(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones are: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build(cfg: "ModelConfig") -> "nn.Module":
    """The network a model config names (resolved first: its recipe and targets concrete)."""
    cfg = cfg.resolved()
    if not cfg.concrete:
        raise ValueError(f"the model config has no data contract yet (cameras {list(cfg.cameras)}, state_dim "
                         f"{cfg.state_dim}, action_dim {cfg.action_dim}): `wam train` fills it in from the dataset "
                         f"(ModelConfig.for_data)")
    return backbone(cfg.backbone).make(cfg)
