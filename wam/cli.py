"""The `wam` command: collect, train, eval, imagine, serve, judge, bench, demo. Every flag is a field of a typed config (tyro), parsed once.

    wam collect --tasks reach-v3,drawer-close-v3 --episodes 50 --out runs/data/mine
    wam train --train.data runs/data/mine --train.out runs/mine          the default preset
    wam train --train.data ~/so100 --data.cameras front,wrist --data.val-fraction 0.1      any LeRobotDataset v3.0
    wam train tiny --recipe flash --train.data runs/data/mine --train.out runs/flash
    wam train --backbone cosmos --backbone-path DIR --train.out runs/cosmos      its default recipe: cosmos-policy
    wam eval runs/mine/last --episodes 20 --sampler.steps 4 --sampler.best-of 4
    wam eval runs/so100/last --data ~/so100 --episodes 40:50      offline: held-out demonstrations, no simulator
    wam imagine runs/mine/last --data runs/data/mine --episode 0
    wam serve runs/mine/last --port 8000          a websocket policy server on openpi's wire (wam.serve)
    wam eval runs/mine/last --remote ws://127.0.0.1:8000       the same evaluation through that server
    wam replay runs/rec runs/mine/last            replay what `wam serve --record runs/rec` saved; compare actions

    wam judge fit --data runs/judge/data --out runs/judge/head       a success head for a world model
    wam judge check-world --world runs/judge/world-model/last --data DIR   does the world model follow the actions?
    wam judge calibrate --bench runs/bench/judge-calibration --out CAL.json   per-task decision thresholds
    wam judge rescore --bench runs/bench/judge --calibration CAL.json  a bench's ranking at those thresholds
    wam judge runs/a/last runs/b/last#noise=0.5 --world runs/judge/world/last --head runs/judge/head

    wam bench recipes --out runs/bench/recipes
    wam bench latency --recipes runs/bench/recipes --out runs/bench/latency
    wam bench latency --cells runs/bench/generalise/cells/mt10   the VLA, hybrids and WAMs of a generalise condition
    wam bench memory                      estimated GPU memory to fine-tune Wan 1.3B / 14B (no GPU needed)
    wam bench serve [--checkpoint CKPT]   serving latency and throughput, 1-8 clients on loopback, batching on/off
    wam bench data [--quick]              the data path at scale: write, frame cache, DataLoader vs a training step, RSS
    wam bench peers --demo runs/demo      lerobot's ACT and Diffusion Policy vs our WAM at the demo's training time
    wam bench generalise [--splits S,..]  unseen tasks from video, few demos, shifts, MT10: every recipe vs action-only
    wam bench judge --policies P1 P2 ...  the world model's ranking of policies against their real success
    wam demo --out runs/demo

`wam train`'s presets (config.PRESETS) are subcommands; with none named the flags apply to the default preset
(the old `--preset NAME` is read as the subcommand NAME). `--recipe`, `--backbone` and `--backbone-path` are
aliases of `--model.recipe`, `--model.backbone` and `--model.backbone-path`: what a recipe or a backbone implies
(future frames, prediction targets, sampler steps) is resolved from the final config, whatever the flags' order.
`wam eval` and `wam imagine` start from the checkpoint's own sampler and change only the `--sampler.*` fields given;
`--backbone-path DIR` reads a pretrained backbone from DIR instead of the folder the checkpoint records."""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import tyro

from wam.backbones import BACKBONES
from wam.config import PRESETS, DataConfig, ModelConfig, SamplerConfig, TrainConfig
from wam.recipes import RECIPES


@dataclass(frozen=True)
class TrainCommand:
    model: ModelConfig
    train: TrainConfig
    sampler: SamplerConfig
    data: DataConfig = DataConfig()
    """How --train.data is read: cameras, feature keys, episodes, validation split, resize, normalisation."""


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    """Everything goes here: data/, train/ (the checkpoint is train/last), eval/ (report.html)."""
    preset: str = "default"
    episodes: int = 20
    """Evaluation episodes per task."""
    workers: int = 2


TRAIN_PRESETS: dict[str, TrainCommand] = {name: TrainCommand(p.model, p.train, p.sampler) for name, p in PRESETS.items()}
"""The named run configs `wam train` starts from, one subcommand each (config.PRESETS)."""


def _preset_as_subcommand(argv: list[str]) -> list[str]:
    """The old spelling `--preset NAME` (anywhere in argv, or --preset=NAME) as the subcommand NAME, put first:
    `wam train --recipe flash --preset tiny` is `wam train tiny --recipe flash`. Nothing else is read here."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return [argv[i + 1], *argv[:i], *argv[i + 2:]]
        if arg.startswith("--preset="):
            return [arg.split("=", 1)[1], *argv[:i], *argv[i + 1:]]
    return argv


def cmd_collect(argv: list[str]) -> None:
    from wam.data.collect import CollectConfig, collect

    cfg = tyro.cli(CollectConfig, args=argv, prog="wam collect")
    make_policy = None
    if cfg.policies:
        from wam.judge.policies import collector as make_policy
    print(f"dataset written to {collect(cfg, make_policy=make_policy)}")


def train_command(argv: list[str]) -> TrainCommand:
    """The run config `wam train ARGV` describes."""
    presets = tyro.extras.subcommand_type_from_defaults(
        TRAIN_PRESETS, descriptions={"tiny": "tiny model and data, for tests", "default": "the demo's settings"})
    # One parse: the preset is a subcommand (none named: default), every other flag a field over it; the recipe's
    # and backbone's consequences are resolved from the final config, whatever the order of the flags.
    cmd = tyro.cli(presets, args=_preset_as_subcommand(argv), default=TRAIN_PRESETS["default"], prog="wam train",
                   config=(tyro.conf.CascadeSubcommandArgs,),
                   description="Train a World-Action Model. The preset comes first as a subcommand (wam train tiny "
                               f"...; {', '.join(PRESETS)}; none named: default; the old --preset NAME works too), "
                               f"then any field: --recipe NAME ({', '.join(RECIPES)}; default: the backbone's), "
                               f"--backbone {'|'.join(BACKBONES)} with --backbone-path DIR (a diffusers pipeline "
                               "folder) for a pretrained video backbone.")
    return cmd


def cmd_train(argv: list[str]) -> None:
    from wam.train import train

    cmd = train_command(argv)
    print(f"checkpoint: {train(cmd.train, cmd.model, cmd.sampler, data=cmd.data)}")


def cmd_eval(argv: list[str]) -> None:
    from wam.evaluate import EvalConfig, evaluate, print_table

    if any(a == "--data" or a.startswith("--data=") for a in argv):  # offline, on demonstrations (no simulator)
        from wam.offline import OfflineConfig, evaluate_offline, print_offline

        cfg = tyro.cli(OfflineConfig, args=argv, prog="wam eval",
                       description="Offline evaluation on held-out demonstrations (wam/offline.py).")
        summary = evaluate_offline(cfg)
        print_offline(summary)
        print(f"\nreport: {(cfg.out or Path(cfg.checkpoint).parent / 'eval-offline') / 'report.html'}")
        return
    cfg = tyro.cli(EvalConfig, args=argv, prog="wam eval")
    summary = evaluate(cfg)
    print_table(summary)
    out = cfg.out or Path(summary["checkpoint"]).parent / "eval"
    print(f"\nreport: {out / 'report.html'}")


def cmd_imagine(argv: list[str]) -> None:
    from wam.imagine import ImagineConfig, imagine

    imagine(tyro.cli(ImagineConfig, args=argv, prog="wam imagine"))


def cmd_serve(argv: list[str]) -> None:
    from wam.serve.server import ServeConfig, serve

    serve(tyro.cli(ServeConfig, args=argv, prog="wam serve",
                   description="Serve a checkpoint to robots over openpi's websocket wire (README: Put it on a robot)."))


def cmd_replay(argv: list[str]) -> None:
    from wam.serve.replay import ReplayConfig, main

    main(tyro.cli(ReplayConfig, args=argv, prog="wam replay",
                  description="Replay what `wam serve --record DIR` saved through CHECKPOINT; report how far the actions differ."))


def cmd_judge(argv: list[str]) -> None:
    if argv[:1] == ["fit"]:
        from wam.judge.head import FitConfig, fit_head

        cfg = tyro.cli(FitConfig, args=argv[1:], prog="wam judge fit",
                       description="Fit the success head and state model a judge reads beside its world model.")
        metrics = fit_head(cfg)
        print(json.dumps(metrics, indent=2))
        print(f"head written to {cfg.out}")
        return
    if argv[:1] == ["calibrate"]:
        from wam.judge.calibrate import main_calibrate

        return main_calibrate(argv[1:])
    if argv[:1] == ["rescore"]:
        from wam.judge.calibrate import main_rescore

        return main_rescore(argv[1:])
    if argv[:1] == ["check-world"]:
        from wam.judge.sensitivity import CheckWorldConfig, main

        main(tyro.cli(CheckWorldConfig, args=argv[1:], prog="wam judge check-world",
                      description="Does the world model follow the actions? Its predictions under the recorded, "
                                  "another window's and negated actions against the real frames (wam/judge/sensitivity.py)."))
        return
    from wam.judge.judge import JudgeConfig, judge, print_table

    cfg = tyro.cli(JudgeConfig, args=argv, prog="wam judge",
                   description="Rank policies inside a learned world model (wam/judge). `wam judge fit` fits its head.")
    summary = judge(cfg)
    print_table(summary)
    print(f"\nreport: {Path(cfg.out) / 'report.html'}")


def cmd_bench(argv: list[str]) -> None:
    from wam.bench.data import DataBenchConfig, bench_data
    from wam.bench.generalise import GeneraliseBenchConfig, bench_generalise
    from wam.bench.judge import JudgeBenchConfig, bench_judge
    from wam.bench.latency import LatencyBenchConfig, bench_latency
    from wam.bench.memory import MemoryBenchConfig, bench_memory
    from wam.bench.peers import PeersBenchConfig, bench_peers
    from wam.bench.recipes import RecipesBenchConfig, bench_recipes
    from wam.bench.serve import ServeBenchConfig, bench_serve

    benches = {"recipes": (RecipesBenchConfig, bench_recipes), "latency": (LatencyBenchConfig, bench_latency),
               "memory": (MemoryBenchConfig, bench_memory), "serve": (ServeBenchConfig, bench_serve),
               "data": (DataBenchConfig, bench_data), "peers": (PeersBenchConfig, bench_peers),
               "generalise": (GeneraliseBenchConfig, bench_generalise), "judge": (JudgeBenchConfig, bench_judge)}
    if not argv or argv[0] not in benches:
        print(f"usage: wam bench {{{','.join(benches)}}} [--help]", file=sys.stderr)
        sys.exit(2)
    config, run = benches[argv[0]]
    run(tyro.cli(config, args=argv[1:], prog=f"wam bench {argv[0]}"))


def cmd_demo(argv: list[str]) -> None:
    from wam.demo import demo

    demo(tyro.cli(DemoConfig, args=argv, prog="wam demo"))


COMMANDS = {"collect": cmd_collect, "train": cmd_train, "eval": cmd_eval, "imagine": cmd_imagine, "serve": cmd_serve,
            "replay": cmd_replay, "judge": cmd_judge, "bench": cmd_bench, "demo": cmd_demo}


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError, RuntimeError)
"""What `wam` raises for a user's mistake (a missing folder, a bad flag value, an incomplete dataset, a missing
extra); shown as one line when raised by wam's own code."""


def user_error(e: BaseException) -> bool:
    """A mistake of the user's, explained by wam's own message: one of USER_ERRORS raised in the wam package.
    Anything else (a TypeError, or a ValueError from deep inside torch) is a bug and keeps its traceback."""
    tb = traceback.extract_tb(e.__traceback__)
    return isinstance(e, USER_ERRORS) and bool(tb) and Path(tb[-1].filename).resolve().is_relative_to(PACKAGE)


PACKAGE = Path(__file__).resolve().parent


def _config_errors_as_values():
    """While parsing, a config's own check (a ValueError in its __post_init__, such as `wam judge --episodes 0`) is
    raised as a ValueError here, to be shown as one line like any other, instead of tyro's boxed message. Uses
    tyro's parse-error hook (tyro._errors, private: present in tyro 1.0); without it tyro's box stays."""
    import contextlib

    import tyro

    errors = getattr(tyro, "_errors", None)
    if errors is None or not hasattr(errors, "on_parse_error") or not hasattr(errors, "InstantiationFailure"):
        return contextlib.nullcontext()

    def hook(event) -> None:
        if isinstance(event, errors.InstantiationFailure):
            flags = getattr(getattr(event.argument, "lowered", None), "name_or_flags", None) or ()
            raise ValueError(f"{'/'.join(flags)}: {event.message}" if flags else event.message)

    return errors.on_parse_error(hook)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("WAM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command {argv[0]!r}; valid commands are: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(__doc__)
        print("--debug (or WAM_DEBUG=1) shows the traceback of an error instead of its one line.")
        sys.exit(0 if not argv or argv[0] in ("-h", "--help") else 2)
    try:
        with _config_errors_as_values():
            COMMANDS[argv[0]](argv[1:])
    except Exception as e:
        if debug or not user_error(e):
            raise
        message = " ".join(str(e).split())
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
