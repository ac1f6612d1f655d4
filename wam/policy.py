"""The World-Action Model as a policy.

`WAMPolicy` follows the `Policy` protocol (types.py): `metadata` declares what it reads and returns, `infer(obs)`
takes one `Observation` (the context frames of every camera it reads, the state and the prompt) and returns the
action chunk and the predicted future frames, a first-class output. The prompt's embedding is cached by its
text. `policy.session(seed)` is a view with a sampling generator of its own (`PolicySession`), one per
served connection. The closed-loop wrappers around any policy (frame history, synchronous and asynchronous chunk
execution) are in runtime.py.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wam import modes
from wam.config import SamplerConfig
from wam.data.transforms import images_from_model, images_to_model
from wam.models.base import Context
from wam.recipes import recipe
from wam.types import Observation, PolicyMetadata, PolicyOutput

TEXT_CACHE = 256  # prompts whose embeddings a policy keeps


class WAMPolicy:
    """A trained World-Action Model as a policy (see the module docstring)."""

    def __init__(self, model, normalizer, config: dict, sampler: SamplerConfig | None = None, seed: int = 0):
        self.model, self.norm, self.config = model, normalizer, config
        self.cfg = model.cfg
        self.sampler = (sampler or SamplerConfig(**config.get("sampler", {}))).resolve(self.cfg.recipe)
        self.generator = torch.Generator().manual_seed(seed)
        self._text: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.device = resolve_device(self.sampler.device)
        model.to(self.device).eval()
        if self.sampler.compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else None  # CUDA graphs on a GPU
            for block in model.blocks:
                block.compile(dynamic=False, mode=mode)
            model.graph_outputs = mode == "reduce-overhead"
        self.predicts_frames = bool(modes.video_steps(self.sampler, self.cfg.recipe))
        self._plans = self._planned_instructions()
        self._plan_table: torch.Tensor | None = None
        self._metadata = self._declare()

    def _planned_instructions(self) -> tuple[list[str], torch.Tensor] | bool:
        """What `sampler.plan` decides: True (every request acts through the plan), False (none), or the training
        instructions and whether each was seen only in video (auto, for a recipe that plans those)."""
        r, how = recipe(self.cfg.recipe), self.sampler.plan
        if how == "always":
            for mode in ("video", "inverse_dynamics"):
                if mode not in r.modes:
                    raise ValueError(f"--sampler.plan always: recipe {self.cfg.recipe!r} does not serve the {mode!r} mode")
            return True
        data = self.config.get("data", {})
        video_only = set(data.get("video_only_instructions") or ())
        if how == "never" or not r.plans_video_only or not video_only:
            return False
        known = list(data["instructions"])
        return known, torch.tensor([t in video_only for t in known])

    def plans(self, prompts: list[str]) -> torch.Tensor:
        """(b,) bool: which prompts the policy acts on through its plan. Under auto, a prompt's nearest training
        instruction (cosine of the text embeddings) decides, so a reworded instruction goes where its task went."""
        if isinstance(self._plans, bool):
            return torch.full((len(prompts),), self._plans)
        known, video_only = self._plans
        if self._plan_table is None:  # the training instructions' unit embeddings, once
            self._plan_table = F.normalize(torch.cat([self.model.embed_text([t]).to(self.device).flatten(1)
                                                      for t in known]).float(), dim=-1)  # (n, d)
        table = self._plan_table
        asked = F.normalize(torch.cat([self.embed(p).flatten(1) for p in prompts]).float(), dim=-1)  # (b, d)
        return video_only[(asked @ table.T).argmax(1).cpu()]

    @classmethod
    def from_checkpoint(cls, path: str | Path, sampler: SamplerConfig | None = None, seed: int = 0,
                        backbone_path: str | Path | None = None) -> "WAMPolicy":
        """`backbone_path`: a pretrained backbone's folder on this machine (default: the one the checkpoint records)."""
        from wam.checkpoint import load_model

        model, normalizer, config = load_model(Path(path), backbone_path)
        return cls(model, normalizer, config, sampler, seed)

    # ------------------------------------------------------------------ the protocol
    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def _declare(self) -> PolicyMetadata:
        cfg, data = self.cfg, self.config.get("data", {})
        return PolicyMetadata(
            cameras=tuple(cfg.cameras), image_size=(cfg.image_size, cfg.image_size),
            context_offsets=tuple(cfg.context_offsets), state_dim=cfg.state_dim, action_dim=cfg.action_dim,
            action_horizon=cfg.action_horizon, state_names=tuple(data.get("state_names") or ())[:cfg.state_dim],
            action_names=tuple(data.get("action_names") or ()), fps=data.get("fps"), recipe=cfg.recipe,
            modes=recipe(cfg.recipe).modes, future_offsets=tuple(cfg.future_offsets) if self.predicts_frames else (),
            future_size=cfg.future_size if self.predicts_frames else None, accepts_guide=True,
            resize=(data.get("config") or {}).get("resize", "pad"))

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.generator.manual_seed(seed)

    def embed(self, prompt: str) -> torch.Tensor:
        """The prompt's text embedding (1, ...), computed once per distinct prompt."""
        if prompt not in self._text:
            self._text[prompt] = self.model.embed_text([prompt]).to(self.device)
            if len(self._text) > TEXT_CACHE:
                self._text.popitem(last=False)
        self._text.move_to_end(prompt)
        return self._text[prompt]

    def session(self, seed: int = 0) -> "PolicySession":
        """A view of this policy with its own sampling generator (one per served connection, wam.serve)."""
        return PolicySession(self, seed)

    def infer(self, obs: Observation, generator: torch.Generator | None = None) -> PolicyOutput:
        """`generator`: draw the sampling noise from it instead of the policy's own (a session's, PolicySession)."""
        return self.infer_batch([obs], [self.generator if generator is None else generator])[0]

    @torch.inference_mode()
    def infer_batch(self, observations: list[Observation], generators: list[torch.Generator]) -> list[PolicyOutput]:
        """One forward pass for several requests (cross-session batching, wam.serve.batcher): each output equals
        what `infer(obs, generator)` gives alone. Every request's noise is drawn from its own generator, in
        the order the unbatched path draws it (its frames' noise, then its actions'), and with best_of = n a
        request is n rows of the batch, its best chunk picked among its own rows. Each prompt is embedded once
        (the text cache). Observations are checked first; a bad one raises its ObservationError (the batcher
        checks them one by one before batching, so one bad request never fails the others). `infer_ms` is the
        whole batch's time, the latency each request saw."""
        cfg, can, n = self.cfg, self.model.capabilities, self.sampler.best_of
        if len(observations) != len(generators) or not observations:
            raise ValueError(f"need one generator per observation, got {len(observations)} and {len(generators)}")
        if n > 1 and not can.value:
            raise ValueError(f"best_of={n} needs a model that predicts a value (recipe cosmos-policy), not {cfg.recipe!r}")
        observations = [obs.check(self._metadata) for obs in observations]
        texts = [self.embed(obs.prompt) for obs in observations]
        if len({t.shape for t in texts}) > 1:  # texts of different token counts do not stack: one at a time
            return [out for obs, g in zip(observations, generators) for out in self.infer_batch([obs], [g])]
        start = time.perf_counter()
        b = len(observations)
        ctx = self._context(observations, texts)
        if n > 1:  # N candidate chunks from N noises per request: rows i*n .. i*n + n - 1 are request i's
            ctx = ctx.apply(lambda x: x.repeat_interleave(n, 0))
        noise = [(torch.randn(self.model.video_shape(n), generator=g),
                  torch.randn((n, cfg.action_horizon, cfg.action_dim), generator=g)) for g in generators]
        noise = (torch.cat([v for v, _ in noise]), torch.cat([a for _, a in noise]))  # (b*n, ...)
        inpaint = self._guides(observations, n)
        planned = self.plans([obs.prompt for obs in observations]).repeat_interleave(n)  # (b*n,)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.sampler.precision == "bfloat16"):
            frames, actions = self._act(ctx, noise, inpaint, planned)
        values = [None] * b
        if can.value:  # each request's best candidate among its own n rows
            scores = self.model.value_of(frames.float()).reshape(b, n)
            best = scores.argmax(1)
            values = [float(scores[i, best[i]]) for i in range(b)]
            rows = torch.arange(b, device=best.device) * n + best
            frames, actions = frames[rows], actions[rows]
        actions = self.norm.unactions(actions.float().cpu()).numpy()  # robot units; .cpu() waits for the device
        frames = frames.float() if self.predicts_frames else None
        if frames is not None and can.latent_frames:  # latents -> pixels, only when asked
            frames = self.model.decode_frames(frames) if self.sampler.decode_frames else None
        frames = images_from_model(frames.cpu()) if frames is not None else None
        ms = (time.perf_counter() - start) * 1000
        return [PolicyOutput(actions=actions[i], frames=None if frames is None else frames[i], value=values[i],
                             timing={"infer_ms": ms}) for i in range(b)]

    def context(self, obs: Observation) -> Context:
        """One observation, checked, and its prompt as the model's context (a batch of one): what every mode of the
        network conditions on; for probes of the network itself (scripts/reach_diagnosis.py reads the
        environment-state head from it)."""
        obs = obs.check(self._metadata)
        return self._context([obs], [self.embed(obs.prompt)])

    def _context(self, observations: list[Observation], texts: list[torch.Tensor]) -> Context:
        """Checked observations and their prompts' embeddings as the model's context: images (b, c, v, 3, H, W),
        state (b, state_dim), text (b, ...); with a pretrained backbone, the images' VAE latents (once per chunk)."""
        images, states = [], []
        for obs in observations:
            frames_in = np.stack([obs.images[c].reshape(-1, *self._metadata.image_shape()[-3:]) for c in self.cfg.cameras], 1)
            images.append(images_to_model(torch.from_numpy(frames_in)))  # (c, v, 3, H, W)
            states.append(self.norm.state(torch.from_numpy(obs.state)) if obs.state is not None else torch.zeros(0))
        ctx = Context(images=torch.stack(images).to(self.device), state=torch.stack(states).to(self.device),
                      text=torch.cat(texts))
        if self.model.capabilities.latent_frames:
            ctx.latents = self.model.encode_frames(ctx.images)
        return ctx

    @torch.inference_mode()
    def inverse_dynamics(self, obs: Observation, frames: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        """The action chunk (k, a), robot units, that the model's inverse-dynamics mode decodes from the observation
        and given future frames (f, v, s, s, 3) uint8 at its future offsets and size: what it would do if its plan
        were these frames (the oracle swap of wam/judge/failure.py)."""
        if self.model.capabilities.latent_frames:
            raise ValueError("decoding given frames is for pixel-space models; a latent backbone's plan is in its VAE's space")
        obs = obs.check(self._metadata)
        video = images_to_model(torch.from_numpy(np.asarray(frames)))[None].to(self.device)  # (1, f, v, 3, s, s)
        noise = torch.randn((1, self.cfg.action_horizon, self.cfg.action_dim), generator=generator or self.generator)
        actions = self._decode(self._context([obs], [self.embed(obs.prompt)]), video, noise)
        return self.norm.unactions(actions.float().cpu())[0].numpy()

    def _decode(self, ctx: Context, video: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions (b, k, a) in model units from given frames and the actions' noise, through inverse dynamics."""
        return modes.run(self.model, "inverse_dynamics", ctx, self.sampler, video=video,
                         noise=(torch.zeros(video.shape), noise))[1]

    def _act(self, ctx: Context, noise: tuple, guide: tuple | None, planned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames and actions of the batch: the rows `planned` through modes.plan, the others through the policy mode,
        each row with its own noise and guide."""
        def policy(c, nz, g):
            return modes.run(self.model, "policy", c, self.sampler, noise=nz, guide=g)

        def plan(c, nz, g):
            return modes.plan(self.model, c, self.sampler, noise=nz, guide=g)

        if not planned.any() or planned.all():
            return (plan if planned.all() else policy)(ctx, noise, guide)
        frames = actions = None
        for rows, act in ((planned, plan), (~planned, policy)):
            idx = torch.nonzero(rows).flatten()
            sub = ctx.apply(lambda x: x[idx.to(x.device)])
            g = None if guide is None else (guide[0][idx], guide[1][idx])
            f, a = act(sub, (noise[0][idx], noise[1][idx]), g)
            if frames is None:
                frames, actions = f.new_zeros((len(rows), *f.shape[1:])), a.new_zeros((len(rows), *a.shape[1:]))
            frames[idx.to(f.device)], actions[idx.to(a.device)] = f, a
        return frames, actions

    def _guides(self, observations: list[Observation], n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The inpainting guide of the batch: (known actions (b*n, k, a) in model units, weights (b*n, k));
        requests without a guide get weight 0 (left free). None when no request has one."""
        cfg = self.cfg
        if not any(obs.guide is not None and len(obs.guide.actions) for obs in observations):
            return None
        known = torch.zeros(len(observations), cfg.action_horizon, cfg.action_dim)
        weights = torch.zeros(len(observations), cfg.action_horizon)
        for i, obs in enumerate(observations):
            if obs.guide is not None and len(obs.guide.actions):
                m = min(len(obs.guide.actions), cfg.action_horizon)
                known[i, :m] = self.norm.actions(torch.as_tensor(obs.guide.actions[:m], dtype=torch.float32))
                weights[i, :m] = torch.as_tensor(obs.guide.weights[:m], dtype=torch.float32)
        return known.repeat_interleave(n, 0), weights.repeat_interleave(n, 0)


class PolicySession:
    """The shared WAM policy (model, text cache) with a sampling generator of its own, so that sessions served
    from one model are reproducible apart: `reset(seed)` seeds this session's generator only. `policy` is a
    WAMPolicy or anything with its `metadata` and `infer(obs, generator)`, such as the server's cross-session
    Batcher (wam.serve.batcher). On a WAMPolicy it is not thread-safe: one inference at a time uses the model."""

    def __init__(self, policy, seed: int = 0):
        self.policy = policy
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def metadata(self) -> PolicyMetadata:
        return self.policy.metadata

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.generator.manual_seed(seed)

    def infer(self, obs: Observation) -> PolicyOutput:
        return self.policy.infer(obs, generator=self.generator)


def resolve_device(name: str) -> torch.device:
    """A torch device from a name, with a clear error when it is not there (nothing falls back silently)."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}, "
                           f"CUDA build: {torch.version.cuda is not None})")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected 'cpu' or 'cuda[:N]'")
    return device
