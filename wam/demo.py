"""`wam demo`: collect -> train -> evaluate -> report, on a preset (default: three Meta-World tasks, CPU)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from wam.data.collect import DEFAULT_TASKS, CollectConfig, collect
from wam.config import preset
from wam.evaluate import EvalConfig, evaluate, print_table
from wam.train import train


def demo(cfg) -> str:
    p = preset(cfg.preset)
    out = cfg.out
    times = {}
    stages = ["collect", "train", "eval"]

    def stage(i: int, what: str) -> float:
        print(f"\n[{i}/{len(stages)}] {what}", flush=True)
        return time.perf_counter()

    t = stage(1, f"collecting {p.collect_episodes} scripted demonstrations per task of {DEFAULT_TASKS}")
    data = out / "data"
    if (data / "meta/info.json").exists():
        print(f"reusing the dataset at {data}")
    else:
        collect(CollectConfig(out=data, tasks=DEFAULT_TASKS, episodes=p.collect_episodes, cameras=p.model.cameras,
                              image_size=p.model.image_size, action_noise=p.collect_noise, random_start=p.collect_random_start,
                              workers=cfg.workers,
                              overwrite=True))
    times["collect_s"] = time.perf_counter() - t

    t = stage(2, f"training ({p.train.steps} steps)")
    ckpt = train(replace(p.train, data=data, out=out / "train"), p.model, p.sampler)
    times["train_s"] = time.perf_counter() - t

    t = stage(3, f"evaluating in closed loop ({cfg.episodes} held-out episodes per task)")
    summary = evaluate(EvalConfig(checkpoint=ckpt, episodes=cfg.episodes, out=out / "eval", workers=cfg.workers))
    times["eval_s"] = time.perf_counter() - t
    times["total_s"] = sum(times.values())
    (out / "eval" / "timing.json").write_text(json.dumps(times, indent=2))

    print_table(summary)
    print(f"\nstage times: " + ", ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in times.items()))
    report = out / "eval" / "report.html"
    print(f"checkpoint: {ckpt}\nreport: {report}")
    return str(report)
