"""The judge's decision threshold, calibrated on policies whose real success is known.

An imagined episode is solved at the first check where the success head's probability passes a threshold (0.5 by
default, wam/judge/dream.py). A head that is right about states can still be biased about episodes: ~50 checks per
episode, each a chance to pass 0.5 by noise (optimistic), or a state model that stops short of the goal
(pessimistic), and the bias differs between tasks. A per-task threshold, chosen on policies that are NOT the ones to
be ranked (earlier checkpoints, the collectors of the head's data), removes that bias before the ranking sees it:

    wam bench judge --policies CALIBRATION_POLICIES... --threshold 0.99 --out runs/bench/judge-calibration
    wam judge calibrate --bench runs/bench/judge-calibration --out runs/judge/calibration.json
    wam judge POLICY... --world W --head H --calibration runs/judge/calibration.json
    wam judge rescore --bench runs/bench/judge --calibration runs/judge/calibration.json   # a bench's ranking again

Re-deciding an episode from its recorded probabilities is exact for every threshold up to the one it was judged
with: an imagined episode stops at its first pass, and up to there its probabilities do not depend on the threshold
(up to the rounding of batched matrix products, about 1e-7, as the batch shrinks). Hence the calibration bench's
`--threshold 0.99`: its episodes run on (to `max_steps` or a probability above 0.99) and every threshold in GRID can
be read from them.

Per task, the threshold of GRID with the highest balanced accuracy (mean of the share of real successes imagined
solved and of real failures imagined failed) over every calibration episode; ties go to the one nearest 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from wam.judge.rank import episode_agreement, ranking_stats, violations

GRID = tuple(round(x, 2) for x in np.arange(0.05, 0.96, 0.05))
DEFAULT = 0.5


@dataclass(frozen=True)
class JudgedEpisode:
    policy: str
    task: str
    seed: int
    real: bool
    probability: tuple[float, ...]
    """The head's probability at each check, up to where the imagined episode stopped."""
    threshold: float
    """The threshold it was judged with (it stopped at the first probability above it)."""


def solved(probability, threshold: float) -> bool:
    """Whether an imagined episode is solved at `threshold` (as wam/judge/dream.py decides)."""
    return bool(np.any(np.asarray(probability) > threshold))


def read_bench(folder: Path) -> list[JudgedEpisode]:
    """Every episode of a `wam bench judge` output folder: its real outcome (real/*/results.json) beside its imagined
    probabilities (imagined/*/judge.json), matched by policy, task and seed."""
    folder = Path(folder)
    imagined = sorted((folder / "imagined").glob("*/judge.json"))
    if not imagined:
        raise ValueError(f"{folder}: no imagined/*/judge.json (expected a `wam bench judge --out` folder)")
    out = []
    for path in imagined:
        real_path = folder / "real" / path.parent.name / "results.json"
        if not real_path.is_file():
            raise ValueError(f"{path.parent.name}: imagined but not evaluated for real ({real_path} is missing)")
        real = {(e["task"], e["seed"]): bool(e["success"]) for e in json.loads(real_path.read_text())["episodes"]}
        summary = json.loads(path.read_text())
        judged_at = {t: summary.get("thresholds", {}).get(t, summary["threshold"]) for t in summary["tasks"]}
        for row in summary["policies"]:
            for task, result in row["tasks"].items():
                for e in result["episodes_detail"]:
                    out.append(JudgedEpisode(row["policy"], task, int(e["seed"]), real[(task, e["seed"])],
                                             tuple(e["probability"]), float(judged_at[task])))
    return out


def check_exact(episodes: list[JudgedEpisode], thresholds: dict[str, float]) -> None:
    for e in episodes:
        t = thresholds.get(e.task, DEFAULT)
        if t > e.threshold:
            raise ValueError(f"{e.policy} on {e.task} was judged with threshold {e.threshold}: its episodes stopped "
                             f"there and cannot be re-decided at {t}; judge with --threshold {max(GRID)} to calibrate")


def balanced_accuracy(episodes: list[JudgedEpisode], threshold: float) -> float:
    return episode_agreement([(e.real, solved(e.probability, threshold)) for e in episodes])["balanced_accuracy"]


def calibrate(episodes: list[JudgedEpisode], grid: tuple[float, ...] = GRID) -> dict:
    """Per task, the threshold of `grid` (up to the one judged with) of the highest balanced accuracy."""
    tasks = sorted({e.task for e in episodes})
    result = {"grid": list(grid), "tasks": {}}
    for task in tasks:
        mine = [e for e in episodes if e.task == task]
        if all(e.real for e in mine) or not any(e.real for e in mine):
            raise ValueError(f"{task}: the calibration policies {'all succeed' if mine[0].real else 'all fail'} in "
                             f"all {len(mine)} episodes; a threshold needs real successes and failures to separate")
        usable = [t for t in grid if t <= min(e.threshold for e in mine)]
        if not usable:
            raise ValueError(f"{task}: judged with threshold {min(e.threshold for e in mine)}, below every threshold "
                             f"of the grid")
        scores = [balanced_accuracy(mine, t) for t in usable]
        best = max(range(len(usable)), key=lambda i: (scores[i], -abs(usable[i] - DEFAULT)))
        imagined = lambda t: float(np.mean([solved(e.probability, t) for e in mine]))  # noqa: E731
        result["tasks"][task] = {
            "threshold": usable[best], "episodes": len(mine), "real": float(np.mean([e.real for e in mine])),
            "calibrated": {"balanced_accuracy": scores[best], "imagined": imagined(usable[best])},
            "default": ({"balanced_accuracy": balanced_accuracy(mine, DEFAULT), "imagined": imagined(DEFAULT)}
                        if DEFAULT <= usable[-1] else None),
            "balanced_accuracy": dict(zip(map(str, usable), scores))}
    result["thresholds"] = {t: result["tasks"][t]["threshold"] for t in tasks}
    result["policies"] = sorted({e.policy for e in episodes})
    return result


def read_calibration(path: Path) -> dict[str, float]:
    """The per-task thresholds of a `wam judge calibrate` file."""
    try:
        thresholds = json.loads(Path(path).read_text())["thresholds"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a calibration file of `wam judge calibrate` ({e})") from None
    bad = {t: v for t, v in thresholds.items() if not 0 < float(v) < 1}
    if bad:
        raise ValueError(f"{path}: thresholds must lie in (0, 1), got {bad}")
    return {t: float(v) for t, v in thresholds.items()}


def rescore(episodes: list[JudgedEpisode], thresholds: dict[str, float]) -> dict:
    """A bench's ranking statistics again, each task's episodes decided at its threshold (DEFAULT where none)."""
    check_exact(episodes, thresholds)
    policies = list(dict.fromkeys(e.policy for e in episodes))
    tasks = list(dict.fromkeys(e.task for e in episodes))
    decided = [(e, solved(e.probability, thresholds.get(e.task, DEFAULT))) for e in episodes]
    rows = []
    for p in policies:
        cells = {t: [(e.real, s) for e, s in decided if e.policy == p and e.task == t] for t in tasks}
        per_task = {t: {"real": float(np.mean([r for r, _ in c])), "imagined": float(np.mean([s for _, s in c]))}
                    for t, c in cells.items()}
        rows.append({"policy": p, "real": float(np.mean([v["real"] for v in per_task.values()])),
                     "imagined": float(np.mean([v["imagined"] for v in per_task.values()])), "tasks": per_task})
    pairs = {t: [(e.real, s) for e, s in decided if e.task == t] for t in tasks}
    return {"thresholds": {t: thresholds.get(t, DEFAULT) for t in tasks}, "policies": rows, **ranking_stats(rows, pairs)}


@dataclass(frozen=True)
class CalibrateConfig:
    bench: Path
    """A `wam bench judge --out` folder of policies whose real success is known and that will NOT be ranked, judged
    with --threshold 0.95 or more (its episodes then run on, and every threshold can be read from them)."""
    out: Path
    """The calibration file to write (JSON: per-task thresholds, for `wam judge --calibration`)."""


@dataclass(frozen=True)
class RescoreConfig:
    bench: Path
    """A `wam bench judge --out` folder."""
    calibration: Path | None = None
    """A `wam judge calibrate` file (default: 0.5 for every task)."""
    out: Path | None = None
    """Write the statistics here as JSON (default: print only)."""


def main_calibrate(argv: list[str]) -> None:
    cfg = tyro.cli(CalibrateConfig, args=argv, prog="wam judge calibrate",
                   description="Per-task decision thresholds of the judge, from a bench of calibration policies.")
    result = {"bench": str(cfg.bench), **calibrate(read_bench(cfg.bench))}
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.out).write_text(json.dumps(result, indent=2))
    print(f"{'task':<26} {'threshold':>9} {'real':>6} {'imagined':>9} {'balanced':>9}   at {DEFAULT}: imagined, balanced")
    for task, r in result["tasks"].items():
        d = r["default"] or {"imagined": float("nan"), "balanced_accuracy": float("nan")}
        print(f"{task:<26} {r['threshold']:>9.2f} {r['real']:>6.2f} {r['calibrated']['imagined']:>9.2f} "
              f"{r['calibrated']['balanced_accuracy']:>9.3f}   {d['imagined']:.2f}, {d['balanced_accuracy']:.3f}")
    print(f"wrote {cfg.out}")


def main_rescore(argv: list[str]) -> None:
    cfg = tyro.cli(RescoreConfig, args=argv, prog="wam judge rescore",
                   description="A judge bench's ranking statistics with the calibrated per-task thresholds.")
    result = {"bench": str(cfg.bench), "calibration": cfg.calibration and str(cfg.calibration),
              **rescore(read_bench(cfg.bench), read_calibration(cfg.calibration) if cfg.calibration else {})}
    rows = result["policies"]
    worst = violations([r["real"] for r in rows], [r["imagined"] for r in rows])
    for r, (gap, j) in zip(rows, worst):
        print(f"{r['policy'][-60:]:<60} real {r['real']:.2f}  imagined {r['imagined']:.2f}"
              + (f"  worst rank violation {gap:.3f} (with {rows[j]['policy'][-40:]})" if j is not None else ""))
    e = result["per_episode"]["all"]
    print(f"Spearman {result['spearman']:.3f}  Pearson {result['pearson']:.3f}  MMRV {result['mmrv']:.3f}  pairwise "
          f"{result['pairwise_accuracy']:.3f}  mean imagined {result['mean_imagined']:.2f} (real {result['mean_real']:.2f})"
          f"  MAE {result['mean_abs_error']:.2f}  cells Spearman {result['cells']['spearman']:.3f}  per-episode "
          f"balanced {e['balanced_accuracy']:.2f}")
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {cfg.out}")
