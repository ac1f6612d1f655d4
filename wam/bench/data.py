"""`wam bench data`: the data path at scale, on a large synthetic LeRobotDataset written by our own writer.

    wam bench data                       2,000 episodes x 300 frames, two cameras at 224 px (1.2 M frames)
    wam bench data --quick               40 episodes x 100 frames, for a check in a minute or two

Stages, each cached in OUT/results.json so that a killed run resumes at the next one:

1. write: the synthetic dataset (wam.testing.synthetic_dataset), frames/s and size on disk;
2. cache: the frame cache at the model's input size (read_dataset + FrameStore), frames/s, size on disk, peak RSS;
3. loader: samples/s the DataLoader delivers (the default preset's windows and batch size) with 0, 1, 2 workers;
4. step: samples/s one training step of the default preset's model consumes (forward, backward, AdamW);
5. train: a real `train()` run with DataLoader workers, its peak RSS (the training process and each worker),
   beside the bytes the model, its gradients, AdamW state and EMA take.

Stages 2-5 run in a fresh process each; a sampler thread reads the RSS of that process and of its children every
0.2 s (psutil). The loader must deliver at least 5x what a step consumes, and training must stay under 2 GB plus
the model. The table goes to OUT/data-bench.md and OUT/data-bench.json, with the machine's speed.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path


GB = 2**30


@dataclass(frozen=True)
class DataBenchConfig:
    out: Path = Path("runs/bench/data")
    episodes: int = 2000
    length: int = 300
    """Frames per episode."""
    camera_size: int = 224
    """Side of the two cameras' recorded frames, px."""
    fps: int = 30
    batch_size: int = 32
    loader_batches: int = 150
    """Batches drawn per DataLoader setting."""
    workers: tuple[int, ...] = (0, 1, 2)
    step_steps: int = 20
    """Training steps timed for the consumption rate."""
    train_steps: int = 200
    """Steps of the real training run whose memory is watched."""
    quick: bool = False
    """A small variant (40 episodes of 100 frames, fewer batches and steps), for checks."""

    def sized(self) -> DataBenchConfig:
        if not self.quick:
            return self
        return dataclasses.replace(self, out=self.out.with_name(self.out.name + "-quick"), episodes=40, length=100,
                                   loader_batches=20, step_steps=4, train_steps=10)


# ------------------------------------------------------------------------------------------------ stages
def _model_cfg():
    from wam.config import preset

    return preset("default").model.for_data(("front", "wrist"), 6, 6).resolved()


def _windows(data: Path):
    import torch

    from wam.data.frames import FrameStore
    from wam.data.reader import read_dataset
    from wam.data.transforms import Normalizer
    from wam.data.windows import Windows

    m = _model_cfg()
    rec = read_dataset(data)
    store = FrameStore(rec, m.image_size, "pad", progress=True)
    return Windows(rec, store, m, Normalizer.from_stats(rec.stats), torch.zeros(len(rec.instructions), m.text_dim))


def stage_cache(cfg: DataBenchConfig) -> dict:
    from wam.data.frames import FrameStore, cache_dir
    from wam.data.reader import read_dataset

    data = cfg.out / "data"
    shutil.rmtree(data / "cache", ignore_errors=True)
    start = time.perf_counter()
    rec = read_dataset(data)
    read_s = time.perf_counter() - start
    FrameStore(rec, _model_cfg().image_size, "pad", progress=True)
    seconds = time.perf_counter() - start
    frames = len(rec.index) * len(rec.cameras)
    return {"frames": frames, "read_tables_s": read_s, "seconds": seconds, "frames_per_s": frames / seconds,
            "cache_gb": _size(cache_dir(rec)) / GB}


def stage_loader(cfg: DataBenchConfig) -> dict:
    from wam.data.loader import batches

    win = _windows(cfg.out / "data")
    out = {}
    for w in cfg.workers:
        it = batches(win, cfg.batch_size, 4, 0, range(cfg.loader_batches + 5), workers=w)
        for _ in range(5):  # the workers' start and first batches are not the rate
            next(it)
        start = time.perf_counter()
        for _ in it:
            pass
        out[str(w)] = cfg.loader_batches * cfg.batch_size / (time.perf_counter() - start)
        print(f"loader, {w} workers: {out[str(w)]:.0f} samples/s")
    return {"samples_per_s": out}


def stage_step(cfg: DataBenchConfig) -> dict:
    import torch

    from wam.backbones import build
    from wam.config import TrainConfig
    from wam.data.loader import step_generator
    from wam.train import loss_terms

    win = _windows(cfg.out / "data")
    m = _model_cfg()
    model = build(m).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tc = TrainConfig()
    batch = win.get(torch.randint(len(win), (cfg.batch_size,)).numpy(), shift_px=4, generator=torch.Generator())
    times = []
    for step in range(cfg.step_steps + 2):
        start = time.perf_counter()
        terms = loss_terms(model, batch, tc, m, step_generator(0, step, 0))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - start)
    per = sorted(times[2:])[len(times[2:]) // 2]
    return {"step_s": per, "samples_per_s": cfg.batch_size / per, "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in model.parameters())}


def stage_train(cfg: DataBenchConfig) -> dict:
    from wam.config import DataConfig, SamplerConfig, preset
    from wam.train import train

    p = preset("default")
    out = cfg.out / "train"
    shutil.rmtree(out, ignore_errors=True)
    tc = dataclasses.replace(p.train, data=cfg.out / "data", out=out, steps=cfg.train_steps, ckpt_every=cfg.train_steps,
                             log_every=max(1, cfg.train_steps // 4), resume=False)
    start = time.perf_counter()
    train(tc, p.model, SamplerConfig(), progress=True, data=DataConfig(workers=2))
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r.strip()]
    return {"seconds": time.perf_counter() - start, "steps": cfg.train_steps,
            "samples_per_s": [r["samples_per_s"] for r in rows if "samples_per_s" in r]}


STAGES = {"cache": stage_cache, "loader": stage_loader, "step": stage_step, "train": stage_train}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _child(name: str, cfg: DataBenchConfig, queue) -> None:
    try:
        queue.put(("ok", STAGES[name](cfg)))
    except BaseException as e:  # reported by the parent, which owns the terminal
        queue.put(("error", f"{type(e).__name__}: {e}"))


def _watched(name: str, cfg: DataBenchConfig) -> dict:
    """Run a stage in a fresh process; its result, with the peak RSS of that process and of its children."""
    import psutil

    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_child, args=(name, cfg, queue))
    proc.start()
    peak = {"main": 0, "children": 0, "worker": 0}
    stop = threading.Event()

    def watch():
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                main = p.memory_info().rss
                kids = [c.memory_info().rss for c in p.children(recursive=True)]
            except psutil.Error:
                break
            peak["main"] = max(peak["main"], main)
            peak["children"] = max(peak["children"], sum(kids))
            peak["worker"] = max([peak["worker"], *kids])
            stop.wait(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    status, result = queue.get()
    proc.join()
    stop.set()
    thread.join()
    if status != "ok":
        raise RuntimeError(f"stage {name} failed: {result}")
    return {**result, "peak_rss_gb": peak["main"] / GB, "peak_rss_children_gb": peak["children"] / GB,
            "peak_rss_one_worker_gb": peak["worker"] / GB}


# ------------------------------------------------------------------------------------------------ the bench
def bench_data(cfg: DataBenchConfig) -> dict:
    from wam.testing import synthetic_dataset

    cfg = cfg.sized()
    cfg.out.mkdir(parents=True, exist_ok=True)
    file = cfg.out / "results.json"
    res = json.loads(file.read_text()) if file.is_file() else {}
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "quick")}
    if res.get("settings") != json.loads(json.dumps(settings)):
        res = {"settings": settings}
    from wam.machine import describe

    res["machine"] = f"machine: {describe()}; load average before the run {os.getloadavg()[0]:.2f}"

    def save():
        file.write_text(json.dumps(res, indent=2))

    data = cfg.out / "data"
    if "write" not in res or not (data / "meta/info.json").is_file():
        start = time.perf_counter()
        synthetic_dataset(data, episodes=cfg.episodes, length=cfg.length, fps=cfg.fps, state_dim=6, action_dim=6,
                          cameras={"front": (cfg.camera_size, cfg.camera_size), "wrist": (cfg.camera_size, cfg.camera_size)},
                          tasks=8, preset="ultrafast", progress=True, overwrite=True)
        seconds = time.perf_counter() - start
        frames = cfg.episodes * cfg.length * 2
        res = {"settings": settings, "machine": res["machine"],
               "write": {"seconds": seconds, "frames": frames, "frames_per_s": frames / seconds,
                         "dataset_gb": _size(data) / GB}}
        save()
    for name in STAGES:
        if name not in res:
            print(f"\n[{name}]")
            res[name] = _watched(name, cfg)
            save()
    _table(cfg, res)
    return res


def model_bytes(parameters: int) -> int:
    """float32 weights, gradients, AdamW's two moments and the EMA copy: five copies of the parameters."""
    return 5 * 4 * parameters


def _table(cfg: DataBenchConfig, res: dict) -> None:
    w, c, lo, st, tr = (res[k] for k in ("write", "cache", "loader", "step", "train"))
    best = max(lo["samples_per_s"].values())
    model = model_bytes(st["parameters"]) / GB
    peak = tr["peak_rss_gb"]
    lines = [
        f"# `wam bench data`: {cfg.episodes} episodes x {cfg.length} frames, 2 cameras at {cfg.camera_size} px "
        f"({w['frames'] / 1e6:.2f} M frames)", "",
        f"{res['machine']}", "",
        "| stage | result |", "|---|---|",
        f"| write (our writer, x264 ultrafast) | {w['seconds'] / 60:.1f} min, {w['frames_per_s']:.0f} frames/s, "
        f"{w['dataset_gb'] * 1024:.0f} MB on disk |",
        f"| frame cache at {_model_cfg().image_size} px (decode + fit) | {c['seconds'] / 60:.1f} min, "
        f"{c['frames_per_s']:.0f} frames/s, {c['cache_gb']:.1f} GB on disk, peak RSS {c['peak_rss_gb']:.2f} GB |",
        *(f"| DataLoader, {k} workers | {v:.0f} samples/s (batch {cfg.batch_size}) |" for k, v in lo["samples_per_s"].items()),
        f"| one training step, default preset ({st['parameters'] / 1e6:.2f} M parameters, {st['threads']} threads) | "
        f"{st['samples_per_s']:.1f} samples/s ({st['step_s'] * 1000:.0f} ms per batch of {cfg.batch_size}) |",
        f"| loader / step | **{best / st['samples_per_s']:.1f}x** (target: at least 5x) |",
        f"| training {tr['steps']} steps with 2 workers | peak RSS {peak:.2f} GB in the training process, "
        f"{tr['peak_rss_one_worker_gb']:.2f} GB per worker ({tr['peak_rss_children_gb']:.2f} GB all workers, shared "
        f"pages counted in each); the model with its gradients, AdamW state and EMA: {model * 1024:.0f} MB |",
        f"| memory target | training process {peak:.2f} GB against 2 GB + {model:.2f} GB: "
        f"**{'met' if peak < 2 + model else 'missed'}** |",
    ]
    text = "\n".join(lines) + "\n"
    (cfg.out / "data-bench.md").write_text(text)
    (cfg.out / "data-bench.json").write_text(json.dumps(res, indent=2))
    print("\n" + text)
