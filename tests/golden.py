"""Golden values of the tiny preset: per-step training losses and the actions and frames fixed-seed tiny
models sample. `tests/test_golden.py` checks the code against `tests/golden/tiny.json`, so a refactor is
shown to change nothing (as torchtune pins its loss curves).

    python tests/golden.py      # rewrite tests/golden/tiny.json (only when a change of numbers is intended)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

FILE = Path(__file__).parent / "golden" / "tiny.json"
SAMPLER_STEPS = {"joint": (3, 3), "decoupled": (3, 3), "flash": (3, 1), "video-then-idm": (3, 3),
                 "features": (3, 1), "plan-then-act": (3, 3), "action-only": (3, 0)}
"""(steps, video_steps) per recipe, given explicitly so the values do not depend on preset defaults."""
TRAIN_RECIPES = ("decoupled", "action-only")


def collect_tiny(root: Path) -> Path:
    from wam.data.collect import CollectConfig, collect
    from wam.config import preset
    from wam.testing import concrete

    m = concrete(preset("tiny")).model
    return collect(CollectConfig(out=root, tasks="drawer-close-v3,button-press-topdown-v3", episodes=2,
                                 cameras=m.cameras, image_size=m.image_size, workers=1), progress=False)


def _model(name: str):
    from wam.config import preset, with_recipe
    from wam.testing import concrete
    from wam.models.transformer import WAMTransformer

    torch.manual_seed(0)
    model = WAMTransformer(with_recipe(concrete(preset("tiny")), name).model)
    with torch.no_grad():  # off the adaLN-Zero start, so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _summary(frames: torch.Tensor | np.ndarray | None) -> list | None:
    if frames is None:
        return None
    x = torch.as_tensor(np.asarray(frames), dtype=torch.float64)
    return [float(x.mean()), float(x.abs().mean()), float(x.std())]


def sampled() -> dict:
    """Actions (b=2, k, a) and a summary of the frames that each recipe's fixed-seed tiny model samples."""
    from wam import modes
    from wam.config import SamplerConfig
    from wam.testing import fake_batch

    out = {}
    for name, (steps, video_steps) in SAMPLER_STEPS.items():
        model = _model(name)
        batch = fake_batch(model.cfg, 2, seed=0)
        sampler = SamplerConfig(steps=steps, video_steps=video_steps)
        frames, actions = modes.run(model, "policy", batch.context, sampler, generator=torch.Generator().manual_seed(0))
        out[name] = {"actions": actions.flatten().tolist(), "frames": _summary(frames if video_steps else None)}
    return out


def policy() -> dict:
    """What the WAM policy (normalisation, image conversion, sampler, unnormalisation) returns for one fixed
    observation of a fixed-seed tiny decoupled model."""
    from wam.config import SamplerConfig
    from wam.data.transforms import Normalizer
    from wam.policy import WAMPolicy
    from wam.types import Observation

    model = _model("decoupled")
    cfg = model.cfg
    norm = Normalizer.standard(np.full(4, 0.1), np.full(4, 2.0), -np.full(4, 0.5), np.full(4, 1.5))
    pol = WAMPolicy(model, norm, {}, SamplerConfig(steps=3, execute=2))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (cfg.context_frames, cfg.views, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    state = rng.standard_normal(4).astype(np.float32)
    out = pol.infer(Observation(images={c: images[:, i] for i, c in enumerate(cfg.cameras)}, state=state,
                                prompt="push the drawer closed"))
    return {"actions": out.actions.flatten().tolist(), "frames": _summary(out.frames)}


def closed_loop() -> dict:
    """Executed actions and success flags of the fixed-seed tiny decoupled model in Meta-World, in closed loop
    (frame history, chunk execution, the real simulator), synchronous and asynchronous."""
    from wam.config import SamplerConfig
    from wam.data.transforms import Normalizer
    from wam.envs import make_env
    from wam.policy import WAMPolicy
    from wam.runtime import AsyncChunkExecutor, ChunkExecutor, FrameHistory

    model = _model("decoupled")
    cfg = model.cfg
    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    pol = WAMPolicy(model, norm, {}, SamplerConfig(steps=3, execute=3))
    env = make_env("metaworld:drawer-close-v3", cfg.cameras, cfg.image_size)
    out = {}
    for name, runner in (("sync", ChunkExecutor(pol, 3)), ("async", AsyncChunkExecutor(pol, 2, 1, 1))):
        runner = FrameHistory(runner)
        runner.reset(100_000)
        obs = env.reset(100_000).replace(prompt="push the drawer closed")
        actions, fresh = [], []
        for _ in range(14):
            step = runner.infer(obs)
            actions.append(np.asarray(step.actions[0], np.float64).tolist())
            fresh.append(step.fresh)
            obs, _ = env.step(step.actions[0])
            obs = obs.replace(prompt="push the drawer closed")
        out[name] = {"actions": actions, "fresh": fresh}
    env.close()
    return out


def losses(data: Path) -> dict:
    """Per-step losses of `train` on the tiny preset and the tiny dataset, for a few recipes."""
    from wam.config import preset, with_recipe
    from wam.testing import concrete
    from wam.train import train

    out = {}
    for name in TRAIN_RECIPES:
        p = with_recipe(concrete(preset("tiny")), name)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = replace(p.train, data=data, out=Path(tmp) / "run", steps=4, log_every=1, ckpt_every=4,
                          environment_state_weight=0.0)  # explicit, as the default follows the data (pinned before it)
            train(cfg, p.model, p.sampler, progress=False)
            rows = [json.loads(r) for r in (Path(tmp) / "run/metrics.jsonl").read_text().splitlines()]
        out[name] = [{k: r[k] for k in ("step", "loss", "video", "action", "grad_norm")} for r in rows if "loss" in r]
    return out


def compute(data: Path) -> dict:
    return {"torch": torch.__version__, "sampled": sampled(), "policy": policy(), "closed_loop": closed_loop(),
            "losses": losses(data)}


if __name__ == "__main__":
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        values = compute(collect_tiny(Path(tmp) / "tiny"))
    FILE.parent.mkdir(exist_ok=True)
    FILE.write_text(json.dumps(values, indent=1) + "\n")
    print(f"written {FILE}", file=sys.stderr)
