"""Imagined episodes: a policy acting inside a learned world model, chunk by chunk.

    World(checkpoint)                  a checkpoint that serves the world_model mode (frames from context + actions)
    dream(world, head, policy, ...)    many episodes of one task in lockstep, from real initial frames

Each episode starts from the real first observation of a held-out variation (the simulator's reset). Then, every
`execute` steps: the policy reads the imagined frames (at the camera's resolution: the last frame plus the
predicted change, wam.imagine.next_context) and the imagined state, and returns a chunk of actions; the world
model predicts the frames those actions lead to; the state model (head.StateModel) steps the state through the
executed actions (the arm's, and where the head reads it the environment's too: objects and goal, from the real
environment state of the reset); the success head scores the newest imagined frame and that state. An episode is solved when the head's
probability passes `threshold`, and fails when `max_steps` run out first, as Meta-World's success flag is read
in `wam eval`. A chunk shorter than the world model's action horizon is padded with its last action.

Every episode draws the world model's noise from its own generator (`world_generator(seed)`), so an imagined
episode is a function of the policy, the world model, the head and its seed alone: the same whether it is
imagined in a batch of 20 episodes, alone, or with other seeds beside it (up to the rounding of batched matrix
products, about 1e-7). That is what lets a policy that keeps state between steps (a lerobot policy, a remote one:
wam/judge/policies.py) be judged one episode at a time and give the numbers a batch would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wam.imagine import frame_at, next_context
from wam.types import Observation


class World:
    """A world model from a checkpoint folder; `predict` is one batched `world_model` pass."""

    def __init__(self, checkpoint: str | Path, steps: int | None = None, backbone_path: str | Path | None = None,
                 deadzone: float | None = None):
        from wam import modes
        from wam.checkpoint import load_model
        from wam.config import SamplerConfig

        self.model, self.norm, self.config = load_model(Path(checkpoint), backbone_path)
        self.model.eval()
        self.cfg = self.model.cfg
        try:
            modes.check_mode(self.cfg.recipe, "world_model")
        except ValueError as e:
            raise ValueError(f"--world {checkpoint}: {e}") from None
        sampler = SamplerConfig(**self.config.get("sampler", {}))
        if steps is not None:  # the actions' steps too: the world_model mode gives the frames at least as many
            sampler = dataclasses.replace(sampler, video_steps=steps, steps=steps)  # (modes.video_steps)
        if deadzone is not None:  # --sampler.video-deadzone (modes.deadzone)
            sampler = dataclasses.replace(sampler, video_deadzone=deadzone)
        self.sampler = sampler.resolve(self.cfg.recipe)
        self._text: dict[str, torch.Tensor] = {}

    def text(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text:
            self._text[prompt] = self.model.embed_text([prompt])
        return self._text[prompt]

    @torch.no_grad()
    def predict(self, images: np.ndarray, state: np.ndarray, prompt: str, actions: np.ndarray,
                generator: torch.Generator | list[torch.Generator], rows: list[int],
                execute: int) -> tuple[torch.Tensor, np.ndarray, None]:
        """images (b, c, v, H, W, 3) uint8 at the world's context offsets, state (b, S) and actions (b, k, a) in
        robot units -> (predicted frames (b, f, v, 3, s, s) in model units, the same at the camera's resolution
        (b, f, v, H, W, 3) uint8, the state after `execute` steps or None: this model does not predict it, the
        head's state model steps it). `generator`: one for the whole batch, or one per row (each row's noise drawn
        from its own). `rows`: the episodes of the batch's rows (for a world that keeps state per episode, such as
        the simulator standing in for it in the tests)."""
        from wam import modes
        from wam.data.transforms import images_from_model, images_to_model
        from wam.models.base import Context

        b = len(images)
        ctx = Context(images=images_to_model(torch.from_numpy(images)),
                      state=self.norm.state(torch.as_tensor(state, dtype=torch.float32)),
                      text=self.text(prompt).expand(b, -1))
        acts = self.norm.actions(torch.as_tensor(actions, dtype=torch.float32))
        noise = None
        if isinstance(generator, list):  # the actions are given: only the frames' noise is drawn
            shape = self.model.video_shape(1)[1:]
            noise = (torch.stack([torch.randn(shape, generator=g) for g in generator]), torch.zeros(acts.shape))
            generator = None
        frames, _ = modes.run(self.model, "world_model", ctx, self.sampler, actions=acts, generator=generator, noise=noise)
        now = ctx.images[:, -1]  # (b, v, 3, H, W)
        up = torch.stack([next_context(now, frames[:, i]) for i in range(frames.shape[1])], 1)
        return frames, images_from_model(up), None


@dataclass
class Dream:
    """One imagined episode."""

    seed: int
    success: bool
    steps: int
    """Steps imagined until solved (or max_steps)."""
    probability: list[float] = field(default_factory=list)
    """The head's solved probability after each chunk."""
    video: np.ndarray | None = None
    """(T, H, v*W, 3) uint8: the imagined camera frames, one per chunk (first frame real), when asked."""


def world_generator(seed: int) -> torch.Generator:
    """The generator of an episode's world-model noise, from its variation seed (apart from the policy's own)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), 13]).generate_state(1)[0]))


def dream(world: World, head, contender, first: list[Observation], seeds: list[int], prompt: str, max_steps: int,
          execute: int, threshold: float = 0.5, videos: int = 0, environment: np.ndarray | None = None) -> list[Dream]:
    """Imagined episodes of one task in lockstep, one per (first observation, seed); `prompt` is the task's
    instruction (what the env gives the policy, and what the head reads). The first `videos` keep their frames.
    `contender.act(episodes, observations, execute)` returns a chunk of at least `execute` actions per episode.
    `environment` (n, Z): each episode's real environment state at its first observation, for a head that reads it
    (`head.cfg.environment_dim`); the policy never sees it."""
    m, meta = world.cfg, contender.metadata
    z = head.cfg.environment_dim
    if z and (environment is None or np.shape(environment) != (len(first), z)):
        raise ValueError(f"the judge's head reads {z} entries of environment state, got "
                         f"{None if environment is None else np.shape(environment)} for {len(first)} episodes: "
                         f"judge on an environment that reports its state, or fit the head with --environment False")
    if execute not in m.future_offsets:
        raise ValueError(f"the policy executes {execute} steps per chunk, but the world model predicts frames "
                         f"{list(m.future_offsets)} steps ahead: pass --execute one of those")
    if 1 < meta.action_horizon < execute:
        raise ValueError(f"the policy returns {meta.action_horizon} actions per chunk, fewer than --execute {execute}")
    if tuple(head.cfg.cameras) != tuple(m.cameras) or head.cfg.size != m.future_size:
        raise ValueError(f"the success head reads cameras {list(head.cfg.cameras)} at {head.cfg.size} px; the world "
                         f"model predicts {list(m.cameras)} at {m.future_size} px: fit a head for this world model")
    missing = [c for c in meta.cameras if c not in m.cameras]
    if missing or tuple(meta.image_size) != (m.image_size, m.image_size):
        raise ValueError(f"the policy reads cameras {list(meta.cameras)} at {meta.image_size} px; the world model "
                         f"imagines {list(m.cameras)} at {m.image_size} px")
    n, views = len(first), [list(m.cameras).index(c) for c in meta.cameras]
    cams = list(m.cameras)
    history = [{0: np.stack([o.images[c] for c in cams])} for o in first]  # step -> (v, H, W, 3)
    state = torch.as_tensor(np.stack([o.state for o in first]), dtype=torch.float32)
    robot = state.shape[1]  # the policy and the world model read these; the head and state model read them all
    if z:
        state = torch.cat([state, torch.as_tensor(np.asarray(environment), dtype=torch.float32)], 1)
    memory = torch.zeros(n, head.cfg.memory_dim)  # what the state model carries (its last change, past actions): at rest at a reset
    text = world.text(prompt)
    episodes = contender.start(seeds)
    generators = [world_generator(s) for s in seeds]
    out = [Dream(seed=int(s), success=False, steps=max_steps) for s in seeds]
    frames_of = [[history[i][0]] if i < videos else None for i in range(n)]
    j = list(m.future_offsets).index(execute)
    t = 0

    while t < max_steps:
        live = [i for i in range(n) if not out[i].success]
        if not live:
            break
        obs = []
        for i in live:
            stacked = np.stack([frame_at(history[i], t + o) for o in meta.context_offsets])  # (c, v, H, W, 3)
            images = {c: stacked[:, views[k]] if len(meta.context_offsets) > 1 else stacked[0, views[k]]
                      for k, c in enumerate(meta.cameras)}
            obs.append(Observation(images=images, state=state[i, :robot].numpy(), prompt=prompt))
        chunks = contender.act([episodes[i] for i in live], obs, execute)  # (b, >= execute, a)
        k = m.action_horizon
        if chunks.shape[1] < k:
            chunks = np.concatenate([chunks, np.repeat(chunks[:, -1:], k - chunks.shape[1], 1)], 1)
        ctx = np.stack([np.stack([frame_at(history[i], t + o) for o in m.context_offsets]) for i in live])  # (b, c, v, H, W, 3)
        small, big, after = world.predict(ctx, state[live, :robot].numpy(), prompt, chunks[:, :k],
                                          [generators[i] for i in live], live, execute)
        s, v = state[live], memory[live]
        if after is None or z:
            rolled, v = head.roll(s, torch.as_tensor(chunks[:, :execute], dtype=torch.float32), v)
            s = rolled[:, -1]
        if after is not None:  # a world that knows the arm's state (the simulator standing in for one)
            s[:, :robot] = torch.as_tensor(after, dtype=torch.float32)
        state[live], memory[live] = s, v
        p = head.solved(small[:, j].float(), s, text.expand(len(live), -1).float())
        t += execute
        for r, i in enumerate(live):
            for q, o in enumerate(m.future_offsets):
                if o <= execute:
                    history[i][t - execute + o] = big[r, q]
            out[i].probability.append(float(p[r]))
            if frames_of[i] is not None:
                frames_of[i].append(big[r, j])
            if p[r] > threshold:
                out[i].success, out[i].steps = True, t
    for i in range(n):
        if frames_of[i] is not None:
            out[i].video = np.stack([np.concatenate(list(f), axis=1) for f in frames_of[i]])
    return out
