"""Labelling action-free video through the arm's pose, estimated from pixels (--train.pose-labels).

label.py labels video with the WAM's own inverse dynamics, which reads whole frames and transfers poorly to tasks it
never saw labelled (docs/generalise.md: R^2 below zero on the `unseen` tasks). The arm, though, looks and moves the
same in every task. Here two small networks, fitted on the labelled episodes before the WAM trains, give every frame
of every action-free episode a robot state and an action:

    pose estimator   every camera's frame, resized to `size` px -> the robot state (a convolution net whose last
                     map is read by a spatial soft-argmax, the keypoint layer of Levine et al. 2016)
    state IDM        the estimated states at OFFSETS around frame t (smoothed over time), positions relative to
                     t's -> the action at t; fitted on the labelled episodes' estimates noised up to the video's
                     jitter, since the estimator gives its own training frames back nearly exact

The action-free episodes then train as demonstrations, with their estimated states (`apply`). Unlike label.py the
labels do not depend on the WAM: they are made once, before its first step, for any recipe.
scripts/pose_label_check.py measures both parts on held-out tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wam import label
from wam.data.windows import Windows

OFFSETS = (-2, -1, 0, 1, 2, 3, 4, 5)
"""Frames around t whose estimated states the state IDM reads (clamped to the episode)."""


@dataclass(frozen=True)
class PoseLabels:
    """Per action-free episode, keyed by the window index of its first frame: (T, a) actions and (T, s) states in
    the data's units."""

    actions: dict[int, np.ndarray]
    states: dict[int, np.ndarray]


class SoftArgmax(nn.Module):
    """(b, c, h, w) -> (b, 2c): the expected row and column of each channel's softmax over its map, in [-1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = x.flatten(2).softmax(-1).view(b, c, h, w)
        rows = torch.linspace(-1, 1, h, device=x.device)
        cols = torch.linspace(-1, 1, w, device=x.device)
        return torch.cat([(p.sum(3) * rows).sum(2), (p.sum(2) * cols).sum(2)], 1)


def pose_net(channels: int, out: int, width: int = 64) -> nn.Module:
    """Frames (b, channels, h, w) in [0, 1] -> (b, out) standardised state."""
    def block(i, o, stride):
        return [nn.Conv2d(i, o, 3, stride, 1), nn.GroupNorm(8, o), nn.GELU()]

    return nn.Sequential(*block(channels, width // 2, 1), *block(width // 2, width, 2), *block(width, width, 1),
                         nn.Conv2d(width, width, 3, 1, 1), SoftArgmax(),
                         nn.Linear(2 * width, 256), nn.GELU(), nn.Linear(256, out))


def state_features(states: torch.Tensor, ep_from: np.ndarray, ep_to: np.ndarray, position_dims: int = 3) -> torch.Tensor:
    """(N, s) states of whole episodes -> (N, len(OFFSETS) * s): for each frame the states at OFFSETS (clamped to its
    episode), the first `position_dims` entries relative to the frame's own."""
    n = len(states)
    i = torch.arange(n)
    lo, hi = torch.from_numpy(np.asarray(ep_from, np.int64)), torch.from_numpy(np.asarray(ep_to, np.int64)) - 1
    cols = []
    for w in OFFSETS:
        s = states[torch.minimum(torch.maximum(i + w, lo), hi)]
        cols.append(torch.cat([s[:, :position_dims] - states[:, :position_dims], s[:, position_dims:]], 1))
    return torch.cat(cols, 1)


def _frames(windows: Windows, idx: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (len(idx), 3 * views, size, size), or at the frames' own size where that is smaller."""
    out = []
    for i in range(0, len(idx), 2048):
        x = windows.images(idx[i:i + 2048])  # (b, v, H, W, 3)
        b, v, h, w, _ = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(b, v * 3, h, w).float()
        if size < h:  # never up
            x = F.interpolate(x, size=(size, size), mode="area")
        out.append(x.round().to(torch.uint8))
    return torch.cat(out)


def smooth_states(states: torch.Tensor, ep_from: np.ndarray, ep_to: np.ndarray, sigma: float) -> torch.Tensor:
    """(N, s) states of whole episodes, each entry smoothed over time by a Gaussian of `sigma` frames within its own
    episode (its ends held, so an episode never reads another's). sigma 0: unchanged."""
    if sigma <= 0:
        return states
    r = int(np.ceil(3 * sigma))
    k = torch.arange(-r, r + 1, dtype=states.dtype)
    w = torch.exp(-0.5 * (k / sigma) ** 2)
    w = w / w.sum()
    n = len(states)
    i = torch.arange(n)
    lo, hi = torch.from_numpy(np.asarray(ep_from, np.int64)), torch.from_numpy(np.asarray(ep_to, np.int64)) - 1
    out = torch.zeros_like(states)
    for o, wo in zip(range(-r, r + 1), w):
        out += wo * states[torch.minimum(torch.maximum(i + o, lo), hi)]
    return out


JITTER_SIGMA = 2.0
"""Frames of the Gaussian whose smoothing defines an estimate's jitter (jitter)."""


def jitter(states: torch.Tensor, ep_from: np.ndarray, ep_to: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """(s,) per entry: the standard deviation, over the frames `rows` (a mask), of the states about their own copy
    smoothed over JITTER_SIGMA frames: the frame-to-frame noise of an estimate, measurable without the truth."""
    return (states - smooth_states(states, ep_from, ep_to, JITTER_SIGMA))[torch.from_numpy(rows)].std(0)


def fit_state_idm(feats: torch.Tensor, actions: torch.Tensor, *, steps: int, g: torch.Generator,
                  progress: bool = False):
    """The state IDM (an MLP on standardised state_features) fitted to `actions` for `steps` steps of batch 512;
    returns features (n, f) -> actions (n, a), without gradients."""
    from tqdm import tqdm

    fm, fs = feats.mean(0), feats.std(0).clamp_min(1e-6)
    idm = nn.Sequential(nn.Linear(feats.shape[1], 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                        nn.Linear(256, actions.shape[1]))
    opt = torch.optim.AdamW(idm.parameters(), 1e-3)
    for _ in tqdm(range(steps), desc="state IDM", unit="step", disable=not progress):
        i = torch.randint(len(feats), (512,), generator=g)
        loss = F.mse_loss(idm((feats[i] - fm) / fs), actions[i])
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def predict(f: torch.Tensor) -> torch.Tensor:
        return idm((f - fm) / fs)

    return predict


def fit_and_label(windows: Windows, *, steps: int = 1500, size: int = 48, width: int = 64, batch_size: int = 128,
                  idm_steps: int | None = None, smooth: float = 2.0, match_jitter: bool = True, copies: int = 8,
                  max_frames: int = 60_000, seed: int = 0, progress: bool = True) -> PoseLabels:
    """Fit the pose estimator (`width` channels, frames at `size` px) and the state IDM on the labelled frames of
    `windows` (at most `max_frames`, evenly spaced), and label every action-free episode. Needs a robot state.

    The estimator gives its own training frames back nearly exact, the video's with noise; an IDM fitted on the former
    trusts every wiggle of the latter (on `few`, docs/generalise.md, it labelled the video's actions at R^2 0.48;
    fitted at the video's jitter on smoothed estimates 0.62).
    match_jitter: the IDM is fitted on `copies` copies of the labelled episodes' estimates, each with fresh white noise
    that brings their jitter (jitter) up to the video's, entry by entry. smooth: every estimate is smoothed over time
    by a Gaussian of this many frames before the IDM reads it (smooth_states; 0: not). Both off: the labeller's first
    version (docs/generalise.md). idm_steps: the state IDM's training steps (batch 512), twice `steps` unless given."""
    from tqdm import tqdm

    if windows.state.shape[1] == 0:
        raise ValueError("--train.pose-labels estimates the robot state from the frames, but the data records none "
                         "(observation.state)")
    if smooth < 0 or copies < 1:
        raise ValueError(f"pose labels need smooth >= 0 and copies >= 1, got smooth {smooth}, copies {copies}")
    labelled = windows.labelled.numpy().copy()
    free = np.flatnonzero(~labelled)
    if not len(free):
        return PoseLabels({}, {})
    if not labelled.any():
        raise ValueError("--train.pose-labels fits on the labelled episodes, but every episode is action-free")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_idx = np.flatnonzero(labelled)
    if len(train_idx) > max_frames:
        train_idx = train_idx[np.linspace(0, len(train_idx) - 1, max_frames).round().astype(np.int64)]
    x = _frames(windows, train_idx, size)
    state = windows.state.float()
    mu, sd = state[labelled].mean(0), state[labelled].std(0).clamp_min(1e-6)
    target = (state[train_idx] - mu) / sd
    net = pose_net(x.shape[1], state.shape[1], width)
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    bar = tqdm(range(steps), desc="pose estimator", unit="step", disable=not progress)
    for _ in bar:
        i = torch.randint(len(x), (batch_size,), generator=g)
        loss = F.mse_loss(net(x[i].float() / 255), target[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    net.eval()

    # every frame of every episode the labels touch: the labelled ones to fit the IDM, the action-free ones to label
    estimated = torch.zeros_like(state)
    with torch.no_grad():
        every = np.arange(windows.n)
        for i in range(0, len(every), 4096):
            idx = every[i:i + 4096]
            estimated[idx] = net(_frames(windows, idx, size).float() / 255) * sd + mu
    ep_from, ep_to = windows.ep_from, windows.ep_to
    fit_rows = torch.from_numpy(np.flatnonzero(labelled))
    if match_jitter:  # noise the labelled estimates up to the video's jitter (what each entry lacks, in variance)
        lacking = (jitter(estimated, ep_from, ep_to, ~labelled) ** 2
                   - jitter(estimated, ep_from, ep_to, labelled) ** 2).clamp_min(0).sqrt()
        on = torch.from_numpy(labelled)[:, None]
        noisy = [estimated + lacking * torch.randn(estimated.shape, generator=g) * on for _ in range(copies)]
    else:
        noisy = [estimated]
    feats = torch.cat([state_features(smooth_states(e, ep_from, ep_to, smooth), ep_from, ep_to)[fit_rows] for e in noisy])
    estimated = smooth_states(estimated, ep_from, ep_to, smooth)
    idm = fit_state_idm(feats, windows.actions.float()[fit_rows].repeat(len(noisy), 1),
                        steps=2 * steps if idm_steps is None else idm_steps, g=g, progress=progress)
    got = idm(state_features(estimated, ep_from, ep_to)[torch.from_numpy(free)])
    got = torch.clamp(got, windows.norm.action_min, windows.norm.action_max)
    out_a, out_s = {}, {}
    starts = sorted({int(windows.ep_from[t]) for t in free})
    pos = {int(t): k for k, t in enumerate(free)}
    for lo in starts:
        hi = int(windows.ep_to[lo])
        k = pos[lo]
        out_a[lo] = got[k:k + hi - lo].numpy().astype(np.float32)
        out_s[lo] = estimated[lo:hi].numpy().astype(np.float32)
    return PoseLabels(out_a, out_s)


def apply(windows: Windows, labels: PoseLabels) -> int:
    """Train on the labels from now on: each action-free episode gets its actions (label.apply_labels) and its
    estimated state, marked known. Returns the frames labelled."""
    n = label.apply_labels(windows, labels.actions)
    for lo, s in labels.states.items():
        hi = lo + len(s)
        windows.state[lo:hi] = torch.from_numpy(np.asarray(s, np.float32))[:, :windows.state.shape[1]]
        if windows.known is not None:
            windows.known[lo:hi] = 1.0
    return n


def labelling_key(windows: Windows, **settings) -> str:
    """The first 16 hex digits of a sha256 naming what fit_and_label(windows, **settings) returns: the frames (the
    cache files they are read from, their size and resize; FrameStore.fingerprint), the states, the actions of the
    labelled episodes, which episodes are action-free, and every setting of fit_and_label with its defaults filled in
    (so a changed default changes the key). Two runs with the same key get the same labels."""
    import hashlib
    import inspect
    import json

    params = inspect.signature(fit_and_label).parameters
    unknown = set(settings) - set(params) - {"progress"}
    if unknown:
        raise TypeError(f"fit_and_label has no setting(s) {sorted(unknown)}")
    full = {k: settings.get(k, p.default) for k, p in params.items() if k not in ("windows", "progress")}
    labelled = windows.labelled.numpy()
    h = hashlib.sha256(json.dumps({"version": KEY_VERSION, "settings": full}, sort_keys=True).encode())
    h.update(f"{windows.frames.fingerprint()}:{windows.frames.size}:{windows.frames.resize}:{windows.n}".encode())
    for a in (windows.ep_from, windows.ep_to, labelled, windows.state.numpy(), windows.actions.numpy()[labelled]):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


KEY_VERSION = 1
"""Part of every labelling_key: raise it when fit_and_label computes something else from the same inputs and
settings."""


def save(path: Path, labels: PoseLabels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"actions_{lo}": a for lo, a in labels.actions.items()},
             **{f"states_{lo}": s for lo, s in labels.states.items()})
    tmp.replace(path)


def load(path: Path) -> PoseLabels:
    with np.load(path) as f:
        return PoseLabels({int(k.removeprefix("actions_")): f[k] for k in f.files if k.startswith("actions_")},
                          {int(k.removeprefix("states_")): f[k] for k in f.files if k.startswith("states_")})
