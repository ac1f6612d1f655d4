"""`wam bench peers`: our default WAM and our action-only baseline against lerobot's own policies (ACT, Diffusion
Policy), trained on the very demonstrations `wam demo` collects and scored by `wam eval` on the same held-out
variation seeds, cameras, episode length and success metric.

    wam bench peers --demo runs/demo                    # equal training wall-clock: the demo's own training time
    wam bench peers --demo runs/demo --budget recommended   # lerobot-train's default step count (resumable; days here)

What is compared, per policy: mean success and per-task rates (Wilson 95% intervals), training wall-clock minutes
and steps, and the median milliseconds per new chunk in closed loop.
- `wam`: the demo's checkpoint and evaluation, as they are (its training time is the budget).
- `action-only`: our transformer without the future frames, trained for the steps that fill the same budget.
- `lerobot-act`, `lerobot-diffusion`: lerobot's default configs, trained with `lerobot-train` for the steps that fill
  the same budget (measured on a short probe run first), with lerobot-train's default batch size (8) and loader
  (4 workers). No ImageNet weights can be downloaded here, so ACT's ResNet-18 starts from scratch
  (`--policy.pretrained_backbone_weights=null`; Diffusion Policy's default is already from scratch).
  Diffusion Policy is evaluated with `--denoising-steps` (default 10) denoising steps per chunk rather than its
  100-step training schedule, which costs about 8 s per chunk on a 2-core CPU; its ms per chunk at the default
  100 steps is measured too, on a short rollout, and reported beside.

lerobot runs from its own venv (scripts/lerobot-venv.sh; --lerobot-venv), our own policies from this one. Every
cell writes OUT/<policy>/row.json when done and is skipped when it is there with the same settings, so an
interrupted bench continues where it stopped; a lerobot-train run cut off mid-way resumes from its last
checkpoint (`--resume=true`), and the wall-clock it spent is added up over runs. Results: OUT/peers.json,
OUT/peers.md, OUT/peers.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wam.data.layout import ENVIRONMENT_STATE_KEY

PEERS = ("act", "diffusion")
RECOMMENDED_STEPS = 100_000
"""lerobot-train's default `--steps`, the step count lerobot's own ACT and Diffusion Policy recipes train for."""


@dataclass(frozen=True)
class PeersBenchConfig:
    out: Path = Path("runs/bench/peers")
    demo: Path = Path("runs/demo")
    """A finished `wam demo --out DIR` (its data/, train/last and eval/): its data trains every policy, its checkpoint
    is the `wam` row, its training time is the budget. Run first when it is not there."""
    peers: str = ",".join(PEERS)
    """lerobot policy types to train and evaluate."""
    baseline: bool = True
    """Also train and evaluate our action-only baseline on the same budget."""
    budget: Literal["demo", "recommended"] = "demo"
    """demo: every policy trains for the demo's training wall-clock; recommended: lerobot's policies train for
    `--recommended-steps` (lerobot-train's default), however long that takes, in runs of `--max-minutes`."""
    minutes: float | None = None
    """Training budget per policy with --budget demo (default: the demo's own training time)."""
    recommended_steps: int = RECOMMENDED_STEPS
    max_minutes: float = 100.0
    """With --budget recommended: stop each lerobot-train run after this long; run the bench again to continue."""
    episodes: int = 20
    """Held-out evaluation episodes per task (the demo's)."""
    max_steps: int = 200
    denoising_steps: int | None = 10
    """Diffusion Policy's denoising steps per chunk at evaluation (None: its config's 100)."""
    batch_size: int = 8
    """lerobot-train's batch size (its default)."""
    workers: int = 2
    """Evaluation processes."""
    lerobot_venv: Path = Path(".venv-lerobot")
    """The venv scripts/lerobot-venv.sh builds (lerobot-train, and wam for evaluating lerobot policies)."""
    probe_steps: int = 24
    """Steps of the short lerobot-train run that measures a policy's seconds per step."""

    def __post_init__(self):
        for kind in self.peer_types:
            if kind not in PEERS:
                raise ValueError(f"--peers: unknown lerobot policy {kind!r}; expected some of {', '.join(PEERS)}")
        if min(self.episodes, self.max_steps, self.batch_size, self.workers, self.probe_steps, self.recommended_steps) < 1:
            raise ValueError("episodes, max_steps, batch_size, workers, probe_steps and recommended_steps must be >= 1")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")

    @property
    def peer_types(self) -> tuple[str, ...]:
        return tuple(p for p in self.peers.split(",") if p)


# ------------------------------------------------------------------------------ the bench
def bench_peers(cfg: PeersBenchConfig) -> dict:
    from wam.bench.common import publish
    from wam.machine import matmul_gflops

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    venv = _lerobot_venv(cfg.lerobot_venv) if cfg.peer_types else None
    demo = _demo(cfg)
    budget_s = cfg.minutes * 60 if cfg.minutes else demo["train_s"]
    print(f"budget: {budget_s / 60:.1f} min of training per policy ({'--minutes' if cfg.minutes else 'the demo'}'s); "
          f"data {demo['data']}")
    rows = [demo["row"]]
    if cfg.baseline:
        rows.append(_action_only(cfg, out / "action-only", Path(demo["data"]), budget_s))
    for kind in cfg.peer_types:
        rows.append(_peer(cfg, kind, out / f"lerobot-{kind}", Path(demo["data"]), budget_s, venv))
    for row in rows:
        if not row.get("unfinished"):
            row.update(_latency(cfg, row, out / row["name"] / "latency", venv))
    result = {"budget": cfg.budget, "budget_minutes": budget_s / 60, "episodes_per_task": cfg.episodes,
              "max_steps": cfg.max_steps, "seeds": demo["row"]["seeds"], "data": str(demo["data"]),
              "machine_gflops": round(matmul_gflops()), "cpu_count": os.cpu_count(), "policies": rows}
    return publish(out, "peers", result, table, plot)


def _lerobot_venv(path: Path) -> Path:
    venv = Path(path).resolve()
    for tool in ("lerobot-train", "wam"):
        if not (venv / "bin" / tool).is_file():
            raise FileNotFoundError(f"{venv / 'bin' / tool} is missing: build the lerobot venv with "
                                    f"scripts/lerobot-venv.sh (or pass --lerobot-venv DIR)")
    return venv


def _demo(cfg: PeersBenchConfig) -> dict:
    """The demo's data, checkpoint, evaluation and training time; `wam demo` runs first when they are missing."""
    root = Path(cfg.demo)
    files = [root / "eval" / "results.json", root / "eval" / "timing.json", root / "train" / "last" / "config.json"]
    if not all(f.is_file() for f in files):
        from wam.cli import DemoConfig
        from wam.demo import demo

        print(f"{root} holds no finished demo: running `wam demo --out {root}` first")
        demo(DemoConfig(out=root, episodes=cfg.episodes, workers=cfg.workers))
    summary = json.loads(files[0].read_text())
    timing = json.loads(files[1].read_text())
    config = json.loads(files[2].read_text())
    if summary["episodes_per_task"] != cfg.episodes or summary["max_steps"] != cfg.max_steps:
        raise ValueError(f"the demo was evaluated on {summary['episodes_per_task']} episodes per task of "
                         f"{summary['max_steps']} steps, the bench asks for {cfg.episodes} of {cfg.max_steps}: "
                         f"pass --episodes {summary['episodes_per_task']} --max-steps {summary['max_steps']}")
    row = _row("wam", f"wam ({config['model']['recipe']}, default preset)", summary, timing["train_s"],
               config["step"], config["train"]["batch_size"], str(root / "train" / "last"))
    return {"row": row, "train_s": timing["train_s"], "data": config["train"]["data"]}


def _row(name: str, label: str, summary: dict, train_s: float, steps: int, batch_size: int, checkpoint: str,
         **extra) -> dict:
    """One policy's entry of peers.json, from its `wam eval` results."""
    return {"name": name, "label": label, "mean_success": summary["mean_success"],
            "tasks": {t: {k: r[k] for k in ("success_rate", "ci95", "successes", "episodes")}
                      for t, r in summary["tasks"].items()},
            "train_minutes": train_s / 60, "train_steps": steps, "batch_size": batch_size,
            "ms_per_chunk": summary["median_ms_per_chunk"], "eval_ms_per_chunk": summary["median_ms_per_chunk"],
            "p90_ms_per_chunk": summary["p90_ms_per_chunk"],
            "parameters": summary.get("parameters"), "seeds": summary["seeds"], "checkpoint": checkpoint, **extra}


def _cached(cell: Path, settings: dict) -> dict | None:
    done = cell / "row.json"
    if done.is_file():
        row = json.loads(done.read_text())
        if row.get("settings") == settings:
            print(f"reusing {done}")
            return row
    return None


# ------------------------------------------------------------------------------ our action-only baseline
def _action_only(cfg: PeersBenchConfig, cell: Path, data: Path, budget_s: float) -> dict:
    from wam.config import preset, with_recipe
    from wam.evaluate import EvalConfig, evaluate
    from wam.train import train

    settings = {"budget_s": round(budget_s, 1), "episodes": cfg.episodes, "max_steps": cfg.max_steps, "data": str(data)}
    row = _cached(cell, settings)
    if row:
        return row
    p = with_recipe(preset("default"), "action-only")
    probe = dataclasses.replace(p.train, data=data, out=cell / "probe", steps=60, log_every=20, eval_every=0,
                                ckpt_every=10_000, resume=False)
    print("\n[action-only] probe: 60 steps to measure the training rate")
    train(probe, p.model, p.sampler)
    rows = [json.loads(r) for r in (cell / "probe" / "metrics.jsonl").read_text().splitlines() if r.strip()]
    rate = rows[-1]["samples_per_s"] / p.train.batch_size  # steps per second, past the first steps
    steps = max(1, int(rate * budget_s * 0.97))  # the rest of the budget: startup and checkpoints
    shutil.rmtree(cell / "probe")
    print(f"[action-only] {rate:.2f} steps/s: {steps} steps fill {budget_s / 60:.1f} min")
    train_cfg = dataclasses.replace(p.train, data=data, out=cell / "train", steps=steps)
    t = time.perf_counter()
    ckpt = train(train_cfg, p.model, p.sampler)
    train_s = time.perf_counter() - t
    summary = evaluate(EvalConfig(checkpoint=ckpt, episodes=cfg.episodes, max_steps=cfg.max_steps, out=cell / "eval",
                                  videos=2, workers=cfg.workers))
    row = _row("action-only", "wam action-only (no future frames)", summary, train_s, steps, p.train.batch_size,
               str(ckpt), settings=settings)
    (cell / "row.json").write_text(json.dumps(row, indent=2))
    return row


# ------------------------------------------------------------------------------ lerobot's policies
def _peer(cfg: PeersBenchConfig, kind: str, cell: Path, data: Path, budget_s: float, venv: Path) -> dict:
    settings = {"budget": cfg.budget, "budget_s": round(budget_s, 1), "episodes": cfg.episodes, "max_steps": cfg.max_steps,
                "batch_size": cfg.batch_size, "data": str(data), "denoising_steps": cfg.denoising_steps,
                "recommended_steps": cfg.recommended_steps if cfg.budget == "recommended" else None}
    row = _cached(cell, settings)
    if row:
        return row
    cell.mkdir(parents=True, exist_ok=True)
    plan_file = cell / "plan.json"
    plan = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
    if plan.get("settings") != settings:
        shutil.rmtree(cell / "train", ignore_errors=True)
        (cell / "train_runs.jsonl").unlink(missing_ok=True)
        step_s = _probe(cfg, kind, cell, data, venv)
        steps = cfg.recommended_steps if cfg.budget == "recommended" else max(1, int((budget_s - step_s["startup_s"])
                                                                                  / step_s["step_s"]))
        plan = {"settings": settings, "steps": steps, **step_s}
        plan_file.write_text(json.dumps(plan, indent=2))
    steps = plan["steps"]
    print(f"\n[lerobot-{kind}] {plan['step_s']:.2f} s/step (probe): {steps} steps"
          + (f", about {steps * plan['step_s'] / 3600:.1f} h" if cfg.budget == "recommended" else
             f" fill {budget_s / 60:.1f} min"))
    ckpt = cell / "train" / "checkpoints" / "last" / "pretrained_model"
    if _trained_steps(cell) < steps:
        finished = _lerobot_train(cfg, kind, cell, data, venv, steps, plan["step_s"])
        if not finished:
            print(f"[lerobot-{kind}] stopped after --max-minutes {cfg.max_minutes:g} at step {_trained_steps(cell)} of "
                  f"{steps}: run the bench again to continue")
            return {"name": f"lerobot-{kind}", "unfinished": True, "train_steps": _trained_steps(cell), "of": steps}
    train_s = sum(r["wall_s"] for r in _runs(cell))
    summary = _lerobot_eval(cfg, kind, venv, ckpt, cell / "eval", cfg.episodes, None,
                            cfg.denoising_steps if kind == "diffusion" else None)
    extra = {"settings": settings, "pretrained_vision": False, "lerobot_defaults": True}
    if kind == "diffusion":
        extra["denoising_steps"] = cfg.denoising_steps
    label = {"act": "lerobot ACT (ResNet-18 from scratch)", "diffusion": "lerobot Diffusion Policy (from scratch)"}[kind]
    row = _row(f"lerobot-{kind}", label, summary, train_s, steps, cfg.batch_size, str(ckpt), **extra)
    (cell / "row.json").write_text(json.dumps(row, indent=2))
    return row


def _train_args(cfg: PeersBenchConfig, kind: str, data: Path, out: Path, steps: int, save_freq: int) -> list[str]:
    args = [f"--dataset.repo_id=local/{data.name}", f"--dataset.root={data.resolve()}", "--dataset.video_backend=torchcodec",
            f"--policy.type={kind}", "--policy.push_to_hub=false", "--policy.device=cpu", f"--output_dir={out}",
            f"--steps={steps}", f"--batch_size={cfg.batch_size}", f"--save_freq={save_freq}", "--log_freq=20",
            "--wandb.enable=false", "--seed=1000"]
    if kind == "act":  # its default backbone weights come from the hub, which is not reachable here
        args.append("--policy.pretrained_backbone_weights=null")
    features = json.loads((data / "meta" / "info.json").read_text())["features"]
    if ENVIRONMENT_STATE_KEY in features:
        args.append(f"--policy.input_features={json.dumps(policy_inputs(features))}")
    return args


def policy_inputs(features: dict) -> dict:
    """lerobot-train's `--policy.input_features` for a dataset's feature table (meta/info.json): its cameras and
    robot state, as lerobot would list them by itself, without observation.environment_state. That is privileged
    simulator state which `wam collect` records as a training target; lerobot's ACT and Diffusion Policy would read
    it as an input, and no policy is given it at evaluation."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] in ("image", "video"):
            h, w, c = ft["shape"]  # ours are written (height, width, channels); lerobot reads them channel first
            out[key] = {"type": "VISUAL", "shape": [c, h, w]}
        elif key == "observation.state":
            out[key] = {"type": "STATE", "shape": list(ft["shape"])}
    return out


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}


STEP_LOG = re.compile(r"step:(\S+) .*?updt_s:([0-9.]+) data_s:([0-9.]+)")


def _probe(cfg: PeersBenchConfig, kind: str, cell: Path, data: Path, venv: Path) -> dict:
    """Seconds per training step (lerobot's own update and data timings, past the first steps) and the startup
    seconds, from a short lerobot-train run."""
    probe = cell / "probe"
    shutil.rmtree(probe, ignore_errors=True)
    n = cfg.probe_steps
    print(f"\n[lerobot-{kind}] probe: {n} lerobot-train steps to measure the training rate")
    args = _train_args(cfg, kind, data, probe, n, save_freq=10 * n)
    args = [a for a in args if not a.startswith("--log_freq")] + [f"--log_freq={n // 2}"]
    t = time.perf_counter()
    log = cell / "probe.log"
    with open(log, "w") as f:
        rc = subprocess.run([str(venv / "bin" / "lerobot-train"), *args], stdout=f, stderr=subprocess.STDOUT, env=_env()).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"lerobot-train failed (exit {rc}); see {log}")
    logged = STEP_LOG.findall(log.read_text())
    if not logged:
        raise RuntimeError(f"lerobot-train printed no step timings; see {log}")
    step_s = float(logged[-1][1]) + float(logged[-1][2])
    shutil.rmtree(probe, ignore_errors=True)
    return {"step_s": step_s, "startup_s": max(0.0, wall - n * step_s), "probe_wall_s": wall}


def _runs(cell: Path) -> list[dict]:
    f = cell / "train_runs.jsonl"
    rows = [json.loads(r) for r in f.read_text().splitlines() if r.strip()] if f.is_file() else []
    last = {}
    for r in rows:  # one line per poll; the last of each run counts
        last[r["run"]] = r
    return list(last.values())


def _trained_steps(cell: Path) -> int:
    """The step of the last checkpoint lerobot-train saved (0: none)."""
    last = cell / "train" / "checkpoints" / "last" / "training_state" / "training_step.json"
    return int(json.loads(last.read_text())["step"]) if last.is_file() else 0


def _lerobot_train(cfg: PeersBenchConfig, kind: str, cell: Path, data: Path, venv: Path, steps: int, step_s: float) -> bool:
    """Run lerobot-train to `steps` (resuming from its last checkpoint), logging wall-clock as it goes; False when
    --max-minutes ran out first."""
    from tqdm import tqdm

    out = cell / "train"
    resume = _trained_steps(cell) > 0
    if out.exists() and not resume:
        shutil.rmtree(out)  # a run cut off before its first checkpoint starts over
    recommended = cfg.budget == "recommended"
    save_freq = max(1, min(steps, int(600 / step_s))) if recommended else steps  # ~10 min of work between saves
    if resume:
        args = [f"--config_path={out / 'checkpoints' / 'last' / 'pretrained_model' / 'train_config.json'}", "--resume=true"]
    else:
        args = _train_args(cfg, kind, data, out, steps, save_freq)
    run = len(_runs(cell))
    limit = cfg.max_minutes * 60 if recommended else None
    log = cell / f"train-{run}.log"
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([str(venv / "bin" / "lerobot-train"), *args], stdout=f, stderr=subprocess.STDOUT, env=_env())
        bar = tqdm(total=steps, initial=_trained_steps(cell), desc=f"lerobot-{kind}", unit="step")
        try:
            while proc.poll() is None:
                time.sleep(2)
                wall = time.perf_counter() - t
                logged = STEP_LOG.findall(log.read_text(errors="replace"))
                done = _parse_step(logged[-1][0]) if logged else bar.n
                bar.update(max(0, done - bar.n))
                with open(cell / "train_runs.jsonl", "a") as runs:
                    runs.write(json.dumps({"run": run, "wall_s": wall, "resumed": resume, "step": bar.n,
                                           "load": os.getloadavg()[0]}) + "\n")
                if limit is not None and wall > limit:
                    proc.terminate()
                    proc.wait()
                    return False
        finally:
            if proc.poll() is None:
                proc.kill()
            bar.close()
    with open(cell / "train_runs.jsonl", "a") as runs:
        runs.write(json.dumps({"run": run, "wall_s": time.perf_counter() - t, "resumed": resume}) + "\n")
    if proc.returncode != 0:
        raise RuntimeError(f"lerobot-train failed (exit {proc.returncode}); see {log}")
    return True


def _parse_step(text: str) -> int:
    """lerobot logs steps as 200, 1K, 1.2K, ..."""
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _lerobot_eval(cfg: PeersBenchConfig, kind: str, venv: Path, ckpt: Path, out: Path, episodes: int, tasks: str | None,
                  steps: int | None, max_steps: int | None = None, workers: int | None = None) -> dict:
    """`wam eval --policy lerobot:CKPT` in the lerobot venv; its results.json."""
    args = [str(venv / "bin" / "wam"), "eval", "--policy", f"lerobot:{ckpt}", "--episodes", str(episodes),
            "--max-steps", str(max_steps or cfg.max_steps), "--out", str(out), "--videos", "2",
            "--workers", str(workers or cfg.workers)]
    if tasks:
        args += ["--tasks", tasks]
    if steps is not None:
        args += ["--sampler.steps", str(steps)]
    print(f"[lerobot-{kind}] evaluating: {' '.join(args[1:])}")
    rc = subprocess.run(args, env=_env(), cwd=Path.cwd()).returncode
    if rc != 0:
        raise RuntimeError(f"wam eval of {ckpt} failed (exit {rc})")
    return json.loads((out / "results.json").read_text())


# ------------------------------------------------------------------------------ latency, alone
LATENCY_TASK, LATENCY_EPISODES, LATENCY_STEPS = "reach-v3", 3, 200
"""Three 200-step rollouts: at least six new chunks even for ACT, which executes 100 actions of each."""


def _latency(cfg: PeersBenchConfig, row: dict, cell: Path, venv: Path | None) -> dict:
    """Milliseconds per new chunk (the median), measured the same way for every policy: one process with the
    machine's threads (the evaluations above run `--workers` processes of one thread each, and share the machine
    with whatever else runs), LATENCY_EPISODES rollouts of LATENCY_STEPS steps of LATENCY_TASK. Diffusion Policy is
    also timed at its config's 100 denoising steps, on one 64-step rollout (eight chunks of about 10 s here).
    Cached in CELL/latency.json; delete CELL to measure again."""
    done = cell / "latency.json"
    if done.is_file():
        return json.loads(done.read_text())
    load = os.getloadavg()[0]
    runs = [("ms_per_chunk", cfg.denoising_steps if row["name"] == "lerobot-diffusion" else None, LATENCY_EPISODES,
             LATENCY_STEPS)]
    if row["name"] == "lerobot-diffusion":
        runs.append(("ms_per_chunk_default_steps", None, 1, 64))
    result = {"eval_ms_per_chunk": row.get("eval_ms_per_chunk", row["ms_per_chunk"])}
    for key, steps, episodes, max_steps in runs:
        out = cell / key
        if row["name"].startswith("lerobot-"):
            summary = _lerobot_eval(cfg, row["name"].removeprefix("lerobot-"), venv, Path(row["checkpoint"]), out, episodes, LATENCY_TASK, steps,
                                    max_steps=max_steps, workers=1)
        else:
            from wam.evaluate import EvalConfig, evaluate

            summary = evaluate(EvalConfig(checkpoint=Path(row["checkpoint"]), tasks=LATENCY_TASK, episodes=episodes,
                                          max_steps=max_steps, workers=1, videos=0, out=out))
        result[key] = summary["median_ms_per_chunk"]
        result[key.replace("ms_per", "chunks_timed_per")] = sum(len(e["ms"]) for e in summary["episodes"])
    result["latency_load_avg"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    cell.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(result, indent=2))
    return result


# ------------------------------------------------------------------------------ reporting
def table(result: dict) -> str:
    tasks = list(result["policies"][0]["tasks"])
    head = ["policy", "mean success", *[t.removesuffix("-v3") for t in tasks], "train min", "steps", "ms/chunk"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["policies"]:
        if r.get("unfinished"):
            lines.append(f"| {r['name']} | unfinished: step {r['train_steps']} of {r['of']} |" + " |" * (len(head) - 2))
            continue
        ms = f"{r['ms_per_chunk']:.0f}"
        if "ms_per_chunk_default_steps" in r:
            ms += f" ({r['ms_per_chunk_default_steps']:.0f} at 100 steps)"
        cells = [r["label"], f"**{r['mean_success']:.2f}**",
                 *[f"{r['tasks'][t]['success_rate']:.2f} [{r['tasks'][t]['ci95'][0]:.2f}, {r['tasks'][t]['ci95'][1]:.2f}]"
                   for t in tasks], f"{r['train_minutes']:.1f}", str(r["train_steps"]), ms]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in result["policies"] if not r.get("unfinished")]
    tasks = list(rows[0]["tasks"])
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(tasks), 3.4))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        rates = np.array([r["tasks"][t]["success_rate"] for t in tasks])
        lo = rates - np.array([r["tasks"][t]["ci95"][0] for t in tasks])
        hi = np.array([r["tasks"][t]["ci95"][1] for t in tasks]) - rates
        ax.bar(np.arange(len(tasks)) + i * width, rates, width, yerr=[lo, hi], capsize=2,
               label=f"{r['name']} (mean {r['mean_success']:.2f})")
    ax.set_xticks(np.arange(len(tasks)) + width * (len(rows) - 1) / 2, [t.removesuffix("-v3") for t in tasks])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (95% Wilson CI)")
    ax.set_title(f"{result['budget_minutes']:.1f} min of training each, {result['episodes_per_task']} held-out "
                 f"episodes per task", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: wam bench peers [--help]")
