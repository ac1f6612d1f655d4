"""Where do a checkpoint's reach-v3 rollouts end? Does the policy go to the goal, or to one place whatever the goal?

    python scripts/reach_diagnosis.py CHECKPOINT [--episodes 20] [--seed 100000] [--json OUT.json]

Runs the held-out reach episodes of `wam eval` (seeds from 100000, 200 steps, the checkpoint's sampler) and records,
per episode, the goal, the hand's closest approach to it and where the hand was then. Prints per episode and the
summary: success, the mean closest distance (success needs 5 cm), the spread of the goals and of the closest hand
positions per axis, and their correlation. A policy that reads the goal puts its hand where the goal is (correlation
near 1, the hand's spread that of the goals); one that does not goes to about the same place every episode.
`--seed 0` runs the variations the demonstrations were recorded on instead (the same goals and scenes, the arm starting
where the env puts it): a policy that memorised its training goals succeeds there and not on held-out ones; one that
cannot place its hand from the image fails on both.

A checkpoint trained with `--train.environment-state-weight` also reports what its auxiliary head reads from each
episode's first frame: the goal it predicts beside the real one (the error per axis and the correlation). A head that
finds the goal while the hand does not go there points at the action path; one that does not, at perception.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=100_000, help="first variation seed (0: the demonstrations' own)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from wam.envs import make_env
    from wam.policy import WAMPolicy
    from wam.runtime import closed_loop

    policy = WAMPolicy.from_checkpoint(args.checkpoint)
    runner = closed_loop(policy, policy.sampler.execute)
    env = make_env("metaworld:reach-v3", policy.metadata.cameras, policy.metadata.image_size[0])
    sim = env._env  # Meta-World's own env: the goal and the hand are not part of wam's observation
    probe = goal_probe(policy)
    rows = []
    for seed in range(args.seed, args.seed + args.episodes):
        runner.reset(seed)
        obs = env.reset(seed)
        goal = np.array(sim._target_pos, dtype=float)
        read = probe(obs) if probe else None
        best, at, ok = np.inf, None, False
        for _ in range(args.max_steps):
            obs, ok = env.step(runner.infer(obs).actions[0])
            hand = np.array(sim.tcp_center, dtype=float)
            if np.linalg.norm(hand - goal) < best:
                best, at = float(np.linalg.norm(hand - goal)), hand
            if ok:
                break
        rows.append({"seed": seed, "success": bool(ok), "goal": goal.round(4).tolist(), "closest": round(best, 4),
                     "hand_at_closest": at.round(4).tolist(), **({"goal_read": read.round(4).tolist()} if probe else {})})
        print(rows[-1], flush=True)
    env.close()
    goals = np.array([r["goal"] for r in rows])
    hands = np.array([r["hand_at_closest"] for r in rows])
    summary = {"checkpoint": args.checkpoint, "episodes": len(rows),
               "success": float(np.mean([r["success"] for r in rows])),
               "mean_closest_m": float(np.mean([r["closest"] for r in rows])),
               "goal_std_m": goals.std(0).round(4).tolist(), "hand_std_m": hands.std(0).round(4).tolist(),
               "correlation": [round(float(np.corrcoef(goals[:, i], hands[:, i])[0, 1]), 3) for i in range(3)]}
    if probe:
        read = np.array([r["goal_read"] for r in rows])
        summary["head_goal_error_m"] = np.abs(read - goals).mean(0).round(4).tolist()
        summary["head_goal_correlation"] = [round(float(np.corrcoef(goals[:, i], read[:, i])[0, 1]), 3) for i in range(3)]
    summary["episodes_rows"] = rows
    print({k: v for k, v in summary.items() if k != "episodes_rows"})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


def goal_probe(policy):
    """obs -> the goal (x, y, z, metres) the checkpoint's environment-state head reads from that frame alone (the
    context frames all that frame, as at an episode's start); None for a checkpoint without the head."""
    import torch

    from wam.data.reader import read_dataset
    from wam.data.windows import environment_stats
    from wam.envs.metaworld import ENVIRONMENT_STATE_NAMES

    net = policy.model
    if getattr(net, "environment_out", None) is None:
        return None
    rec = read_dataset(policy.config["data"]["root"])
    mean, std, _ = environment_stats(rec)
    goal = [ENVIRONMENT_STATE_NAMES.index(f"goal_{k}") for k in "xyz"]
    c = policy.cfg.context_frames

    @torch.inference_mode()
    def read(obs):
        stacked = type(obs)(images={k: np.stack([v] * c) for k, v in obs.images.items()}, state=obs.state, prompt=obs.prompt)
        ctx = policy.context(stacked)
        zeros = torch.zeros(1, policy.cfg.action_horizon, policy.cfg.action_dim)
        video = torch.zeros(net.video_shape(1)) if net.n_vid else None
        t = torch.zeros(1)  # the head reads the context tokens, which read nothing else
        z = net(video, zeros, t, t, ctx, environment=True)[2][0].numpy()
        return (z * std + mean)[goal].astype(float)

    return read


if __name__ == "__main__":
    main()
