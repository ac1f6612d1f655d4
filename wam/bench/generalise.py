"""`wam bench generalise`: where predicting the future pays. Every recipe and the action-only baseline trained on the
same data for the same steps, then scored closed loop on what they were not trained on.

    wam bench generalise --out runs/bench/generalise                  # every split, resumable
    wam bench generalise --splits unseen,few                          # some splits
    wam bench generalise --quick                                      # a few minutes, tiny numbers, for checks

Splits (the data of each is drawn from a pool of scripted demonstrations collected once, `pool_episodes` per task
from variation seeds 0 up; evaluation uses seeds from 100000 up, `episodes` per task):
- `unseen`: actions for the 10 MT10 tasks; for 5 other tasks (UNSEEN) only action-free video and its instruction
  (their episodes are read with --data.video-only-episodes: no actions, no robot state). Evaluated on the 5.
  The action-only baseline cannot use video: it is trained on the MT10 demonstrations alone (the lower bound).
- `unseen-avdc`: the same protocol on AVDC's 11 tasks (Ko et al. 2023) as the held-out ones, with actions for 10
  tasks outside that list (AVDC_TRAIN). AVDC itself trains on videos of those 11 tasks and acts through depth,
  object masks and scripted grasp/push primitives: the published numbers (BC 16.2%, UniPi 6.1%, AVDC 43.1%) stand
  beside ours with those differences.
- `few`: 5 and 10 demonstrations per task of FEW, each alone, with action-free video of the same tasks (episodes
  10..49 of each, no actions), and with action-free video of other tasks (FEW_OTHER, 40 episodes each).
- `shift`: the `in-distribution` checkpoints evaluated, without retraining, on SHIFT_TASKS under each named shift
  of wam/envs/shift.py (colours, lighting, camera pose, reworded instructions), drawn per episode seed.
- `in-distribution`: MT10, 20 held-out variations per task (Meta-World's multi-task protocol at our episode cap).

Beside success, every WAM cell's world model is scored open loop on held-out demonstrations of its labelled tasks
(the pool's last `world_episodes` per task, never trained on): PSNR and SSIM of the predicted frames at every
future offset against the copy-the-current-frame baseline (`wam eval --data`, wam/offline.py).

Cells: a cell is one training condition and one recipe (OUT/cells/CONDITION/RECIPE), trained once and evaluated on
each split that needs it (eval-NAME/). Training checkpoints every `ckpt_every` steps and resumes from its last
checkpoint; an evaluation whose results are written is reused: a killed bench continues where it stopped. Results:
OUT/generalise.json (one object per split: `unseen`, `few`, `shift`, `in-distribution`, `unseen-avdc`), OUT/generalise.md,
OUT/generalise.png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wam.backbones import VLM_RECIPES
from wam.config import DataConfig, Preset, preset, to_dict, with_recipe
from wam.data.layout import ENVIRONMENT_STATE_KEY, records
from wam.envs.tasks import BENCHMARKS
from wam.recipes import recipe

SPLITS = ("unseen", "unseen-avdc", "few", "shift", "in-distribution")
MT10 = BENCHMARKS["MT10"]
UNSEEN = ("button-press-v3", "coffee-button-v3", "door-close-v3", "handle-press-v3", "reach-wall-v3")
"""Held out of `unseen`: none is in MT10; each has a relative there (button-press-topdown, door-open, reach)."""
AVDC = ("door-open-v3", "door-close-v3", "basketball-v3", "shelf-place-v3", "button-press-v3", "button-press-topdown-v3",
        "faucet-close-v3", "faucet-open-v3", "handle-press-v3", "hammer-v3", "assembly-v3")
"""AVDC's Meta-World task list (Ko et al. 2023, "Learning to Act from Actionless Videos through Dense Correspondences")."""
AVDC_TRAIN = tuple(t for t in MT10 if t not in AVDC) + ("button-press-wall-v3", "handle-pull-v3")
"""The labelled tasks of `unseen-avdc`: MT10 less AVDC's tasks, and two more, to keep ten."""
FEW = ("button-press-topdown-v3", "drawer-close-v3", "reach-v3")
"""`wam demo`'s tasks."""
FEW_OTHER = ("door-open-v3", "drawer-open-v3", "window-open-v3", "window-close-v3")
"""The other tasks whose action-free video the `few` split adds (MT10 tasks outside FEW)."""
SHIFT_TASKS = ("button-press-topdown-v3", "drawer-close-v3", "window-close-v3")
SHIFTS = ("colour", "light", "camera", "instruction")
BASELINE = "action-only"
VIDEO_CONDITIONS = ("none", "same-video", "other-video")
LEVERS = {
    "imagenet": lambda p: dataclasses.replace(p, model=dataclasses.replace(p.model, image_encoder="efficientnet-lite0")),
    "nolabel": lambda p: dataclasses.replace(p, train=dataclasses.replace(p.train, label_at=None)),
    "motion": lambda p: dataclasses.replace(p, model=dataclasses.replace(p.model, motion_keypoints=16)),
    "balanced": lambda p: dataclasses.replace(p, train=dataclasses.replace(p.train, video_share=0.5)),
    "videofirst": lambda p: dataclasses.replace(p, train=dataclasses.replace(p.train, video_first=0.3)),
    "noenv": lambda p: dataclasses.replace(p, train=dataclasses.replace(p.train, environment_state_weight=0.0)),
    "pose": lambda p: dataclasses.replace(p, train=dataclasses.replace(p.train, pose_labels=True)),
}
"""Changes to a recipe's preset: a bench recipe `RECIPE@LEVER[@LEVER...]` is the recipe with each lever applied
(imagenet: context images encoded by EfficientNet-Lite0 from its ImageNet weights, models/efficientnet.py; nolabel:
a recipe that labels its action-free video (self-label) never does, so its video trains the frames only; motion: 16
motion keypoints per camera on the future frames, transformer.MotionKeypoints; balanced: half of each batch from the
action-free episodes and half from the demonstrations, whatever their numbers, --train.video-share 0.5; videofirst:
the first 30% of the steps train the frames only, --train.video-first 0.3; noenv: without the default
environment-state target, --train.environment-state-weight 0, as every cell before 2026-12-06 trained; pose: the
action-free video labelled before training through the arm's pose estimated from its frames, pose_label.py,
--train.pose-labels, which lets even a recipe without frames learn from the video). `seedN`
(lever_of) trains with seed N; ORACLE changes the data rather than the preset."""
ORACLE = "oracle"
"""The lever that trains on the split's action-free video *with* the actions the pool recorded for it (which every
other cell is denied): the ceiling any labeller of that video can reach with the same steps (train_cell)."""


def base_recipe(name: str) -> str:
    """`plan-then-act@imagenet` -> `plan-then-act`."""
    return name.partition("@")[0]


def configured(base: Preset, name: str) -> Preset:
    """The preset a bench recipe name (RECIPE, RECIPE@LEVER or RECIPE@LEVER@LEVER...) trains."""
    recipe_name, *levers = name.split("@")
    if recipe_name in VLM_RECIPES:  # the VLA and the hybrids run on the offline vision-language prefix
        p = dataclasses.replace(base, model=dataclasses.replace(base.model, backbone="lite", recipe=recipe_name))
    else:
        p = with_recipe(base, recipe_name)
    for lever in levers:
        p = lever_of(name, lever)(p)
    return p


def lever_of(name: str, lever: str):
    """The preset change a lever names: one of LEVERS, or seedN (the training seed N instead of the preset's: a
    second run of the same cell, to see how much of a difference is the seed's)."""
    if lever in LEVERS:
        return LEVERS[lever]
    if lever == ORACLE:  # the same preset; train_cell gives it the video's true actions
        return lambda p: p
    seed = seed_lever(lever)
    if seed is not None:
        return lambda p: dataclasses.replace(p, train=dataclasses.replace(p.train, seed=seed))
    raise ValueError(f"{name}: unknown lever {lever!r}; valid levers are: {', '.join(LEVERS)}, {ORACLE}, "
                     f"seedN (N a number)")


def seed_lever(lever: str) -> int | None:
    """N for a `seedN` lever, None for any other."""
    return int(lever[4:]) if lever.startswith("seed") and lever[4:].isdigit() else None


def predicts_video(name: str) -> bool:
    """Whether a bench recipe (RECIPE or RECIPE@LEVER) predicts frames, so can learn from action-free video."""
    return recipe(base_recipe(name)).predicts_video


def learns_from_video(name: str) -> bool:
    """Whether a bench recipe is given the split's action-free video: it predicts frames, or it has the video
    labelled through the arm's pose (the `pose` lever) or with its true actions (ORACLE); an action-only recipe with
    either is no longer the baseline."""
    return predicts_video(name) or bool({"pose", ORACLE} & set(name.split("@")[1:]))


@dataclass(frozen=True)
class GeneraliseBenchConfig:
    out: Path = Path("runs/bench/generalise")
    splits: str = ",".join(SPLITS)
    """Comma-separated splits to run: unseen, unseen-avdc, few, shift, in-distribution."""
    recipes: str = "action-only,video-then-idm,decoupled,plan-then-act,self-label@motion"
    """Recipes compared on the unseen, shift and in-distribution splits (the action-only baseline is included unless
    --no-baseline). RECIPE@LEVER[@LEVER...] is the recipe with LEVERS applied (imagenet: the EfficientNet-Lite0 image
    encoder; motion: motion keypoint tokens; nolabel: self-label without its labels; balanced: half of each batch
    from the action-free video; videofirst: frames only for the first 30% of the steps; noenv: without the
    environment-state target; pose: the video labelled through the arm's estimated pose before training; oracle:
    the video with its true actions, the ceiling of any labeller; seedN: training seed N)."""
    few_recipes: str = "plan-then-act,self-label@motion"
    """WAM recipes of the `few` split, each trained without video, with same-task video and with other-task video
    (beside the action-only baseline)."""
    preset: str = "default"
    steps: int = 1500
    """Training steps of every unseen / in-distribution cell: the same budget for every recipe."""
    few_steps: int = 600
    """Training steps of every `few` cell."""
    few_demos: str = "5,10"
    """Labelled demonstrations per task in the `few` split."""
    pool_episodes: int = 50
    """Scripted episodes per task in a pool, before the world-model hold-out."""
    world_episodes: int = 5
    """Episodes per task collected after the pool's, never trained on: the world model's open-loop test."""
    episodes: int = 20
    """Held-out evaluation episodes per task."""
    max_steps: int = 200
    """Steps per evaluation episode."""
    workers: int = 2
    baseline: bool = True
    """Train and evaluate the action-only baseline beside the recipes. False (--no-baseline): only the recipes named.
    Either way, every entry an earlier run wrote to OUT/generalise.json (same protocol) stays in the results unless
    this run measures the same name again; each entry's `run` says which run measured it."""
    quick: bool = False
    """A few minutes, for checks: the tiny preset, 2 labelled tasks and 1 held out, a handful of episodes. The numbers
    mean nothing."""

    def __post_init__(self):
        for s in self.split_names:
            if s not in SPLITS:
                raise ValueError(f"--splits: unknown split {s!r}; valid splits are: {', '.join(SPLITS)}")
        for r in self.recipe_names + self.few_recipe_names:
            recipe(base_recipe(r))
            configured(preset("tiny"), r)
        if min(self.steps, self.few_steps, self.pool_episodes, self.episodes, self.max_steps) < 1 or self.world_episodes < 0:
            raise ValueError("steps, few_steps, pool_episodes, episodes and max_steps must be >= 1, world_episodes >= 0")
        demos = self.demo_counts
        if not demos or min(demos) < 1 or max(demos) > self.pool_episodes // 2:
            raise ValueError(f"--few-demos {self.few_demos!r}: expected counts between 1 and half the pool "
                             f"({self.pool_episodes // 2}), comma-separated")

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.splits.split(",") if s.strip())

    @property
    def recipe_names(self) -> tuple[str, ...]:
        names = [r.strip() for r in self.recipes.split(",") if r.strip()]
        return tuple(dict.fromkeys([BASELINE, *names] if self.baseline else names))

    @property
    def few_recipe_names(self) -> tuple[str, ...]:
        names = [r.strip() for r in self.few_recipes.split(",") if r.strip()]
        return tuple(dict.fromkeys([BASELINE, *names] if self.baseline else names))

    @property
    def demo_counts(self) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in self.few_demos.split(",") if x.strip())
        except ValueError:
            return ()


@dataclass(frozen=True)
class Plan:
    """The tasks, sizes and budgets a run uses: the full bench's, or --quick's."""

    preset: Preset
    mt10: tuple[str, ...]
    unseen: tuple[str, ...]
    avdc: tuple[str, ...]
    avdc_train: tuple[str, ...]
    few: tuple[str, ...]
    few_other: tuple[str, ...]
    shift_tasks: tuple[str, ...]
    pool_episodes: int
    world_episodes: int
    demos: tuple[int, ...]
    steps: int
    few_steps: int
    episodes: int
    max_steps: int
    ckpt_every: int


def plan_of(cfg: GeneraliseBenchConfig) -> Plan:
    if cfg.quick:
        p = preset("tiny")
        p = dataclasses.replace(p, train=dataclasses.replace(p.train, log_every=10))
        return Plan(preset=p, mt10=("drawer-close-v3", "button-press-topdown-v3"), unseen=("drawer-open-v3",),
                    avdc=("door-open-v3",), avdc_train=("drawer-close-v3", "reach-v3"), few=("drawer-close-v3",),
                    few_other=("button-press-topdown-v3",),
                    shift_tasks=("drawer-close-v3",), pool_episodes=6, world_episodes=1, demos=(2, 3), steps=30,
                    few_steps=20, episodes=2, max_steps=30, ckpt_every=10)
    return Plan(preset=preset(cfg.preset), mt10=MT10, unseen=UNSEEN, avdc=AVDC, avdc_train=AVDC_TRAIN, few=FEW, few_other=FEW_OTHER,
                shift_tasks=SHIFT_TASKS, pool_episodes=cfg.pool_episodes, world_episodes=cfg.world_episodes,
                demos=cfg.demo_counts, steps=cfg.steps, few_steps=cfg.few_steps, episodes=cfg.episodes,
                max_steps=cfg.max_steps, ckpt_every=250)


# ====================================================================================== training conditions
@dataclass(frozen=True)
class Condition:
    """One training set drawn from a pool: the first `labelled` episodes of some tasks with their actions, and
    episodes [lo, hi) of others (or of the same tasks) as action-free video."""

    name: str
    pool: str
    labelled: dict[str, int]
    video: dict[str, tuple[int, int]] = field(default_factory=dict)
    steps: int = 0

    def episodes(self, pool: "Pool") -> tuple[list[int], list[int]]:
        """(every episode read, the ones read as video only), as dataset episode indices."""
        labelled = [e for t, n in self.labelled.items() for e in pool.of(t)[:n]]
        video = [e for t, (lo, hi) in self.video.items() for e in pool.of(t)[lo:hi]]
        if set(labelled) & set(video):
            raise ValueError(f"condition {self.name}: episodes both labelled and video-only")
        return sorted(labelled + video), sorted(video)

    def data_config(self, pool: "Pool") -> DataConfig:
        every, video = self.episodes(pool)
        return DataConfig(episodes=",".join(map(str, every)), video_only_episodes=",".join(map(str, video)) or None)


class Pool:
    """A collected dataset: scripted episodes of some tasks, `per_task` each (then the world-model hold-out)."""

    def __init__(self, root: Path, train_episodes: int):
        from wam.data.reader import read_episode_table

        table = read_episode_table(root)
        self.root = root
        self.by_task: dict[str, list[int]] = {}
        for e, t in zip(table["episode_index"], table["wam/env_task"]):
            self.by_task.setdefault(str(t), []).append(int(e))
        self.train_episodes = train_episodes
        self.seeds = dict(zip(table["episode_index"].astype(int), table["wam/seed"].astype(int)))

    def of(self, task: str) -> list[int]:
        """The task's trainable episodes (the world-model hold-out excluded), in collection order."""
        if task not in self.by_task:
            raise ValueError(f"pool {self.root} has no episodes of {task}; it holds {', '.join(self.by_task)}")
        return self.by_task[task][:self.train_episodes]

    def held_out(self, task: str) -> list[int]:
        """Episodes of the task that no condition trains on (the world model's open-loop test)."""
        return self.by_task[task][self.train_episodes:]


def pools_of(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Pool name -> its tasks."""
    return {"mt10": tuple(dict.fromkeys(plan.mt10 + plan.unseen)),
            "avdc": tuple(dict.fromkeys(plan.avdc_train + plan.avdc)),
            "few": tuple(dict.fromkeys(plan.few + plan.few_other))}


def conditions(plan: Plan) -> dict[str, Condition]:
    n = plan.pool_episodes
    out = {
        "mt10": Condition("mt10", "mt10", dict.fromkeys(plan.mt10, n), steps=plan.steps),
        "mt10+unseen-video": Condition("mt10+unseen-video", "mt10", dict.fromkeys(plan.mt10, n),
                                       {t: (0, n) for t in plan.unseen}, steps=plan.steps),
        "avdc-train": Condition("avdc-train", "avdc", dict.fromkeys(plan.avdc_train, n), steps=plan.steps),
        "avdc-train+avdc-video": Condition("avdc-train+avdc-video", "avdc", dict.fromkeys(plan.avdc_train, n),
                                           {t: (0, n) for t in plan.avdc}, steps=plan.steps),
    }
    lo = max(plan.demos)  # the same video for every demo count: the episodes after the largest count
    for k in plan.demos:
        out[f"few{k}"] = Condition(f"few{k}", "few", dict.fromkeys(plan.few, k), steps=plan.few_steps)
        out[f"few{k}+same-video"] = Condition(f"few{k}+same-video", "few", dict.fromkeys(plan.few, k),
                                              {t: (lo, n) for t in plan.few}, steps=plan.few_steps)
        out[f"few{k}+other-video"] = Condition(f"few{k}+other-video", "few", dict.fromkeys(plan.few, k),
                                               {t: (lo, n) for t in plan.few_other}, steps=plan.few_steps)
    return out


@dataclass(frozen=True)
class Entry:
    """One number of the bench: a recipe trained on a condition, evaluated on tasks (under a shift)."""

    split: str
    name: str  # the entry's name in its split: the recipe, or recipe/variant
    recipe: str
    condition: str
    tasks: tuple[str, ...]
    shift: str | None = None
    variant: str | None = None  # few: "5 demos", ...; shift: the shift's name


def entries(split: str, plan: Plan, recipes: tuple[str, ...], few_recipes: tuple[str, ...] = ()) -> list[Entry]:
    """The split's entries. A recipe that predicts no frames (the action-only baseline, with or without a lever)
    cannot use action-free video: it trains on the labelled episodes alone, unless the `pose` lever labels the video
    for it (learns_from_video). An entry on a condition without video trains the cell trained_as names."""
    conds = conditions(plan)

    def entry(name: str, recipe_name: str, cond: str, tasks: tuple[str, ...], **kw) -> Entry:
        return Entry(split, name, trained_as(recipe_name, conds[cond]), cond, tasks, **kw)

    if split == "in-distribution":
        return [entry(r, r, "mt10", plan.mt10) for r in recipes]
    if split == "unseen":
        return [entry(r, r, "mt10+unseen-video" if learns_from_video(r) else "mt10", plan.unseen) for r in recipes]
    if split == "unseen-avdc":
        return [entry(r, r, "avdc-train+avdc-video" if learns_from_video(r) else "avdc-train", plan.avdc) for r in recipes]
    if split == "shift":
        return [entry(r, r, "mt10", plan.shift_tasks, shift=s, variant=s) for r in recipes for s in (None, *SHIFTS)]
    if split == "few":
        out = []
        for k in plan.demos:
            for r in few_recipes:
                for v in VIDEO_CONDITIONS if learns_from_video(r) else ("none",):
                    cond = f"few{k}" if v == "none" else f"few{k}+{v}"
                    out.append(entry(r if v == "none" else f"{r}+{v}", r, cond, plan.few, variant=f"{k} demos"))
        return out
    raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")


VIDEO_LEVERS = ("pose", ORACLE)
"""Levers that change only how the action-free video is read: on a condition without video they change nothing."""


def trained_as(name: str, cond: Condition) -> str:
    """The cell a bench recipe trains on a condition: on one without action-free video, the recipe without its
    VIDEO_LEVERS (the same training, step for step), so `action-only@pose` on `few5` is the baseline's cell, trained
    and evaluated once."""
    if cond.video:
        return name
    recipe_name, *levers = name.split("@")
    return "@".join([recipe_name, *(lever for lever in levers if lever not in VIDEO_LEVERS)])


# ====================================================================================== running cells
def collect_pool(out: Path, name: str, tasks: tuple[str, ...], plan: Plan, workers: int) -> Pool:
    """The pool's dataset (collected once; reused when it holds the same tasks and counts)."""
    from wam.data.collect import CollectConfig, collect

    root = out / "pools" / name
    per_task = plan.pool_episodes + plan.world_episodes
    want = {"tasks": list(tasks), "per_task": per_task, "image_size": plan.preset.model.image_size,
            "noise": plan.preset.collect_noise, "random_start": plan.preset.collect_random_start}
    stamp = root.parent / f"{name}.json"
    # a pool collected before `wam collect` recorded the environment state is collected again (as collect_once does)
    if not (records(root, ENVIRONMENT_STATE_KEY) and stamp.exists() and json.loads(stamp.read_text()) == want):
        print(f"collecting pool {name}: {per_task} episodes of each of {len(tasks)} tasks", flush=True)
        collect(CollectConfig(out=root, tasks=",".join(tasks), episodes=per_task, image_size=plan.preset.model.image_size,
                              cameras=plan.preset.model.cameras or CollectConfig.cameras,
                              action_noise=plan.preset.collect_noise, random_start=plan.preset.collect_random_start,
                              workers=workers, overwrite=True))
        stamp.write_text(json.dumps(want))
    else:
        print(f"reusing pool {root}")
    return Pool(root, plan.pool_episodes)


def train_cell(out: Path, cond: Condition, name: str, plan: Plan, pool: Pool) -> dict:
    """Train one cell (or resume it from its last checkpoint); returns its record."""
    from wam.train import train

    cell = out / "cells" / cond.name / name
    p = configured(plan.preset, name)
    data = cond.data_config(pool)
    if ORACLE in name.split("@")[1:]:  # the video read with its recorded actions: labelled as well as it can be
        data = dataclasses.replace(data, video_only_episodes=None)
    train_cfg = dataclasses.replace(p.train, data=pool.root, out=cell / "train", steps=cond.steps,
                                    ckpt_every=plan.ckpt_every,  # cells on the same data share their pose labels
                                    pose_label_cache=str(out / "pose-labels") if p.train.pose_labels else None)
    record_file = cell / "cell.json"
    settings = {"recipe": name, "condition": dataclasses.asdict(cond), "train": to_dict(train_cfg), "data": to_dict(data),
                "model": to_dict(p.model)}
    settings = json.loads(json.dumps(settings))  # as cell.json gives them back (a condition's video ranges: lists)
    if record_file.exists():
        record = json.loads(record_file.read_text())
        if record["settings"] == settings:
            return record
        if (why := _stale(cell / "train", train_cfg)) is not None:  # trained another way: trained again, from scratch
            print(f"\n[train] {cond.name} / {name}: its checkpoint was trained with other settings ({why}): "
                  f"training it again", flush=True)
            train_cfg = dataclasses.replace(train_cfg, resume=False)
    print(f"\n[train] {cond.name} / {name}: {cond.steps} steps", flush=True)
    ckpt = train(train_cfg, p.model, p.sampler, data=data)
    rows = [json.loads(r) for r in (cell / "train" / "metrics.jsonl").read_text().splitlines() if r.strip()]
    record = {"settings": settings, "checkpoint": str(ckpt),  # seconds over every run that led to it (resumes too)
              "train_s": max(r.get("train_s", 0.0) for r in rows)}
    labels = sorted((f for f in (cell / "train" / "labels").glob("step-*.npz") if f.stem.removeprefix("step-").isdigit()),
                    key=lambda f: int(f.stem.removeprefix("step-")))  # not a save's leftover step-N.tmp.npz
    if labels:  # a recipe that labelled its video: how close the labels came to the actions the pool hides from it
        record["labels"] = labels_against_truth(labels[-1], pool, data)
    pose = cell / "train" / "labels" / "pose.npz"
    if pose.exists():  # the `pose` lever's labels, scored the same way
        record["labels"] = labels_against_truth(pose, pool, data)
    record_file.write_text(json.dumps(record, indent=2))
    return record


def _stale(out: Path, cfg) -> str | None:
    """Why the checkpoint in OUT cannot be resumed with training settings `cfg` (checkpoint.resume_problems, on the data
    it trained on), or None."""
    from wam import checkpoint

    found = checkpoint.latest(out / "last")
    if found is None:
        return None
    saved = checkpoint.read_config(found)
    problems = checkpoint.resume_problems(saved, cfg, frames=saved["data"]["frames"], episodes=saved["data"]["episodes"])
    return "; ".join(problems) or None


def labels_against_truth(path: Path, pool: Pool, data: DataConfig) -> dict:
    """The labels a cell's inverse dynamics (or its pose labeller: OUT/labels/pose.npz) gave its action-free episodes,
    against the actions the pool recorded for them (which the cell never read), overall and per held-out task (label.label_error; a task's R^2 against the
    variance over all labelled frames, since within one task a dimension may not vary)."""
    from wam import pose_label
    from wam.data.reader import read_dataset
    from wam.label import label_error, load_labels

    labels = pose_label.load(path).actions if path.name == "pose.npz" else load_labels(path)
    truth = read_dataset(pool.root, dataclasses.replace(data, video_only_episodes=None))  # the same frames, with actions
    if not labels:
        return {"all": label_error(labels, truth.action), "tasks": {}}
    task_of = {int(truth.episode_from[i]): truth.env_tasks[i] for i in range(len(truth.episode_ids))}
    end_of = {int(truth.episode_from[i]): int(truth.episode_to[i]) for i in range(len(truth.episode_ids))}
    by_task: dict[str, dict] = {}
    for lo, a in labels.items():
        if end_of.get(lo, -1) - lo != len(a):
            raise ValueError(f"{path}: labels from frame {lo} match no episode of {pool.root} read as the cell read it")
        by_task.setdefault(task_of[lo], {})[lo] = a
    overall = label_error(labels, truth.action)
    variance = np.concatenate([truth.action[lo:lo + len(a)] for lo, a in labels.items()]).var(0)
    return {"all": overall, "tasks": {t: label_error(ls, truth.action, variance) for t, ls in sorted(by_task.items())}}


def evaluate_cell(out: Path, entry: Entry, record: dict, plan: Plan, workers: int) -> dict:
    """Closed-loop evaluation of a trained cell on the entry's tasks (and shift); reused when written. The unshifted
    reference of `shift` is read from the cell's in-distribution evaluation when that has run (same seeds)."""
    from wam.evaluate import EvalConfig, evaluate

    cell = Path(record["checkpoint"]).parent.parent
    key = f"eval-{entry.split}" + (f"-{entry.shift or 'none'}" if entry.split == "shift" else "")
    settings = {"tasks": list(entry.tasks), "shift": entry.shift, "episodes": plan.episodes, "max_steps": plan.max_steps,
                "checkpoint": record["checkpoint"], "trained_s": record["train_s"]}
    written = [cell / key] + ([cell / "eval-in-distribution"] if entry.split == "shift" and entry.shift is None else [])
    for where in written:
        if (row := _written_row(where, settings)) is not None:
            return row
    where = cell / key
    print(f"\n[eval] {entry.condition} / {entry.recipe} on {len(entry.tasks)} tasks"
          + (f", shift {entry.shift}" if entry.shift else ""), flush=True)
    kw = {"shift": entry.shift} if entry.shift else {}
    summary = evaluate(EvalConfig(checkpoint=Path(record["checkpoint"]), tasks=",".join(entry.tasks), episodes=plan.episodes,
                                  max_steps=plan.max_steps, out=where, videos=1, workers=workers, **kw))
    row = {"settings": settings, "mean_success": summary["mean_success"], "median_ms": summary["median_ms_per_chunk"],
           "parameters": summary["parameters"],
           "tasks": {t: {k: r[k] for k in ("success_rate", "ci95", "successes", "episodes")}
                     for t, r in summary["tasks"].items()}}
    (where / "row.json").write_text(json.dumps(row, indent=2))
    return row


def _written_row(where: Path, settings: dict) -> dict | None:
    """The evaluation in WHERE, cut to the settings' tasks, if it ran with the same settings on at least those tasks."""
    if not (where / "row.json").exists():
        return None
    row = json.loads((where / "row.json").read_text())
    tasks = settings["tasks"]
    same = {k: v for k, v in row["settings"].items() if k != "tasks"} == {k: v for k, v in settings.items() if k != "tasks"}
    if not (same and set(tasks) <= set(row["tasks"])):
        return None
    sub = {t: row["tasks"][t] for t in tasks}
    return {**row, "tasks": sub, "mean_success": float(np.mean([r["success_rate"] for r in sub.values()]))}


def world_model_cell(record: dict, cond: Condition, pool: Pool) -> dict | None:
    """Open-loop frame prediction of a WAM cell on the pool's held-out episodes of its labelled tasks, against
    copy-the-current-frame (wam/offline.py); reused when written. None for a recipe that predicts no frames.
    Twice: the frames as the policy samples them (the recipe's video steps from noise), and the network's one-step
    prediction from pure noise (`mean`: with x-prediction, its estimate of the expected frame, what PSNR rewards)."""
    from wam.offline import OfflineConfig, evaluate_offline

    if not predicts_video(record["settings"]["recipe"]):
        return None
    held = sorted(e for t in cond.labelled for e in pool.held_out(t))
    if not held:
        return None
    cell = Path(record["checkpoint"]).parent.parent
    row_file = cell / "world-model" / "row.json"
    settings = {"episodes": held, "checkpoint": record["checkpoint"], "trained_s": record["train_s"]}
    if row_file.exists() and json.loads(row_file.read_text())["settings"] == settings:
        return json.loads(row_file.read_text())
    from wam.offline import SamplerOverrides

    row = {"settings": settings}
    r = recipe(base_recipe(record["settings"]["recipe"]))
    sampled = SamplerOverrides(video_steps=r.steps) if r.video_steps == 0 else SamplerOverrides()  # frames skipped by default
    for name, sampler in (("sampled", sampled), ("mean", SamplerOverrides(video_steps=1))):
        summary = evaluate_offline(OfflineConfig(checkpoint=Path(record["checkpoint"]), data=pool.root,
                                                 episodes=",".join(map(str, held)), out=cell / "world-model" / name,
                                                 plots=False, sampler=sampler), progress=False)
        row[name] = summary.get("frames")
        row.setdefault("action_mse", summary["action_mse"])
    row["frames"] = row["sampled"]
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=2))
    return row


# ====================================================================================== the bench
def bench_generalise(cfg: GeneraliseBenchConfig) -> dict:
    from wam.bench.common import command_flags, publish
    from wam.machine import matmul_gflops

    t0 = time.perf_counter()  # the run's wall time: pools, training and evaluation
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_of(cfg)
    conds = conditions(plan)
    order = sorted(cfg.split_names, key=lambda s: s == "shift")  # its unshifted reference comes from in-distribution
    todo = {s: entries(s, plan, cfg.recipe_names, cfg.few_recipe_names) for s in order}
    needed_pools = {conds[e.condition].pool for es in todo.values() for e in es}
    pools = {name: collect_pool(out, name, tasks, plan, cfg.workers) for name, tasks in pools_of(plan).items()
             if name in needed_pools}
    check_protocol(plan, conds, pools)
    result: dict = {"command": ("wam bench generalise " + command_flags(cfg)).strip(), "quick": cfg.quick, "preset": "tiny" if cfg.quick else cfg.preset,
                    "steps": plan.steps, "few_steps": plan.few_steps, "episodes_per_task": plan.episodes,
                    "max_steps": plan.max_steps, "pool_episodes_per_task": plan.pool_episodes}
    saved = out / "generalise.json"
    runs: list[dict] = []
    unfinished: list[str] = []  # splits of earlier runs that stopped before their last entry
    kept: dict[str, dict] = {}  # entries of earlier runs, by split: this run's entries of the same name replace them
    if saved.exists():  # the splits and entries of earlier runs stay, this run's replace theirs
        earlier = json.loads(saved.read_text())
        if all(earlier.get(k) == result[k] for k in ("quick", "preset", "steps", "few_steps", "episodes_per_task", "max_steps")):
            kept = {k: v for k, v in earlier.items() if k in SPLITS}
            result = {**kept, **result}
            runs = earlier.get("runs", [])
            unfinished = [s for s in earlier.get("incomplete", []) if s not in todo]
    this_run = {"command": result["command"], "splits": list(todo), "machine_gflops": round(matmul_gflops()), "bench_s": None}
    result["runs"] = runs + [this_run]  # each run's splits, wall time and machine speed (fp32 matmul GFLOP/s)
    records: dict[tuple[str, str], dict] = {}
    for n, (split, es) in enumerate(todo.items()):
        rows: dict[str, dict] = {}
        result["incomplete"] = unfinished + list(todo)[n:]  # until a split's last entry is in
        for e in es:
            cond = conds[e.condition]
            if (e.condition, e.recipe) not in records:
                records[(e.condition, e.recipe)] = train_cell(out, cond, e.recipe, plan, pools[cond.pool])
            record = records[(e.condition, e.recipe)]
            row = evaluate_cell(out, e, record, plan, cfg.workers)
            rows.setdefault(e.name, {"recipe": e.recipe, "condition": e.condition, "train_s": record["train_s"],
                                     "variants": {}})
            rows[e.name]["variants"][e.variant or "-"] = {"mean_success": row["mean_success"], "median_ms": row["median_ms"],
                                                          "tasks": row["tasks"], "shift": e.shift}
            if record.get("labels", {}).get("all", {}).get("frames"):  # not a cell with no video to label (MT10)
                rows[e.name].setdefault("labels", {})[e.variant or "-"] = record["labels"]["all"]
            if split in ("unseen", "unseen-avdc", "in-distribution") and "world_model" not in rows[e.name]:
                wm = world_model_cell(record, cond, pools[cond.pool])
                if wm is not None:
                    rows[e.name]["world_model"] = {"sampled": wm["sampled"], "mean": wm["mean"]}
            result[split] = {**kept.get(split, {}), **summarise(split, rows, run=len(runs))}
            this_run["bench_s"] = time.perf_counter() - t0
            (out / "generalise.json").write_text(json.dumps(result, indent=2))  # partial results as they come
    this_run["bench_s"] = time.perf_counter() - t0
    seeded = {split: over_seeds(result[split], plan.preset.train.seed) for split in SPLITS if split in result}
    result["over_seeds"] = {split: v for split, v in seeded.items() if v}
    result.pop("incomplete", None)
    if unfinished:
        result["incomplete"] = unfinished
    return publish(out, "generalise", result, markdown, plot)


def summarise(split: str, rows: dict[str, dict], run: int | None = None) -> dict:
    """A split's object: one entry per recipe (or recipe+video), with `mean_success` and per-task rates; a split
    with variants (few: demo counts; shift: shifts) averages over them and keeps each under `variants`. `run`: the
    index in `runs` of the run that measured them."""
    recipes = {}
    for name, r in rows.items():
        variants = r["variants"]
        scored = {k: v for k, v in variants.items() if split != "shift" or v["shift"] is not None}
        if not scored:  # a partial shift entry with only its unshifted reference evaluated so far
            continue
        tasks = sorted({t for v in scored.values() for t in v["tasks"]})
        entry = {"recipe": r["recipe"], "condition": r["condition"], "train_s": r["train_s"], "run": run,
                 "mean_success": float(np.mean([v["mean_success"] for v in scored.values()])),
                 "tasks": {t: float(np.mean([v["tasks"][t]["success_rate"] for v in scored.values()])) for t in tasks}}
        if len(variants) > 1 or split in ("few", "shift"):
            entry["variants"] = variants
        else:
            entry.update({"median_ms": next(iter(variants.values()))["median_ms"],
                          "ci95": {t: v["ci95"] for t, v in next(iter(variants.values()))["tasks"].items()}})
        if split == "shift" and None in [v["shift"] for v in variants.values()]:
            entry["unshifted_mean_success"] = next(v["mean_success"] for v in variants.values() if v["shift"] is None)
        if "world_model" in r:
            entry["world_model"] = r["world_model"]
        if "labels" in r:  # self-label: its labels of the action-free video against the hidden true actions
            entry["labels"] = r["labels"] if len(r["labels"]) > 1 else next(iter(r["labels"].values()))
        recipes[name] = entry
    return recipes


def seed_of(name: str) -> tuple[str, int | None]:
    """`plan-then-act@videofirst@seed1` -> (`plan-then-act@videofirst`, 1), `x@seed2+same-video` (a `few` entry) ->
    (`x+same-video`, 2); a name without a seedN lever -> (name, None): trained with the preset's seed."""
    recipe, plus, video = name.partition("+")
    recipe_name, *levers = recipe.split("@")
    seeds = [seed_lever(lv) for lv in levers if seed_lever(lv) is not None]
    rest = [lv for lv in levers if seed_lever(lv) is None]
    return "@".join([recipe_name, *rest]) + plus + video, (seeds[-1] if seeds else None)


def over_seeds(recipes: dict[str, dict], preset_seed: int = 0) -> dict[str, dict]:
    """A split's entries trained with more than one seed (RECIPE and RECIPE@seedN), grouped: per seed its mean
    success, and the mean over the seeds overall and per task. One seed's 20 episodes per task put an interval on the
    episodes' noise only; the training seed can move a mean by more (docs/generalise.md, run 24)."""
    groups: dict[str, dict[int, dict]] = {}
    for name, entry in recipes.items():
        base, seed = seed_of(name)
        groups.setdefault(base, {})[preset_seed if seed is None else seed] = entry
    out = {}
    for base, by_seed in groups.items():
        if len(by_seed) < 2:
            continue
        seeds = sorted(by_seed)
        tasks = sorted(set.intersection(*(set(by_seed[k]["tasks"]) for k in seeds)))
        means = [by_seed[k]["mean_success"] for k in seeds]
        out[base] = {"seeds": seeds, "per_seed": means, "mean_success": float(np.mean(means)),
                     "spread": float(max(means) - min(means)),
                     "tasks": {t: float(np.mean([by_seed[k]["tasks"][t] for k in seeds])) for t in tasks}}
    return out


def check_protocol(plan: Plan, conds: dict[str, Condition], pools: dict[str, Pool]) -> None:
    """What makes the splits honest, checked before anything trains: a held-out task never appears with actions,
    the world-model hold-out is never trained on, and no evaluation seed is a training seed."""
    from wam.evaluate import EVAL_SEED

    for cond in conds.values():
        if cond.pool not in pools:
            continue
        pool = pools[cond.pool]
        every, video = cond.episodes(pool)
        labelled = set(every) - set(video)
        if cond.name.startswith("mt10") and any(e in labelled for t in plan.unseen for e in pool.by_task.get(t, [])):
            raise AssertionError(f"{cond.name}: a held-out task of `unseen` has labelled episodes")
        if cond.name.startswith("avdc") and any(e in labelled for t in plan.avdc for e in pool.by_task.get(t, [])):
            raise AssertionError(f"{cond.name}: a task of `unseen-avdc` has labelled episodes")
        hold = {e for t in pool.by_task for e in pool.held_out(t)}
        if hold & set(every):
            raise AssertionError(f"{cond.name}: trains on the world model's held-out episodes")
        if max(pool.seeds[e] for e in every) >= EVAL_SEED:
            raise AssertionError(f"{cond.name}: a training seed reaches the evaluation seeds ({EVAL_SEED} on)")


# ====================================================================================== the report
SPLIT_TITLES = {"unseen": "Unseen tasks from action-free video", "unseen-avdc": "Unseen tasks: AVDC's 11 tasks",
                "few": "Few demonstrations", "shift": "Shift at evaluation, without retraining",
                "in-distribution": "In distribution (MT10)"}


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`: {result['steps']} training steps per cell ({result['few_steps']} in `few`), "
             f"{result['episodes_per_task']} held-out episodes per task, {result['max_steps']} steps each.", ""]
    for split in SPLITS:
        if split not in result:
            continue
        recipes = result[split]
        lines += [f"### {SPLIT_TITLES[split]} (`{split}`)", ""]
        if split in result.get("incomplete", []):
            lines += ["Incomplete: the run stopped before the split's last entry; these are the entries it finished.", ""]
        if split in ("few", "shift"):
            variants = list(dict.fromkeys(v for r in recipes.values() for v in r["variants"]))
            lines += ["| entry | " + " | ".join(variants) + " | mean |", "|" + " --- |" * (len(variants) + 2)]
            for name, r in recipes.items():
                cells = [f"{r['variants'][v]['mean_success']:.2f}" if v in r["variants"] else "" for v in variants]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | **{r['mean_success']:.2f}** |")
        else:
            tasks = list(next(iter(recipes.values()))["tasks"])
            lines += ["| recipe | " + " | ".join(t.removesuffix("-v3") for t in tasks) + " | mean | train min | ms/chunk |",
                      "|" + " --- |" * (len(tasks) + 4)]
            for name, r in recipes.items():
                cells = [f"{r['tasks'][t]:.2f}" for t in tasks]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | **{r['mean_success']:.2f}** | {r['train_s'] / 60:.1f} "
                             f"| {r.get('median_ms', float('nan')):.0f} |")
            wm = {n: r["world_model"] for n, r in recipes.items() if r.get("world_model")}
            if wm:
                lines += ["", "World model, open loop on held-out demonstrations of the labelled tasks (PSNR dB / SSIM "
                          "over every future offset; sampled: as the policy samples the frames; mean: the one-step "
                          "prediction; copy: the current frame held):", "",
                          "| recipe | PSNR sampled | PSNR mean | copy PSNR | SSIM sampled | SSIM mean | copy SSIM |",
                          "| --- | --- | --- | --- | --- | --- | --- |"]
                lines += [f"| {n} | {f['sampled']['psnr']:.2f} | {f['mean']['psnr']:.2f} | {f['mean']['copy_psnr']:.2f} | "
                          f"{f['sampled']['ssim']:.3f} | {f['mean']['ssim']:.3f} | {f['mean']['copy_ssim']:.3f} |"
                          for n, f in wm.items()]
        seeded = result.get("over_seeds", {}).get(split, {})
        if seeded:
            lines += ["", "Over training seeds (RECIPE and RECIPE@seedN: each seed's mean success, and their mean):", "",
                      "| recipe | seeds | per seed | mean over seeds | spread |", "| --- | --- | --- | --- | --- |"]
            lines += [f"| {n} | {', '.join(map(str, g['seeds']))} | {' / '.join(f'{m:.2f}' for m in g['per_seed'])} | "
                      f"**{g['mean_success']:.2f}** | {g['spread']:.2f} |" for n, g in seeded.items()]
        labelled = [(n, variant, l) for n, r in recipes.items() if r.get("labels")
                    for variant, l in (r["labels"].items() if "frames" not in r["labels"] else [("", r["labels"])])
                    if l["frames"]]  # not an entry written before empty labels (no video to label) were left out
        if labelled:
            lines += ["", "Labels the recipe's inverse dynamics gave its action-free video, against the true actions the "
                      "bench hid from it (R^2 over the action dimensions that vary: 0 is guessing their mean, 1 exact):", "",
                      "| entry | labelled frames | R^2 | MSE |", "| --- | --- | --- | --- |"]
            lines += [f"| {n}{' (' + variant + ')' if variant else ''} | {l['frames']} | {l['r2']:.2f} | {l['mse']:.3f} |"
                      for n, variant, l in labelled]
        lines.append("")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in SPLITS if s in result]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits), 3.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        recipes = result[split]
        names = list(recipes)
        ax.barh(range(len(names)), [recipes[n]["mean_success"] for n in names],
                color=["C7" if base_recipe(recipes[n]["recipe"]) == BASELINE and not learns_from_video(recipes[n]["recipe"])
                       else "C0" for n in names])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(split, fontsize=9)
        ax.set_xlabel("mean success")
    fig.suptitle("wam bench generalise" + (" (--quick: numbers mean nothing)" if result.get("quick") else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
