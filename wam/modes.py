"""Modes of one trained World-Action Model, by what is given and what is denoised.

    policy            context           -> actions (and, where the recipe predicts them, future frames)
    world_model       context + actions -> future frames
    inverse_dynamics  context + frames  -> actions
    video             context           -> future frames (actions absent: left at pure noise)

`plan` chains two of them, for a recipe that serves both: the frames `video` predicts from the context and the
instruction, then the actions `inverse_dynamics` decodes from them. How a policy acts on a task it has seen only in
video (a policy's `SamplerConfig.plan`).

A given modality is held clean (t = 1); an absent one at pure noise (t = 0). Which modes a checkpoint
serves depends on its recipe (recipes.py); asking for another is an error, not noise.
"""

from __future__ import annotations

import dataclasses

import torch

from wam import flow
from wam.config import SamplerConfig
from wam.models.base import Context
from wam.recipes import check_mode, recipe


def video_steps(sampler: SamplerConfig, recipe_name: str, mode: str = "policy") -> int:
    """Frame denoising steps for a mode, from the sampler resolved for the recipe. In the frame-producing modes
    (world_model, video) frames are the point, so they get at least as many steps as the actions."""
    if not recipe(recipe_name).predicts_video or mode == "inverse_dynamics":
        return 0
    sampler = sampler.resolve(recipe_name)
    return max(sampler.video_steps, sampler.steps) if mode in ("world_model", "video") else sampler.video_steps


def deadzone(frames: torch.Tensor, context: Context, amount: float, model) -> torch.Tensor:
    """Predicted frames (b, f, v, 3, s, s) with their change from the current frame soft-thresholded by `amount`
    (SamplerConfig.video_deadzone): each pixel's change shrunk toward zero by `amount`, changes smaller than it
    dropped. The current frame is the last context frame pooled to the frames' size, as the residual model adds it."""
    if not amount:
        return frames
    if not getattr(model, "residual", False):
        raise ValueError(f"sampler.video_deadzone ({amount}) needs frames predicted as a change from the current frame "
                         f"(our backbone with --model.video-residual and x-prediction); this checkpoint's are not: use 0")
    now = context.current(frames.shape[-1])[:, None]
    change = frames - now
    return now + change.sign() * (change.abs() - amount).clamp_min(0)


@torch.no_grad()
def run(model, mode: str, context: Context, sampler: SamplerConfig, *, video: torch.Tensor | None = None,
        actions: torch.Tensor | None = None, generator: torch.Generator | None = None,
        noise: tuple[torch.Tensor, torch.Tensor] | None = None,
        guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames (b, f, v, 3, s, s), actions (b, k, a)) in model units. Given inputs come back unchanged."""
    cfg = model.cfg
    check_mode(cfg.recipe, mode)
    r = recipe(cfg.recipe)
    needs = {"world_model": ("actions", actions), "inverse_dynamics": ("video", video)}
    if mode in needs and needs[mode][1] is None:
        raise ValueError(f"mode {mode!r} needs `{needs[mode][0]}=` given")
    if mode in ("policy", "video") and (video is not None or actions is not None):
        raise ValueError(f"mode {mode!r} takes only the context; use world_model or inverse_dynamics to give frames or actions")
    b = context.images.shape[0]
    sampler = sampler.resolve(cfg.recipe)
    vs = video_steps(sampler, cfg.recipe, mode)
    if r.noise == "shared" and vs != sampler.steps and not (vs == 0 and model.capabilities.frames_optional):
        raise ValueError(f"recipe 'joint' shares one noise level between frames and actions: video_steps ({vs}) "
                         f"must equal steps ({sampler.steps})")
    if mode == "world_model" and not r.world_reads_text:  # as it was trained (recipes.Recipe.world_reads_text)
        context = dataclasses.replace(context, text=torch.zeros_like(context.text))
    if not r.idm_reads_text and (mode == "inverse_dynamics" or (mode == "policy" and r.decode == "video_then_actions")):
        # (plan the frames with the instruction, then) decode the actions from them with the instruction zeroed
        # (as they were trained: recipes.Recipe.idm_reads_text)
        shapes = (model.video_shape(b), (b, cfg.action_horizon, cfg.action_dim))
        if mode == "policy" and vs == 0:
            raise ValueError(f"recipe {cfg.recipe!r} decodes its actions from the planned frames: video_steps must be >= 1")
        if mode == "policy":
            plan_noise = None if noise is None else (noise[0], torch.zeros(shapes[1]))
            video, _ = flow.sample(model, context, *shapes, steps=0, video_steps=vs, video_target=cfg.video_target,
                                   action_target=cfg.action_target, decode=r.decode, generator=generator,
                                   noise=plan_noise, cache=sampler.cache)
            video = deadzone(video, context, sampler.video_deadzone, model)
        blind = dataclasses.replace(context, text=torch.zeros_like(context.text))
        act_noise = None if noise is None else (torch.zeros(shapes[0]), noise[1])
        if act_noise is None:  # the actions' noise drawn after the frames', from the same generator
            act_noise = (torch.zeros(shapes[0]), torch.randn(shapes[1], generator=generator))
        _, actions = flow.sample(model, blind, *shapes, steps=sampler.steps, video_steps=0, video_target=cfg.video_target,
                                 action_target=cfg.action_target, decode=r.decode, video=video, generator=generator,
                                 noise=act_noise, cache=sampler.cache, guide=guide)
        return video, actions
    frames, actions = flow.sample(model, context, model.video_shape(b),
                                  (b, cfg.action_horizon, cfg.action_dim), steps=0 if mode == "video" else sampler.steps,
                                  video_steps=vs, video_target=cfg.video_target, action_target=cfg.action_target,
                                  decode=r.decode, video=video if mode == "inverse_dynamics" else None,
                                  actions=actions if mode == "world_model" else None, generator=generator, noise=noise,
                                  cache=sampler.cache, guide=guide)
    if mode != "inverse_dynamics" and vs:  # frames sampled (not given, not left out)
        frames = deadzone(frames, context, sampler.video_deadzone, model)
    return frames, actions


@torch.no_grad()
def plan(model, context: Context, sampler: SamplerConfig, *, generator: torch.Generator | None = None,
         noise: tuple[torch.Tensor, torch.Tensor] | None = None,
         guide: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Act through the world model: the frames the `video` mode plans from the context and the instruction, then the
    actions the `inverse_dynamics` mode decodes from them (blind to the instruction where the recipe's is). Noise as in
    `run`: the frames' from noise[0], the actions' from noise[1] (or both drawn from `generator`, frames first)."""
    cfg = model.cfg
    check_mode(cfg.recipe, "video")
    check_mode(cfg.recipe, "inverse_dynamics")
    b = context.images.shape[0]
    shapes = (model.video_shape(b), (b, cfg.action_horizon, cfg.action_dim))
    video_noise = None if noise is None else (noise[0], torch.zeros(shapes[1]))
    frames, _ = run(model, "video", context, sampler, generator=generator, noise=video_noise)
    action_noise = (torch.zeros(shapes[0]), noise[1] if noise is not None else torch.randn(shapes[1], generator=generator))
    _, actions = run(model, "inverse_dynamics", context, sampler, video=frames, noise=action_noise, guide=guide)
    return frames, actions
