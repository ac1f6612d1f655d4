"""What the benchmarks share (a benchmark never imports another): backbone sizes, and the cached collect and
train-then-evaluate steps that let an interrupted benchmark continue where it stopped."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from wam.config import Preset, to_dict
from wam.data.collect import CollectConfig, collect
from wam.data.layout import ENVIRONMENT_STATE_KEY, records


SIZES = {  # width, depth, heads, MLP hidden: the transformers of the real checkpoints (their config.json)
    "wan2.1-1.3b": (1536, 30, 12, 8960),
    "wan2.1-14b": (5120, 40, 40, 13824),
    "tiny": (32, 2, 2, 64),  # for tests
}


def publish(out: Path, name: str, result: dict, markdown, plot) -> dict:
    """Write a benchmark's OUT/NAME.json, NAME.md (markdown(result)) and NAME.png (plot(result, path)); print the table."""
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(markdown(result))
    plot(result, out / f"{name}.png")
    print("\n" + markdown(result))
    print(f"written: {out / f'{name}.json'}, {out / f'{name}.md'}, {out / f'{name}.png'}")
    return result


def command_flags(cfg) -> str:
    """The flags that set a benchmark config's fields away from their defaults, as a command line would."""
    default = type(cfg)()
    fields = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)]
    return " ".join(f"--{'' if getattr(cfg, n) else 'no-'}{n.replace('_', '-')}" if isinstance(getattr(cfg, n), bool)
                    else f"--{n.replace('_', '-')} {getattr(cfg, n)}" for n in fields)


def collect_once(out: Path, p: Preset, tasks: str, episodes: int, workers: int, action_free: bool = False) -> Path:
    if records(out, ENVIRONMENT_STATE_KEY):  # else written before collect recorded it: the default would train without
        info = json.loads((out / "meta/info.json").read_text())
        if info["total_episodes"] == episodes * len(tasks.split(",")):
            print(f"reusing {out}")
            return out
    return collect(CollectConfig(out=out, tasks=tasks, episodes=episodes,
                                 image_size=p.model.image_size, action_noise=p.collect_noise,
                                 random_start=p.collect_random_start, action_free=action_free, workers=workers,
                                 overwrite=True))


def train_and_evaluate(name: str, out: Path, p: Preset, data: Path, steps: int, episodes: int, workers: int, init: Path | None = None,
         evaluate_it: bool = True, max_steps: int = 200) -> dict:
    """Train (unless done) and evaluate (unless done) one configuration; returns its summary row."""
    from wam.evaluate import EvalConfig, evaluate
    from wam.train import train

    train_cfg = dataclasses.replace(p.train, data=data, out=out / "train", steps=steps, init=init)
    done = out / "row.json"
    if done.exists():
        row = json.loads(done.read_text())
        if row["train"] == to_dict(train_cfg) and row["episodes"] == episodes:
            print(f"reusing {out}")
            return row
    t = time.perf_counter()
    ckpt = train(train_cfg, p.model, p.sampler)
    train_s = time.perf_counter() - t
    row = {"name": name, "recipe": p.model.resolved().recipe, "train": to_dict(train_cfg), "train_s": train_s,
           "episodes": episodes, "checkpoint": str(ckpt)}
    if evaluate_it:
        summary = evaluate(EvalConfig(checkpoint=ckpt, episodes=episodes, out=out / "eval", videos=2, workers=workers,
                                      max_steps=max_steps))
        row.update({"mean_success": summary["mean_success"], "parameters": summary["parameters"],
                    "median_ms": summary["median_ms_per_chunk"], "p90_ms": summary["p90_ms_per_chunk"],
                    "sampler": summary["sampler"],
                    "tasks": {t: {k: r[k] for k in ("success_rate", "ci95", "successes", "episodes", "median_ms")}
                              for t, r in summary["tasks"].items()}})
    done.write_text(json.dumps(row, indent=2))
    return row


def tiny_checkpoint(out: Path, steps: int = 20) -> Path:
    """A tiny-preset checkpoint trained in about a minute on two tasks' scripted episodes (reused when there)."""
    from wam.config import preset
    from wam.train import train

    if (out / "train/last/config.json").exists():
        print(f"reusing {out / 'train/last'}")
        return out / "train/last"
    p = preset("tiny")
    data = collect_once(out / "data", p, "drawer-close-v3,button-press-topdown-v3", episodes=2, workers=1)
    return train(dataclasses.replace(p.train, data=data, out=out / "train", steps=steps), p.model, p.sampler, progress=False)
