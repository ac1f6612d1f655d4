"""`wam bench recipes`: every recipe trained on the same demonstrations, seed and step budget, evaluated on the
same held-out seeds; plus the video-pretraining experiment (pretrain the frame stream on action-free episodes
of other tasks, fine-tune with a few labelled demos, compare with the same model trained from scratch).

Every stage writes under OUT and is reused when it is already there with the same settings, so an
interrupted benchmark continues where it stopped. Results: OUT/recipes.json, recipes.md, recipes.png.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wam.bench.common import collect_once, command_flags, publish, train_and_evaluate
from wam.data.collect import DEFAULT_TASKS
from wam.config import Preset, preset, with_recipe
from wam.recipes import OWN_POLICIES, recipe

PRETRAIN_TASKS = ("button-press-v3,button-press-wall-v3,button-press-topdown-wall-v3,coffee-button-v3,drawer-open-v3,"
                  "door-close-v3,reach-wall-v3,push-v3,window-close-v3,faucet-open-v3,plate-slide-v3,handle-press-v3")


@dataclass(frozen=True)
class RecipesBenchConfig:
    out: Path = Path("runs/bench/recipes")
    recipes: str = ",".join(OWN_POLICIES)
    """Comma-separated recipes to compare."""
    preset: str = "default"
    """Model, data and training settings shared by every recipe (only the recipe and the steps change)."""
    steps: int = 1200
    """Training steps per recipe: the same compute budget for all."""
    episodes: int = 20
    """Held-out evaluation episodes per task."""
    max_steps: int = 200
    """Steps per evaluation episode."""
    data: Path | None = None
    """Labelled demonstrations (default: collect the preset's into OUT/data)."""
    pretrain: bool = True
    """Also run the video-pretraining experiment."""
    pretrain_tasks: str = PRETRAIN_TASKS
    """Tasks whose action-free episodes pretrain the frame stream (none of the target tasks)."""
    pretrain_episodes: int = 30
    """Action-free episodes per pretraining task."""
    pretrain_steps: int = 1200
    finetune_demos: int = 10
    """Action-labelled demos per target task for fine-tuning (and for the from-scratch comparison)."""
    finetune_steps: int = 600
    workers: int = 2

    def __post_init__(self):
        for name in self.recipes.split(","):
            recipe(name)
        if min(self.steps, self.episodes, self.pretrain_steps, self.finetune_demos, self.finetune_steps) < 1:
            raise ValueError("steps, episodes, pretrain_steps, finetune_demos and finetune_steps must be >= 1")


def bench_recipes(cfg: RecipesBenchConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    base = preset(cfg.preset)
    data = cfg.data or collect_once(out / "data", base, DEFAULT_TASKS, base.collect_episodes, cfg.workers)
    names = cfg.recipes.split(",")
    rows = {}
    for i, name in enumerate(names):
        print(f"\n[{i + 1}/{len(names)}] recipe {name}: {recipe(name).follows}, {cfg.steps} steps", flush=True)
        rows[name] = train_and_evaluate(name, out / name, with_recipe(base, name), data, cfg.steps, cfg.episodes, cfg.workers,
                          max_steps=cfg.max_steps)
    result = {"command": ("wam bench recipes " + command_flags(cfg)).strip(), "preset": cfg.preset, "steps": cfg.steps,
              "max_steps": cfg.max_steps,
              "episodes_per_task": cfg.episodes, "data": str(data), "recipes": rows}
    if cfg.pretrain:
        result["pretraining"] = _pretraining(cfg, base, out / "pretraining")
    return publish(out, "recipes", result, markdown, plot)


def _pretraining(cfg: RecipesBenchConfig, base: Preset, out: Path) -> dict:
    print(f"\n[video pretraining] action-free episodes of {len(cfg.pretrain_tasks.split(','))} other tasks, "
          f"then {cfg.finetune_demos} labelled demos per target task", flush=True)
    p = with_recipe(base, "decoupled")
    video = collect_once(out / "data-video", base, cfg.pretrain_tasks, cfg.pretrain_episodes, cfg.workers, action_free=True)
    few = collect_once(out / "data-few", base, DEFAULT_TASKS, cfg.finetune_demos, cfg.workers)
    pre = train_and_evaluate("pretrain", out / "pretrain", p, video, cfg.pretrain_steps, cfg.episodes, cfg.workers, evaluate_it=False)
    rows = {
        "from_scratch": train_and_evaluate("from_scratch", out / "from-scratch", p, few, cfg.finetune_steps, cfg.episodes, cfg.workers,
                             max_steps=cfg.max_steps),
        "video_pretrained": train_and_evaluate("video_pretrained", out / "finetuned", p, few, cfg.finetune_steps, cfg.episodes,
                                 cfg.workers, init=Path(pre["checkpoint"]), max_steps=cfg.max_steps),
    }
    return {"recipe": "decoupled", "pretrain_tasks": cfg.pretrain_tasks.split(","),
            "pretrain_episodes_per_task": cfg.pretrain_episodes, "pretrain_steps": cfg.pretrain_steps,
            "pretrain_train_s": pre["train_s"], "finetune_demos_per_task": cfg.finetune_demos,
            "finetune_steps": cfg.finetune_steps, "runs": rows}


def _table(rows: dict, tasks: list[str], label: str, costs: bool = True) -> list[str]:
    head = f"| {label} | " + " | ".join(t.removesuffix("-v3") for t in tasks) + " | mean |"
    head += " ms/chunk | params | train min |" if costs else ""
    lines = [head, "|" + " --- |" * (len(tasks) + (5 if costs else 2))]
    for name, r in rows.items():
        cells = [f"{r['tasks'][t]['success_rate']:.2f} [{r['tasks'][t]['ci95'][0]:.2f}, {r['tasks'][t]['ci95'][1]:.2f}]"
                 for t in tasks]
        line = f"| {name} | " + " | ".join(cells) + f" | **{r['mean_success']:.2f}** |"
        if costs:
            line += f" {r['median_ms']:.0f} | {r['parameters'] / 1e6:.2f}M | {r['train_s'] / 60:.1f} |"
        lines.append(line)
    return lines


def markdown(result: dict) -> str:
    rows = result["recipes"]
    tasks = list(next(iter(rows.values()))["tasks"])
    lines = [f"Success on {result['episodes_per_task']} held-out episodes per task (95% Wilson intervals), "
             f"{result['steps']} training steps per recipe, preset `{result['preset']}`; ms/chunk is the median "
             f"wall-clock time of one action chunk in the closed-loop evaluation (1 thread per worker).", ""]
    lines += _table(rows, tasks, "recipe")
    if "pretraining" in result:
        pre = result["pretraining"]
        lines += ["", f"Video pretraining ({pre['recipe']}): {pre['pretrain_steps']} steps on action-free episodes "
                  f"({pre['pretrain_episodes_per_task']} per task) of {len(pre['pretrain_tasks'])} other tasks, then "
                  f"{pre['finetune_steps']} steps on {pre['finetune_demos_per_task']} labelled demos per target task; "
                  f"from scratch: the same {pre['finetune_steps']} steps on the same demos.", ""]
        lines += _table(pre["runs"], tasks, "start", costs=False)
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = dict(result["recipes"])
    if "pretraining" in result:
        rows.update({f"10 demos: {k.replace('_', ' ')}": v for k, v in result["pretraining"]["runs"].items()})
    names = list(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.5 * len(names) + 1.5), sharey=True)
    y = range(len(names))
    means = [rows[n]["mean_success"] for n in names]
    ax1.barh(y, means, color=["C0" if n in result["recipes"] else "C2" for n in names])
    for i, n in enumerate(names):  # per-task rates as dots
        ax1.scatter([r["success_rate"] for r in rows[n]["tasks"].values()], [i] * len(rows[n]["tasks"]), color="k", s=8, zorder=3)
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("mean success (dots: per task)")
    ax2.barh(y, [rows[n]["median_ms"] if n in result["recipes"] else 0 for n in names], color="C1")
    ax2.set_xlabel("ms per action chunk (median)")
    fig.suptitle(f"wam recipes, preset {result['preset']}, {result['steps']} steps each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
