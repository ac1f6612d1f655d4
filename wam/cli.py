"""The `wam` command: collect, train, eval, demo. Every flag is a field of a typed config (tyro).

    wam collect --tasks reach-v3,drawer-close-v3 --episodes 50 --out runs/data/mine
    wam train --preset default --train.data runs/data/mine --train.out runs/mine
    wam train --preset default --recipe flash --train.data runs/data/mine --train.out runs/flash
    wam eval runs/mine/last --episodes 20
    wam imagine runs/mine/last --data runs/data/mine --episode 0
    wam bench recipes --out runs/bench/recipes
    wam bench latency --recipes runs/bench/recipes --out runs/bench/latency
    wam bench memory                      estimated GPU memory to fine-tune Wan 1.3B / 14B (no GPU needed)
    wam demo --out runs/demo
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import tyro

from wam.config import ModelConfig, SamplerConfig, TrainConfig, preset, with_backbone, with_recipe
from wam.recipes import RECIPES


@dataclass(frozen=True)
class TrainCommand:
    model: ModelConfig
    train: TrainConfig
    sampler: SamplerConfig


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    """Everything goes here: data/, train/ (the checkpoint is train/last), eval/ (report.html)."""
    preset: str = "default"
    episodes: int = 20
    """Evaluation episodes per task."""
    workers: int = 2


def _pop(argv: list[str], flag: str, default: str | None) -> tuple[str | None, list[str]]:
    """Take `--flag VALUE` (or --flag=VALUE) out of argv: presets and recipes pick the defaults tyro shows."""
    name, rest, i = default, [], 0
    while i < len(argv):
        if argv[i] == flag and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
        elif argv[i].startswith(flag + "="):
            name, i = argv[i].split("=", 1)[1], i + 1
        else:
            rest.append(argv[i])
            i += 1
    return name, rest


def cmd_collect(argv: list[str]) -> None:
    from wam.data.collect import CollectConfig, collect

    cfg = tyro.cli(CollectConfig, args=argv, prog="wam collect")
    print(f"dataset written to {collect(cfg)}")


def cmd_train(argv: list[str]) -> None:
    from wam.train import train

    name, rest = _pop(argv, "--preset", "default")
    recipe_name, rest = _pop(rest, "--recipe", None)
    backbone, rest = _pop(rest, "--backbone", "wam")
    backbone_path, rest = _pop(rest, "--backbone-path", None)
    p = preset(name)
    if recipe_name is not None:
        p = with_recipe(p, recipe_name)
    p = with_backbone(p, backbone, backbone_path)
    cmd = tyro.cli(TrainCommand, args=rest, default=TrainCommand(p.model, p.train, p.sampler), prog="wam train",
                   description="Train a World-Action Model. --preset NAME picks the defaults (tiny, default); "
                               f"--recipe NAME the recipe ({', '.join(RECIPES)}; default decoupled); --backbone "
                               "wam|wan|cosmos with --backbone-path DIR (a diffusers pipeline folder) a pretrained "
                               "video backbone.")
    print(f"checkpoint: {train(cmd.train, cmd.model, cmd.sampler)}")


def cmd_eval(argv: list[str]) -> None:
    from wam.evaluate import EvalConfig, evaluate, print_table

    cfg = tyro.cli(EvalConfig, args=argv, prog="wam eval")
    summary = evaluate(cfg)
    print_table(summary)
    out = cfg.out or Path(cfg.checkpoint).parent / "eval"
    print(f"\nreport: {out / 'report.html'}")


def cmd_imagine(argv: list[str]) -> None:
    from wam.imagine import ImagineConfig, imagine

    imagine(tyro.cli(ImagineConfig, args=argv, prog="wam imagine"))


def cmd_bench(argv: list[str]) -> None:
    from wam.bench.latency import LatencyBenchConfig, bench_latency
    from wam.bench.memory import MemoryBenchConfig, bench_memory
    from wam.bench.recipes import RecipesBenchConfig, bench_recipes

    benches = {"recipes": (RecipesBenchConfig, bench_recipes), "latency": (LatencyBenchConfig, bench_latency),
               "memory": (MemoryBenchConfig, bench_memory)}
    if not argv or argv[0] not in benches:
        print(f"usage: wam bench {{{','.join(benches)}}} [--help]", file=sys.stderr)
        sys.exit(2)
    config, run = benches[argv[0]]
    run(tyro.cli(config, args=argv[1:], prog=f"wam bench {argv[0]}"))


def cmd_demo(argv: list[str]) -> None:
    from wam.demo import demo

    demo(tyro.cli(DemoConfig, args=argv, prog="wam demo"))


COMMANDS = {"collect": cmd_collect, "train": cmd_train, "eval": cmd_eval, "imagine": cmd_imagine, "bench": cmd_bench,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command {argv[0]!r}; valid commands are: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(__doc__)
        sys.exit(0 if not argv or argv[0] in ("-h", "--help") else 2)
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
