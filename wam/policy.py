"""Policies and the chunk executor.

`Policy` is the small protocol every policy follows: `reset(instruction)` and `infer(obs)`. `infer` takes
an observation whose images already stack the context frames the policy declares (`context_offsets`) and
returns an action chunk and, for a World-Action Model, the predicted future frames: a first-class output.

The closed-loop wrappers around any policy (synchronous and asynchronous chunk execution) are in runtime.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from wam import modes
from wam.config import SamplerConfig
from wam.models.base import Context
from wam.data.transforms import images_from_model, images_to_model


@dataclass
class PolicyOutput:
    actions: np.ndarray  # (k, a) in the environment's units
    frames: np.ndarray | None  # (f, v, s, s, 3) uint8 predicted future frames, or None
    ms: float  # wall-clock milliseconds of this inference
    value: float | None = None  # the predicted value of the executed chunk, for models that predict one


@dataclass
class Guide:
    """Actions a new chunk should agree with (its first len(actions) steps), with a weight each in [0, 1]:
    1 holds the action exactly (it is already being executed), less pulls it softly (runtime.py)."""

    actions: np.ndarray  # (n, a) in the environment's units
    weights: np.ndarray  # (n,)


class Policy(Protocol):
    context_offsets: tuple[int, ...]

    def reset(self, instruction: str) -> None: ...
    def infer(self, obs: dict[str, np.ndarray]) -> PolicyOutput: ...
    # A policy that can inpaint its chunk also sets `accepts_guide = True` and takes infer(obs, guide=Guide).


class WAMPolicy:
    """A trained World-Action Model as a policy. obs: images uint8 (c, v, H, W, 3), state float (4,)."""

    def __init__(self, model, normalizer, config: dict, sampler: SamplerConfig | None = None, seed: int = 0):
        self.model, self.norm, self.config = model, normalizer, config
        self.cfg = model.cfg
        self.sampler = (sampler or SamplerConfig(**config.get("sampler", {}))).resolve(self.cfg.recipe)
        self.context_offsets = self.cfg.context_offsets
        self.generator = torch.Generator().manual_seed(seed)
        self._text: torch.Tensor | None = None
        self.device = resolve_device(self.sampler.device)
        model.to(self.device).eval()
        if self.sampler.compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None  # CUDA graphs on a GPU
            for block in model.blocks:
                block.compile(dynamic=False, mode=mode)

    @classmethod
    def from_checkpoint(cls, path: str | Path, sampler: SamplerConfig | None = None, seed: int = 0,
                        backbone_path: str | Path | None = None) -> "WAMPolicy":
        """`backbone_path`: a pretrained backbone's folder on this machine (default: the one the checkpoint records)."""
        from wam.checkpoint import load_model

        model, normalizer, config = load_model(Path(path), backbone_path)
        return cls(model, normalizer, config, sampler, seed)

    def reset(self, instruction: str) -> None:
        self._text = self.model.embed_text([instruction]).to(self.device)  # once per episode, not per chunk

    accepts_guide = True

    @torch.inference_mode()
    def infer(self, obs: dict[str, np.ndarray], guide: Guide | None = None) -> PolicyOutput:
        if self._text is None:
            raise RuntimeError("call reset(instruction) before infer()")
        cfg = self.cfg
        images = np.asarray(obs["images"])
        want = (cfg.context_frames, cfg.views, cfg.image_size, cfg.image_size, 3)
        if images.shape != want:
            raise ValueError(f"expected images of shape {want} (context frames, views, H, W, 3), got {images.shape}")
        start = time.perf_counter()
        ctx = Context(images=images_to_model(torch.from_numpy(images))[None].to(self.device),
                      state=self.norm.state(torch.as_tensor(obs["state"], dtype=torch.float32))[None].to(self.device),
                      text=self._text)
        can = self.model.capabilities
        if can.latent_frames:  # a pretrained backbone: the context's VAE latents, once per chunk
            ctx.latents = self.model.encode_frames(ctx.images)
        n = self.sampler.best_of
        if n > 1:  # N candidate chunks from N noises, in one batch
            if not can.value:
                raise ValueError(f"best_of={n} needs a model that predicts a value (recipe cosmos-policy), not {cfg.recipe!r}")
            ctx = ctx.apply(lambda x: x.expand(n, *x.shape[1:]))
        inpaint = None
        if guide is not None and len(guide.actions):
            n = min(len(guide.actions), cfg.action_horizon)
            known = torch.zeros(1, cfg.action_horizon, cfg.action_dim)
            known[0, :n] = self.norm.actions(torch.as_tensor(guide.actions[:n], dtype=torch.float32))
            weights = torch.zeros(cfg.action_horizon)
            weights[:n] = torch.as_tensor(guide.weights[:n], dtype=torch.float32)
            inpaint = (known, weights)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.sampler.precision == "bfloat16"):
            frames, actions = modes.run(self.model, "policy", ctx, self.sampler, generator=self.generator, guide=inpaint)
        value = None
        if can.value:
            values = self.model.value_of(frames.float())
            best = int(values.argmax())
            frames, actions, value = frames[best:best + 1], actions[best:best + 1], float(values[best])
        actions = self.norm.unactions(actions[0].float().cpu()).clamp(-1, 1).numpy()  # .cpu() waits for the device
        frames = frames[:1].float() if modes.video_steps(self.sampler, cfg.recipe) else None
        if frames is not None and can.latent_frames:  # latents -> pixels, only when asked
            frames = self.model.decode_frames(frames) if self.sampler.decode_frames else None
        frames = images_from_model(frames[0].cpu()) if frames is not None else None
        ms = (time.perf_counter() - start) * 1000
        return PolicyOutput(actions=actions, frames=frames, ms=ms, value=value)


def resolve_device(name: str) -> torch.device:
    """A torch device from a name, with a clear error when it is not there (nothing falls back silently)."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}, "
                           f"CUDA build: {torch.version.cuda is not None})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected 'cpu' or 'cuda[:N]'")
    return device
