"""What every network of `wam` shares: the clean conditioning of a batch (`Context`), what a network can do
(`Capabilities`, declared by each network, never guessed) and the protocols the flow-matching code, the trainer
and the policy use (`Backbone` and its optional parts)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from wam.config import ModelConfig


@dataclass(frozen=True)
class Capabilities:
    """What a network can do beyond the `Backbone` protocol; the sampler, modes, policy, trainer and fine-tuning
    read it. Each flag promises the protocol named with it."""

    cached: bool = False
    """The context (and frames, with `frames_in_prefix`) run once per chunk and are reused (`CachedInference`)."""
    frames_in_prefix: bool = False
    """Future-frame tokens never read the actions: they are cached with the context while the actions denoise."""
    frames_optional: bool = False
    """Action tokens never read the future frames: the frame tokens may be left out (the fast path)."""
    latent_frames: bool = False
    """Frames are VAE latents: the context is encoded and predictions decoded by the model (`LatentFrames`)."""
    value: bool = False
    """Each sample comes with a predicted value, for best-of-N planning (`Value.value_of`)."""
    packed_video: bool = False
    """The "video" modality carries more than the future frames; its training target is `Value.pack_video`."""
    pretrained: bool = False
    """A pretrained `backbone` module that fine-tuning can freeze or adapt (`Pretrained`)."""


class Backbone(Protocol):
    """What `flow.py`, training and the policy need from every network.

    Our `WAMTransformer` is one; an adapter around diffusers' `WanTransformer3DModel` or
    `CosmosTransformer3DModel` (video latents in place of pixels, per-token timesteps) is another.
    """

    cfg: ModelConfig
    """The resolved model config (ModelConfig.resolved())."""
    capabilities: Capabilities

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated transformer blocks: the unit of gradient checkpointing, sharding and compiling."""
        ...

    def __call__(self, noisy_video: torch.Tensor, noisy_actions: torch.Tensor, t_video: torch.Tensor,
                 t_action: torch.Tensor, context: "Context") -> tuple[torch.Tensor | None, torch.Tensor]:
        """`forward`: raw outputs for the future frames (None if the recipe predicts none) and the actions."""
        ...

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Instructions -> what `Context.text` holds for them."""
        ...

    def video_shape(self, b: int) -> tuple[int, ...]:
        """Shape of the "video" modality the network denoises, for a batch of b."""
        ...


class CachedInference(Protocol):
    """`Capabilities.cached`: the sequence split into a prefix computed once and a part run every step."""

    n_vid: int
    """Future-frame tokens in the sequence (0: the recipe predicts no frames)."""

    def encode(self, context: Context, noisy_video: torch.Tensor | None = None,
               t_video: torch.Tensor | None = None): ...
    def decode(self, prefix, noisy_video: torch.Tensor | None, noisy_actions: torch.Tensor, t_video: torch.Tensor,
               t_action: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]: ...


class LatentFrames(Protocol):
    """`Capabilities.latent_frames`: frames <-> VAE latents."""

    codec: object
    """The frame codec (latent.FrameCodec); its `encode` fills the training cache of latents."""

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor: ...
    def decode_frames(self, video: torch.Tensor) -> torch.Tensor: ...


class Value(Protocol):
    """`Capabilities.value` / `packed_video`: a value read from the prediction, and the packed training target."""

    def value_of(self, video: torch.Tensor) -> torch.Tensor: ...
    def pack_video(self, batch) -> tuple[torch.Tensor, torch.Tensor]: ...


class Pretrained(Protocol):
    """`Capabilities.pretrained`: the wrapped pretrained module and its frozen helpers."""

    backbone: nn.Module
    text_encoder: object | None
    """Dropped (set to None) after the instructions are embedded, to free host memory."""
    gradient_checkpointing: bool


@dataclass
class Context:
    """Clean conditioning for one batch."""

    images: torch.Tensor  # (b, c, v, 3, H, W) in [-1, 1]
    state: torch.Tensor  # (b, state_dim), normalised
    text: torch.Tensor  # (b, text_dim) sentence embedding; (b, tokens, text_dim) for pretrained backbones
    latents: torch.Tensor | None = None  # (b, c, v, z, h, w) VAE latents of the images (pretrained backbones)
    state_known: torch.Tensor | None = None  # (b,) 1 where the state is known, 0 where absent (action-free video); None: all known

    def apply(self, fn) -> "Context":
        """The same context with `fn` applied to each of its tensors (moved to a device, expanded, ...)."""
        return Context(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                          for f in fields(self)})

    def current(self, size: int) -> torch.Tensor:
        """The current frame (the last context frame) average-pooled to `size`: (b, v, 3, size, size). What a model
        whose frames are a change from the current frame adds the change to."""
        b, v = self.images.shape[0], self.images.shape[2]
        frame = F.avg_pool2d(self.images[:, -1].flatten(0, 1), self.images.shape[-1] // size)
        return frame.reshape(b, v, 3, size, size)
