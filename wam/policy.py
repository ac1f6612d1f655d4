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
from wam.model import Context
from wam.windows import images_from_model, images_to_model


@dataclass
class PolicyOutput:
    actions: np.ndarray  # (k, a) in the environment's units
    frames: np.ndarray | None  # (f, v, s, s, 3) uint8 predicted future frames, or None
    ms: float  # wall-clock milliseconds of this inference


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
        self.sampler = sampler or SamplerConfig(**config.get("sampler", {}))
        self.context_offsets = self.cfg.context_offsets
        self.generator = torch.Generator().manual_seed(seed)
        self._text: torch.Tensor | None = None
        if self.sampler.compile:
            for block in model.blocks:
                block.compile(dynamic=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, sampler: SamplerConfig | None = None, seed: int = 0) -> "WAMPolicy":
        from wam.checkpoint import load_model

        model, normalizer, config = load_model(Path(path))
        return cls(model, normalizer, config, sampler, seed)

    def reset(self, instruction: str) -> None:
        from wam.text import embed

        self._text = torch.from_numpy(embed([instruction]))

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
        ctx = Context(images=images_to_model(torch.from_numpy(images))[None],
                      state=self.norm.state(torch.as_tensor(obs["state"], dtype=torch.float32))[None], text=self._text)
        inpaint = None
        if guide is not None and len(guide.actions):
            n = min(len(guide.actions), cfg.action_horizon)
            known = torch.zeros(1, cfg.action_horizon, cfg.action_dim)
            known[0, :n] = self.norm.actions(torch.as_tensor(guide.actions[:n], dtype=torch.float32))
            weights = torch.zeros(cfg.action_horizon)
            weights[:n] = torch.as_tensor(guide.weights[:n], dtype=torch.float32)
            inpaint = (known, weights)
        frames, actions = modes.run(self.model, "policy", ctx, self.sampler, generator=self.generator, guide=inpaint)
        actions = self.norm.unactions(actions[0]).clamp(-1, 1).numpy()
        ms = (time.perf_counter() - start) * 1000
        return PolicyOutput(actions=actions, frames=images_from_model(frames[0]) if modes.video_steps(self.sampler, cfg.recipe) else None, ms=ms)
