"""`wam bench serve`: what serving costs and what cross-session batching gives, on loopback (127.0.0.1 only).

For one checkpoint (default: runs/demo/train/last when it exists, else a tiny-preset checkpoint trained here in
a minute into OUT/tiny), the same `requests` observations (the model's own, as `wam eval --remote` sends them,
at the checkpoint's image size) are answered
    in process      `policy.infer`, one after another: the baseline "the same requests one after another";
    over the wire   a `wam serve` server in this process (from_checkpoint, warmed up) with 1, 2, 4 and 8
                    concurrent clients (RemotePolicy threads, the requests split between them), batching on
                    (--max-batch, --max-wait-ms) and off (max_batch 1).
For each: p50/p99 latency per request (the client's round trip), throughput (requests/s over the wall time of
the run), errors, and for the served runs the mean batch size and the wire's overhead per message (round trip
minus the policy's own `infer_ms`: encoding, the socket, decoding, checks, the batcher's hand-off). Every client
loop is bounded by its count and by `seconds`. torch runs on `threads` threads. Writes OUT/serve.json and
OUT/serve.md and prints the table, with the machine's speed (wam.machine.describe) and its load (os.getloadavg).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_CHECKPOINT = Path("runs/demo/train/last")


@dataclass(frozen=True)
class ServeBenchConfig:
    out: Path = Path("runs/bench/serve")
    checkpoint: Path | None = None
    """Checkpoint to serve (default: runs/demo/train/last when it exists, else a tiny one trained into OUT/tiny)."""
    clients: str = "1,2,4,8"
    """Numbers of concurrent clients, comma-separated."""
    requests: int = 64
    """Requests per run (split evenly between the clients)."""
    warmup: int = 2
    """Untimed requests per client before each run."""
    seconds: float = 60.0
    """Every client loop stops after this long, whatever its count."""
    max_batch: int = 8
    max_wait_ms: float = 2.0
    threads: int = 1
    """torch threads (1: what each evaluation worker uses)."""

    def __post_init__(self):
        counts = [int(c) for c in self.clients.split(",")]
        if not counts or min(counts) < 1 or self.requests < max(counts) or self.seconds <= 0 or self.threads < 1:
            raise ValueError(f"need clients >= 1, requests >= the most clients, seconds > 0, threads >= 1; got "
                             f"clients={self.clients!r}, requests={self.requests}, seconds={self.seconds}, threads={self.threads}")


def _stats(latencies: list[float], wall_s: float) -> dict:
    ms = sorted(latencies)
    return {"requests": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput_rps": len(ms) / wall_s if wall_s > 0 else 0.0}


def _served(ckpt: Path, observations: list, clients: int, batch: int, cfg: ServeBenchConfig) -> dict:
    """One run over the wire: `clients` threads, each with its share of the requests, bounded in count and time."""
    from wam.serve.client import RemotePolicy
    from wam.serve.server import ServeConfig, from_checkpoint, running

    server = from_checkpoint(ServeConfig(ckpt, port=0, max_batch=batch, max_wait_ms=cfg.max_wait_ms))
    shares = [observations[i::clients] for i in range(clients)]
    rows: list[list[tuple[float, float]]] = [[] for _ in range(clients)]
    errors: list[str] = []
    try:
        with running(server) as port:
            remotes = [RemotePolicy(f"ws://127.0.0.1:{port}", history="client", timeout=cfg.seconds) for _ in range(clients)]
            for i, remote in enumerate(remotes):
                remote.reset(seed=i)
                for obs in shares[i][:cfg.warmup]:
                    remote.infer(obs)
            server.batcher.batches = server.batcher.requests = 0
            barrier = threading.Barrier(clients + 1)
            deadline = [0.0]

            def client(i: int) -> None:
                barrier.wait(cfg.seconds)
                try:
                    for obs in shares[i]:  # bounded by count, and by time
                        if time.perf_counter() > deadline[0]:
                            errors.append(f"client {i}: stopped at the {cfg.seconds} s limit")
                            return
                        out = remotes[i].infer(obs)
                        rows[i].append((out.timing["round_trip_ms"], out.timing["infer_ms"]))
                except Exception as e:  # noqa: BLE001 (counted and reported)
                    errors.append(f"client {i}: {type(e).__name__}: {e}"[:300])

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
            for t in threads:
                t.start()
            deadline[0] = time.perf_counter() + cfg.seconds
            barrier.wait(cfg.seconds)
            start = time.perf_counter()
            for t in threads:
                t.join(cfg.seconds + 10)
            wall = time.perf_counter() - start
            for remote in remotes:
                remote.close()
            batches, served = server.batcher.batches, server.batcher.requests
    finally:
        server.close()
    done = [r for rs in rows for r in rs]
    row = _stats([rt for rt, _ in done], wall) if done else {"requests": 0}
    row.update({"clients": clients, "batching": batch > 1, "errors": len(errors), "error_messages": errors[:5],
                "mean_batch": served / batches if batches else 0.0,
                "wire_overhead_ms": float(np.median([rt - ms for rt, ms in done])) if done else None,
                "policy_ms": float(np.median([ms for _, ms in done])) if done else None})
    return row


def bench_serve(cfg: ServeBenchConfig) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _bench(cfg)
    finally:
        torch.set_num_threads(threads)


def _bench(cfg: ServeBenchConfig) -> dict:
    from wam.bench.common import tiny_checkpoint
    from wam.machine import describe
    from wam.policy import WAMPolicy
    from wam.testing import fake_observation

    cfg.out.mkdir(parents=True, exist_ok=True)
    ckpt = cfg.checkpoint or (DEMO_CHECKPOINT if DEMO_CHECKPOINT.exists() else tiny_checkpoint(cfg.out / "tiny"))
    load = os.getloadavg()
    policy = WAMPolicy.from_checkpoint(ckpt)
    meta = policy.metadata
    observations = [fake_observation(meta, seed=i, prompt=("close the drawer", "press the button")[i % 2])
                    for i in range(cfg.requests)]
    # in process, one after another (the baseline), and the reference actions of session 0
    session = policy.session(0)
    for obs in observations[:cfg.warmup]:
        session.infer(obs)
    latencies, start = [], time.perf_counter()
    for obs in observations:
        t = time.perf_counter()
        session.infer(obs)
        latencies.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() - start > cfg.seconds:
            break
    local = {**_stats(latencies, time.perf_counter() - start), "clients": 1, "errors": 0}
    counts = [int(c) for c in cfg.clients.split(",")]
    runs = [_served(ckpt, observations, c, batch, cfg) for batch in (cfg.max_batch, 1) for c in counts]
    top = max(counts)
    best = next(r for r in runs if r["clients"] == top and r["batching"])
    one = next(r for r in runs if r["clients"] == 1 and not r["batching"])
    result = {
        "command": f"wam bench serve --checkpoint {ckpt} --requests {cfg.requests} --clients {cfg.clients} "
                   f"--max-batch {cfg.max_batch} --max-wait-ms {cfg.max_wait_ms} --threads {cfg.threads}",
        "checkpoint": str(ckpt), "recipe": policy.cfg.recipe, "image_size": list(meta.image_size),
        "cameras": list(meta.cameras), "parameters": sum(p.numel() for p in policy.model.parameters()),
        "sampler_steps": policy.sampler.steps, "threads": cfg.threads, "machine": describe(),
        "load_average": [round(x, 2) for x in load], "cpus": os.cpu_count(),
        "in_process": local, "served": runs,
        "summary": {"wire_overhead_ms": one["wire_overhead_ms"], "clients_held": top, "errors_at_most_clients": best["errors"],
                    "speedup_vs_one_after_another": best.get("throughput_rps", 0) / local["throughput_rps"]},
    }
    (cfg.out / "serve.json").write_text(json.dumps(result, indent=2))
    table = _table(result)
    (cfg.out / "serve.md").write_text(table)
    print(table)
    return result


def _table(r: dict) -> str:
    s = r["summary"]
    lines = [f"`{r['command']}`", "",
             f"Checkpoint {r['checkpoint']} ({r['recipe']}, {r['parameters']:,} parameters, {r['sampler_steps']} "
             f"steps, {'x'.join(map(str, r['image_size']))} images, cameras {', '.join(r['cameras'])}); "
             f"{r['threads']} torch thread(s); machine {r['machine']}; load average before the run "
             f"{', '.join(map(str, r['load_average']))} on {r['cpus']} CPUs. Loopback, server and clients in one process. "
             f"Round trip − policy: the wire's overhead per message (with several clients it includes waiting for "
             f"the others' inference).", "",
             "| how | clients | batching | p50 ms | p99 ms | requests/s | mean batch | round trip − policy ms | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    lo = r["in_process"]
    lines.append(f"| in process, one after another | 1 | - | {lo['p50_ms']:.1f} | {lo['p99_ms']:.1f} | "
                 f"{lo['throughput_rps']:.1f} | - | - | 0 |")
    for x in r["served"]:
        if not x["requests"]:
            lines.append(f"| served | {x['clients']} | {'on' if x['batching'] else 'off'} | - | - | - | - | - | {x['errors']} |")
            continue
        lines.append(f"| served | {x['clients']} | {'on' if x['batching'] else 'off'} | {x['p50_ms']:.1f} | "
                     f"{x['p99_ms']:.1f} | {x['throughput_rps']:.1f} | {x['mean_batch']:.2f} | "
                     f"{x['wire_overhead_ms']:.2f} | {x['errors']} |")
    lines += ["", f"Wire overhead per message (1 client, no batching, median): {s['wire_overhead_ms']:.2f} ms. "
                  f"{s['clients_held']} clients: {s['errors_at_most_clients']} errors, "
                  f"{s['speedup_vs_one_after_another']:.2f}x the throughput of the same requests one after another in process.", ""]
    return "\n".join(lines)
