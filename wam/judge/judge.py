"""`wam judge POLICY... --world CKPT --head DIR`: rank policies without running them, inside a learned world model.

Every policy acts on the same held-out variations (seeds from 100000, as `wam eval`), starting from the real first
frames of each; the rest of each episode is imagined (wam/judge/dream.py) and scored by the success head
(wam/judge/head.py, trained by `wam judge fit`). Writes OUT/judge.json (imagined success per task and policy, the
head's probability after every chunk) and OUT/report.html with a video of imagined rollouts per policy and task.

    wam judge fit --data runs/judge/data --out runs/judge/head        the success head and state model
    wam judge runs/a/last runs/b/last runs/b/last#noise=0.5 --world runs/judge/world/last --head runs/judge/head
    wam judge lerobot:OUT/checkpoints/last/pretrained_model ws://127.0.0.1:8000 --world ... --head ...

Any policy can be judged: our checkpoints (their episodes in lockstep, one batched pass), a lerobot policy or a
running `wam serve` (one episode at a time: wam/judge/policies.py); each episode's outcome is the same either way.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from wam.evaluate import EVAL_SEED, wilson


@dataclass(frozen=True)
class JudgeConfig:
    policies: tyro.conf.Positional[tuple[str, ...]]
    """Checkpoint folders, each optionally weakened: PATH#noise=STD, PATH#instruction=other; lerobot:PATH for a
    lerobot-train policy (from the lerobot venv), ws://HOST:PORT for a running `wam serve` (wam/judge/policies.py)."""
    world: Path
    """A world model: a checkpoint whose recipe serves the world_model mode (decoupled, self-label, ...)."""
    head: Path
    """The success head and state model fitted for it (`wam judge fit`)."""
    tasks: str | None = None
    """Comma-separated Meta-World tasks (default: the world model's)."""
    episodes: int = 20
    """Imagined episodes per task and policy."""
    seed: int = EVAL_SEED
    """First held-out variation seed; episode i uses seed + i (as `wam eval`)."""
    max_steps: int = 200
    execute: int | None = None
    """Actions executed per chunk (default: each policy's own, or for a policy that acts step by step the world
    model's first future offset; one of the world model's future offsets)."""
    threshold: float = 0.5
    """An imagined episode is solved when the head's probability passes this."""
    calibration: Path | None = None
    """Per-task thresholds instead (`wam judge calibrate`, wam/judge/calibrate.py); a task it does not name keeps
    `threshold`."""
    world_steps: int | None = None
    """Denoising steps of the world model's frames (default: its checkpoint's)."""
    videos: int = 2
    """Imagined rollouts saved as video per policy and task."""
    out: Path = Path("runs/judge/out")

    def __post_init__(self):
        if self.episodes < 1 or self.max_steps < 1 or not 0 < self.threshold < 1:
            raise ValueError(f"episodes and max_steps must be >= 1 and threshold in (0, 1), got {self.episodes}, "
                             f"{self.max_steps}, {self.threshold}")


def first_observations(task: str, cameras: tuple[str, ...], image_size: int,
                       seeds: list[int]) -> tuple[list, np.ndarray | None]:
    """The real first observation of each held-out variation, and its environment state (n, Z) (the objects and the
    goal at the reset, for a head that reads them; None where the environment does not report it)."""
    from wam.envs import make_env

    env = make_env(f"metaworld:{task}", cameras, image_size)
    try:
        observations, environment = [], []
        for s in seeds:
            observations.append(env.reset(int(s)))
            if hasattr(env, "environment_state"):
                environment.append(env.environment_state())
        return observations, np.stack(environment) if environment else None
    finally:
        env.close()


def judge(cfg: JudgeConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from wam.envs.tasks import instruction, parse_tasks
    from wam.judge.calibrate import read_calibration
    from wam.judge.dream import World
    from wam.judge.head import JudgeHead
    from wam.judge.policies import PolicySpec, contender
    from wam.video import write_mp4

    if not cfg.policies:  # checked here, not in __post_init__, where tyro would show it in a box
        raise ValueError("name at least one policy: wam judge CKPT [CKPT#noise=0.5 ...] --world W --head H")
    specs = [PolicySpec.parse(p) for p in cfg.policies]
    world = World(cfg.world, cfg.world_steps)
    head = JudgeHead.load(cfg.head)
    tasks = parse_tasks(cfg.tasks) if cfg.tasks else tuple(world.config["data"].get("tasks") or ())
    if not tasks:
        raise ValueError(f"{cfg.world} was not trained on Meta-World tasks: name them with --tasks")
    lo, hi = world.config["data"]["seeds"]
    if cfg.seed <= hi and cfg.seed + cfg.episodes - 1 >= lo:
        raise ValueError(f"judging seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1} overlap the world model's training "
                         f"seeds {lo}..{hi}; pick --seed above {hi}")
    seeds = list(range(cfg.seed, cfg.seed + cfg.episodes))
    calibrated = read_calibration(cfg.calibration) if cfg.calibration else {}
    thresholds = {t: calibrated.get(t, cfg.threshold) for t in tasks}
    m = world.cfg
    starts = {t: first_observations(t, tuple(m.cameras), m.image_size, seeds) for t in tasks}
    instructions = [instruction(t) for t in tasks]
    out = Path(cfg.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(total=len(specs) * len(tasks), desc="judge", unit="task", disable=not progress)
    for p, spec in enumerate(specs):
        judged = contender(spec, tasks)
        try:  # a served policy's connection, a lerobot policy's model: released even when judging fails
            execute = cfg.execute or judged.execute or m.future_offsets[0]
            row = {"policy": str(spec), "execute": execute, "tasks": {}}
            for task, prompt in zip(tasks, instructions):
                start = time.perf_counter()
                dreams = imagine_task(world, head, judged, *starts[task], seeds, prompt, cfg.max_steps, execute,
                                      thresholds[task], cfg.videos)
                k = sum(d.success for d in dreams)
                videos = []
                for d in dreams:
                    if d.video is not None:
                        path = out / "videos" / f"p{p:02d}-{task}-{d.seed}.mp4"
                        write_mp4(str(path), d.video, fps=4)
                        videos.append({"seed": d.seed, "success": d.success, "path": str(path.relative_to(out))})
                row["tasks"][task] = {"success_rate": k / len(dreams), "successes": k, "episodes": len(dreams),
                                      "ci95": list(wilson(k, len(dreams))), "mean_steps": float(np.mean([d.steps for d in dreams])),
                                      "seconds": time.perf_counter() - start, "videos": videos,
                                      "episodes_detail": [{"seed": d.seed, "success": d.success, "steps": d.steps,
                                                           "probability": d.probability} for d in dreams]}
                bar.update(1)
        finally:
            judged.close()
        row["mean_success"] = float(np.mean([r["success_rate"] for r in row["tasks"].values()]))
        results.append(row)
    bar.close()
    summary = {"world": str(cfg.world), "head": str(cfg.head), "tasks": list(tasks), "seeds": [seeds[0], seeds[-1]],
               "max_steps": cfg.max_steps, "threshold": cfg.threshold, "thresholds": thresholds, "world_steps": world.sampler.video_steps,
               "policies": results}
    (out / "judge.json").write_text(json.dumps(summary, indent=2))
    write_report(out, summary)
    return summary


def imagine_task(world, head, judged, first: list, environment: np.ndarray | None, seeds: list[int], prompt: str,
                 max_steps: int, execute: int, threshold: float, videos: int) -> list:
    """One task's imagined episodes: all in lockstep for a checkpoint, one at a time for a policy that keeps state
    between steps (the same results either way: wam/judge/dream.py). `environment`: each episode's environment state
    at its first observation (first_observations), read by a head fitted with it."""
    from wam.judge.dream import dream

    if judged.lockstep:
        return dream(world, head, judged, first, seeds, prompt, max_steps, execute, threshold, videos, environment)
    return [d for i, (obs, seed) in enumerate(zip(first, seeds))
            for d in dream(world, head, judged, [obs], [seed], prompt, max_steps, execute, threshold, int(i < videos),
                           None if environment is None else environment[i:i + 1])]


def write_report(out: Path, summary: dict) -> Path:
    from wam.report import _HEAD

    tasks = summary["tasks"]
    head = "".join(f"<th>{html.escape(t)}</th>" for t in tasks)
    rows = "".join(f"<tr><td><code>{html.escape(r['policy'])}</code></td>"
                   + "".join(f"<td>{r['tasks'][t]['success_rate']:.2f}</td>" for t in tasks)
                   + f"<td><b>{r['mean_success']:.2f}</b></td></tr>" for r in summary["policies"])
    videos = "".join(
        f"<figure><video src='{v['path']}' controls loop muted width='288'></video><figcaption>"
        f"{html.escape(r['policy'])}<br>{html.escape(t)} seed {v['seed']}: imagined "
        f"{'success' if v['success'] else 'failure'}</figcaption></figure>"
        for r in summary["policies"] for t in tasks for v in r["tasks"][t]["videos"])
    page = _HEAD.format(title="wam judge") + f"""<h1>wam judge: imagined success</h1>
<p>World model <code>{html.escape(summary['world'])}</code>, success head <code>{html.escape(summary['head'])}</code>.
Held-out variation seeds {summary['seeds'][0]}..{summary['seeds'][1]}, at most {summary['max_steps']} steps; every frame
after the first is imagined.</p>
<table><tr><th>policy</th>{head}<th>mean</th></tr>{rows}</table>
<h2>Imagined rollouts</h2><p>The cameras side by side, one frame per chunk: the first is real, the rest imagined.</p>
{videos}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path


def print_table(summary: dict) -> None:
    tasks = summary["tasks"]
    print(f"\n{'policy':60s} " + " ".join(f"{t[:14]:>14s}" for t in tasks) + f" {'mean':>6s}")
    for r in summary["policies"]:
        name = r["policy"] if len(r["policy"]) <= 60 else "..." + r["policy"][-57:]
        print(f"{name:60s} " + " ".join(f"{r['tasks'][t]['success_rate']:14.2f}" for t in tasks)
              + f" {r['mean_success']:6.2f}")
