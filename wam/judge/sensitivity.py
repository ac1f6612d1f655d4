"""`wam judge check-world --world CKPT --data DIR`: does the world model follow the actions it is given?

A judge imagines what a policy's actions do, so its world model must predict different futures for different
actions; one that predicts what usually happens after a frame (or what the instruction says should happen) imagines
every policy the same. Over windows of a dataset with actions (held-out episodes, ideally), the world model predicts
the future frames three times from the same context and the same noise: under the recorded actions, under another
window's actions, and under the recorded ones with x, y and z negated. Each prediction is compared with what really
happened, at the model's resolution (the real frames pooled as training targets are), in model units:

    mse          mean squared error against the real frame, beside copying the current frame (the floor to beat)
    cosine       cosine between the predicted change and the real change (frame minus the current one): 0 when the
                 predicted motion has nothing to do with the real one
    wins         fraction of windows whose prediction under the recorded actions is closer to the real frame than
                 the one under another window's actions (a tie counts half): 0.5 when the actions make no difference
    psnr, ssim   the same predictions and the copy as 8-bit images, as `wam eval --data` scores a policy's frames (PSNR
                 of the mean squared error over windows, SSIM averaged): the world model one chunk ahead against
                 copying the current frame

A world model that follows the actions is closest to the truth under the recorded ones (wins well above 0.5, higher
cosine); one that ignores them scores the same under all three.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


@dataclass(frozen=True)
class CheckWorldConfig:
    world: Path
    """A checkpoint that serves the world_model mode (as `wam judge --world`)."""
    data: Path
    """A dataset with actions, ideally episodes the world model did not train on."""
    episodes: str | None = None
    """Episodes of --data to draw windows from (the reader's syntax: 0:20,25); default all with actions."""
    windows: int = 128
    """Windows drawn (episode and start step, uniformly)."""
    batch: int = 32
    seed: int = 0
    """Draws the windows and the world model's sampling noise (the same noise for the three action sets)."""
    world_steps: int | None = None
    """Denoising steps of the world model's frames (default: its checkpoint's)."""
    deadzone: float | None = None
    """The sampler's --sampler.video-deadzone for the world model's frames (default: its checkpoint's, 0 unless set)."""
    out: Path | None = None
    """Also write the result there as JSON."""


CONDITIONS = ("recorded", "other", "negated")


def _windows(rec, has_actions: np.ndarray, reach: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n start indices into the dataset's frames, each in an episode with actions and `reach` steps before its end."""
    eps = [e for e in np.flatnonzero(has_actions) if rec.episode_to[e] - rec.episode_from[e] > reach]
    if not eps:
        raise ValueError(f"no episode with actions is longer than {reach} steps: the world model predicts that far ahead")
    chosen = rng.choice(eps, n, replace=True)
    return np.array([rng.integers(rec.episode_from[e], rec.episode_to[e] - reach) for e in chosen])


@torch.no_grad()
def check_world(cfg: CheckWorldConfig, progress: bool = True) -> dict:
    from wam import modes
    from wam.backbones import backbone
    from wam.data.frames import FrameStore
    from wam.data.reader import data_config_of, read_dataset
    from wam.data.transforms import images_from_model, images_to_model
    from wam.judge.dream import World
    from wam.metrics import psnr_of, ssim
    from wam.models.base import Context

    if cfg.windows < 2 or cfg.batch < 1:  # checked here, not in __post_init__: tyro would box the message
        raise ValueError(f"need windows >= 2 (one window's actions stand in for another's) and batch >= 1, got "
                         f"{cfg.windows} and {cfg.batch}")
    world = World(cfg.world, cfg.world_steps, deadzone=cfg.deadzone)
    m = world.cfg
    if backbone(m.backbone).frames != "pixels":
        raise ValueError(f"--world {cfg.world}: backbone {m.backbone!r} predicts latents, not frames; the check compares "
                         f"predicted frames with real ones (a pixel-frame backbone such as wam)")
    rec = read_dataset(cfg.data, data_config_of(world.config, episodes=cfg.episodes))
    if rec.action.shape[1] != m.action_dim or rec.state.shape[1] < m.state_dim:
        raise ValueError(f"--data {cfg.data}: actions of size {rec.action.shape[1]} and state of size {rec.state.shape[1]}, "
                         f"the world model takes {m.action_dim} and {m.state_dim}")
    rng = np.random.default_rng(cfg.seed)
    starts = _windows(rec, np.asarray(rec.has_actions, bool), max(m.future_offsets), cfg.windows, rng)
    other = np.roll(np.arange(len(starts)), 1)  # window i runs under window i-1's actions
    frames = FrameStore(rec, m.image_size, rec.data.resize, progress=False)
    episode_of = np.searchsorted(rec.episode_to, starts, side="right")
    first, last = rec.episode_from[episode_of], rec.episode_to[episode_of] - 1

    def views(index: np.ndarray) -> torch.Tensor:  # (n, v, 3, H, W) model units
        return images_to_model(torch.from_numpy(np.stack([frames.read(v, index) for v in range(len(rec.cameras))], 1)))

    def pooled(x: torch.Tensor) -> torch.Tensor:  # (n, v, 3, H, W) -> (n, v, 3, s, s), as training targets are
        return F.avg_pool2d(x.flatten(0, 1), m.image_size // m.future_size).reshape(*x.shape[:3], m.future_size, m.future_size)

    # the recorded chunk from each start (the episode's last action repeated past its end), in robot units
    raw = torch.from_numpy(rec.action[np.minimum(starts[:, None] + np.arange(m.action_horizon), last[:, None])]).float()
    negated = torch.cat([-raw[..., :3], raw[..., 3:]], -1)
    recorded = world.norm.actions(raw)
    actions = {"recorded": recorded, "other": recorded[other], "negated": world.norm.actions(negated)}
    errors = {c: [] for c in CONDITIONS}  # per batch (b, offsets)
    cosines = {c: [] for c in CONDITIONS}
    copy = []
    square = {c: [] for c in ("copy", *CONDITIONS)}  # per batch (b, offsets): 8-bit mean squared error
    structure = {c: [] for c in ("copy", *CONDITIONS)}  # and SSIM, averaged over the cameras

    def score(name: str, predicted: torch.Tensor, real8: np.ndarray) -> None:
        p8 = images_from_model(predicted)  # (b, f, v, s, s, 3)
        square[name].append(((p8.astype(np.float64) - real8) ** 2).mean((2, 3, 4, 5)))
        structure[name].append(ssim(p8, real8).mean(2))
    g_seed = torch.Generator().manual_seed(cfg.seed)
    batches = range(0, len(starts), cfg.batch)
    for lo in tqdm(batches, desc="check world", unit="batch", disable=not progress):
        idx = np.arange(lo, min(lo + cfg.batch, len(starts)))
        s = starts[idx]
        context = torch.stack([views(np.clip(s + o, first[idx], last[idx])) for o in m.context_offsets], 1)
        now = pooled(context[:, -1])
        real = torch.stack([pooled(views(s + o)) for o in m.future_offsets], 1)  # (b, f, v, 3, s, s)
        texts = [rec.instructions[int(rec.task_index[i])] for i in s]
        ctx = Context(images=context, state=world.norm.state(torch.from_numpy(rec.state[s, :m.state_dim]).float()),
                      text=torch.cat([world.text(t) for t in texts]))
        seed = int(torch.randint(0, 2**31 - 1, (), generator=g_seed))
        copy.append((real - now[:, None]).pow(2).mean((2, 3, 4, 5)))
        real8 = images_from_model(real)
        score("copy", now[:, None].expand_as(real), real8)
        for c in CONDITIONS:
            predicted, _ = modes.run(world.model, "world_model", ctx, world.sampler, actions=actions[c][idx],
                                     generator=torch.Generator().manual_seed(seed))
            errors[c].append((predicted - real).pow(2).mean((2, 3, 4, 5)))
            cosines[c].append(F.cosine_similarity((predicted - now[:, None]).flatten(2), (real - now[:, None]).flatten(2), dim=2))
            score(c, predicted, real8)
    err = {c: torch.cat(errors[c]) for c in CONDITIONS}  # (n, f)
    cos = {c: torch.cat(cosines[c]) for c in CONDITIONS}
    offsets = list(m.future_offsets)
    return {
        "world": str(cfg.world), "data": str(cfg.data), "episodes": cfg.episodes, "windows": len(starts),
        "seed": cfg.seed, "offsets": offsets, "deadzone": world.sampler.video_deadzone,
        "copy_mse": [float(x) for x in torch.cat(copy).mean(0)],
        "mse": {c: [float(x) for x in err[c].mean(0)] for c in CONDITIONS},
        "cosine": {c: [float(x) for x in cos[c].mean(0)] for c in CONDITIONS},
        "wins": [float(x) for x in ((err["recorded"] < err["other"]).float()
                                    + 0.5 * (err["recorded"] == err["other"]).float()).mean(0)],  # a tie: half
        "psnr": {c: [psnr_of(float(x)) for x in np.concatenate(square[c]).mean(0)] for c in square},
        "ssim": {c: [float(x) for x in np.concatenate(structure[c]).mean(0)] for c in structure},
    }


def print_check(result: dict) -> None:
    offsets = result["offsets"]
    print(f"{result['world']} on {result['windows']} windows of {result['data']}")
    print("steps ahead      " + "".join(f"{'+' + str(o):>22}" for o in offsets))
    print("copy the frame   " + "".join(f"{'mse ' + format(x, '.5f'):>22}" for x in result["copy_mse"]))
    for c, name in zip(CONDITIONS, ("recorded actions", "another window's", "xyz negated")):
        cells = [f"mse {e:.5f} cos {k:+.2f}" for e, k in zip(result["mse"][c], result["cosine"][c])]
        print(f"{name:<17}" + "".join(f"{x:>22}" for x in cells))
    print("PSNR dB / SSIM    " + "".join(f"{'+' + str(o):>22}" for o in offsets))
    for c, name in zip(("copy", *CONDITIONS), ("copy the frame", "recorded actions", "another window's", "xyz negated")):
        cells = [f"{p:.2f} / {q:.3f}" for p, q in zip(result["psnr"][c], result["ssim"][c])]
        print(f"{name:<17}" + "".join(f"{x:>22}" for x in cells))
    print("recorded closer than another window's: " + ", ".join(f"{w:.0%} at +{o}" for w, o in zip(result["wins"], offsets))
          + " (50%: the actions make no difference)")


def main(cfg: CheckWorldConfig) -> dict:
    result = check_world(cfg)
    print_check(result)
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(result, indent=2))
    return result
