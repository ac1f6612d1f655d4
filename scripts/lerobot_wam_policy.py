"""Write tests/fixtures/lerobot/wam_policy/: a `wam` policy trained and saved by lerobot itself (lerobot-train's own
`train`, with the lerobot_policy_wam plugin), for the tests that read lerobot's checkpoints without lerobot.

It trains the tiny preset for a few steps on the so100 fixture (written by lerobot: two cameras of different
non-square sizes, 6-d state and action), keeps the checkpoint's pretrained_model/ folder and its training step,
and records in expected.json the action chunk that lerobot's loaded policy (its processors around it) returns for
a fixed observation and noise seed: wam must return the same from the folder, with JSON and safetensors alone
(tests/test_lerobot_checkpoint.py).

Run in the lerobot venv (scripts/lerobot-venv.sh, which installs the plugin), from the repo root:
    HF_HUB_OFFLINE=1 .venv-lerobot/bin/python scripts/lerobot_wam_policy.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported, below

import lerobot
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "lerobot" / "wam_policy"
DATASET = "tests/fixtures/lerobot/so100"  # as train_config.json records it: relative to the repo root
OBSERVATION = {"frames_seed": 1, "state_seed": 2, "noise_seed": 0, "task": "pick up the cube"}
"""The observation expected.json's actions answer: random uint8 frames of every camera at its stored size (the
model's context frames), a random state, an instruction; the noise from a generator seeded noise_seed."""


def train_with_lerobot(root: Path, out: Path, steps: int = 4, batch_size: int = 4, **policy) -> Path:
    """lerobot-train's own training of a `wam` policy (the tiny preset unless `policy` says otherwise) on the
    dataset at `root`; returns the last checkpoint's pretrained_model/ folder."""
    from lerobot.configs.default import DatasetConfig
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.scripts.lerobot_train import train

    from lerobot_policy_wam import WAMConfig

    cfg = TrainPipelineConfig(
        dataset=DatasetConfig(repo_id=f"local/{Path(root).name}", root=str(root), video_backend="torchcodec"),
        policy=WAMConfig(**{"preset": "tiny", "device": "cpu", **policy}), output_dir=Path(out), steps=steps,
        batch_size=batch_size, num_workers=0, save_freq=steps, log_freq=1, eval_freq=0, seed=0)
    train(cfg)
    return Path(out) / "checkpoints" / "last" / "pretrained_model"


def observation(input_features: dict, context_frames: int, spec: dict = OBSERVATION) -> dict:
    """The raw observation of `spec`: per camera uint8 (c, H, W, 3) at its stored size, the state float32 (S,)."""
    frames = np.random.default_rng(spec["frames_seed"])
    images = {k: frames.integers(0, 256, (context_frames, f["shape"][1], f["shape"][2], 3), dtype=np.uint8)
              for k, f in input_features.items() if f["type"] == "VISUAL"}
    state = np.random.default_rng(spec["state_seed"]).normal(size=input_features["observation.state"]["shape"])
    return {"images": images, "state": state.astype(np.float32), "task": spec["task"]}


def lerobot_actions(pretrained: Path, spec: dict = OBSERVATION) -> np.ndarray:
    """The action chunk (k, A), in the robot's units, that lerobot's loaded policy and processors give for `spec`."""
    from lerobot.policies.factory import make_pre_post_processors

    from lerobot_policy_wam.modeling_wam import WAMPolicy

    policy = WAMPolicy.from_pretrained(pretrained)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(pretrained))
    saved = json.loads((pretrained / "config.json").read_text())
    batch = as_batch(observation(saved["input_features"], policy.cfg.context_frames, spec))
    chunk = policy.predict_action_chunk(pre(batch), generator=torch.Generator().manual_seed(spec["noise_seed"]))
    return post(chunk)[0].numpy()


def as_batch(obs: dict) -> dict:
    """An `observation` as lerobot hands it to a preprocessor: float frames (1, c, 3, H, W) in [0, 1], ..."""
    batch = {k: torch.from_numpy(x).permute(0, 3, 1, 2).float()[None] / 255 for k, x in obs["images"].items()}
    return batch | {"observation.state": torch.from_numpy(obs["state"])[None], "task": [obs["task"]]}


def main() -> None:
    from lerobot_policy_wam import __file__ as plugin

    with tempfile.TemporaryDirectory() as tmp:
        pretrained = train_with_lerobot(REPO / DATASET, Path(tmp) / "run")
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(pretrained, OUT / "pretrained_model")
        (OUT / "training_state").mkdir()
        shutil.copy(pretrained.parent / "training_state" / "training_step.json", OUT / "training_state")
    train_config = OUT / "pretrained_model" / "train_config.json"
    saved = json.loads(train_config.read_text())
    saved["dataset"]["root"] = DATASET
    saved["output_dir"] = None
    train_config.write_text(json.dumps(saved, indent=4))
    actions = lerobot_actions(OUT / "pretrained_model")
    expected = {"about": "the action chunk (k, A) in the robot's units that lerobot's own loading (WAMPolicy."
                         "from_pretrained, make_pre_post_processors(pretrained_path=...)) returns for the observation "
                         "scripts/lerobot_wam_policy.py `observation` makes from these seeds, with the noise from "
                         "torch.Generator().manual_seed(noise_seed); train_config.json's dataset.root is relative "
                         "to the repo root",
                "produced_by": {"lerobot": lerobot.__version__, "torch": torch.__version__,
                                "plugin": str(Path(plugin).parent.relative_to(REPO))},
                "observation": OBSERVATION, "actions": actions.tolist()}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1e3:.0f} kB); actions[0] = {np.round(actions[0], 4).tolist()}")


if __name__ == "__main__":
    sys.exit(main())
