"""What every network of `wam` shares: the clean conditioning of a batch (`Context`) and the protocol the
flow-matching code, the trainer and the policy use (`Backbone`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import torch

from wam.config import ModelConfig


class Backbone(Protocol):
    """What `flow.py`, training and the policy need from a network: this signature and a config.

    Our `WAMTransformer` is one; an adapter around diffusers' `WanTransformer3DModel` or
    `CosmosTransformer3DModel` (video latents in place of pixels, per-token timesteps) is another.
    """

    cfg: ModelConfig

    def __call__(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                 t_action: torch.Tensor, context: "Context") -> tuple[torch.Tensor | None, torch.Tensor]: ...


@dataclass
class Context:
    """Clean conditioning for one batch."""

    images: torch.Tensor  # (b, c, v, 3, H, W) in [-1, 1]
    state: torch.Tensor  # (b, state_dim), normalised
    text: torch.Tensor  # (b, text_dim) sentence embedding; (b, tokens, text_dim) for pretrained backbones
    latents: torch.Tensor | None = None  # (b, c, v, z, h, w) VAE latents of the images (pretrained backbones)

    def apply(self, fn) -> "Context":
        """The same context with `fn` applied to each of its tensors (moved to a device, expanded, ...)."""
        return Context(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                          for f in fields(self)})
