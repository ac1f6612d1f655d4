"""`wam demo`: collect -> train -> evaluate -> report, on a preset (default: three Meta-World tasks, CPU)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import torch

from wam.data.collect import DEFAULT_TASKS, CollectConfig, collect
from wam.config import preset
from wam.data.layout import ENVIRONMENT_STATE_KEY, records
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

    from wam.machine import matmul_gflops

    threads = torch.get_num_threads()
    speed = matmul_gflops()
    print(f"machine: {speed:.0f} GFLOP/s (fp32 matmul on {threads} threads; compare with the README's timing table)")
    t = stage(1, f"collecting {p.collect_episodes} scripted demonstrations per task of {DEFAULT_TASKS}")
    data = out / "data"
    if records(data, ENVIRONMENT_STATE_KEY):
        print(f"reusing the dataset at {data}")
    else:  # (again where an older `wam collect` wrote it without the environment state that training now predicts)
        collect(CollectConfig(out=data, tasks=DEFAULT_TASKS, episodes=p.collect_episodes,
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
    rows = [json.loads(r) for r in (out / "train" / "metrics.jsonl").read_text().splitlines() if r.strip()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r]
    sps = sum(rates) / len(rates) if rates else float("nan")
    (out / "eval" / "timing.json").write_text(json.dumps({**times, "train_samples_per_s": sps,
                                                          "machine_gflops": speed, "threads": threads}, indent=2))

    print_table(summary)
    print("\nstage times: " + ", ".join(f"{k[:-2]} {v / 60:.1f} min" for k, v in times.items()))
    print(f"training throughput: {sps:.0f} samples/s; machine: {speed:.0f} GFLOP/s fp32 matmul on {threads} threads")
    report = out / "eval" / "report.html"
    print(f"checkpoint: {ckpt}\nreport: {report}")
    return str(report)
