"""`wam eval CHECKPOINT --data DIR`: offline evaluation on held-out demonstrations, for robots with no simulator.

At evenly spaced frames t of each episode (every `stride` frames), the policy reads what the robot saw (the
context frames at t + context offsets, the state at t, the episode's instruction) exactly as it would be served,
and predicts an action chunk and the future frames. They are scored against what the demonstration did next:

- the action error, in the robot's own units: MSE overall, per action dimension and per step of the chunk
  (steps past the episode's end are left out);
- the predicted frames against the real frames at t + future offsets, PSNR and SSIM at the prediction's
  resolution, beside the copy-the-current-frame baseline (the frame at t, held): a world model is worth its
  cost only where it beats that.

Without --episodes it reads the episodes the checkpoint held out (--data.val-fraction / --data.val-episodes at
training), when DIR is the dataset it was trained on. Writes OUT/offline.json, plots and OUT/report.html.
It is what picks a checkpoint when the only data is the robot's own, and `wam train`'s periodic evaluation
when no simulator is named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from wam.config import SamplerConfig, apply, overrides_of

SamplerOverrides = overrides_of(SamplerConfig, "SamplerOverrides")


@dataclass(frozen=True)
class OfflineConfig:
    checkpoint: tyro.conf.Positional[Path]
    """Checkpoint folder (e.g. runs/train/last)."""
    data: Path
    """A LeRobotDataset v3.0 folder with demonstrations of the checkpoint's robot (same cameras, state and actions)."""
    episodes: str | None = None
    """Episodes to evaluate on, like 40:50,60 (default: the ones the checkpoint held out, when --data is its
    training dataset; otherwise all)."""
    stride: int | None = None
    """Frames between evaluated windows within an episode (default: the sampler's `execute`, the replanning interval)."""
    max_windows: int | None = None
    """Evaluate at most this many windows, evenly spread over the episodes (None: all)."""
    batch_size: int = 16
    sampler: SamplerOverrides = field(default_factory=SamplerOverrides)
    """Changes to the checkpoint's own sampler (--sampler.steps 4, ...)."""
    backbone_path: Path | None = None
    """A pretrained backbone's diffusers folder (default: the one the checkpoint records)."""
    seed: int = 0
    """Seeds the sampling noise of window i with (seed, i): a rerun gives the same numbers."""
    skip_bad_episodes: bool = False
    """Leave out (and report) episodes with bad data instead of stopping at the first."""
    out: Path | None = None
    """Write offline.json, plots and report.html here (default: CHECKPOINT/../eval-offline)."""
    plots: bool = True

    def __post_init__(self):
        if self.stride is not None and self.stride < 1 or self.batch_size < 1:
            raise ValueError(f"stride and batch_size must be >= 1, got {self.stride} and {self.batch_size}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {self.max_windows}")


def _held_out(config: dict, data: Path) -> str | None:
    """The checkpoint's held-out episodes as a spec, if `data` is the dataset it was trained on."""
    saved = config.get("data", {})
    same = saved.get("root") and Path(saved["root"]).resolve() == Path(data).resolve()
    val = saved.get("val_episodes") or []
    return ",".join(str(e) for e in val) if same and val else None


def _trained_on(config: dict, rec) -> list[int]:
    """The evaluated episodes the checkpoint was trained on (same dataset: its selection less the held-out and
    skipped ones)."""
    from wam.config import parse_episodes

    saved = config.get("data", {})
    if not saved.get("root") or Path(saved["root"]).resolve() != Path(rec.root).resolve():
        return []
    total = int(rec.info["total_episodes"])
    chosen = parse_episodes((saved.get("config") or {}).get("episodes"), total) or range(total)
    out = set(saved.get("val_episodes") or []) | {s["episode"] for s in saved.get("skipped") or []}
    trained = set(chosen) - out
    return sorted(int(e) for e in rec.episode_ids if int(e) in trained)


def _resized(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, H, W, 3) -> (n, size, size, 3) the way training targets are made (average pooling)."""
    from wam.data.transforms import images_from_model, images_to_model

    x = images_to_model(torch.from_numpy(frames))
    H = x.shape[-1]
    x = F.avg_pool2d(x, H // size) if H % size == 0 else F.interpolate(x, size=size, mode="area")
    return images_from_model(x)


def evaluate_offline(cfg: OfflineConfig, recordings=None, progress: bool = True) -> dict:
    """Score the checkpoint on demonstrations (module docstring). `recordings`: already-read episodes (training's
    held-out split) instead of reading cfg.data."""
    from tqdm import tqdm

    from wam.data.frames import open_frames
    from wam.data.reader import data_config_of, read_dataset
    from wam.metrics import mse, psnr_of, ssim
    from wam.policy import WAMPolicy
    from wam.safety import ActionGuard
    from wam.types import Observation

    policy = WAMPolicy.from_checkpoint(cfg.checkpoint, backbone_path=cfg.backbone_path)
    config, m = policy.config, policy.cfg
    policy = WAMPolicy(policy.model, policy.norm, config,
                       apply(SamplerConfig(**config.get("sampler", {})), cfg.sampler), seed=cfg.seed)
    spec = cfg.episodes if cfg.episodes is not None else _held_out(config, cfg.data)
    rec = recordings if recordings is not None else read_dataset(
        cfg.data, data_config_of(config, episodes=spec, skip_bad_episodes=cfg.skip_bad_episodes))
    if rec.action.shape[1] != m.action_dim or rec.state.shape[1] < m.state_dim:
        raise ValueError(f"{rec.root}: {rec.action.shape[1]}-d actions and {rec.state.shape[1]}-d state; the checkpoint "
                         f"predicts {m.action_dim}-d actions from {m.state_dim} state entries")
    trained_fps = config.get("data", {}).get("fps")
    if trained_fps and abs(float(trained_fps) - rec.fps) > 1e-6:
        raise ValueError(f"{rec.root} is recorded at {rec.fps:g} fps but the checkpoint was trained at {float(trained_fps):g} "
                         f"fps: its strides and chunks are counted in frames, so the scores would be meaningless")
    rec, frames = open_frames(rec, m.image_size, rec.data.resize, progress=progress)
    for e, why in rec.skipped:
        print(f"skipped episode {e}: {why}")
    overlap = _trained_on(config, rec)
    if overlap:
        print(f"warning: {len(overlap)} of the {len(rec.episode_ids)} episodes evaluated were trained on "
              f"({overlap[:5]}{'...' if len(overlap) > 5 else ''}): these scores are not held out")
    guard = ActionGuard.from_normalizer(policy.norm)  # what a robot would execute (wam serve clips the same way)
    stride = cfg.stride or policy.sampler.execute
    labelled = [e for e in range(len(rec.episode_ids)) if rec.has_actions[e]]
    if not labelled:
        raise ValueError(f"{rec.root}: the selected episodes have no actions to compare with")
    windows = np.concatenate([np.arange(rec.episode_from[e], rec.episode_to[e], stride) for e in labelled])
    if cfg.max_windows and len(windows) > cfg.max_windows:
        windows = windows[np.linspace(0, len(windows) - 1, cfg.max_windows).round().astype(int)]
    ep = rec.episode_of
    lo, hi = rec.episode_from[ep], rec.episode_to[ep]
    k, ctx_off, fut_off = m.action_horizon, np.asarray(m.context_offsets), np.asarray(m.future_offsets, np.int64)
    V = len(rec.cameras)

    sq = np.zeros((len(windows), k, m.action_dim))  # squared action error, robot units
    mask = np.zeros((len(windows), k), bool)
    pred_actions = np.zeros((len(windows), k, m.action_dim), np.float32)
    frame_rows: list[dict] = []
    strip = []  # a few (real, predicted, copy) examples for the report
    bar = tqdm(total=len(windows), desc="offline eval", unit="window", disable=not progress)
    for start in range(0, len(windows), cfg.batch_size):
        ts = windows[start:start + cfg.batch_size]
        ctx = np.maximum(ts[:, None] + ctx_off[None], lo[ts][:, None])  # (b, c)
        S = m.image_size
        images = np.stack([frames.read(v, ctx).reshape(*ctx.shape, S, S, 3) for v in range(V)], 1)  # (b, v, c, S, S, 3)
        obs = [Observation(images={c: images[i, v] if len(ctx_off) > 1 else images[i, v, 0]
                                   for v, c in enumerate(m.cameras)},
                           state=rec.state[t, :m.state_dim] if m.state_dim else None,
                           prompt=rec.instructions[int(rec.task_index[t])]) for i, t in enumerate(ts)]
        gens = [torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, start + i]).generate_state(1)[0]))
                for i in range(len(ts))]
        outs = policy.infer_batch(obs, gens)
        for i, (t, out) in enumerate(zip(ts, outs)):
            w = start + i
            steps = t + np.arange(k)
            ok = steps < hi[t]
            truth = rec.action[np.minimum(steps, hi[t] - 1)]
            actions = guard(out.actions, out.value)
            pred_actions[w] = actions
            sq[w] = (actions.astype(np.float64) - truth) ** 2
            mask[w] = ok
            if out.frames is None or not len(fut_off):
                continue
            s = out.frames.shape[-2]
            fut = t + fut_off
            valid = fut < hi[t]
            if not valid.any():
                continue
            current = _resized(np.stack([frames.read(v, [t])[0] for v in range(V)]), s)  # (v, s, s, 3)
            for j in np.nonzero(valid)[0]:
                real = _resized(np.stack([frames.read(v, [fut[j]])[0] for v in range(V)]), s)
                pred = out.frames[j]  # (v, s, s, 3)
                frame_rows.append({"offset": int(fut_off[j]), "mse": mse(pred, real), "copy_mse": mse(current, real),
                                   "ssim": float(ssim(pred, real).mean()), "copy_ssim": float(ssim(current, real).mean())})
                if len(strip) < 6 and j == len(fut_off) - 1:
                    strip.append((real, pred, current))
        bar.update(len(ts))
    bar.close()
    frames.close()

    n = mask.sum()
    per_dim = (sq * mask[..., None]).sum((0, 1)) / max(n, 1)
    per_step = (sq.mean(-1) * mask).sum(0) / np.maximum(mask.sum(0), 1)
    names = list(policy.metadata.action_names) or [f"a{i}" for i in range(m.action_dim)]
    summary = {
        "checkpoint": str(cfg.checkpoint), "data": str(rec.root), "episodes": rec.episode_ids.tolist(),
        "held_out": spec is not None and cfg.episodes is None, "trained_on": overlap,
        "windows": int(len(windows)), "stride": int(stride),
        "sampler": {"steps": policy.sampler.steps, "video_steps": policy.sampler.video_steps},
        "action_mse": float(per_dim.mean()), "action_rmse_per_dim": dict(zip(names, np.sqrt(per_dim).tolist())),
        "action_mse_per_dim": dict(zip(names, per_dim.tolist())), "action_mse_per_step": per_step.tolist(),
        "skipped": [{"episode": e, "why": why} for e, why in rec.skipped],
    }
    if frame_rows:
        offsets = sorted({r["offset"] for r in frame_rows})
        by = {o: [r for r in frame_rows if r["offset"] == o] for o in offsets}
        def scores(rows: list[dict]) -> dict:  # PSNR of the mean squared error (a few identical frames cannot dominate)
            mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
            return {"psnr": psnr_of(mean("mse")), "copy_psnr": psnr_of(mean("copy_mse")), "ssim": mean("ssim"),
                    "copy_ssim": mean("copy_ssim"), "n": len(rows)}

        summary["frames"] = scores(frame_rows)
        summary["frames"]["per_offset"] = {str(o): scores(rows) for o, rows in by.items()}
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent / "eval-offline"
    out.mkdir(parents=True, exist_ok=True)
    (out / "offline.json").write_text(json.dumps(summary, indent=2))
    if cfg.plots:
        from wam.report import write_offline_report

        first = labelled[0]
        trace = [w for w, t in enumerate(windows) if ep[t] == first]
        write_offline_report(out, summary, Path(cfg.checkpoint), names=names,
                             trace=(rec.action[rec.episode_from[first]:rec.episode_to[first]],
                                    windows[trace] - rec.episode_from[first], pred_actions[trace]),
                             strip=strip)
    return summary


def print_offline(summary: dict) -> None:
    print(f"{summary['windows']} windows of {len(summary['episodes'])} episodes"
          f"{' (held out at training)' if summary['held_out'] else ''}: action MSE {summary['action_mse']:.5g}")
    print("  RMSE per dimension: " + ", ".join(f"{k} {v:.4g}" for k, v in summary["action_rmse_per_dim"].items()))
    steps = summary["action_mse_per_step"]
    print(f"  MSE by chunk step: first {steps[0]:.4g}, middle {steps[len(steps) // 2]:.4g}, last {steps[-1]:.4g}")
    if "frames" in summary:
        f = summary["frames"]
        print(f"{'future frame':>13s} {'PSNR':>7s} {'copy':>7s} {'SSIM':>6s} {'copy':>6s}")
        for o, r in f["per_offset"].items():
            print(f"{'t+' + o:>13s} {r['psnr']:7.2f} {r['copy_psnr']:7.2f} {r['ssim']:6.3f} {r['copy_ssim']:6.3f}")
        print(f"{'mean':>13s} {f['psnr']:7.2f} {f['copy_psnr']:7.2f} {f['ssim']:6.3f} {f['copy_ssim']:6.3f}   (copy: the "
              f"current frame held)")
