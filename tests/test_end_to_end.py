"""Tier 3: collect real episodes, train, checkpoint, resume exactly, evaluate in the simulator, via the CLI."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from wam.config import preset
from wam.evaluate import EvalConfig, evaluate
from wam.train import train
from wam.testing import concrete

P = concrete(preset("tiny"))


class _Interrupt(Exception):
    pass


def _losses(out):
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_collected_dataset_has_only_successful_episodes(tiny_dataset):
    from wam.data.reader import read_dataset

    d = read_dataset(tiny_dataset)
    assert len(d.seeds) == 4 and sorted(set(d.env_tasks)) == ["button-press-topdown-v3", "drawer-close-v3"]
    info = json.loads((tiny_dataset / "meta/info.json").read_text())
    assert "discarded_failures" in info["wam"]
    import pyarrow.parquet as pq

    data = pq.read_table(tiny_dataset / "data/chunk-000/file-000.parquet").to_pandas()
    last = data.groupby("episode_index")["next.success"].last()
    assert last.all()  # every kept episode ends in Meta-World's success


def test_train_checkpoint_resume_is_exact(tiny_dataset, tmp_path):
    cfg = replace(P.train, data=tiny_dataset, steps=4, ckpt_every=2, log_every=1)
    full = train(replace(cfg, out=tmp_path / "full"), P.model, P.sampler, progress=False)

    def interrupt(step, ckpt):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        train(replace(cfg, out=tmp_path / "cut", eval_every=2), P.model, P.sampler, progress=False, eval_hook=interrupt)
    assert json.loads((tmp_path / "cut/last/config.json").read_text())["step"] == 2
    steps_run = []
    resumed = train(replace(cfg, out=tmp_path / "cut", eval_every=1), P.model, P.sampler, progress=False,
                    eval_hook=lambda step, ckpt: steps_run.append(step) or {})
    assert steps_run == [3]  # the resumed run went on from step 2, it did not start over

    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert set(a) == set(b) == {1, 2, 3, 4}
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-7), step
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert all(torch.isfinite(v).all() for v in wa.values())
    assert "normalizer.action_min" in wa


def test_expert_failures_are_discarded_and_never_look_complete(tmp_path):
    from wam.data.collect import CollectConfig, collect

    out = tmp_path / "never"
    with pytest.raises(RuntimeError, match="succeeded too rarely"):  # 3 steps are too few for any expert
        collect(CollectConfig(out=out, tasks="drawer-close-v3", episodes=1, image_size=32, max_steps=3, workers=1),
                progress=False)
    assert not out.exists() and not out.with_name("never.partial").exists()


def test_resume_refuses_a_different_model_config(tiny_dataset, tmp_path):
    cfg = replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2)
    train(cfg, P.model, P.sampler, progress=False)
    with pytest.raises(ValueError, match="different model config.*width"):
        train(replace(cfg, steps=3), replace(P.model, width=48, heads=2), P.sampler, progress=False)


def test_evaluate_from_checkpoint_in_the_simulator(tiny_dataset, tmp_path):
    ckpt = train(replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2), P.model, P.sampler, progress=False)
    out = tmp_path / "eval"
    summary = evaluate(EvalConfig(checkpoint=ckpt, tasks="drawer-close-v3", episodes=1, max_steps=6, workers=1,
                                  out=out, instruction="close the drawer"), progress=False)
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["mean_success"] <= 1.0
    assert results["tasks"]["drawer-close-v3"]["episodes"] == 1
    assert results["instruction_override"] == "close the drawer"
    assert results["median_ms_per_chunk"] > 0
    assert (out / "report.html").read_text().count("<video") == 1
    from wam.video import read_mp4

    frames = read_mp4(results["episodes"][0]["video"])  # real cameras on top, predictions below
    h = P.model.image_size
    assert frames.shape[1:] == ((1 + P.model.future_frames) * h, P.model.views * h, 3)
    with pytest.raises(ValueError, match="overlap"):
        evaluate(EvalConfig(checkpoint=ckpt, episodes=1, seed=0, workers=1, out=out), progress=False)
    with pytest.raises(FileNotFoundError, match="not a wam checkpoint"):
        evaluate(EvalConfig(checkpoint=tmp_path, episodes=1, workers=1), progress=False)


def test_cli_collect_train_eval(tmp_path, capsys):
    from wam.cli import main
    from wam.config import SamplerConfig

    data, run = tmp_path / "data", tmp_path / "run"
    main(["collect", "--tasks", "drawer-close-v3", "--episodes", "1", "--image-size", "32", "--workers", "1",
          "--out", str(data)])
    main(["train", "--preset", "tiny", "--train.data", str(data), "--train.out", str(run), "--train.steps", "2"])
    main(["eval", str(run / "last"), "--episodes", "1", "--max-steps", "4", "--workers", "1"])
    results = json.loads((run / "eval/results.json").read_text())
    assert results["tasks"]["drawer-close-v3"]["episodes"] == 1
    assert (results["sampler"]["steps"], results["sampler"]["video_steps"]) == (2, 2)  # the resolved sampler used
    # the recipe's consequences come from the final config, in any flag order; --sampler.* still overrides
    for i, argv in enumerate((["tiny", "--recipe", "flash"], ["--model.recipe", "flash", "--preset", "tiny"])):
        main(["train", *argv, "--train.data", str(data), "--train.out", str(tmp_path / f"flash{i}"),
              "--train.steps", "1", "--sampler.steps", "3"])
    saved = [json.loads((tmp_path / f"flash{i}/last/config.json").read_text()) for i in range(2)]
    assert saved[0]["model"] == saved[1]["model"] and saved[0]["sampler"] == saved[1]["sampler"]
    assert saved[0]["model"]["recipe"] == "flash" and saved[0]["model"]["video_target"] == "data"  # stored resolved
    assert saved[0]["sampler"]["steps"] == 3 and saved[0]["sampler"]["video_steps"] is None  # stored as asked
    assert SamplerConfig(**saved[0]["sampler"]).resolve("flash").video_steps == 1  # the recipe's default, resolved
    main(["eval", str(tmp_path / "flash0/last"), "--episodes", "1", "--max-steps", "2", "--workers", "1",
          "--steps", "2", "--sampler.execute", "1"])
    used = json.loads((tmp_path / "flash0/eval/results.json").read_text())["sampler"]
    assert (used["steps"], used["video_steps"], used["execute"]) == (2, 1, 1)
    with pytest.raises(SystemExit):
        main(["train", "--preset", "tiny", "--recipe", "magic"])
    assert "valid recipes are: joint, decoupled" in " ".join(capsys.readouterr().err.replace("│", " ").split())
    with pytest.raises(SystemExit) as exit_:  # the CLI prints the config error and exits with 2
        main(["collect", "--tasks", "drawer-close", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert "unknown Meta-World task 'drawer-close'" in capsys.readouterr().err


def test_torchrun_ddp_two_processes(tiny_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m",
           "wam.cli", "train", "--preset", "tiny", "--train.data", str(tiny_dataset), "--train.out",
           str(tmp_path / "ddp"), "--train.steps", "3"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    config = json.loads((tmp_path / "ddp/last/config.json").read_text())
    assert config["world_size"] == 2 and config["step"] == 3


def test_random_start_diversifies_the_first_recorded_state():
    import numpy as np

    from wam.data.collect import expert_episode

    plain = [expert_episode("drawer-close-v3", s, ("top",), 32, 0.0, 300) for s in range(3)]
    moved = [expert_episode("drawer-close-v3", s, ("top",), 32, 0.0, 300, random_start=15) for s in range(3)]
    assert all(e is not None and e.success[-1] for e in plain + moved)
    assert np.allclose([e.state[0, :3] for e in plain], plain[0].state[0, :3], atol=1e-3)  # Meta-World's fixed start
    assert np.std([e.state[0, 0] for e in moved]) > 0.02  # several centimetres apart
