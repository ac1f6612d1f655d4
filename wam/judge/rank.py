"""How well imagined success ranks policies against real success: the statistics world-model evaluators report.

    pearson(x, y)             linear correlation
    spearman(x, y)            Pearson of the ranks (ties get their mean rank)
    mmrv(real, imagined)      mean maximum rank violation (SIMPLER, Li et al. 2024): for each policy, the largest real
                              success gap to a policy the imagined rates order the other way; mean over policies
    violations(real, imag)    those largest gaps per policy, with the policy of each: which pairs make the MMRV
    pairwise_accuracy(r, i)   of the pairs whose real rates differ, the fraction the imagined rates order the same way
                              (a tie in the imagined rates counts half)
    episode_agreement(pairs)  per episode, (real success, imagined success) of the same policy, task and seed: how often
                              they agree, the share of real successes imagined solved and of real failures imagined
                              failed, and their mean (balanced accuracy; 0.5 is chance)
    ranking_stats(rows, pairs)  all of them for a judged bench (`wam bench judge`, `wam judge rescore`): over the
                              policies, over the (policy, task) cells, per task, and per episode
"""

from __future__ import annotations

import numpy as np


def _check(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need two equal-length lists of 2 or more rates, got shapes {x.shape} and {y.shape}")
    return x, y


def pearson(x, y) -> float:
    x, y = _check(x, y)
    x, y = x - x.mean(), y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def ranks(x) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(x, y) -> float:
    x, y = _check(x, y)
    return pearson(ranks(x), ranks(y))


def violations(real, imagined) -> list[tuple[float, int | None]]:
    """Per policy, its largest rank violation: the real success gap to a policy the imagined rates order the other way,
    and that policy's index (0.0 and None where none is): what MMRV averages, and which pairs make it."""
    real, imagined = _check(real, imagined)
    worst: list[tuple[float, int | None]] = []
    for i in range(len(real)):
        gap, partner = 0.0, None
        for j in range(len(real)):
            if (imagined[i] < imagined[j]) != (real[i] < real[j]) and abs(real[i] - real[j]) > gap:
                gap, partner = float(abs(real[i] - real[j])), j
        worst.append((gap, partner))
    return worst


def mmrv(real, imagined) -> float:
    return float(np.mean([gap for gap, _ in violations(real, imagined)]))


def pairwise_accuracy(real, imagined) -> float:
    real, imagined = _check(real, imagined)
    right = total = 0.0
    for i in range(len(real)):
        for j in range(i + 1, len(real)):
            if real[i] == real[j]:
                continue
            total += 1
            agree = np.sign(real[i] - real[j]) * np.sign(imagined[i] - imagined[j])
            right += 1.0 if agree > 0 else 0.5 if agree == 0 else 0.0
    return right / total if total else float("nan")


def agreement(real, imagined) -> dict:
    """Every statistic above, for one list of policies."""
    return {"spearman": spearman(real, imagined), "pearson": pearson(real, imagined), "mmrv": mmrv(real, imagined),
            "pairwise_accuracy": pairwise_accuracy(real, imagined), "policies": len(real),
            "mean_real": float(np.mean(real)), "mean_imagined": float(np.mean(imagined))}


def episode_agreement(pairs) -> dict:
    """pairs: (real success, imagined success) per episode. Rates with no episode to count are None."""
    pairs = np.asarray(list(pairs), bool).reshape(-1, 2)
    real, imagined = pairs[:, 0], pairs[:, 1]
    rate = lambda hits, n: float(hits / n) if n else None  # noqa: E731
    tpr, tnr = rate((real & imagined).sum(), real.sum()), rate((~real & ~imagined).sum(), (~real).sum())
    return {"episodes": len(pairs), "agree": rate((real == imagined).sum(), len(pairs)),
            "real_successes": int(real.sum()), "successes_imagined_solved": tpr,
            "real_failures": int((~real).sum()), "failures_imagined_failed": tnr,
            "balanced_accuracy": None if tpr is None or tnr is None else (tpr + tnr) / 2}


def ranking_stats(rows: list[dict], pairs: dict[str, list]) -> dict:
    """rows: per policy {"real", "imagined", "tasks": {task: {"real", "imagined"}}}; pairs: per task, (real, imagined)
    success of each episode. The statistics over the policies, the mean absolute error of their rates, the same over
    the (policy, task) cells and per task, and the per-episode agreement over all tasks and per task."""
    tasks = list(pairs)
    real, imag = [r["real"] for r in rows], [r["imagined"] for r in rows]
    stats = agreement(real, imag)
    return {**{k: stats[k] for k in ("spearman", "pearson", "mmrv", "pairwise_accuracy", "mean_real", "mean_imagined")},
            "mean_abs_error": float(np.mean(np.abs(np.array(imag) - np.array(real)))),
            "cells": agreement([r["tasks"][t]["real"] for r in rows for t in tasks],
                               [r["tasks"][t]["imagined"] for r in rows for t in tasks]),
            "per_task": {t: agreement([r["tasks"][t]["real"] for r in rows], [r["tasks"][t]["imagined"] for r in rows])
                         for t in tasks},
            "per_episode": {"all": episode_agreement([p for t in tasks for p in pairs[t]]),
                            "per_task": {t: episode_agreement(pairs[t]) for t in tasks}}}
