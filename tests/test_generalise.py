"""`wam bench generalise`: each split's construction is honest (held-out tasks never appear with actions or state,
evaluation seeds never meet training seeds), a killed cell resumes, and the world-model metric meets its closed form."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from wam.bench.generalise import (BASELINE, GeneraliseBenchConfig, Pool, check_protocol, collect_pool, conditions,
                                  configured, entries, markdown, over_seeds, plan_of, seed_of, summarise, train_cell)
from wam.evaluate import EVAL_SEED

QUICK = GeneraliseBenchConfig(quick=True, workers=1)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Pool:
    plan = plan_of(QUICK)
    out = tmp_path_factory.mktemp("generalise")
    return collect_pool(out, "mt10", ("drawer-close-v3", "button-press-topdown-v3", "drawer-open-v3"), plan, workers=1)


def pools(pool: Pool) -> dict[str, Pool]:
    """The quick plan's mt10 and few pools hold the same three tasks: one dataset stands for both."""
    return {"mt10": pool, "few": pool}


def test_unseen_tasks_are_read_as_video_only_without_actions_or_state(pool):
    from wam.data.reader import read_dataset, usable_stats

    plan = plan_of(QUICK)
    cond = conditions(plan)["mt10+unseen-video"]
    rec = read_dataset(pool.root, cond.data_config(pool))
    held = np.array([t in plan.unseen for t in rec.env_tasks])
    assert held.any() and (~held).any()
    assert not rec.has_actions[held].any() and not rec.has_state[held].any()
    assert rec.has_actions[~held].all() and rec.has_state[~held].all()
    frames = np.repeat(held, rec.episode_to - rec.episode_from)
    assert (rec.action[frames] == 0).all() and (rec.state[frames] == 0).all()
    assert (rec.action[~frames] != 0).any() and (rec.state[~frames] != 0).all()
    # the normaliser never sees the held-out episodes' actions or states
    stats = usable_stats(rec, rec.data)
    assert stats["action"]["count"] == [int((~frames).sum())] and stats["observation.state"]["count"] == [int((~frames).sum())]
    # and the model is told the state is absent
    from wam.data.frames import open_frames
    from wam.data.transforms import Normalizer
    from wam.data.windows import Windows

    m = plan.preset.model
    m = m.for_data(rec.camera_names, rec.state.shape[1], rec.action.shape[1]).resolved()
    rec, store = open_frames(rec, m.image_size, progress=False)
    norm = Normalizer.from_stats(stats, "observation.state", "action", "mean_std", "min_max")
    batch = Windows(rec, store, m, norm, torch.zeros(len(rec.instructions), m.text_dim)).get(np.arange(len(frames)))
    assert (batch.context.state_known.numpy() == (~frames)).all() and (batch.context.state[torch.from_numpy(frames)] == 0).all()
    assert (batch.has_actions.numpy() == ~frames).all()


def test_every_split_is_built_from_disjoint_labelled_and_held_out_episodes(pool):
    plan = plan_of(QUICK)
    conds = conditions(plan)
    check_protocol(plan, conds, pools(pool))
    for name in ("few2", "few2+same-video", "few3+other-video"):
        every, video = conds[name].episodes(pool)
        labelled = set(every) - set(video)
        assert len(labelled) == int(name[3]) * len(plan.few)
        assert not labelled & set(video)
    same = set(conds["few3+same-video"].episodes(pool)[1])
    assert same == set(conds["few2+same-video"].episodes(pool)[1])  # the same video for every demo count
    assert all(pool.seeds[e] < EVAL_SEED for e in pool.seeds)
    # a condition that labels a held-out task is refused before anything trains
    bad = dict(conds)
    bad["mt10+unseen-video"] = conds["mt10"].__class__("mt10+unseen-video", "mt10",
                                                       {**conds["mt10"].labelled, plan.unseen[0]: 2}, steps=1)
    with pytest.raises(AssertionError, match="held-out task"):
        check_protocol(plan, bad, pools(pool))
    # the baseline of `unseen` is trained without the video it cannot use; every WAM with it
    es = entries("unseen", plan, (BASELINE, "decoupled"))
    assert {(e.recipe, e.condition) for e in es} == {(BASELINE, "mt10"), ("decoupled", "mt10+unseen-video")}
    assert all(set(e.tasks) == set(plan.unseen) for e in es)
    shifted = entries("shift", plan, (BASELINE,))
    assert [e.shift for e in shifted] == [None, "colour", "light", "camera", "instruction"]
    with pytest.raises(ValueError, match="unknown split"):
        GeneraliseBenchConfig(splits="unseen,bogus")


def test_a_lever_is_a_recipe_with_one_change_and_keeps_the_baselines_protocol():
    plan = plan_of(QUICK)
    names = (BASELINE, "action-only@imagenet", "plan-then-act", "plan-then-act@imagenet")
    es = entries("unseen", plan, names)
    assert [(e.name, e.condition) for e in es] == [(BASELINE, "mt10"), ("action-only@imagenet", "mt10"),
                                                   ("plan-then-act", "mt10+unseen-video"),
                                                   ("plan-then-act@imagenet", "mt10+unseen-video")]
    few = entries("few", plan, (), ("action-only@imagenet", "plan-then-act@imagenet"))
    assert {e.condition for e in few if e.recipe == "action-only@imagenet"} == {f"few{k}" for k in plan.demos}
    p, q = configured(plan.preset, "plan-then-act"), configured(plan.preset, "plan-then-act@imagenet")
    assert (p.model.image_encoder, q.model.image_encoder) == ("conv", "efficientnet-lite0")
    assert dataclasses.replace(q.model, image_encoder="conv") == p.model  # one change, nothing else
    both = configured(plan.preset, "self-label@motion@nolabel")
    assert both.model.motion_keypoints == 16 and both.train.label_at is None
    r = configured(plan.preset, "self-label@nolabel")
    assert r.train.label_at is None and dataclasses.replace(r.train, label_at=0.5) == configured(plan.preset, "self-label").train
    b = configured(plan.preset, "self-label@balanced")
    assert b.train.video_share == 0.5 and dataclasses.replace(b.train, video_share=None) == configured(plan.preset, "self-label").train
    v = configured(plan.preset, "plan-then-act@videofirst")
    assert v.train.video_first == 0.3 and dataclasses.replace(v.train, video_first=None) == p.train
    s = configured(plan.preset, "plan-then-act@videofirst@seed1")
    assert s.train.seed == 1 != v.train.seed and dataclasses.replace(s.train, seed=v.train.seed) == v.train
    assert s.model == v.model
    n = configured(plan.preset, "action-only@noenv")  # the default's environment-state target off
    assert p.train.environment_state_weight is None and n.train.environment_state_weight == 0.0
    assert dataclasses.replace(n.train, environment_state_weight=None) == configured(plan.preset, "action-only").train
    # pose: the video labelled through the arm's pose; a recipe without frames is then given the video too
    o = configured(plan.preset, "action-only@pose")
    assert o.train.pose_labels and dataclasses.replace(o.train, pose_labels=False) == configured(plan.preset, BASELINE).train
    assert [(e.name, e.condition) for e in entries("unseen", plan, (BASELINE, "action-only@pose", "hybrid-foresight@pose"))] \
        == [(BASELINE, "mt10"), ("action-only@pose", "mt10+unseen-video"), ("hybrid-foresight@pose", "mt10+unseen-video")]
    assert {e.condition for e in entries("few", plan, (), ("action-only@pose",))} == {
        f"few{k}{v}" for k in plan.demos for v in ("", "+same-video", "+other-video")}
    for bad in ("bogus", "seed", "seedx"):
        with pytest.raises(ValueError, match=f"unknown lever '{bad}'"):
            GeneraliseBenchConfig(recipes=f"plan-then-act@{bad}")


def test_entries_trained_with_other_seeds_are_grouped_with_their_recipe():
    assert seed_of("plan-then-act@videofirst@seed1") == ("plan-then-act@videofirst", 1)
    assert seed_of("self-label@seed2@motion+same-video") == ("self-label@motion+same-video", 2)
    assert seed_of("action-only") == ("action-only", None)

    def entry(mean, a, b):
        return {"mean_success": mean, "tasks": {"a": a, "b": b}}

    recipes = {"action-only": entry(0.2, 0.0, 0.4), "plan-then-act": entry(0.4, 0.6, 0.2),
               "action-only@seed1": entry(0.3, 0.2, 0.4), "action-only@seed2": entry(0.1, 0.0, 0.2),
               "plan-then-act@imagenet": entry(0.5, 0.5, 0.5)}
    seeded = over_seeds(recipes)
    assert set(seeded) == {"action-only"}  # a recipe run with one seed has no spread to show
    g = seeded["action-only"]
    assert g["seeds"] == [0, 1, 2] and g["per_seed"] == [0.2, 0.3, 0.1]
    assert g["mean_success"] == pytest.approx(0.2) and g["spread"] == pytest.approx(0.2)
    assert g["tasks"] == pytest.approx({"a": 0.2 / 3, "b": 1.0 / 3})
    assert over_seeds(recipes, preset_seed=1)["action-only"]["seeds"] == [1, 2]  # @seed1 is the preset's own run again
    result = {"command": "wam bench generalise", "steps": 10, "few_steps": 5, "episodes_per_task": 2, "max_steps": 5,
              "unseen": {n: {**r, "train_s": 60.0} for n, r in recipes.items()}, "over_seeds": {"unseen": seeded}}
    md = markdown(result)
    assert "Over training seeds" in md and "| action-only | 0, 1, 2 | 0.20 / 0.30 / 0.10 | **0.20** | 0.20 |" in md
    assert "Over training seeds" not in markdown({**result, "over_seeds": {}})


def test_a_killed_cell_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL the bench in the middle of a cell's training; the rerun resumes from the cell's checkpoint and finishes.

    The quick plan's 30 steps take a fifth of a second here, faster than the poll below can catch a checkpoint, so the
    bench runs with the quick plan at 300 steps (checkpoints still every 10): the kill lands long before the end."""
    steps = 300
    patched = ("import dataclasses, sys; import wam.bench.generalise as g; plan = g.plan_of; "
               f"g.plan_of = lambda cfg: dataclasses.replace(plan(cfg), steps={steps}); "
               "sys.argv[0] = 'wam'; from wam.cli import main; main()")
    cmd = [sys.executable, "-c", patched, "bench", "generalise", "--quick", "--splits", "in-distribution",
           "--recipes", "action-only", "--workers", "1", "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ckpt = tmp_path / "cells/mt10/action-only/train/last/config.json"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert ckpt.exists(), proc.stdout.read().decode()[-2000:]
    killed_at = json.loads(ckpt.read_text())["step"]
    assert killed_at < steps and not (tmp_path / "cells/mt10/action-only/cell.json").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"at step {killed_at}" in again.stdout  # "resumed from ... at step N"
    result = json.loads((tmp_path / "generalise.json").read_text())
    entry = result["in-distribution"][BASELINE]
    assert 0 <= entry["mean_success"] <= 1 and set(entry["tasks"]) == set(plan_of(QUICK).mt10)
    assert json.loads((tmp_path / "cells/mt10/action-only/train/last/config.json").read_text())["step"] == steps
    rows = [json.loads(r) for r in (tmp_path / "cells/mt10/action-only/train/metrics.jsonl").read_text().splitlines()]
    times = [r["train_s"] for r in rows if "train_s" in r]  # the killed run's seconds carry over into the resumed run's
    assert len(times) == steps // 10 and all(a < b for a, b in zip(times, times[1:]))
    assert entry["train_s"] == times[-1]
    assert result["runs"][-1]["splits"] == ["in-distribution"] and result["runs"][-1]["bench_s"] > 0
    assert "incomplete" not in result  # the split's last entry is in
    assert "Incomplete" in markdown({**result, "incomplete": ["in-distribution"]}) and "Incomplete" not in markdown(result)
    # a later run of another recipe without the baseline keeps the earlier run's entries beside its own
    more = subprocess.run(cmd[:-5] + ["self-label", "--no-baseline", "--workers", "1", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stdout[-2000:] + more.stderr[-2000:]
    assert [json.loads(r) for r in (tmp_path / "cells/mt10/action-only/train/metrics.jsonl").read_text().splitlines()] == rows
    later = json.loads((tmp_path / "generalise.json").read_text())
    assert list(later["in-distribution"]) == [BASELINE, "self-label"] and len(later["runs"]) == 2
    assert later["in-distribution"][BASELINE] == entry and entry["run"] == 0
    assert later["in-distribution"]["self-label"]["run"] == 1


def test_the_world_model_metric_meets_its_closed_form_on_identical_and_offset_frames():
    from wam.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8)
    assert psnr(frames, frames) == 99.0 and np.allclose(ssim(frames, frames), 1.0)
    d = 5
    shifted = np.clip(frames.astype(int) + d, 0, 255).astype(np.uint8)
    base = np.full_like(frames, 100)
    assert abs(psnr(base, base + d) - 10 * np.log10(255**2 / d**2)) < 1e-9
    assert psnr(frames, shifted) > 10 * np.log10(255**2 / d**2)  # clipping only shrinks the error
    assert (ssim(frames, shifted) < 1).all()


def test_an_untrained_residual_world_model_is_the_copy_baseline(pool, tmp_path):
    """With video_residual the frame head starts at zero: the predicted frames are the current frame, so the offline
    world-model metric gives the copy-the-current-frame scores (up to uint8 rounding)."""
    import dataclasses

    from wam.config import preset, with_recipe
    from wam.offline import OfflineConfig, evaluate_offline
    from wam.train import train

    p = with_recipe(preset("tiny"), "decoupled")
    ckpt = train(dataclasses.replace(p.train, data=pool.root, out=tmp_path / "t", steps=1, lr=0.0, warmup=1), p.model,
                 p.sampler, progress=False)
    summary = evaluate_offline(OfflineConfig(checkpoint=ckpt, data=pool.root, episodes="0", out=tmp_path / "o",
                                             plots=False), progress=False)
    f = summary["frames"]
    assert abs(f["psnr"] - f["copy_psnr"]) < 0.3 and abs(f["ssim"] - f["copy_ssim"]) < 0.02
    legacy = dataclasses.replace(p.model, video_residual=False)
    ckpt = train(dataclasses.replace(p.train, data=pool.root, out=tmp_path / "l", steps=1, lr=0.0, warmup=1), legacy,
                 p.sampler, progress=False)
    old = evaluate_offline(OfflineConfig(checkpoint=ckpt, data=pool.root, episodes="0", out=tmp_path / "lo", plots=False),
                           progress=False)["frames"]
    assert old["psnr"] < f["copy_psnr"] - 3  # a zero output is a grey frame, far from the copy


@pytest.mark.parametrize("name", ["self-label", "action-only@pose"])
def test_a_labelling_cell_reports_its_labels_against_the_actions_it_never_read(pool, tmp_path, name):
    plan = plan_of(QUICK)
    cond = conditions(plan)["mt10+unseen-video"]
    record = train_cell(tmp_path, cond, name, plan, pool)
    labels = record["labels"]
    from wam.data.reader import read_episode_table

    table = read_episode_table(pool.root)
    length = dict(zip(table["episode_index"].astype(int), table["length"].astype(int)))
    video = [e for t, (lo, hi) in cond.video.items() for e in pool.of(t)[lo:hi]]  # what the cell read as video
    assert set(labels["tasks"]) == set(plan.unseen)
    assert labels["all"]["frames"] == sum(length[e] for e in video)  # every frame of every one, and nothing else
    assert np.isfinite(labels["all"]["mse"]) and labels["all"]["mse"] > 0 and labels["all"]["r2"] < 1


def test_an_oracle_cell_trains_on_the_video_with_the_actions_every_other_cell_is_denied(pool, tmp_path):
    """`@oracle`: the same preset, given the split's video with its recorded actions (the ceiling of any labeller)."""
    plan = plan_of(QUICK)
    assert configured(plan.preset, "action-only@oracle") == configured(plan.preset, BASELINE)
    assert [(e.name, e.condition) for e in entries("unseen", plan, (BASELINE, "action-only@oracle"))] \
        == [(BASELINE, "mt10"), ("action-only@oracle", "mt10+unseen-video")]
    assert {e.condition for e in entries("few", plan, (), ("action-only@oracle",))} == {
        f"few{k}{v}" for k in plan.demos for v in ("", "+same-video", "+other-video")}
    cond = conditions(plan)["mt10+unseen-video"]
    every, video = cond.episodes(pool)
    seen = {}
    for name in ("action-only@oracle", "action-only@pose"):
        record = train_cell(tmp_path, cond, name, plan, pool)
        seen[name] = json.loads((tmp_path / "cells" / cond.name / name / "train" / "last" / "config.json").read_text())["data"]
        assert record["settings"]["data"]["episodes"] == ",".join(map(str, every))
    assert seen["action-only@oracle"]["episodes"] == seen["action-only@pose"]["episodes"] == len(every)
    assert seen["action-only@oracle"]["action_free_episodes"] == 0 < len(video) == seen["action-only@pose"]["action_free_episodes"]
    assert "labels" not in train_cell(tmp_path, cond, "action-only@oracle", plan, pool)  # nothing was labelled


def test_a_video_lever_on_a_condition_without_video_trains_the_cell_without_it_once():
    """`pose` and `oracle` only change how the video is read: `action-only@pose` on `few5` (or on MT10) is the
    baseline's cell, not a second run of it; on a condition with video the lever stays, and other levers always do."""
    plan = plan_of(QUICK)
    few = entries("few", plan, (), (BASELINE, "action-only@pose@seed1", "hybrid-foresight@oracle"))
    trained = {(e.name, e.condition): e.recipe for e in few}
    k = plan.demos[0]
    assert trained[(BASELINE, f"few{k}")] == trained[("action-only@pose@seed1", f"few{k}")].replace("@seed1", "")
    assert trained[("action-only@pose@seed1", f"few{k}")] == "action-only@seed1"
    assert trained[("action-only@pose@seed1+same-video", f"few{k}+same-video")] == "action-only@pose@seed1"
    assert trained[("hybrid-foresight@oracle", f"few{k}")] == "hybrid-foresight"
    assert trained[("hybrid-foresight@oracle+other-video", f"few{k}+other-video")] == "hybrid-foresight@oracle"
    assert [e.recipe for e in entries("in-distribution", plan, ("action-only@pose", "plan-then-act@videofirst"))] \
        == [BASELINE, "plan-then-act@videofirst"]
    assert [e.recipe for e in entries("unseen", plan, ("action-only@pose",))] == ["action-only@pose"]


def test_a_cell_whose_labeller_changed_trains_again_from_scratch_rather_than_resume_onto_old_labels(pool, tmp_path):
    """A finished `pose` cell met again with other labelling settings (the defaults changed, say) cannot resume onto
    the labels it made before: it refits them and trains again, and is then read from its record (a condition with
    video included: its ranges come back from JSON as lists, and once never matched, so every rerun resumed)."""
    from wam import pose_label

    plan = plan_of(QUICK)
    cond = conditions(plan)["mt10+unseen-video"]
    first = train_cell(tmp_path, cond, "action-only@pose", plan, pool)
    train = tmp_path / "cells" / cond.name / "action-only@pose" / "train"
    before = pose_label.load(train / "labels" / "pose.npz")
    other = dataclasses.replace(plan, preset=dataclasses.replace(
        plan.preset, train=dataclasses.replace(plan.preset.train, pose_label_smooth=plan.preset.train.pose_label_smooth + 3)))
    again = train_cell(tmp_path, cond, "action-only@pose", other, pool)
    after = pose_label.load(train / "labels" / "pose.npz")
    assert again["settings"] != first["settings"] and set(after.actions) == set(before.actions)
    assert any(not np.allclose(after.actions[k], before.actions[k]) for k in before.actions)  # refitted
    saved = json.loads((train / "last" / "config.json").read_text())
    assert saved["train"]["pose_label_smooth"] == plan.preset.train.pose_label_smooth + 3 and saved["step"] == cond.steps
    assert train_cell(tmp_path, cond, "action-only@pose", other, pool) == again  # cached now


def test_a_pose_cell_with_no_video_to_label_scores_no_labels_and_the_table_shows_none(pool, tmp_path):
    """On MT10 (`in-distribution`) a `pose` recipe has no action-free video: its record says 0 labelled frames, and
    the results (an entry written before such labels were left out) print no label row rather than crash."""
    plan = plan_of(QUICK)
    record = train_cell(tmp_path, conditions(plan)["mt10"], "action-only@pose", plan, pool)
    assert record["labels"]["all"]["frames"] == 0 and record["labels"]["all"]["r2"] is None
    scored = {"frames": 10, "mse": 0.5, "r2": 0.25, "r2_per_dim": [0.25]}
    result = {"command": "wam bench generalise", "steps": 10, "few_steps": 5, "episodes_per_task": 2, "max_steps": 5,
              "in-distribution": {"action-only@pose": {"mean_success": 0.5, "tasks": {"a": 0.5}, "train_s": 60.0,
                                                       "labels": record["labels"]["all"]}},
              "unseen": {"action-only@pose": {"mean_success": 0.5, "tasks": {"a": 0.5}, "train_s": 60.0,
                                              "labels": scored}}}
    md = markdown(result)
    assert md.count("| action-only@pose | 10 | 0.25 | 0.500 |") == 1 and md.count("Labels the recipe") == 1
    assert "Labels the recipe" not in markdown({k: v for k, v in result.items() if k != "unseen"})


def test_a_shift_entry_averages_only_shifted_variants_and_waits_for_the_first():
    def variant(rate, shift):
        return {"mean_success": rate, "median_ms": 1.0, "shift": shift,
                "tasks": {"reach-v3": {"success_rate": rate, "ci95": [0, 1], "successes": 0, "episodes": 1}}}
    rows = {"r": {"recipe": "r", "condition": "mt10", "train_s": 1.0, "variants": {"-": variant(1.0, None)}}}
    assert summarise("shift", rows) == {}  # killed after the unshifted reference: no entry rather than a NaN
    rows["r"]["variants"]["colour"] = variant(0.25, "colour")
    rows["r"]["variants"]["light"] = variant(0.75, "light")
    entry = summarise("shift", rows)["r"]
    assert entry["mean_success"] == 0.5 and entry["tasks"] == {"reach-v3": 0.5}
    assert set(entry["variants"]) == {"-", "colour", "light"}
