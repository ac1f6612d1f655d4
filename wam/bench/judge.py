"""`wam bench judge`: does the world model rank policies as the simulator does?

Every policy named (a checkpoint or lerobot:PATH, or a weakened one: PATH#noise=STD, PATH#instruction=other;
wam/judge/policies.py) is evaluated twice on the same tasks and held-out seeds: for real in Meta-World (`wam eval`, with --action-noise and
--swap-instructions for the weakened ones) and imagined inside the world model (`wam judge`). Then the statistics
world-model evaluators report (wam/judge/rank.py): Spearman and Pearson correlation, MMRV, pairwise accuracy, over
the policies' mean success, and over every (policy, task) cell; and how the absolute rates differ.
Each policy's real and imagined results are cached under OUT (real/, imagined/): a killed run resumes.

    wam bench judge --policies runs/a/last runs/b/last runs/b/last#noise=0.5 ... --out runs/bench/judge
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wam.bench.common import publish
from wam.evaluate import EVAL_SEED

MEASURED_POLICIES = 10  # the bar: rank this many policies or more


@dataclass(frozen=True)
class JudgeBenchConfig:
    policies: tuple[str, ...] = ()
    """The policies to rank (at least two; the published validation ranks 10 or more)."""
    world: Path = Path("runs/judge/world/last")
    head: Path = Path("runs/judge/head")
    tasks: str | None = None
    """Default: the world model's tasks."""
    episodes: int = 20
    seed: int = EVAL_SEED
    max_steps: int = 200
    threshold: float = 0.5
    """The judge's decision threshold (`wam judge --threshold`). A bench of calibration policies runs at 0.95 or
    more, so that `wam judge calibrate` can read every threshold from its episodes (wam/judge/calibrate.py)."""
    workers: int = 2
    faults: Path | None = None
    """Validate the failure classifier (wam/judge/failure.py) on constructed failures of this checkpoint (one that
    serves the video and inverse-dynamics modes): its plan corrupted (a plan fault, --plan-fault) or its decoded x/y
    negated (a decoding fault). Default: the world model."""
    plan_fault: Literal["mirror", "freeze"] = "mirror"
    """The plan fault: the planned frames mirrored left-right, or frozen at the current frame (a plan of no motion)."""
    fault_episodes: int = 4
    """Episodes per task and fault."""
    fault_max_steps: int = 150
    out: Path = Path("runs/bench/judge")


def slug(i: int, spec: str) -> str:
    tail = "-".join(Path(spec.split("#")[0]).parts[-4:-1]) + "".join("-" + m for m in spec.split("#")[1:])
    return f"{i:02d}-" + re.sub(r"[^A-Za-z0-9._=-]+", "_", tail)[:80]


def _cached(path: Path, key: dict) -> dict | None:
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("bench_key") == key:
            return saved
    return None


def real_success(cfg: JudgeBenchConfig, spec, tasks: tuple[str, ...], out: Path) -> dict:
    from wam.evaluate import EvalConfig, evaluate

    key = {"policy": str(spec), "tasks": list(tasks), "episodes": cfg.episodes, "seed": cfg.seed, "max_steps": cfg.max_steps}
    done = _cached(out / "results.json", key)
    if done:
        return done
    policy = {"policy": spec.target} if spec.kind == "lerobot" else {"checkpoint": spec.path}
    summary = evaluate(EvalConfig(**policy, tasks=",".join(tasks), episodes=cfg.episodes, seed=cfg.seed,
                                  max_steps=cfg.max_steps, action_noise=spec.noise,
                                  swap_instructions=spec.instruction is not None, out=out, videos=0,
                                  workers=cfg.workers))
    summary["bench_key"] = key
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def imagined_success(cfg: JudgeBenchConfig, spec, tasks: tuple[str, ...], out: Path) -> dict:
    from wam.judge.judge import JudgeConfig, judge

    key = {"policy": str(spec), "tasks": list(tasks), "episodes": cfg.episodes, "seed": cfg.seed,
           "max_steps": cfg.max_steps, "world": str(cfg.world), "head": str(cfg.head), "threshold": cfg.threshold}
    done = _cached(out / "judge.json", key)
    if done:
        return done
    summary = judge(JudgeConfig(policies=(str(spec),), world=cfg.world, head=cfg.head, tasks=",".join(tasks),
                                episodes=cfg.episodes, seed=cfg.seed, max_steps=cfg.max_steps, threshold=cfg.threshold, videos=1,
                                out=out))
    summary["bench_key"] = key
    (out / "judge.json").write_text(json.dumps(summary, indent=2))
    return summary


def bench_judge(cfg: JudgeBenchConfig) -> dict:
    from wam.checkpoint import read_config
    from wam.envs.tasks import parse_tasks
    from wam.judge.policies import PolicySpec
    from wam.judge.rank import ranking_stats

    if len(cfg.policies) < 2:
        raise ValueError(f"ranking needs two policies or more (--policies A B ...), got {len(cfg.policies)}")
    specs = [PolicySpec.parse(p) for p in cfg.policies]
    served = [str(s) for s in specs if s.kind == "remote"]
    if served:
        raise ValueError(f"{served[0]}: the bench evaluates each policy for real in process; name the served "
                         f"checkpoint's folder instead (wam judge itself takes ws:// URLs)")
    tasks = parse_tasks(cfg.tasks) if cfg.tasks else tuple(read_config(cfg.world)["data"]["tasks"])
    out = Path(cfg.out)
    rows, pairs = [], {t: [] for t in tasks}  # pairs: per task, (real, imagined) success of each episode
    for i, spec in enumerate(specs):
        name = slug(i, str(spec))
        print(f"[{i + 1}/{len(specs)}] {spec}", flush=True)
        real = real_success(cfg, spec, tasks, out / "real" / name)
        imagined = imagined_success(cfg, spec, tasks, out / "imagined" / name)["policies"][0]
        rows.append({"policy": str(spec), "real": real["mean_success"], "imagined": imagined["mean_success"],
                     "tasks": {t: {"real": real["tasks"][t]["success_rate"], "imagined": imagined["tasks"][t]["success_rate"]}
                               for t in tasks},
                     "imagined_seconds": sum(imagined["tasks"][t]["seconds"] for t in tasks)})
        by_seed = {(e["task"], e["seed"]): e["success"] for e in real["episodes"]}
        for t in tasks:
            pairs[t] += [(by_seed[(t, e["seed"])], e["success"]) for e in imagined["tasks"][t]["episodes_detail"]]
    result = {"world": str(cfg.world), "head": str(cfg.head), "tasks": list(tasks), "episodes": cfg.episodes,
              "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1], "max_steps": cfg.max_steps, "policies": rows,
              **ranking_stats(rows, pairs)}
    if cfg.fault_episodes:
        result["failures"] = constructed_failures(cfg, tasks, out / "failures")
        result["failure_accuracy"] = result["failures"]["accuracy"]
    if len(rows) < MEASURED_POLICIES:
        result["note"] = f"only {len(rows)} policies: the validation's bar is {MEASURED_POLICIES} or more"
    out.mkdir(parents=True, exist_ok=True)
    return publish(out, "judge", result, markdown, plot)


def constructed_failures(cfg: JudgeBenchConfig, tasks: tuple[str, ...], out: Path) -> dict:
    """Diagnose the failed episodes of the two constructed faults; the fraction put in their fault's class. Each
    episode's verdict is appended to OUT/episodes.jsonl as it is found (a killed run resumes)."""
    from dataclasses import asdict

    from tqdm import tqdm

    from wam.envs import make_env
    from wam.judge.failure import SUCCEEDED, Faulty, diagnose
    from wam.safety import ActionGuard, Guarded

    source = cfg.faults or cfg.world
    out.mkdir(parents=True, exist_ok=True)
    log = out / "episodes.jsonl"
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
    done = [d for d in done if d.get("checkpoint") == str(source) and d.get("max_steps") == cfg.fault_max_steps
            and d.get("plan_fault", "mirror") == cfg.plan_fault]
    seen = {(d["fault"], d["task"], d["seed"]) for d in done}
    seeds = range(cfg.seed, cfg.seed + cfg.fault_episodes)
    todo = [(f, t, s) for f in ("plan", "action") for t in tasks for s in seeds if (f, t, s) not in seen]
    policies, envs = {}, {}
    for fault, task, seed in tqdm(todo, desc="constructed failures", unit="ep"):
        if fault not in policies:
            wam = Faulty.build(source, fault, plan_fault=cfg.plan_fault)
            policies[fault] = (Guarded(wam, ActionGuard.from_normalizer(wam.norm)), wam)
        guarded, wam = policies[fault]
        if task not in envs:
            envs[task] = make_env(f"metaworld:{task}", tuple(wam.cfg.cameras), wam.cfg.image_size)
        d = diagnose(guarded, wam, envs[task], task, seed, cfg.fault_max_steps, wam.sampler.execute,
                     evidence=out / f"{fault}-{task}-{seed}.png")
        row = {"fault": fault, "plan_fault": cfg.plan_fault, "checkpoint": str(source), "max_steps": cfg.fault_max_steps,
               **asdict(d)}
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
    for env in envs.values():
        env.close()
    failed = [d for d in done if d["verdict"] != SUCCEEDED]
    right = [d for d in failed if d["verdict"] == d["fault"]]
    by = {f: {v: sum(d["verdict"] == v for d in failed if d["fault"] == f) for v in ("plan", "action", "neither")}
          for f in ("plan", "action")}
    return {"checkpoint": str(source), "plan_fault": cfg.plan_fault, "episodes": len(done), "failures": len(failed),
            "right": len(right),
            "accuracy": len(right) / len(failed) if failed else float("nan"), "verdicts_by_fault": by,
            "succeeded_despite_fault": len(done) - len(failed)}


def markdown(result: dict) -> str:
    tasks = result["tasks"]
    lines = [f"| policy | real | imagined | " + " | ".join(f"{t} real / imagined" for t in tasks) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in tasks) + " |"]
    for r in sorted(result["policies"], key=lambda r: -r["real"]):
        lines.append(f"| `{r['policy']}` | {r['real']:.2f} | {r['imagined']:.2f} | " + " | ".join(
            f"{r['tasks'][t]['real']:.2f} / {r['tasks'][t]['imagined']:.2f}" for t in tasks) + " |")
    c = result["cells"]
    lines += ["", f"Over {len(result['policies'])} policies (mean success over {len(tasks)} tasks, {result['episodes']} "
              f"episodes each): Spearman {result['spearman']:.3f}, Pearson {result['pearson']:.3f}, MMRV "
              f"{result['mmrv']:.3f}, pairwise accuracy {result['pairwise_accuracy']:.3f}. Mean success real "
              f"{result['mean_real']:.2f}, imagined {result['mean_imagined']:.2f} (mean absolute error "
              f"{result['mean_abs_error']:.2f}).",
              f"Over the {c['policies']} (policy, task) cells: Spearman {c['spearman']:.3f}, Pearson {c['pearson']:.3f}, "
              f"MMRV {c['mmrv']:.3f}, pairwise accuracy {c['pairwise_accuracy']:.3f}."]
    if "per_episode" in result:
        e = result["per_episode"]["all"]
        show = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(f"Per episode (imagined against real, same policy, task and seed; {e['episodes']} episodes): agree "
                     f"{show(e['agree'])}; real successes imagined solved {show(e['successes_imagined_solved'])}, real "
                     f"failures imagined failed {show(e['failures_imagined_failed'])}; balanced accuracy "
                     f"{show(e['balanced_accuracy'])} (0.5 is chance).")
    if "failures" in result:
        f = result["failures"]
        lines += ["", f"Failure localisation on constructed failures: {f['right']} of {f['failures']} failed episodes put in "
                  f"their fault's class ({f['accuracy']:.0%}); verdicts by fault: {f['verdicts_by_fault']}; "
                  f"{f['succeeded_despite_fault']} episodes succeeded despite the fault."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    ax = axes[0]
    real = [r["real"] for r in result["policies"]]
    imag = [r["imagined"] for r in result["policies"]]
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    ax.scatter(real, imag, color="#2a6")
    for i, r in enumerate(result["policies"]):
        ax.annotate(str(i), (r["real"], r["imagined"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="real success (Meta-World)", ylabel="imagined success (world model)", xlim=(-0.03, 1.03),
           ylim=(-0.03, 1.03), title=f"{len(real)} policies: Spearman {result['spearman']:.2f}, MMRV {result['mmrv']:.3f}")
    ax = axes[1]
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
    for t in result["tasks"]:
        ax.scatter([r["tasks"][t]["real"] for r in result["policies"]], [r["tasks"][t]["imagined"] for r in result["policies"]],
                   label=t, alpha=0.7)
    ax.set(xlabel="real success", ylabel="imagined success", xlim=(-0.03, 1.03), ylim=(-0.03, 1.03),
           title=f"per task: Spearman {result['cells']['spearman']:.2f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
