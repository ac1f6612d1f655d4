"""lerobot's own policies in our harness (wam/lerobot/policy.py): tiny ACT and Diffusion Policy models trained by
`lerobot-train` on a dataset `wam collect` wrote, then driven through our `Policy` protocol. The adapter must
give exactly the actions lerobot's own evaluation path gives (lerobot.envs.utils.preprocess_observation, the
saved pipelines, select_action), mark a new chunk only where the network ran, and run in `wam eval --policy`.

Needs lerobot, which lives in its own venv; elsewhere this file is skipped:

    scripts/lerobot-venv.sh
    HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest -m lerobot tests/test_lerobot_peers.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lerobot.policies.factory", reason="lerobot is not installed in this venv: build its own "
                    "with scripts/lerobot-venv.sh and run this file there (see its docstring)")
pytestmark = pytest.mark.lerobot

from wam.bench.peers import policy_inputs  # noqa: E402
from wam.envs import make_env  # noqa: E402
from wam.lerobot.policy import LeRobotPolicy  # noqa: E402

TINY = {  # small enough to train two steps in seconds; the structure (queues, chunking, obs history) is lerobot's
    "act": ["--policy.pretrained_backbone_weights=null", "--policy.dim_model=32", "--policy.n_heads=2",
            "--policy.dim_feedforward=64", "--policy.n_encoder_layers=1", "--policy.n_vae_encoder_layers=1",
            "--policy.latent_dim=8", "--policy.chunk_size=8", "--policy.n_action_steps=4"],
    "diffusion": ["--policy.down_dims=[32,64]", "--policy.horizon=8", "--policy.n_action_steps=4",
                  "--policy.n_obs_steps=2", "--policy.drop_n_last_frames=3", "--policy.num_train_timesteps=10",
                  "--policy.crop_shape=null", "--policy.spatial_softmax_num_keypoints=8",
                  "--policy.diffusion_step_embed_dim=16"],
}


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """kind -> the pretrained_model folder of a two-step lerobot-train run on the tiny dataset."""
    out = {}
    train = Path(sys.executable).parent / "lerobot-train"
    features = json.loads((tiny_dataset / "meta/info.json").read_text())["features"]
    for kind, extra in TINY.items():
        run = tmp_path_factory.mktemp(kind) / "train"
        args = [str(train), "--dataset.repo_id=wam/tiny", f"--dataset.root={tiny_dataset}",
                "--dataset.video_backend=torchcodec", f"--policy.type={kind}", "--policy.push_to_hub=false",
                "--policy.device=cpu", f"--output_dir={run}", "--steps=2", "--batch_size=4", "--save_freq=2",
                "--log_freq=1", "--wandb.enable=false", "--num_workers=0", *extra,
                f"--policy.input_features={json.dumps(policy_inputs(features))}"]  # not the privileged state, as the bench
        r = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out[kind] = run / "checkpoints" / "last" / "pretrained_model"
    return out


def _lerobots_own_path(path: Path):
    """The policy and pipelines as lerobot-eval builds them, and one step of its rollout."""
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    config = json.loads((path / "config.json").read_text())
    policy = get_policy_class(config["type"]).from_pretrained(str(path))
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(path))

    def step(obs):
        env_obs = {"pixels": {c: obs.images[c][None] for c in obs.images}, "agent_pos": obs.state[None].astype(np.float64)}
        batch = preprocess_observation(env_obs)
        batch["task"] = [obs.prompt]
        with torch.inference_mode():
            return post(policy.select_action(pre(batch))).numpy()

    return policy, step


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_actions_equal_lerobots_own_evaluation_path(trained, kind):
    ours = LeRobotPolicy(trained[kind])
    theirs, their_step = _lerobots_own_path(trained[kind])
    meta = ours.metadata
    assert meta.cameras == ("oblique", "top") and meta.image_size == (32, 32) and meta.action_horizon == 1
    env = make_env("metaworld:drawer-close-v3", meta.cameras, meta.image_size[0])
    obs = env.reset(100_000)
    ours.reset(7)
    theirs.reset()
    fresh = []
    for t in range(9):
        torch.manual_seed(1000 + t)  # Diffusion Policy's noise comes from torch's global generator: the same for both
        a = ours.infer(obs)
        torch.manual_seed(1000 + t)
        b = their_step(obs)
        np.testing.assert_allclose(a.actions, b, rtol=1e-5, atol=1e-6)
        fresh.append(a.fresh)
        assert (a.infer_ms is not None) == a.fresh
        obs, _ = env.step(a.actions[0])
    assert fresh == [t % 4 == 0 for t in range(9)]  # n_action_steps = 4: the network runs every fourth step


def test_wam_eval_scores_a_lerobot_policy(trained, tmp_path):
    from wam.evaluate import EvalConfig, SamplerOverrides, evaluate

    for kind, sampler in (("act", SamplerOverrides()), ("diffusion", SamplerOverrides(steps=3))):
        summary = evaluate(EvalConfig(policy=f"lerobot:{trained[kind]}", tasks="drawer-close-v3", episodes=2,
                                      max_steps=9, workers=1, videos=1, out=tmp_path / kind, sampler=sampler),
                           progress=False)
        assert summary["recipe"] == f"lerobot-{kind}" and summary["policy"] == f"lerobot:{trained[kind]}"
        assert summary["seeds"] == [100_000, 100_001] and summary["tasks"]["drawer-close-v3"]["episodes"] == 2
        for ep in summary["episodes"]:  # one new chunk every n_action_steps = 4 steps
            assert len(ep["ms"]) == -(-ep["steps"] // 4)
        assert (tmp_path / kind / "report.html").is_file() and (tmp_path / kind / "videos").is_dir()
    assert summary["sampler"]["steps"] == 3


def test_wam_judge_and_its_bench_take_lerobot_policies(trained, tiny_dataset, tmp_path):
    """`wam judge lerobot:PATH` (one episode at a time, lerobot's own queues) and `wam bench judge` with a weakened
    lerobot policy, whose real side is `wam eval --policy lerobot:PATH --action-noise`."""
    from dataclasses import replace

    from wam.bench.judge import JudgeBenchConfig, bench_judge
    from wam.config import preset
    from wam.judge.head import FitConfig, fit_head
    from wam.judge.judge import JudgeConfig, judge
    from wam.testing import concrete
    from wam.train import train

    P = concrete(preset("tiny"))
    world = train(replace(P.train, data=tiny_dataset, out=tmp_path / "world", steps=2), P.model, P.sampler, progress=False)
    fit_head(FitConfig(data=tiny_dataset, out=tmp_path / "head", size=P.model.future_size, steps=3, batch_size=4),
             progress=False)
    act, diffusion = f"lerobot:{trained['act']}", f"lerobot:{trained['diffusion']}"
    cfg = JudgeConfig(policies=(act, f"{act}#noise=0.5", diffusion), world=world, head=tmp_path / "head", episodes=2,
                      max_steps=8, videos=1, out=tmp_path / "judge")
    a = judge(cfg, progress=False)
    b = judge(replace(cfg, out=tmp_path / "again"), progress=False)
    assert [r["policy"] for r in a["policies"]] == [act, f"{act}#noise=0.5", diffusion]
    assert all(r["execute"] == P.model.future_offsets[0] for r in a["policies"])
    detail = lambda s: [[(e["seed"], e["success"], e["steps"], e["probability"]) for e in t["episodes_detail"]]  # noqa: E731
                        for r in s["policies"] for t in r["tasks"].values()]
    assert detail(a) == detail(b) and all(len(t) == 2 for t in detail(a))  # deterministic for the seeds
    assert detail(a)[0] != detail(a)[2]  # the noise changed what was imagined
    result = bench_judge(JudgeBenchConfig(policies=(act, f"{act}#noise=0.5"), world=world, head=tmp_path / "head",
                                          episodes=2, max_steps=8, workers=1, fault_episodes=0, out=tmp_path / "bench"))
    assert [r["policy"] for r in result["policies"]] == [act, f"{act}#noise=0.5"]
    real = json.loads(next((tmp_path / "bench" / "real").glob("01-*/results.json")).read_text())
    assert real["action_noise"] == 0.5 and real["policy"] == act
