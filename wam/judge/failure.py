"""Why a rollout failed: the plan, the action decoding, or neither. The simulator is the ground truth.

For one failed episode (`diagnose`):
1. Replay it exactly (same policy, seed and chunking as `wam eval`), saving the simulator state at every chunk.
2. At every chunk, the scripted expert runs from that state (then the state is restored): its actions, and the
   frames a correct plan would show at the model's future offsets (pooled to its future size).
3. The moment the rollout went wrong is the first chunk whose executed actions head away from the expert's (the
   cosine of their summed xyz below 0.5, or the gripper commanded the other way); none: the first chunk.
4. The plan's error there: the mean squared error of the policy's predicted frames against the expert's, beside
   the error of copying the current frame (a plan no better than "nothing moves" is wrong).
5. The oracle swap (mimic-video's analysis): from the moment, the simulator restored, the model's inverse dynamics
   decodes its actions from the expert's frames instead of its own plan, chunk after chunk, for up to `max_steps`
   more steps (within Meta-World's 500): a correct plan gets the time an episode gets.

Verdict: the swap fails -> `action` (even a correct plan is decoded into failing actions); the swap succeeds and
the plan was wrong -> `plan`; the swap succeeds and the plan was right -> `neither` (the chunk's execution, for
example). A policy that predicts no frames, or a recipe without the inverse-dynamics mode, gets `not applicable`.

`Faulty` makes the constructed failures the classifier is validated on: a policy acting through its plan whose
planned frames are mirrored left-right or frozen at the current frame (a plan fault), or whose decoded x/y actions are
negated (a decoding fault).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wam.envs.metaworld import MAX_EPISODE_STEPS
from wam.policy import WAMPolicy
from wam.types import Observation

VERDICTS = ("plan", "action", "neither")
NOT_APPLICABLE = "not applicable"
SUCCEEDED = "succeeded"
OUTCOMES = (*VERDICTS, NOT_APPLICABLE, SUCCEEDED)
"""What a diagnosis can say: a verdict; no plan to test; or the replay succeeded (a stochastic policy?)."""
WRONG_WAY = 0.5  # cosine below which executed actions head away from the expert's
PLAN_FAULTS = ("mirror", "freeze")


@dataclass
class Chunk:
    """One chunk of the replayed episode."""

    step: int
    snapshot: object
    observation: Observation
    predicted: np.ndarray | None  # (f, v, s, s, 3) uint8
    executed: list = field(default_factory=list)


@dataclass
class Diagnosis:
    task: str
    seed: int
    verdict: str
    moment: int | None = None
    """The control step the rollout went wrong at (start of that chunk)."""
    plan_error: float | None = None
    copy_error: float | None = None
    swap_success: bool | None = None
    swap_steps: int | None = None
    reason: str = ""
    evidence: str | None = None
    """A PNG: the real views at the moment, the predicted frames, the expert's frames."""


# ------------------------------------------------------------------------------------------- constructed faults
class Faulty(WAMPolicy):
    """A WAM acting through its plan (video mode, then inverse dynamics) with a fault injected: `plan` corrupts the
    planned frames before they are decoded (`plan_fault` "mirror": left-right; "freeze": every future frame replaced
    by the current one, the plan of a world model that predicts no motion); `action` negates the decoded x and y."""

    fault: str | None = None
    plan_fault: str = "mirror"

    @classmethod
    def build(cls, path: str | Path, fault: str, sampler=None, plan_fault: str = "mirror") -> "Faulty":
        from wam.recipes import check_mode

        if fault not in ("plan", "action"):
            raise ValueError(f"fault must be 'plan' or 'action', got {fault!r}")
        if plan_fault not in PLAN_FAULTS:
            raise ValueError(f"plan_fault must be one of {', '.join(PLAN_FAULTS)}, got {plan_fault!r}")
        policy = cls.from_checkpoint(path, sampler)
        for mode in ("video", "inverse_dynamics"):
            check_mode(policy.cfg.recipe, mode)
        if policy.model.capabilities.latent_frames:
            raise ValueError("constructed faults are for pixel-space models; a latent backbone's plan is in its VAE's space")
        policy.fault, policy.plan_fault = fault, plan_fault
        return policy

    def _act(self, ctx, noise, guide, planned):
        from wam import modes

        frames, _ = modes.run(self.model, "video", ctx, self.sampler, noise=(noise[0], torch.zeros(noise[1].shape)))
        if self.fault == "plan" and self.plan_fault == "mirror":
            frames = frames.flip(-1)
        elif self.fault == "plan":  # the current frame, pooled to the plan's size, at every future offset
            now = ctx.images[:, -1]  # (b, v, 3, H, W)
            b, v, c, H, W = now.shape
            s = frames.shape[-1]
            now = torch.nn.functional.avg_pool2d(now.flatten(0, 1), H // s).reshape(b, 1, v, c, s, s)
            frames = now.expand_as(frames).to(frames.dtype).clone()
        return frames, self._decode(ctx, frames, noise[1])

    def _decode(self, ctx, video, noise):
        actions = super()._decode(ctx, video, noise)
        if self.fault == "action":
            actions = actions.clone()
            actions[..., :2] = -actions[..., :2]
        return actions


# ------------------------------------------------------------------------------------------- the diagnosis
def pooled(images: dict, cameras, size: int) -> np.ndarray:
    """(v, size, size, 3) uint8: each camera's frame average-pooled to `size` (as the model's targets are)."""
    from wam.data.transforms import images_from_model, images_to_model

    x = images_to_model(torch.from_numpy(np.stack([images[c] for c in cameras])))
    return images_from_model(torch.nn.functional.avg_pool2d(x, x.shape[-1] // size))


def expert_future(env, offsets: tuple[int, ...], cameras, size: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """From the simulator's current state (restored afterwards): the expert's frames at `offsets` (f, v, s, s, 3)
    and its first `steps` actions."""
    snap = env.snapshot()
    frames, actions = {}, []
    try:
        for t in range(1, max(max(offsets), steps) + 1):
            a = env.expert_action()
            actions.append(a)
            obs, _ = env.step(a)
            if t in offsets:
                frames[t] = pooled(obs.images, cameras, size)
    finally:
        env.restore(snap)
    return np.stack([frames[o] for o in offsets]), np.stack(actions[:steps])


def wrong_way(executed: np.ndarray, expert: np.ndarray) -> bool:
    """The executed chunk heads away from the expert's: their summed xyz at cosine < WRONG_WAY (when the expert
    moves), or the gripper commanded the other way on average."""
    a, b = executed[:, :3].sum(0), expert[:, :3].sum(0)
    if np.linalg.norm(b) > 1e-3 and np.linalg.norm(a) > 1e-6:
        if a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) < WRONG_WAY:
            return True
    g_exec, g_exp = executed[:, 3].mean(), expert[:, 3].mean()
    return abs(g_exp) > 0.5 and np.sign(g_exec) != np.sign(g_exp)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float32) / 255 - b.astype(np.float32) / 255) ** 2))


def _stacked(history: list[dict], offsets: tuple[int, ...], cameras) -> dict:
    picked = [history[max(0, len(history) - 1 + o)] for o in offsets]
    return {c: (np.stack([p[c] for p in picked]) if len(offsets) > 1 else picked[0][c]) for c in cameras}


def oracle_swap(wam: WAMPolicy, env, obs: Observation, past: list[dict], generator: torch.Generator, start: int,
                budget: int, execute: int, prompt: str | None = None) -> tuple[bool, int]:
    """From `obs` (the env's state at control step `start`; `past` the frames of the steps before it, extended in
    place), decode every chunk from the expert's frames through the model's inverse dynamics and execute `execute` of
    its actions, until the task is solved or step `budget`. Returns (solved, the step reached)."""
    from wam.safety import ActionGuard

    m, meta = wam.cfg, wam.metadata
    cams = tuple(m.cameras)
    guard = ActionGuard.from_normalizer(wam.norm)
    if prompt is not None:
        obs = obs.replace(prompt=prompt)
    t, swapped = start, False
    while t < budget and not swapped:
        past.append({k: obs.images[k] for k in cams})
        frames, _ = expert_future(env, tuple(m.future_offsets), cams, m.future_size, 1)
        stacked = Observation(images=_stacked(past, meta.context_offsets, cams), state=obs.state, prompt=obs.prompt)
        actions = guard(wam.inverse_dynamics(stacked, frames, generator))
        for j, a in enumerate(actions[:execute]):
            obs, swapped = env.step(a)
            if prompt is not None:
                obs = obs.replace(prompt=prompt)
            t += 1
            if swapped or t >= budget:
                break
            if j < execute - 1:
                past.append({k: obs.images[k] for k in cams})
    return bool(swapped), t


def diagnose(policy, wam: WAMPolicy, env, task: str, seed: int, max_steps: int, execute: int,
             prompt: str | None = None, evidence: Path | None = None) -> Diagnosis:
    """Diagnose episode `seed` of `task` (module docstring). `policy` is what was evaluated (the guarded policy);
    `wam` the WAMPolicy inside it, whose inverse dynamics the oracle swap runs."""
    from wam.runtime import closed_loop

    m, meta = wam.cfg, wam.metadata
    cams = tuple(m.cameras)
    offsets = tuple(m.future_offsets)
    # 1. the replay, with a snapshot at every chunk
    runner = closed_loop(policy, execute)
    runner.reset(seed)
    obs = env.reset(seed)
    history, chunks, success = [], [], False
    for step in range(max_steps):
        if prompt is not None:
            obs = obs.replace(prompt=prompt)
        snap = env.snapshot() if step % execute == 0 else None
        history.append({c: obs.images[c] for c in cams})
        out = runner.infer(obs)
        if out.fresh:
            chunks.append(Chunk(step, snap, obs, out.frames, []))
        chunks[-1].executed.append(np.asarray(out.actions[0], np.float32))
        obs, success = env.step(out.actions[0])
        if success:
            break
    if success:
        return Diagnosis(task, seed, SUCCEEDED, reason="the replay succeeded (a stochastic policy?)")
    if not meta.future_offsets or "inverse_dynamics" not in meta.modes:
        return Diagnosis(task, seed, NOT_APPLICABLE, reason=f"recipe {m.recipe!r} has no plan and inverse dynamics to test")
    # 2-3. the expert from every chunk, and the moment it went wrong
    moment, expert_frames = 0, None
    for i, c in enumerate(chunks):
        if c.snapshot is None:
            continue
        env.restore(c.snapshot)
        frames, actions = expert_future(env, offsets, cams, m.future_size, len(c.executed))
        if i == 0:
            expert_frames = frames
        if wrong_way(np.stack(c.executed), actions):
            moment, expert_frames = i, frames
            break
    c = chunks[moment]
    # 4. the plan's error at the moment, against copying the current frame
    now = pooled(c.observation.images, cams, m.future_size)
    plan_error = _mse(c.predicted, expert_frames) if c.predicted is not None else float("nan")
    copy_error = _mse(np.broadcast_to(now, expert_frames.shape), expert_frames)
    # 5. the oracle swap from the moment
    obs = env.restore(c.snapshot)
    past = history[:c.step]  # the frames of the steps before the moment
    swapped, t = oracle_swap(wam, env, obs, past, torch.Generator().manual_seed(seed), c.step,
                             min(MAX_EPISODE_STEPS, c.step + max_steps), execute, prompt)
    plan_wrong = plan_error >= copy_error  # no better than copying the current frame
    verdict = "action" if not swapped else ("plan" if plan_wrong else "neither")
    reason = {"action": "with the expert's frames as its plan, the model's actions still fail",
              "plan": "with the expert's frames the model succeeds, and its own plan was no better than the current frame",
              "neither": "with the expert's frames the model succeeds, and its own plan was close to the expert's"}[verdict]
    d = Diagnosis(task, seed, verdict, moment=c.step, plan_error=plan_error, copy_error=copy_error,
                  swap_success=bool(swapped), swap_steps=t, reason=reason)
    if evidence is not None:
        d.evidence = str(write_evidence(evidence, c, expert_frames, cams, m.image_size))
    return d


def write_evidence(path: Path, chunk: Chunk, expert: np.ndarray, cams, image_size: int) -> Path:
    """A PNG: top, the real views at the moment; then a row per future offset: predicted | expert, views side by side."""
    from PIL import Image

    real = np.concatenate([chunk.observation.images[c] for c in cams], axis=1)
    rep = image_size // expert.shape[2]
    big = lambda x: np.concatenate([np.kron(v, np.ones((rep, rep, 1), np.uint8)) for v in x], axis=1)  # noqa: E731
    pred = chunk.predicted if chunk.predicted is not None else np.zeros_like(expert)
    rows = [np.concatenate([real, np.full_like(real, 255)], axis=1)]
    rows += [np.concatenate([big(p), big(e)], axis=1) for p, e in zip(pred, expert)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path
