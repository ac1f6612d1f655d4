"""Flow matching for World-Action Models: the path, the per-element loss and the sampler.

Convention (as in facebookresearch/flow_matching): x0 ~ N(0, I) is noise, x1 is data, and
    x_t = t * x1 + (1 - t) * x0,        u_t = dx_t/dt = x1 - x0,        t in [0, 1].
Future frames and actions each have their own t. The network may output the velocity ("velocity") or the
clean sample ("data", x-prediction); `velocity_from` converts either into a velocity for the sampler.
Everything here takes the network as an argument; nothing here owns parameters.
"""

from __future__ import annotations

import math

import torch

from wam.models.base import Backbone, Context

T_EPS = 1e-3  # x-prediction divides by (1 - t): keep away from t = 1


def path(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for a per-sample t of shape (b,)."""
    t = t.reshape(-1, *([1] * (x1.dim() - 1)))
    return t * x1 + (1 - t) * x0


def velocity_from(output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, target: str) -> torch.Tensor:
    if target == "velocity":
        return output
    if target == "data":
        t = t.reshape(-1, *([1] * (x_t.dim() - 1)))
        return (output - x_t) / (1 - t).clamp_min(T_EPS)
    raise ValueError(f"unknown target {target!r}; expected 'data' or 'velocity'")


def losses(model: Backbone, video: torch.Tensor, actions: torch.Tensor, context: Context, t_video: torch.Tensor,
           t_action: torch.Tensor, noise_video: torch.Tensor, noise_actions: torch.Tensor,
           video_target: str, action_target: str, environment: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-element squared errors: {"video": (b, f, v, 3, s, s), "action": (b, k, a)}, and "environment" (b, z)
    when an `environment` state target is given (the auxiliary head of our backbone).

    For target "data" the error is on the clean sample, for "velocity" on x1 - x0. The caller weights,
    masks and reduces. A model that predicts no frames gets a zero video error.
    """
    xv = path(video, noise_video, t_video)
    xa = path(actions, noise_actions, t_action)
    out = model(xv, xa, t_video, t_action, context, **({"environment": True} if environment is not None else {}))
    out_v, out_a = out[0], out[1]
    want_a = actions if action_target == "data" else actions - noise_actions
    errors = {"action": (out_a - want_a) ** 2}
    errors["video"] = torch.zeros_like(video) if out_v is None else (
        out_v - (video if video_target == "data" else video - noise_video)) ** 2
    if environment is not None:
        errors["environment"] = (out[2] - environment) ** 2
    return errors


def schedule(video_steps: int, action_steps: int, decode: str = "together") -> list[tuple[float, float, float, float]]:
    """Noise levels per model call: [(t_video, t_action, dt_video, dt_action), ...].

    "together": both modalities advance over max(video_steps, action_steps) calls, each on its own uniform
    grid; a modality with fewer steps waits at its current level (with 1 step, frames stay pure noise until
    the last call: the actions are denoised from noisy frames, as in DreamZero-Flash). "video_then_actions":
    the frames are finished first, then the actions (UniPi). 0 steps: the modality is not sampled (it stays
    at its given value, t = 1, or at pure noise, t = 0).
    """
    if video_steps < 0 or action_steps < 0 or video_steps + action_steps == 0:
        raise ValueError(f"need at least one denoising step, got video_steps={video_steps}, action_steps={action_steps}")
    if decode == "video_then_actions":
        return ([(i / video_steps, 0.0, 1 / video_steps, 0.0) for i in range(video_steps)]
                + [(1.0 if video_steps else 0.0, i / action_steps, 0.0, 1 / action_steps) for i in range(action_steps)])
    if decode != "together":
        raise ValueError(f"unknown decode order {decode!r}; expected 'together' or 'video_then_actions'")
    n = max(video_steps, action_steps)

    def level(i: int, steps: int) -> float:
        return math.floor(i * steps / n) / steps if steps else 0.0

    return [(level(i, video_steps), level(i, action_steps), level(i + 1, video_steps) - level(i, video_steps),
             level(i + 1, action_steps) - level(i, action_steps)) for i in range(n)]


@torch.no_grad()
def sample(model: Backbone, context: Context, video_shape: tuple[int, ...], action_shape: tuple[int, ...], *,
           steps: int, video_steps: int, video_target: str, action_target: str, decode: str = "together",
           video: torch.Tensor | None = None, actions: torch.Tensor | None = None,
           generator: torch.Generator | None = None, noise: tuple[torch.Tensor, torch.Tensor] | None = None,
           cache: bool = True, guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler integration from t = 0 (noise) to t = 1 (data) of future frames and actions.

    video_shape (b, f, v, 3, s, s), action_shape (b, k, a); `steps` and `video_steps` per modality (see
    `schedule`). A modality passed in (`video=` or `actions=`, clean) is given: held at t = 1 and not sampled;
    that is how one model serves as world model (actions given) or inverse dynamics (frames given).
    With `cache`, the context (and, where the recipe allows, the frames) go through the network once per
    noise level instead of once per call (`model.encode` / `model.decode`; the same function, tested), for a
    network whose `capabilities` say it can.
    `guide` = (actions (b, k, a), weights (k,) or per sample (b, k), in [0, 1]) inpaints the action chunk (real-time chunking at
    chunk boundaries): after every step the actions are pulled to the guide's point on the same noise path,
    x <- w * path(guide, x0, t) + (1 - w) * x, so weight 1 holds an action to the guide exactly.
    Returns (frames, actions) at t = 1.
    """
    device = context.images.device
    if noise is None:  # drawn on the CPU: the same seed gives the same noise on every device
        noise = (torch.randn(video_shape, generator=generator), torch.randn(action_shape, generator=generator))
    noise = (noise[0].to(device), noise[1].to(device))
    if guide is not None:
        guide = (guide[0].to(device), guide[1].to(device))
    xv = video.clone() if video is not None else noise[0].clone()
    xa = actions.clone() if actions is not None else noise[1].clone()
    plan = schedule(0 if video is not None else video_steps, 0 if actions is not None else steps, decode)
    b = action_shape[0]
    can = model.capabilities
    cache = cache and can.cached
    video_prefix = cache and can.frames_in_prefix
    # Fast path: frames not sampled and never read by the actions -> leave the frame tokens out entirely.
    skip_frames = cache and video is None and video_steps == 0 and can.frames_optional
    prefix, prefix_tv = None, None
    for tv, ta, dv, da in plan:
        tv, ta = (1.0 if video is not None else tv), (1.0 if actions is not None else ta)
        t_v, t_a = torch.full((b,), tv, device=device), torch.full((b,), ta, device=device)
        if not cache:
            out_v, out_a = model(xv, xa, t_v, t_a, context)
        elif video_prefix and not skip_frames:  # frame tokens never read actions: recompute them only when the frames move
            if prefix is None or prefix_tv != tv:
                prefix, prefix_tv = model.encode(context, xv, t_v), tv
            out_v = prefix.video_out
            out_a = model.decode(prefix, None, xa, t_v, t_a)[1] if da else None
        else:
            prefix = prefix or model.encode(context)
            out_v, out_a = model.decode(prefix, None if skip_frames else xv, xa, t_v, t_a)
        if dv:
            xv = xv + dv * velocity_from(out_v, xv, t_v, video_target)
        if da:
            xa = xa + da * velocity_from(out_a, xa, t_a, action_target)
            if guide is not None:
                w = guide[1].reshape(-1, guide[1].shape[-1], 1)  # (1 or b, k, 1)
                xa = w * path(guide[0], noise[1], t_a + da) + (1 - w) * xa
    return xv, xa
