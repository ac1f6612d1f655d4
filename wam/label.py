"""Labelling action-free video with a World-Action Model's own inverse dynamics.

Video of a task without actions (another robot's, a person's, or the robot's own before anyone logged its
commands) trains the frames of a WAM, but not its policy. A model that also serves `inverse_dynamics` (frames given,
actions decoded, recipes.py) can close that gap the way VPT did with a separate network (Baker et al. 2022): decode
the actions that the recorded frames imply, then train the policy on them. `label_video` does the decoding for every
action-free episode of the training windows; training (train.py, recipes with `labels_video`) calls it once
`TrainConfig.label_at` of the steps are done, then trains on the labels as demonstrations without a state.

For a frame t the inverse dynamics reads the context at t and the real future frames at t + future_offsets, and
decodes the chunk t .. t+k-1; the first `stride` actions (up to the first future frame, the part two observed frames
bound) label frames t .. t+stride-1, and the next window starts at t + stride.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import torch

from wam import modes
from wam.config import SamplerConfig
from wam.data.windows import Windows


def label_stride(windows: Windows) -> int:
    """Actions kept from each decoded chunk: up to the first future frame (all of them without future frames)."""
    cfg = windows.cfg
    return min(cfg.future_offsets[0], cfg.action_horizon) if cfg.future_offsets else cfg.action_horizon


@torch.no_grad()
def label_video(model, windows: Windows, sampler: SamplerConfig, *, steps: int = 1, batch_size: int = 64, seed: int = 0,
                progress: bool = True) -> dict[int, np.ndarray]:
    """Actions for every frame of every action-free episode of `windows`: {frame index of its first frame (into the
    windows): (T, a) float32 in the data's units, clipped to the demonstrations' range}. The model runs in
    inverse-dynamics mode as it is (its caller picks the weights, for example the EMA's); the state stays absent, as in
    the video. `steps`: denoising steps of the actions; one Euler step from pure noise is the network's estimate of the
    expected actions given the frames (what a least-squares label wants); more steps draw a sample instead."""
    from tqdm import tqdm

    modes.check_mode(model.cfg.recipe, "inverse_dynamics")
    sampler = dataclasses.replace(sampler, steps=steps)
    stride = label_stride(windows)
    free = np.flatnonzero(~windows.labelled.numpy())
    starts = free[(free - windows.ep_from[free]) % stride == 0]  # (m,) window starts
    out = torch.zeros(windows.n, model.cfg.action_dim)
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for i in tqdm(range(0, len(starts), batch_size), desc="label video", unit="batch", disable=not progress):
        idx = starts[i:i + batch_size]
        batch = windows.get(idx)
        context = batch.context.apply(lambda x: x.to(device))
        _, actions = modes.run(model, "inverse_dynamics", context, sampler, video=batch.video.to(device), generator=g)
        norm = windows.norm  # in the data's units, inside the range of its demonstrations (what the guard allows)
        actions = torch.clamp(norm.unactions(actions.float().cpu()), norm.action_min, norm.action_max)  # (b, k, a)
        for j, t in enumerate(idx):
            n = min(stride, int(windows.ep_to[t]) - int(t))
            out[t:t + n] = actions[j, :n]
    return {int(lo): out[lo:hi].numpy() for lo, hi in sorted({(int(windows.ep_from[t]), int(windows.ep_to[t]))
                                                               for t in free})}


def apply_labels(windows: Windows, labels: dict[int, np.ndarray]) -> int:
    """Train on the labels from now on: each labelled episode's actions replaced and the episode marked labelled (its
    state stays absent). Returns the frames labelled."""
    n = 0
    for lo, actions in labels.items():
        hi = int(windows.ep_to[lo])
        if int(windows.ep_from[lo]) != lo or hi - lo != len(actions):
            raise ValueError(f"labels for frames {lo}..{lo + len(actions) - 1} do not match an episode of the data "
                             f"(frames {int(windows.ep_from[lo])}..{hi - 1}); were they made for another selection?")
        if bool(windows.labelled[lo:hi].any()):
            raise ValueError(f"labels for frames {lo}..{hi - 1}, but that episode has its own actions; labels are "
                             f"only for action-free episodes (--data.video-only-episodes)")
        windows.actions[lo:hi] = torch.from_numpy(np.asarray(actions, np.float32))
        windows.labelled[lo:hi] = True
        n += hi - lo
    return n


def save_labels(path: Path, labels: dict[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"from_{lo}": a for lo, a in labels.items()})
    tmp.replace(path)


def load_labels(path: Path) -> dict[int, np.ndarray]:
    with np.load(path) as f:
        return {int(k.removeprefix("from_")): f[k] for k in f.files}


def label_error(labels: dict[int, np.ndarray], truth: np.ndarray, variance: np.ndarray | None = None) -> dict:
    """How close labels are to the actions that were really taken (where they are known, as in a benchmark that hides
    them): `truth` (N, a) holds the true actions of the same frames. Mean squared error, and R^2 per dimension: 1 - error
    / variance of the true actions (0 for guessing their mean, 1 for exact); `variance` (a,) gives another reference
    (the variance over all labelled frames, to compare tasks). `r2` averages the dimensions that vary. No labels:
    0 frames, and None for the rest."""
    if not labels:
        return {"frames": 0, "mse": None, "r2": None, "r2_per_dim": [None] * truth.shape[1]}
    idx = np.concatenate([np.arange(lo, lo + len(a)) for lo, a in labels.items()])
    got = np.concatenate(list(labels.values()))
    want = truth[idx]
    err = ((got - want) ** 2).mean(0)
    var = want.var(0) if variance is None else np.asarray(variance)
    varies = var > 1e-8
    r2 = np.where(varies, 1 - err / np.where(varies, var, 1), np.nan)
    return {"frames": int(len(idx)), "mse": float(err.mean()), "r2": float(r2[varies].mean()) if varies.any() else None,
            "r2_per_dim": [None if np.isnan(x) else float(x) for x in r2]}


@contextlib.contextmanager
def weights_swapped(model, weights: dict[str, torch.Tensor]):
    """`model` in eval mode holding `weights` (by parameter name; the EMA's) inside the block, its own weights and mode
    restored after: labelling mid-training without a second copy of the model."""
    params = dict(model.named_parameters())
    own = {n: params[n].detach().clone() for n in weights}
    was_training = model.training
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w)
    model.eval()
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, w in own.items():
                params[n].copy_(w)
        model.train(was_training)
