"""`wam imagine --episodes` over several held-out episodes, for each of several `--sampler.video-deadzone` amounts: the mean
PSNR and SSIM of the imagined frames (open loop under the recorded actions; one denoising step by default: the
expected frame) beside the first real frame held, per amount, with the per-episode SSIM. docs/world-model.md's
open-loop table.

    python scripts/imagine_episodes.py CKPT --data DIR --deadzones 0,0.05,0.16 --per-task 3 --horizon 64 \
        [--video-steps 1] [--out runs/wm/imagine-episodes.json]

The episodes: the first --per-task of each task with more than --horizon frames (shorter ones end before the
horizon and would be scored on fewer frames).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np
from wam.data.reader import read_dataset
from wam.imagine import ImagineConfig, SamplerOverrides, imagine


def episodes_of(data: Path, per_task: int, horizon: int) -> list[int]:
    rec = read_dataset(data)
    length = rec.episode_to - rec.episode_from
    tasks = [str(rec.instructions[int(rec.task_index[rec.episode_from[e]])]) for e in range(len(length))]
    chosen = []
    for task in dict.fromkeys(tasks):
        chosen += [int(rec.episode_ids[e]) for e in range(len(length)) if tasks[e] == task and length[e] > horizon][:per_task]
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--deadzones", default="0")
    p.add_argument("--per-task", type=int, default=3)
    p.add_argument("--horizon", type=int, default=64)
    p.add_argument("--video-steps", type=int, default=1, help="denoising steps of the frames (1: the expected frame; "
                   "more: a sample)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    eps = episodes_of(a.data, a.per_task, a.horizon)
    print(f"episodes {eps}")
    rows = []
    for amount in [float(x) for x in a.deadzones.split(",")]:
        with contextlib.redirect_stdout(io.StringIO()):
            res = imagine(ImagineConfig(checkpoint=a.checkpoint, data=a.data, episodes=",".join(map(str, eps)),
                                        horizon=a.horizon,
                                        sampler=SamplerOverrides(steps=1, video_steps=a.video_steps, video_deadzone=amount),
                                        out=Path(a.checkpoint).parent / "imagine-episodes"))
        r = np.array([[x["mean_psnr"], x["mean_psnr_static"], x["mean_ssim"], x["mean_ssim_static"]]
                      for x in res["per_episode"]])
        rows.append({"deadzone": amount, "psnr": r[:, 0].mean(), "psnr_held": r[:, 1].mean(), "ssim": r[:, 2].mean(),
                     "ssim_held": r[:, 3].mean(), "ssim_per_episode": r[:, 2].tolist(),
                     "ssim_held_per_episode": r[:, 3].tolist()})
        print(f"deadzone {amount:5.3f}: PSNR {r[:, 0].mean():6.2f} (first frame held {r[:, 1].mean():6.2f})  SSIM "
              f"{r[:, 2].mean():.3f} (held {r[:, 3].mean():.3f}); SSIM above held in {(r[:, 2] > r[:, 3]).sum()} of "
              f"{len(r)} episodes", flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"checkpoint": str(a.checkpoint), "data": str(a.data), "episodes": eps,
                                     "horizon": a.horizon, "video_steps": a.video_steps, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
