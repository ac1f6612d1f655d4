"""Why the pose labels of `few` were poor, measured on a finished `pose` cell of `wam bench generalise`.

The pose estimator gives back the frames it was fitted on nearly exact (training loss 0.0002 on `few`) and the video's
with an error of about a centimetre, two to four times the hand's motion per step. The state IDM, fitted on the
former, then reads every wiggle of the latter as motion. This script keeps the cell's estimated video states
(OUT/labels/pose.npz) and refits only the state IDM, each time on the demonstrations' *true* states (standing for the
estimator's nearly exact estimates of its training frames) with white noise of `scale` times the video estimates' own
jitter (their deviation from a copy smoothed over 2 frames, measurable without the truth), both sides smoothed over
`sigma` frames or not, and scores its labels of the video against the actions the pool recorded for it (which the
cell never read). Scale 0 and sigma 0 is the labeller's first version.

    python scripts/pose_idm_noise_check.py runs/bench/generalise-env/cells/few5+same-video/action-only@pose
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wam import pose_label
from wam.config import DataConfig
from wam.data.reader import read_dataset


def stack(los, get, truth):
    """States of the episodes starting at frames `los` (get(lo)) with their true actions, and each frame's episode
    bounds within the stack."""
    states, actions, ep_from, ep_to, n = [], [], [], [], 0
    for lo in los:
        s = np.asarray(get(lo))
        states.append(s)
        actions.append(truth.action[lo:lo + len(s)])
        ep_from += [n] * len(s)
        ep_to += [n + len(s)] * len(s)
        n += len(s)
    return (torch.from_numpy(np.concatenate(states)).float(), torch.from_numpy(np.concatenate(actions)).float(),
            np.array(ep_from), np.array(ep_to))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cell", type=Path, help="a `pose` cell of wam bench generalise (holds cell.json and train/labels/pose.npz)")
    p.add_argument("--scales", default="0,1,2", help="noise, in units of the video estimates' jitter")
    p.add_argument("--sigmas", default="0,2", help="smoothing of both sides, in frames")
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--steps", type=int, default=3000, help="the state IDM's steps (batch 512; the labeller's default)")
    p.add_argument("--out", type=Path, help="JSON to write")
    args = p.parse_args()
    torch.set_num_threads(1)
    settings = json.loads((args.cell / "cell.json").read_text())["settings"]
    labels = pose_label.load(args.cell / "train" / "labels" / "pose.npz")
    truth = read_dataset(settings["train"]["data"], DataConfig(episodes=settings["data"]["episodes"]))
    starts = {int(truth.episode_from[i]): int(truth.episode_to[i]) for i in range(len(truth.episode_ids))}
    demos = [lo for lo in starts if lo not in labels.states]
    video_s, video_a, vfrom, vto = stack(sorted(labels.states), lambda lo: labels.states[lo], truth)
    demo_s, demo_a, dfrom, dto = stack(demos, lambda lo: truth.state[lo:starts[lo]], truth)
    jitter = pose_label.jitter(video_s, vfrom, vto, np.ones(len(video_s), bool))
    err = (video_s - torch.from_numpy(np.concatenate([truth.state[lo:starts[lo]] for lo in sorted(labels.states)]))).abs()
    motion = np.concatenate([np.abs(np.diff(truth.state[lo:starts[lo], :3], axis=0)) for lo in sorted(labels.states)])
    result = {"command": "python scripts/pose_idm_noise_check.py " + str(args.cell), "video_frames": len(video_s),
              "demonstration_frames": len(demo_s), "video_jitter_cm": (jitter[:3] * 100).tolist(),
              "video_state_mae_cm": (err.mean(0)[:3] * 100).tolist(),
              "video_motion_per_step_cm": (motion.mean(0) * 100).tolist(), "rows": []}
    print(f"{len(demo_s)} demonstration frames, {len(video_s)} video frames; the video estimates' error (cm) "
          f"{np.round(result['video_state_mae_cm'], 2)}, their jitter (cm) {np.round(result['video_jitter_cm'], 2)}, "
          f"the hand's true motion per step (cm) {np.round(result['video_motion_per_step_cm'], 2)}")
    g = torch.Generator().manual_seed(0)
    for scale in map(float, args.scales.split(",")):
        for sigma in map(float, args.sigmas.split(",")):
            torch.manual_seed(0)
            copies = [demo_s + scale * jitter * torch.randn(demo_s.shape, generator=g) for _ in range(args.copies)]
            fit = torch.cat([pose_label.state_features(pose_label.smooth_states(s, dfrom, dto, sigma), dfrom, dto)
                             for s in copies])
            test = pose_label.state_features(pose_label.smooth_states(video_s, vfrom, vto, sigma), vfrom, vto)
            got = pose_label.fit_state_idm(fit, demo_a.repeat(len(copies), 1), steps=args.steps, g=g)(test)
            r2 = 1 - ((got - video_a) ** 2).mean(0) / video_a.var(0)
            row = {"noise_scale": scale, "smooth": sigma, "r2_per_dim": r2.tolist(), "r2": float(r2.mean())}
            result["rows"].append(row)
            print(f"noise {scale:g} x jitter, smoothed over {sigma:g} frames: the video's actions at R^2 "
                  f"{row['r2']:.3f} (per dimension {np.round(r2.numpy(), 3)})", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
