"""`wam eval CHECKPOINT`: closed-loop rollouts in Meta-World on held-out task variations.

Success is Meta-World's own `info["success"]`, counted when it is reached at any step within `max_steps`
(the episode then ends). Variation seeds for evaluation start at `seed` (default 100000); demonstrations use
seeds from 0 up, and the checkpoint records the range it was trained on, so an overlap is refused.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from wam.config import SamplerConfig, apply, model_from_dict, overrides_of, to_dict
from wam.envs.metaworld import MAX_EPISODE_STEPS

EVAL_SEED = 100_000

# --sampler.FIELD changes the checkpoint's sampler; the old flags of `wam eval` are aliases of six of them.
SamplerOverrides = overrides_of(SamplerConfig, "SamplerOverrides", aliases={
    "steps": ("--steps",), "video_steps": ("--video-steps",), "execute": ("--execute",), "cache": ("--cache",),
    "device": ("--device",), "precision": ("--precision",)})


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: tyro.conf.Positional[Path]
    """Checkpoint folder (e.g. runs/train/last)."""
    tasks: str | None = None
    """Comma-separated tasks (default: those the checkpoint was trained on)."""
    episodes: int = 20
    """Episodes per task."""
    seed: int = EVAL_SEED
    """First variation seed; episode i of a task uses seed + i."""
    max_steps: int = 200
    sampler: SamplerOverrides = field(default_factory=SamplerOverrides)
    """Changes to the checkpoint's own sampler (e.g. --sampler.steps 4 --sampler.best-of 4 --sampler.compile;
    the old --steps, --video-steps, --execute, --cache/--no-cache, --device, --precision still work). With
    workers > 1 and --sampler.device cuda each worker holds a copy of the model."""
    backbone_path: Path | None = None
    """A pretrained backbone's diffusers folder (default: the one the checkpoint records; its fingerprint must match)."""
    delay: int = 0
    """Control steps one inference takes (0: the robot waits for every chunk). With delay > 0 the next chunk
    is inferred while the current one executes (runtime.AsyncChunkExecutor): chunks switch every `execute`
    steps, each `delay` steps after the observation it was computed from."""
    blend: int = 0
    """Steps over which a new chunk is blended into the old one (inpainting for WAM policies)."""
    instruction: str | None = None
    """Override every task's instruction with this text (phrasing robustness)."""
    out: Path | None = None
    """Write results.json, report.html and videos here (default: CHECKPOINT/../eval)."""
    videos: int = -1
    """Rollout videos saved per task (-1 = every rollout)."""
    workers: int = 2

    def __post_init__(self):
        if self.episodes < 1 or self.workers < 1:
            raise ValueError(f"episodes and workers must be >= 1, got {self.episodes} and {self.workers}")
        if not 1 <= self.max_steps <= MAX_EPISODE_STEPS:
            raise ValueError(f"max_steps must be in [1, {MAX_EPISODE_STEPS}] (Meta-World's episode limit), got {self.max_steps}")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def compose_frame(real: np.ndarray, predicted: np.ndarray | None) -> np.ndarray:
    """Real views (v, H, W, 3) side by side on top; each predicted future frame (f, v, s, s, 3) as a row below."""
    top = np.concatenate(list(real), axis=1)
    if predicted is None:
        return top
    H = real.shape[1]
    rep = H // predicted.shape[2]
    rows = [np.concatenate([np.kron(p, np.ones((rep, rep, 1), np.uint8)) for p in frame], axis=1) for frame in predicted]
    return np.concatenate([top, *rows], axis=0)


# ------------------------------------------------------------------------------ one rollout
_WORKER: dict = {}


def _init_worker(checkpoint: str, sampler: SamplerConfig, threads: int, delay: int = 0, blend: int = 0,
                 backbone_path: str | None = None) -> None:
    import torch

    from wam.policy import WAMPolicy

    if threads:
        torch.set_num_threads(threads)
    _WORKER["policy"] = WAMPolicy.from_checkpoint(checkpoint, sampler, backbone_path=backbone_path)
    _WORKER["envs"] = {}
    _WORKER["timing"] = (delay, blend)


def rollout(job: dict) -> dict:
    """One episode; returns success, steps, latencies and (optionally) writes a video."""
    from wam.envs.metaworld import MetaWorldEnv
    from wam.runtime import AsyncChunkExecutor, ChunkExecutor
    from wam.envs.tasks import instruction
    from wam.video import write_mp4

    policy = _WORKER["policy"]
    cfg = policy.cfg
    task = job["task"]
    env = _WORKER["envs"].get(task) or _WORKER["envs"].setdefault(task, MetaWorldEnv(task, cfg.cameras, cfg.image_size))
    delay, blend = _WORKER["timing"]
    runner = (AsyncChunkExecutor(policy, policy.sampler.execute, delay, blend) if delay or blend
              else ChunkExecutor(policy, policy.sampler.execute))
    runner.reset(job["instruction"] or instruction(task))
    policy.generator.manual_seed(job["seed"])
    obs = env.reset(job["seed"])
    frames, ms, success, steps = [], [], False, 0
    for steps in range(1, job["max_steps"] + 1):
        action, fresh = runner.act(obs)
        if fresh:
            ms.append(runner.last.ms)
        if job["video"]:
            frames.append(compose_frame(obs["images"], runner.last.frames))
        obs, success = env.step(action)
        if success:
            break
    if job["video"]:
        frames.append(compose_frame(obs["images"], runner.last.frames))
        write_mp4(job["video"], np.stack(frames), fps=20)
    return {"task": task, "seed": job["seed"], "success": bool(success), "steps": steps, "ms": ms,
            "video": job["video"]}


# ------------------------------------------------------------------------------ the evaluation
def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from wam.checkpoint import read_config
    from wam.envs.tasks import parse_tasks

    config = read_config(cfg.checkpoint)
    trained = config["data"]["tasks"]
    tasks = parse_tasks(cfg.tasks) if cfg.tasks else tuple(trained)
    lo, hi = config["data"]["seeds"]
    if cfg.seed <= hi and cfg.seed + cfg.episodes - 1 >= lo:
        raise ValueError(f"evaluation seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1} overlap the training "
                         f"demonstrations' seeds {lo}..{hi}; pick --seed above {hi}")
    # The checkpoint's own sampler (best_of, compile, decode_frames included) with the flags' changes, resolved.
    saved = SamplerConfig(**config.get("sampler", {}))
    sampler = apply(saved, cfg.sampler).resolve(model_from_dict(config["model"]).recipe)
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent / "eval"
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs = []
    for task in tasks:
        for i in range(cfg.episodes):
            video = str(out / "videos" / f"{task}-{cfg.seed + i}.mp4") if cfg.videos < 0 or i < cfg.videos else None
            jobs.append({"task": task, "seed": cfg.seed + i, "max_steps": cfg.max_steps,
                         "instruction": cfg.instruction, "video": video})

    workers = min(cfg.workers, len(jobs))
    init = (str(cfg.checkpoint), sampler, 1 if workers > 1 else 0, cfg.delay, cfg.blend,  # one thread per worker
            str(cfg.backbone_path) if cfg.backbone_path else None)
    results = []
    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not progress)
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=init) as pool:
            for r in pool.imap(rollout, jobs):
                results.append(r)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([x['success'] for x in results]):.2f}")
    else:
        _init_worker(*init)
        for job in jobs:
            results.append(rollout(job))
            bar.update(1)
            bar.set_postfix(success=f"{np.mean([x['success'] for x in results]):.2f}")
    bar.close()

    per_task = {}
    for task in tasks:
        rs = [r for r in results if r["task"] == task]
        k = sum(r["success"] for r in rs)
        ms = [m for r in rs for m in r["ms"]]
        per_task[task] = {"success_rate": k / len(rs), "successes": k, "episodes": len(rs),
                          "ci95": list(wilson(k, len(rs))), "mean_steps": float(np.mean([r["steps"] for r in rs])),
                          "median_ms": statistics.median(ms)}
    all_ms = [m for r in results for m in r["ms"]]
    summary = {
        "checkpoint": str(cfg.checkpoint), "mean_success": float(np.mean([t["success_rate"] for t in per_task.values()])),
        "tasks": per_task, "episodes_per_task": cfg.episodes, "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1],
        "max_steps": cfg.max_steps, "sampler": to_dict(sampler), "recipe": config["model"].get("recipe", "decoupled"),
        "instruction_override": cfg.instruction, "delay": cfg.delay, "blend": cfg.blend, "median_ms_per_chunk": statistics.median(all_ms),
        "p90_ms_per_chunk": float(np.percentile(all_ms, 90)), "parameters": config.get("parameters"),
        "train_step": config.get("step"), "episodes": results,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    from wam.report import write_report

    write_report(out, summary, Path(cfg.checkpoint))
    return summary


def print_table(summary: dict) -> None:
    print(f"\n{'task':32s} {'success':>8s} {'95% CI':>14s} {'ms/chunk':>9s}")
    for task, r in summary["tasks"].items():
        lo, hi = r["ci95"]
        print(f"{task:32s} {r['success_rate']:8.2f} {f'[{lo:.2f}, {hi:.2f}]':>14s} {r['median_ms']:9.1f}")
    print(f"{'mean':32s} {summary['mean_success']:8.2f}")
