"""`wam bench latency`: milliseconds per action chunk of every inference path, on one machine, in one run,
for the same width and depth, next to each path's closed-loop success on the same held-out seeds.

Paths (each a checkpoint and a sampler setting):
    action-only            the VLA-style baseline: context + action tokens, 10 steps, cached context
    joint naive            the WAM as usually run: frames and actions denoised together, 50 steps, the
                           whole sequence recomputed at every step
    joint cached           the same model, context keys/values computed once per chunk, 10 and 4 steps
    flash                  actions in 4 (and 2) steps from frames left at high noise (1 frame step)
    features               one pass of the frame stream, then the action decoder's steps on cached features
    fast path              a WAM trained with actions_see_frames=False: at inference the frame tokens are
                           left out (the predicted video is not wanted), so it costs what action-only costs
Checkpoints come from `wam bench recipes` (its OUT is --recipes); the fast-path model is trained here with
the same data, steps and seed. Timing: `calls` calls of `policy.infer` on a real observation after
`warmup` calls, torch limited to `threads` threads. Writes OUT/latency.json and OUT/latency.md.

`--cells DIR[,DIR...]` times instead every checkpoint of `wam bench generalise` conditions (DIR: a cells/CONDITION
folder, e.g. runs/bench/generalise/cells/mt10), one path per recipe with its own sampler, and, for a recipe whose actions
never read its frames (hybrid-foresight), once more with the frames denoised too: the VLA, the hybrids and the WAM
recipes side by side on the same inputs. Timing only; their success is the generalise bench's.

`--size wan2.1-1.3b` times the same paths on a backbone of that width and depth with random weights instead
(the default preset's inputs and token layout; timing only, no success: random weights cannot act). With
`--device cuda --precision bfloat16 --compile` it is the GPU figure of the issue: bf16 autocast, and CUDA
graphs through torch.compile's "reduce-overhead" mode.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wam.bench.common import SIZES
from wam.config import SamplerConfig, preset, to_dict, with_recipe
from wam.types import Observation


@dataclass(frozen=True)
class LatencyBenchConfig:
    out: Path = Path("runs/bench/latency")
    recipes: Path = Path("runs/bench/recipes")
    """Output folder of `wam bench recipes` (its checkpoints, data and settings are reused)."""
    calls: int = 100
    """Timed calls per path, after the warm-up."""
    warmup: int = 10
    threads: int = 1
    """torch threads while timing (1: what each closed-loop evaluation worker uses)."""
    episodes: int = 20
    """Held-out evaluation episodes per task for each path's success (0: timing only)."""
    max_steps: int = 200
    workers: int = 2
    size: str | None = None
    """Time random-weight backbones of this size instead of trained checkpoints: wan2.1-1.3b, wan2.1-14b, tiny."""
    device: str = "cpu"
    precision: str = "float32"
    """float32 or bfloat16 (autocast)."""
    compile: bool = False
    """torch.compile the blocks (CUDA graphs on a GPU)."""
    cells: str | None = None
    """Time the checkpoints of `wam bench generalise` conditions instead: their cells/CONDITION folders,
    comma-separated."""

    def __post_init__(self):
        if self.calls < 1 or self.warmup < 0 or self.threads < 1 or self.episodes < 0:
            raise ValueError("calls and threads must be >= 1, warmup and episodes >= 0")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; known sizes: {', '.join(SIZES)}")


@dataclass(frozen=True)
class InferencePath:
    name: str
    model: str  # a recipe folder of the recipes bench, or "fast-path"
    steps: int
    video_steps: int | None
    cache: bool = True
    wam: bool = True  # a World-Action Model path (not the baseline)


PATHS = [
    InferencePath("action-only (baseline)", "action-only", 10, 0, wam=False),
    InferencePath("joint, naive: 50 steps, no cache", "joint", 50, None, cache=False),
    InferencePath("joint, cached context, 10 steps", "joint", 10, None),
    InferencePath("joint, cached context, 4 steps", "joint", 4, None),
    InferencePath("flash: 4 action steps, 1 frame step", "flash", 4, 1),
    InferencePath("flash: 2 action steps, 1 frame step", "flash", 2, 1),
    InferencePath("features: 1 frame pass, 10 action steps", "features", 10, 1),
    InferencePath("fast path: frames left out, 10 steps", "fast-path", 10, 0),
    InferencePath("fast path with frames, 10 steps", "fast-path", 10, None),
]


def time_policy(checkpoint: Path, sampler: SamplerConfig, calls: int, warmup: int, threads: int) -> list[float]:
    """Milliseconds of `calls` policy.infer calls on a real first observation of the checkpoint's first task."""
    import torch

    from wam.checkpoint import read_config
    from wam.envs import make_env
    from wam.policy import WAMPolicy

    torch.set_num_threads(threads)
    policy = WAMPolicy.from_checkpoint(checkpoint, sampler)
    cfg = policy.cfg
    env = make_env(f"metaworld:{read_config(checkpoint)['data']['tasks'][0]}", cfg.cameras, cfg.image_size)
    obs = _context(env.reset(100_000), cfg.context_frames)  # the first frame stands in for the history
    env.close()
    for _ in range(warmup):
        policy.infer(obs)
    ms = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.infer(obs)
        ms.append((time.perf_counter() - start) * 1000)
    return ms


def _context(obs: Observation, frames: int) -> Observation:
    """The observation with its current frame repeated as every context frame."""
    if frames == 1:
        return obs
    return obs.replace(images={c: np.stack([x] * frames) for c, x in obs.images.items()})


def time_random(path: InferencePath, size: str, cfg: LatencyBenchConfig) -> tuple[list[float], int]:
    """Milliseconds of policy.infer on a random-weight model of `size` set up for `path`; and its parameters."""
    import torch

    from wam.data.transforms import Normalizer
    from wam.envs.metaworld import ACTION_DIM, DEFAULT_CAMERAS, STATE_DIM
    from wam.models.transformer import WAMTransformer, count_parameters
    from wam.policy import WAMPolicy, resolve_device
    from wam.testing import fake_observation

    torch.set_num_threads(cfg.threads)
    p = preset("default")
    recipe_name = "decoupled" if path.model == "fast-path" else path.model
    width, depth, heads, hidden = SIZES[size]
    model_cfg = dataclasses.replace(with_recipe(p, recipe_name).model, width=width, depth=depth, heads=heads,
                                    mlp_ratio=hidden / width, actions_see_frames=path.model != "fast-path")
    model_cfg = model_cfg.for_data(DEFAULT_CAMERAS, STATE_DIM, ACTION_DIM)  # the demo's shapes (Meta-World's)
    torch.manual_seed(0)
    with resolve_device(cfg.device):  # initialised where it runs: a 1.3B model's init takes minutes on one CPU thread
        model = WAMTransformer(model_cfg)
    for blk in model.blocks:  # adaLN-Zero starts every block as the identity; time a network that is not
        torch.nn.init.normal_(blk.ada[-1].weight, std=0.02)
    sampler = SamplerConfig(steps=path.steps, video_steps=path.video_steps, cache=path.cache, device=cfg.device,
                            precision=cfg.precision, compile=cfg.compile)
    identity = Normalizer.standard(np.zeros(model_cfg.state_dim), np.ones(model_cfg.state_dim), -np.ones(model_cfg.action_dim),
                          np.ones(model_cfg.action_dim))
    policy = WAMPolicy(model, identity, {}, sampler)
    obs = fake_observation(policy.metadata, prompt="press the button from the top")
    for _ in range(cfg.warmup):
        policy.infer(obs)
    ms = [policy.infer(obs).infer_ms for _ in range(cfg.calls)]
    return ms, count_parameters(model)


def bench_random(cfg: LatencyBenchConfig) -> dict:
    """Every path on a random-weight backbone of `cfg.size`: timing only."""
    import torch
    from tqdm import tqdm

    rows = {}
    for path in tqdm(PATHS, desc=f"latency {cfg.size}", unit="path"):
        ms, params = time_random(path, cfg.size, cfg)
        rows[path.name] = {"wam": path.wam, "parameters": params, "median_ms": statistics.median(ms),
                           "p90_ms": float(np.percentile(ms, 90)),
                           "sampler": {"steps": path.steps, "video_steps": path.video_steps, "cache": path.cache}}
        tqdm.write(f"{path.name}: median {rows[path.name]['median_ms']:.1f} ms")
    base = rows[PATHS[0].name]["median_ms"]
    for row in rows.values():
        row["ratio_to_baseline"] = row["median_ms"] / base
    device = torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    result = {"command": "wam bench latency", "size": cfg.size, "weights": "random", "device": device,
              "precision": cfg.precision, "compile": cfg.compile, "torch": torch.__version__, "threads": cfg.threads,
              "calls": cfg.calls, "warmup": cfg.warmup, "episodes_per_task": 0, "paths": rows}
    return _write(cfg.out, result)


def bench_cells(cfg: LatencyBenchConfig) -> dict:
    """Every trained checkpoint under `cfg.cells` (CELL/train/last) with its own sampler; timing only."""
    from tqdm import tqdm

    from wam.recipes import recipe

    found = []
    for folder in cfg.cells.split(","):
        here = sorted(p for p in Path(folder).glob("*/train/last") if (p / "config.json").is_file())
        if not here:
            raise FileNotFoundError(f"{folder}: no CELL/train/last checkpoints (expected a `wam bench generalise` "
                                    f"cells/CONDITION folder)")
        found += here
    paths, names = [], set()
    for ckpt in found:
        saved = json.loads((ckpt / "config.json").read_text())
        sampler = SamplerConfig(**saved["sampler"]).resolve(saved["model"]["recipe"])
        r = recipe(saved["model"]["recipe"])
        name = ckpt.parent.parent.name
        name = name if name not in names else f"{name} ({ckpt.parents[2].name})"
        names.add(name)
        paths.append((f"{name}: {sampler.steps} action steps, {sampler.video_steps} frame steps", ckpt, sampler, r))
        if r.predicts_video and sampler.video_steps == 0:  # frames skipped by default: also with them
            paths.append((f"{name} with its frames: {sampler.steps} action steps, {r.steps} frame steps", ckpt,
                          dataclasses.replace(sampler, video_steps=r.steps), r))
    rows = {}
    for name, ckpt, sampler, r in tqdm(paths, desc="latency", unit="path"):
        sampler = dataclasses.replace(sampler, device=cfg.device, precision=cfg.precision, compile=cfg.compile)
        ms = time_policy(ckpt, sampler, cfg.calls, cfg.warmup, cfg.threads)
        rows[name] = {"checkpoint": str(ckpt), "recipe": r.name, "sampler": to_dict(sampler), "wam": r.predicts_video,
                      "median_ms": statistics.median(ms), "p90_ms": float(np.percentile(ms, 90))}
        tqdm.write(f"{name}: median {rows[name]['median_ms']:.1f} ms")
    base = next((row["median_ms"] for row in rows.values() if row["recipe"] == "action-only"), None)
    for row in rows.values():
        row["ratio_to_baseline"] = row["median_ms"] / base if base else float("nan")
    result = {"command": "wam bench latency --cells", "cells": cfg.cells, "device": cfg.device,
              "precision": cfg.precision, "threads": cfg.threads, "calls": cfg.calls, "warmup": cfg.warmup,
              "episodes_per_task": 0, "paths": rows}
    return _write(cfg.out, result)


def _write(out: Path, result: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(result, indent=2))
    (out / "latency.md").write_text(markdown(result))
    print("\n" + markdown(result))
    return result


def _fast_path_checkpoint(cfg: LatencyBenchConfig, settings: dict) -> Path:
    """Train the decoupled WAM with actions_see_frames=False on the recipes bench's data, steps and seed."""
    from wam.bench.common import train_and_evaluate

    base = with_recipe(preset(settings["preset"]), "decoupled")
    p = dataclasses.replace(base, model=dataclasses.replace(base.model, actions_see_frames=False))
    row = train_and_evaluate("fast-path", cfg.out / "fast-path", p, Path(settings["data"]), settings["steps"], 1, cfg.workers,
               evaluate_it=False)
    return Path(row["checkpoint"])


def _actions_key(ckpt: Path, sampler: SamplerConfig) -> tuple:
    """What determines the executed actions of a closed-loop evaluation (the cache changes only rounding)."""
    model = json.loads((Path(ckpt) / "config.json").read_text())["model"]
    sampler = sampler.resolve(model.get("recipe", "decoupled"))
    frames = sampler.video_steps
    if not model.get("actions_see_frames", True):
        frames = "unread"  # the actions never read the frames: how they are sampled cannot matter
    return (str(Path(ckpt).resolve()), sampler.steps, frames, sampler.execute)


def bench_latency(cfg: LatencyBenchConfig) -> dict:
    from tqdm import tqdm

    from wam.evaluate import EvalConfig, SamplerOverrides, evaluate

    if cfg.size is not None:
        return bench_random(cfg)
    if cfg.cells is not None:
        return bench_cells(cfg)
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    if not (cfg.recipes / "recipes.json").exists():
        raise FileNotFoundError(f"{cfg.recipes / 'recipes.json'} is missing: run `wam bench recipes --out {cfg.recipes}` first")
    checkpoints = {p.model: cfg.recipes / p.model / "train/last" for p in PATHS if p.model != "fast-path"}
    missing = [str(c) for c in checkpoints.values() if not c.exists()]
    if missing:
        raise FileNotFoundError(f"checkpoints missing from the recipes bench: {missing}")
    settings = json.loads((cfg.recipes / "recipes.json").read_text())
    checkpoints["fast-path"] = _fast_path_checkpoint(cfg, settings)

    # Closed-loop successes already measured with the same actions: the recipes bench's evaluations, and
    # paths whose actions cannot differ (a model whose actions never read frames, with or without frames).
    known = {}
    if (settings["episodes_per_task"], settings.get("max_steps", 200)) == (cfg.episodes, cfg.max_steps):
        for name, r in settings["recipes"].items():
            key = _actions_key(Path(r["checkpoint"]), SamplerConfig(**r["sampler"]))
            known[key] = {"success": r["mean_success"], "tasks": {t: x["success_rate"] for t, x in r["tasks"].items()},
                          "success_from": f"wam bench recipes ({name})"}

    rows = {}
    for path in tqdm(PATHS, desc="latency", unit="path"):
        ckpt = checkpoints[path.model]
        saved = SamplerConfig(**json.loads((ckpt / "config.json").read_text())["sampler"])
        sampler = dataclasses.replace(saved, steps=path.steps, video_steps=path.video_steps, cache=path.cache,
                                      device=cfg.device, precision=cfg.precision, compile=cfg.compile)
        ms = time_policy(ckpt, sampler, cfg.calls, cfg.warmup, cfg.threads)
        row = {"checkpoint": str(ckpt), "sampler": to_dict(sampler), "wam": path.wam,
               "median_ms": statistics.median(ms), "p90_ms": float(np.percentile(ms, 90))}
        key = _actions_key(ckpt, sampler)
        if cfg.episodes and key in known:
            row.update(known[key])
        elif cfg.episodes:
            slug = path.name.split(":")[0].replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
            changes = SamplerOverrides(steps=path.steps, video_steps=path.video_steps, cache=path.cache,
                                       device=cfg.device, precision=cfg.precision)
            summary = evaluate(EvalConfig(checkpoint=ckpt, episodes=cfg.episodes, sampler=changes,
                                          out=out / "eval" / f"{slug}-{path.steps}", videos=1, workers=cfg.workers,
                                          max_steps=cfg.max_steps), progress=False)
            row.update({"success": summary["mean_success"],
                        "tasks": {t: r["success_rate"] for t, r in summary["tasks"].items()}})
            known[key] = {k: row[k] for k in ("success", "tasks")} | {"success_from": path.name}
        rows[path.name] = row
    base = rows[PATHS[0].name]["median_ms"]
    for row in rows.values():
        row["ratio_to_baseline"] = row["median_ms"] / base
    result = {"command": "wam bench latency", "device": cfg.device, "precision": cfg.precision, "threads": cfg.threads,
              "calls": cfg.calls, "warmup": cfg.warmup, "episodes_per_task": cfg.episodes, "paths": rows}
    return _write(out, result)


def markdown(result: dict) -> str:
    where = (f"{result['size']} with random weights on {result['device']}, {result['precision']}"
             + (", compiled" if result.get("compile") else "") + "; " if "size" in result else "")
    lines = [f"Milliseconds per action chunk ({where}{result['calls']} calls after {result['warmup']} warm-up, "
             f"{result['threads']} thread(s)); success on {result['episodes_per_task']} held-out episodes per task.", "",
             "| path | median ms | p90 ms | x baseline | success |", "| --- | --- | --- | --- | --- |"]
    for name, r in result["paths"].items():
        success = f"{r['success']:.2f}" if "success" in r else "-"
        if "success_from" in r and r["success_from"] != name:
            success += f" (same actions as {r['success_from']})"
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['ratio_to_baseline']:.2f} | {success} |")
    return "\n".join(lines) + "\n"
