"""`wam eval CHECKPOINT`: closed-loop rollouts in Meta-World on held-out task variations.

With `--remote ws://HOST:PORT` the policy is a running `wam serve` of the same checkpoint: the episodes'
frame history and chunk execution run here, around a `RemotePolicy` that keeps the history client side
(wam.serve.client), so with the same seeds the executed actions are those of the in-process evaluation.

The actions executed pass the serving guard (wam.safety: finite, clipped to the checkpoint's action bounds
with a 5% margin), in process and remote alike: an evaluation measures what a served robot would execute.

Success is Meta-World's own `info["success"]`, counted when it is reached at any step within `max_steps`
(the episode then ends). Variation seeds for evaluation start at `seed` (default 100000); demonstrations use
seeds from 0 up, and the checkpoint records the range it was trained on, so an overlap is refused.

`--shift colour` (or light, camera, instruction) evaluates under a distribution shift the policy was not trained
on, drawn per episode from its variation seed (wam/envs/shift.py): the same seeds give the same shifted scenes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from wam.config import SamplerConfig, apply, model_from_dict, overrides_of, to_dict
from wam.envs.metaworld import MAX_EPISODE_STEPS

EVAL_SEED = 100_000

# --sampler.FIELD changes the checkpoint's sampler; the old flags of `wam eval` are aliases of six of them, and
# --compile (which the README's GPU settings have always named) of a seventh.
SamplerOverrides = overrides_of(SamplerConfig, "SamplerOverrides", aliases={
    "steps": ("--steps",), "video_steps": ("--video-steps",), "execute": ("--execute",), "cache": ("--cache",),
    "device": ("--device",), "precision": ("--precision",), "compile": ("--compile",)})


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: tyro.conf.Positional[Path | None] = None
    """Checkpoint folder (e.g. runs/train/last)."""
    policy: str | None = None
    """Instead of a checkpoint, another framework's policy: lerobot:PATH, a lerobot-train `pretrained_model` folder
    of an ACT or Diffusion Policy (run from the lerobot venv, scripts/lerobot-venv.sh; wam/lerobot/policy.py).
    --sampler.steps sets Diffusion Policy's denoising steps per chunk."""
    tasks: str | None = None
    """Comma-separated tasks, or Meta-World benchmarks: MT10, MT50, ML10-train, ML10-test, ML45-train, ML45-test
    (default: the tasks the checkpoint was trained on)."""
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
    shift: str | None = None
    """A distribution shift at evaluation, without retraining, drawn per episode from its seed: colour, light,
    camera or instruction (wam/envs/shift.py)."""
    action_noise: float = 0.0
    """Gaussian noise of this std added to every action the policy returns (robot units; drawn from each episode's
    seed): a deliberately weakened policy, as `wam judge` ranks (runtime.Weakened)."""
    swap_instructions: bool = False
    """Each task reads the next evaluated task's instruction (a shuffled instruction: a deliberately weakened policy)."""
    diagnose: int = 0
    """Say why failed rollouts failed, for up to this many per task: the plan, the action decoding, or neither
    (the oracle swap with the simulator's expert as ground truth, wam/judge/failure.py); evidence in the report."""
    out: Path | None = None
    """Write results.json, report.html and videos here (default: CHECKPOINT/../eval)."""
    videos: int = -1
    """Rollout videos saved per task (-1 = every rollout)."""
    workers: int = 2
    remote: str | None = None
    """ws://HOST:PORT of a running `wam serve` of this checkpoint: act through it (only --sampler.execute, --delay
    and --blend apply here; the server's sampler does the rest)."""
    api_key: str | None = None
    """The remote server's API key (default: the WAM_API_KEY variable)."""

    def __post_init__(self):
        if self.episodes < 1 or self.workers < 1:
            raise ValueError(f"episodes and workers must be >= 1, got {self.episodes} and {self.workers}")
        if not 1 <= self.max_steps <= MAX_EPISODE_STEPS:
            raise ValueError(f"max_steps must be in [1, {MAX_EPISODE_STEPS}] (Meta-World's episode limit), got {self.max_steps}")
        if self.diagnose < 0:
            raise ValueError(f"diagnose must be >= 0 (failed episodes per task), got {self.diagnose}")
        if not self.action_noise >= 0:
            raise ValueError(f"action_noise must be >= 0, got {self.action_noise}")


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# ------------------------------------------------------------------------------ episodes in worker processes
@dataclass(frozen=True)
class EpisodeJob:
    """One evaluation episode, as sent to a worker process."""

    env: str  # e.g. "metaworld:reach-v3" (envs.make_env)
    task: str
    seed: int
    max_steps: int
    prompt: str | None = None  # replaces the environment's instruction
    shift: str | None = None  # a distribution shift (envs/shift.py), drawn from the seed
    video: str | None = None  # write the rollout video here


@dataclass(frozen=True)
class EpisodeResult:
    task: str
    seed: int
    success: bool
    steps: int
    ms: list[float]
    video: str | None


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker process builds once: the policy from the checkpoint, the way chunks are executed."""

    checkpoint: str
    sampler: SamplerConfig
    lerobot: str | None = None  # a lerobot policy's folder instead of the checkpoint (wam.lerobot.policy)
    threads: int = 0  # torch threads per worker (0: torch's default)
    delay: int = 0
    blend: int = 0
    backbone_path: str | None = None  # a pretrained backbone's folder here (default: the recorded one)
    remote: str | None = None  # act through this `wam serve` (RemotePolicy, history kept here)
    api_key: str | None = None
    action_noise: float = 0.0  # a deliberately weakened policy (runtime.Weakened)


class Worker:
    """A policy and the environments it has been evaluated in, kept for the life of the process."""

    def __init__(self, setup: WorkerSetup):
        import torch

        from wam.policy import WAMPolicy
        from wam.runtime import closed_loop

        if setup.threads:
            torch.set_num_threads(setup.threads)
        if setup.lerobot:  # lerobot's own select_action executes its chunks and keeps its observation history
            from wam.lerobot.policy import LeRobotPolicy
            from wam.safety import ActionGuard, Guarded

            from wam.runtime import Weakened

            peer = LeRobotPolicy(setup.lerobot, device=setup.sampler.device, denoising_steps=setup.sampler.steps)
            inner = Weakened(peer, setup.action_noise) if setup.action_noise else peer
            self.policy = self.runner = Guarded(inner, ActionGuard(*peer.action_bounds()))
            self.envs = {}
            return
        if setup.remote:  # FrameHistory and the chunk executor here, so the server must not stack frames again
            from wam.serve.client import RemotePolicy

            self.policy = RemotePolicy(setup.remote, setup.api_key, history="client")
        else:  # the actions a served robot would get: finite, clipped to the checkpoint's bounds (wam.safety)
            from wam.safety import ActionGuard, Guarded

            from wam.runtime import Weakened

            wam_policy = WAMPolicy.from_checkpoint(setup.checkpoint, setup.sampler, backbone_path=setup.backbone_path)
            inner = Weakened(wam_policy, setup.action_noise) if setup.action_noise else wam_policy
            self.policy = Guarded(inner, ActionGuard.from_normalizer(wam_policy.norm))
            self.wam = wam_policy
        self.runner = closed_loop(self.policy, setup.sampler.execute, setup.delay, setup.blend)
        self.envs: dict = {}

    def run(self, job: EpisodeJob) -> EpisodeResult:
        from wam.envs import make_env
        from wam.rollout import Recorder, rollout
        from wam.video import write_mp4

        meta = self.policy.metadata
        key = (job.env, job.shift)  # a shifted env redraws its shift at every reset, so it is reused like any other
        if key not in self.envs:
            self.envs[key] = make_env(job.env, meta.cameras, meta.image_size[0], shift=job.shift)
        policy = Recorder(self.runner) if job.video else self.runner
        r = rollout(self.envs[key], policy, job.seed, job.max_steps, prompt=job.prompt)
        if job.video:
            write_mp4(job.video, policy.video(), fps=20)
        return EpisodeResult(task=job.task, seed=job.seed, success=r.success, steps=r.steps, ms=r.infer_ms,
                             video=job.video)


_worker: Worker | None = None  # one per process of the pool


def _init_worker(setup: WorkerSetup) -> None:
    global _worker
    _worker = Worker(setup)


def _run_job(job: EpisodeJob) -> EpisodeResult:
    return _worker.run(job)


# ------------------------------------------------------------------------------ the evaluation
def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from wam.checkpoint import read_config
    from wam.envs.shift import check_shift
    from wam.envs.tasks import parse_tasks

    # checked here rather than in __post_init__, where tyro would show the message in a box, not in one line
    check_shift(cfg.shift)
    if cfg.shift == "instruction" and cfg.instruction is not None:
        raise ValueError("--instruction replaces every prompt, so --shift instruction would change nothing; give one")
    if (cfg.checkpoint is None) == (cfg.policy is None):
        raise ValueError("give a checkpoint folder, or --policy lerobot:PATH for a lerobot policy (one of them)")
    if cfg.policy is not None and not cfg.policy.startswith("lerobot:"):
        raise ValueError(f"--policy {cfg.policy}: expected lerobot:PATH (a lerobot-train pretrained_model folder)")
    if cfg.diagnose and (cfg.policy or cfg.remote or cfg.delay or cfg.blend):
        raise ValueError("--diagnose replays failed episodes of a wam checkpoint run here with synchronous chunks: "
                         "not with --policy, --remote, --delay or --blend")
    if (cfg.action_noise or cfg.swap_instructions) and cfg.remote:
        raise ValueError("--action-noise and --swap-instructions weaken a policy run here, not --remote")
    if cfg.swap_instructions and cfg.instruction is not None:
        raise ValueError("--swap-instructions and --instruction both replace the prompts; give one")
    if cfg.policy is not None and cfg.remote:
        raise ValueError("--remote serves a wam checkpoint; it does not combine with --policy")
    if cfg.policy:  # lerobot:PATH
        from wam.lerobot.policy import eval_facts

        from wam.envs.metaworld import check_cameras

        source = Path(cfg.policy.split(":", 1)[1])
        config = eval_facts(source)
        try:
            check_cameras(tuple(config["data"]["cameras"]))
        except ValueError as e:
            raise ValueError(f"{source} reads cameras {config['data']['cameras']}, which Meta-World does not render: {e}") from None
    else:
        source = Path(cfg.checkpoint)
        config = read_config(source)
    trained = config["data"]["tasks"]
    if not trained and not cfg.tasks:
        raise ValueError(f"{cfg.checkpoint} was trained on data with no simulator ({config['data'].get('root')}, robot "
                         f"{config['data'].get('robot_type')!r}): evaluate it offline on demonstrations, wam eval "
                         f"{cfg.checkpoint} --data DIR")
    tasks = parse_tasks(cfg.tasks) if cfg.tasks else tuple(trained)
    lo, hi = config["data"]["seeds"]
    if cfg.seed <= hi and cfg.seed + cfg.episodes - 1 >= lo:
        raise ValueError(f"evaluation seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1} overlap the training "
                         f"demonstrations' seeds {lo}..{hi}; pick --seed above {hi}")
    # The checkpoint's own sampler (best_of, compile, decode_frames included) with the flags' changes, resolved.
    if cfg.policy:
        sampler = lerobot_sampler(cfg, config)
    else:
        saved = SamplerConfig(**config.get("sampler", {}))
        sampler = apply(saved, cfg.sampler).resolve(model_from_dict(config["model"]).recipe)
    server = _check_remote(cfg) if cfg.remote else None
    out = Path(cfg.out) if cfg.out else source.parent / "eval"
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs = []
    if cfg.swap_instructions:
        from wam.envs.tasks import instruction, swapped_instructions

        swapped = swapped_instructions(tasks)
    for task in tasks:
        prompt = swapped[instruction(task)] if cfg.swap_instructions else cfg.instruction
        for i in range(cfg.episodes):
            video = str(out / "videos" / f"{task}-{cfg.seed + i}.mp4") if cfg.videos < 0 or i < cfg.videos else None
            jobs.append(EpisodeJob(env=f"metaworld:{task}", task=task, seed=cfg.seed + i, max_steps=cfg.max_steps,
                                   prompt=prompt, shift=cfg.shift, video=video))

    workers = min(cfg.workers, len(jobs))
    setup = WorkerSetup(checkpoint=str(source), sampler=sampler, threads=1 if workers > 1 else 0,
                        lerobot=str(source) if cfg.policy else None,
                        delay=cfg.delay, blend=cfg.blend,  # one thread per worker
                        backbone_path=str(cfg.backbone_path) if cfg.backbone_path else None, remote=cfg.remote,
                        api_key=cfg.api_key or os.environ.get("WAM_API_KEY") or None, action_noise=cfg.action_noise)
    episodes: list[EpisodeResult] = []
    bar = tqdm(total=len(jobs), desc="eval", unit="ep", disable=not progress)
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(setup,)) as pool:
            for r in pool.imap(_run_job, jobs):
                episodes.append(r)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([x.success for x in episodes]):.2f}")
    else:
        worker = Worker(setup)
        for job in jobs:
            episodes.append(worker.run(job))
            bar.update(1)
            bar.set_postfix(success=f"{np.mean([x.success for x in episodes]):.2f}")
    bar.close()
    results = [dataclasses.asdict(r) for r in episodes]

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
        "checkpoint": str(source), "policy": cfg.policy, "mean_success": float(np.mean([t["success_rate"] for t in per_task.values()])),
        "tasks": per_task, "episodes_per_task": cfg.episodes, "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1],
        "max_steps": cfg.max_steps, "sampler": to_dict(sampler), "recipe": config["model"].get("recipe", "decoupled"),
        "instruction_override": cfg.instruction, "shift": cfg.shift, "action_noise": cfg.action_noise,
        "swap_instructions": cfg.swap_instructions, "delay": cfg.delay, "blend": cfg.blend,
        "median_ms_per_chunk": statistics.median(all_ms),
        "p90_ms_per_chunk": float(np.percentile(all_ms, 90)), "parameters": config.get("parameters"),
        "train_step": config.get("step"), "remote": cfg.remote, "server": server, "episodes": results,
    }
    if cfg.diagnose:
        summary["failures"] = diagnose_failures(setup, jobs, results, cfg.diagnose, out, progress)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    from wam.report import write_report

    write_report(out, summary, source)
    return summary


def diagnose_failures(setup: WorkerSetup, jobs: list[EpisodeJob], results: list[dict], per_task: int, out: Path,
                      progress: bool = True) -> dict:
    """Why each failed episode failed (up to `per_task` per task), in process: wam/judge/failure.py."""
    from tqdm import tqdm

    from wam.envs import make_env
    from wam.judge.failure import OUTCOMES, diagnose

    worker = Worker(dataclasses.replace(setup, threads=0))
    failed = {}
    for job, r in zip(jobs, results):
        if not r["success"] and len(failed.setdefault(job.task, [])) < per_task:
            failed[job.task].append(job)
    found = []
    todo = [j for js in failed.values() for j in js]
    meta = worker.policy.metadata
    for job in tqdm(todo, desc="diagnose", unit="ep", disable=not progress):
        env = make_env(job.env, meta.cameras, meta.image_size[0], shift=job.shift)
        try:
            d = diagnose(worker.policy, worker.wam, env, job.task, job.seed, job.max_steps, setup.sampler.execute,
                         prompt=job.prompt, evidence=out / "failures" / f"{job.task}-{job.seed}.png")
        finally:
            env.close()
        found.append(dataclasses.asdict(d))
        if d.evidence:
            found[-1]["evidence"] = str(Path(d.evidence).relative_to(out))
    counts = {t: {v: sum(d["verdict"] == v for d in found if d["task"] == t) for v in OUTCOMES} for t in failed}
    return {"episodes": found, "counts": counts}


def lerobot_sampler(cfg: EvalConfig, config: dict) -> SamplerConfig:
    """What of --sampler.* applies to a lerobot policy: steps (Diffusion Policy's denoising steps per chunk) and
    device. The rest (execute, best-of, cache, ...) belongs to our sampler; lerobot's select_action executes its own
    chunks (n_action_steps), so those flags are refused rather than silently ignored."""
    given = {k for k, v in dataclasses.asdict(cfg.sampler).items() if v is not None}
    other = sorted(given - {"steps", "device"})
    if other:
        raise ValueError(f"--sampler.{', --sampler.'.join(other)} cannot apply to a lerobot policy (it executes its own "
                         f"chunks); only --sampler.steps (Diffusion Policy's denoising steps) and --sampler.device do")
    if cfg.sampler.steps is not None and config["model"]["recipe"] != "lerobot-diffusion":
        raise ValueError(f"--sampler.steps sets Diffusion Policy's denoising steps; {config['model']['recipe']} has none")
    if cfg.delay or cfg.blend:
        raise ValueError("--delay and --blend drive our chunk executor; a lerobot policy executes its own chunks")
    return SamplerConfig(steps=cfg.sampler.steps, device=cfg.sampler.device or "cpu")


def _check_remote(cfg: EvalConfig) -> dict:
    """The remote server's handshake, once it is known to serve this checkpoint's weights."""
    from wam.checkpoint import fingerprint
    from wam.serve.client import RemotePolicy

    given = sorted(k for k, v in dataclasses.asdict(cfg.sampler).items() if v is not None and k != "execute")
    if given:
        raise ValueError(f"with --remote the server's sampler is used; --sampler.{', --sampler.'.join(given)} cannot "
                         "apply (only --sampler.execute, --delay and --blend run here)")
    with RemotePolicy(cfg.remote, cfg.api_key or os.environ.get("WAM_API_KEY") or None, history="client") as remote:
        info = dict(remote.server_info)
    mine = fingerprint(cfg.checkpoint)
    if info.get("fingerprint") != mine:
        raise ValueError(f"the server at {cfg.remote} serves weights {info.get('fingerprint')}, not this checkpoint's "
                         f"{mine} ({cfg.checkpoint})")
    return {k: info[k] for k in ("fingerprint", "wam_version", "sampler") if k in info}


def print_table(summary: dict) -> None:
    print(f"\n{'task':32s} {'success':>8s} {'95% CI':>14s} {'ms/chunk':>9s}")
    for task, r in summary["tasks"].items():
        lo, hi = r["ci95"]
        print(f"{task:32s} {r['success_rate']:8.2f} {f'[{lo:.2f}, {hi:.2f}]':>14s} {r['median_ms']:9.1f}")
    print(f"{'mean':32s} {summary['mean_success']:8.2f}")
