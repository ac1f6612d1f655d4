"""Flow matching for World-Action Models: the path, the per-element loss and the sampler.

Convention (as in facebookresearch/flow_matching): x0 ~ N(0, I) is noise, x1 is data, and
    x_t = t * x1 + (1 - t) * x0,        u_t = dx_t/dt = x1 - x0,        t in [0, 1].
Future frames and actions each have their own t. The network may output the velocity ("velocity") or the
clean sample ("data", x-prediction); `velocity_from` converts either into a velocity for the sampler.
Everything here takes the network as an argument; nothing here owns parameters.
"""

from __future__ import annotations

import torch

from wam.model import Backbone, Context

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


def sample_t(b: int, dist: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise levels for training. uniform; logit_normal (SD3); beta: Beta(1.5, 1) leans towards the data end."""
    if dist == "uniform":
        return torch.rand(b, generator=generator)
    if dist == "logit_normal":
        return torch.sigmoid(torch.randn(b, generator=generator))
    if dist == "beta":
        u = torch.rand(b, generator=generator)
        return u ** (1 / 1.5)  # inverse CDF of Beta(1.5, 1)
    raise ValueError(f"unknown noise-level distribution {dist!r}; expected uniform, logit_normal or beta")


def losses(model: Backbone, video: torch.Tensor, actions: torch.Tensor, context: Context, t_video: torch.Tensor,
           t_action: torch.Tensor, noise_video: torch.Tensor, noise_actions: torch.Tensor,
           video_target: str, action_target: str) -> dict[str, torch.Tensor]:
    """Per-element squared errors: {"video": (b, f, v, 3, s, s), "action": (b, k, a)}.

    For target "data" the error is on the clean sample, for "velocity" on x1 - x0. The caller weights,
    masks and reduces.
    """
    xv = path(video, noise_video, t_video)
    xa = path(actions, noise_actions, t_action)
    out_v, out_a = model(xv, xa, t_video, t_action, context)
    want_v = video if video_target == "data" else video - noise_video
    want_a = actions if action_target == "data" else actions - noise_actions
    return {"video": (out_v - want_v) ** 2, "action": (out_a - want_a) ** 2}


@torch.no_grad()
def sample(model: Backbone, context: Context, video_shape: tuple[int, ...], action_shape: tuple[int, ...], steps: int,
           video_target: str, action_target: str, generator: torch.Generator | None = None,
           noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler integration from t = 0 (noise) to t = 1 (data) for future frames and actions together.

    video_shape (b, f, v, 3, s, s), action_shape (b, k, a). Returns (frames, actions) at t = 1.
    """
    if noise is None:
        noise = (torch.randn(video_shape, generator=generator), torch.randn(action_shape, generator=generator))
    xv, xa = noise[0].clone(), noise[1].clone()
    b = action_shape[0]
    ts = torch.linspace(0, 1, steps + 1)
    for i in range(steps):
        t = ts[i].expand(b)
        out_v, out_a = model(xv, xa, t, t, context)
        dt = ts[i + 1] - ts[i]
        xv = xv + dt * velocity_from(out_v, xv, t, video_target)
        xa = xa + dt * velocity_from(out_a, xa, t, action_target)
    return xv, xa
