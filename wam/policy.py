"""Policies and the chunk executor.

`Policy` is the small protocol every policy follows: `reset(instruction)` and `infer(obs)`. `infer` takes
an observation whose images already stack the context frames the policy declares (`context_offsets`) and
returns an action chunk and, for a World-Action Model, the predicted future frames: a first-class output.

`ChunkExecutor` wraps any policy for closed loop: it keeps the frame history, calls `infer` when the queue
of actions runs out, and executes `execute` actions of each chunk (open loop in between).
"""

from __future__ import annotations

import time
from collections import deque
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


class Policy(Protocol):
    context_offsets: tuple[int, ...]

    def reset(self, instruction: str) -> None: ...
    def infer(self, obs: dict[str, np.ndarray]) -> PolicyOutput: ...


class WAMPolicy:
    """A trained World-Action Model as a policy. obs: images uint8 (c, v, H, W, 3), state float (4,)."""

    def __init__(self, model, normalizer, config: dict, sampler: SamplerConfig | None = None, seed: int = 0):
        self.model, self.norm, self.config = model, normalizer, config
        self.cfg = model.cfg
        self.sampler = sampler or SamplerConfig(**config.get("sampler", {}))
        self.context_offsets = self.cfg.context_offsets
        self.generator = torch.Generator().manual_seed(seed)
        self._text: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, sampler: SamplerConfig | None = None, seed: int = 0) -> "WAMPolicy":
        from wam.checkpoint import load_model

        model, normalizer, config = load_model(Path(path))
        return cls(model, normalizer, config, sampler, seed)

    def reset(self, instruction: str) -> None:
        from wam.text import embed

        self._text = torch.from_numpy(embed([instruction]))

    @torch.inference_mode()
    def infer(self, obs: dict[str, np.ndarray]) -> PolicyOutput:
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
        frames, actions = modes.run(self.model, "policy", ctx, self.sampler, generator=self.generator)
        actions = self.norm.unactions(actions[0]).clamp(-1, 1).numpy()
        ms = (time.perf_counter() - start) * 1000
        return PolicyOutput(actions=actions, frames=images_from_model(frames[0]) if modes.video_steps(self.sampler, cfg.recipe) else None, ms=ms)


class ChunkExecutor:
    """Runs any policy in closed loop: re-plans every `execute` steps, open loop in between."""

    def __init__(self, policy: Policy, execute: int):
        self.policy, self.execute = policy, execute
        self.history: deque = deque(maxlen=1 - min(policy.context_offsets))
        self.queue: deque = deque()
        self.last: PolicyOutput | None = None

    def reset(self, instruction: str) -> None:
        self.policy.reset(instruction)
        self.history.clear()
        self.queue.clear()
        self.last = None

    def act(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, bool]:
        """The next action, and whether a new chunk was inferred for it."""
        self.history.append(obs["images"])
        fresh = not self.queue
        if fresh:
            hist = list(self.history)
            # Before the episode has enough history, the first frame stands in (as in training windows).
            frames = np.stack([hist[max(0, len(hist) - 1 + o)] for o in self.policy.context_offsets])
            self.last = self.policy.infer({"images": frames, "state": obs["state"]})
            self.queue.extend(self.last.actions[: self.execute])
        return self.queue.popleft(), fresh
