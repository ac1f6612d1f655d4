"""Where does the judge's error on one policy come from? The policy runs for real in Meta-World (as `wam eval` runs
it: the serving guard, chunks of `execute` actions); its executed actions are recorded. Then the judge's state model
steps the real first state (the arm's and the environment's, as a judge starts) under those same actions, and the
head scores it as a judge does (every `execute` steps; solved when p > 0.5).

If the head, given the real actions, agrees with the real outcome, the judge's error on that policy lies in what the
policy does on imagined frames; if it calls the real failures solved, it lies in the state model or the head.

    python scripts/judge_replay_check.py runs/judge3/policies/ao-300/last --head runs/judge3/head [--episodes 10]
"""

import argparse

import numpy as np
import torch

from wam.envs import make_env
from wam.judge.head import JudgeHead
from wam.policy import WAMPolicy
from wam.runtime import closed_loop
from wam.safety import ActionGuard, Guarded
from wam.text import embed


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--head", required=True)
    p.add_argument("--tasks", default="button-press-topdown-v3,drawer-close-v3,reach-v3")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=100000, help="the first held-out seed (wam eval's and the judge's)")
    p.add_argument("--max-steps", type=int, default=200)
    args = p.parse_args()
    head = JudgeHead.load(args.head)
    if head.cfg.frames:
        raise SystemExit(f"{args.head} reads frames; this check needs a head that reads none (wam judge fit --frames False)")
    wam = WAMPolicy.from_checkpoint(args.checkpoint)
    execute = wam.sampler.execute
    runner = closed_loop(Guarded(wam, ActionGuard.from_normalizer(wam.norm)), execute)
    meta = runner.metadata
    print(f"{args.checkpoint}, head {args.head}: real episodes, and the head stepping their real actions")
    rows = []
    for task in args.tasks.split(","):
        env = make_env(f"metaworld:{task}", meta.cameras, meta.image_size[0])
        for seed in range(args.seed, args.seed + args.episodes):
            runner.reset(seed)
            obs = env.reset(seed)
            first = np.concatenate([obs.state, env.environment_state()]) if head.cfg.environment_dim else obs.state
            actions, success, end = [], False, None
            for t in range(args.max_steps):
                a = runner.infer(obs).actions[0]
                actions.append(np.clip(a, -1, 1))
                obs, success = env.step(a)
                if success:
                    break
            hand_end = obs.state[:3]
            s = torch.as_tensor(first, dtype=torch.float32)[None]
            states = head.roll(s, torch.as_tensor(np.stack(actions), dtype=torch.float32)[None])[0][0]
            words = torch.as_tensor(embed([obs.prompt]))[:1].float()
            checked = states[execute - 1::execute]
            fired = np.flatnonzero(head.solved(None, checked, words.expand(len(checked), -1)).numpy() > 0.5)
            end = int(fired[0] + 1) * execute if len(fired) else None
            drift = float(np.linalg.norm(states[-1, :3].numpy() - hand_end))
            rows.append((task, seed, success, len(actions), end, drift))
        env.close()
    for task in args.tasks.split(",") + [None]:
        sel = [r for r in rows if task is None or r[0] == task]
        real = np.array([r[2] for r in sel])
        replay = np.array([r[4] is not None for r in sel])
        print(f"  {task or 'all':26s} episodes {len(sel):3d}  real success {real.mean():.2f}  head on the real actions "
              f"{replay.mean():.2f}  real failures called solved {replay[~real].mean() if (~real).any() else float('nan'):.2f} "
              f"({int((~real).sum())})  hand drift at the end {100 * np.mean([r[5] for r in sel]):.1f} cm  "
              f"steps real {np.mean([r[3] for r in sel]):.0f}")


if __name__ == "__main__":
    main()
