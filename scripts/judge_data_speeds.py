"""How fast the objects move in a judge's training data: the data behind the environment's state model.

    python scripts/judge_data_speeds.py runs/wm/mixed runs/demo-1206g/data --task button-press-topdown-v3 --entry object_z

Per dataset, over the episodes of one task: how many steps the entry moved in (by more than the head's STILL), the
percentiles of its change per step where it moved, where the hand was relative to the object before the fast ones
(the hand's first three state entries minus the entry's position), the number of steps that changed it by more than each of a few
speeds, and the largest total travel of an episode. A state model learns a press only as fast as its data shows one
(docs/judge.md: a fast press went 7 cm in 12-18 steps for real, 0.8-4 cm in the state model).
"""

from __future__ import annotations

import argparse

import numpy as np

from wam.data.layout import ENVIRONMENT_STATE_KEY
from wam.data.reader import read_dataset
from wam.envs.tasks import instruction
from wam.judge.head import STILL


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+")
    p.add_argument("--task", default="button-press-topdown-v3")
    p.add_argument("--entry", default="object_z", help="an observation.environment_state entry name")
    p.add_argument("--fast", type=float, default=0.4, help="cm per step: the steps whose hand offsets are printed")
    p.add_argument("--hand", default="hand_z", help="the robot state entry printed beside it")
    args = p.parse_args()
    for path in args.data:
        rec = read_dataset(path)
        names = rec.names(ENVIRONMENT_STATE_KEY)
        if args.entry not in names:
            raise SystemExit(f"{path} names no {args.entry} in {ENVIRONMENT_STATE_KEY} (it has {names})")
        col, hand = names.index(args.entry), rec.names(rec.data.state_key).index(args.hand)
        if instruction(args.task) not in rec.instructions:
            raise SystemExit(f"{path} has no episodes of {args.task} (instructions {rec.instructions})")
        eps = np.flatnonzero(rec.task_index[rec.episode_from] == rec.instructions.index(instruction(args.task)))
        obj = [names.index(args.entry[:-1] + c) for c in "xyz"]  # the entry's 3-d position (P_x, P_y, P_z)
        moved, hand_at, travel, offset = [], [], [], []
        for e in eps:
            a, b = rec.episode_from[e], rec.episode_to[e]
            x = rec.environment_state[a:b, col]
            d = np.diff(x)
            m = np.abs(d) > STILL
            moved.append(d[m])
            hand_at.append(np.diff(rec.state[a:b, hand])[m])
            offset.append((rec.state[a:b - 1, :3] - rec.environment_state[a:b - 1, obj])[m])
            travel.append(float(np.abs(x - x[0]).max()))
        d, h = np.abs(np.concatenate(moved)), np.concatenate(hand_at)
        print(f"{path}: {len(eps)} episodes of {args.task}, {sum(len(m) for m in moved)} steps moved {args.entry}")
        if len(d):
            q = np.percentile(d, [50, 90, 99, 100]) * 100
            print(f"  |change| per moving step, cm: median {q[0]:.2f}, p90 {q[1]:.2f}, p99 {q[2]:.2f}, max {q[3]:.2f};"
                  f" {args.hand} change at those steps median {np.median(h) * 100:.2f} cm")
            o = np.concatenate(offset)[d > args.fast / 100] * 100
            if len(o):
                lo, mid, hi = np.percentile(o, [5, 50, 95], axis=0)
                print(f"  the hand's offset from the {args.entry[:-2]} before the steps faster than {args.fast} cm (x, y, z cm):"
                      f" p5 {np.round(lo, 1)}, median {np.round(mid, 1)}, p95 {np.round(hi, 1)}")
            print("  steps faster than " + ", ".join(f"{v:.1f} cm: {(d > v / 100).sum()}" for v in (0.2, 0.4, 0.6, 1.0)))
        t = np.asarray(travel) * 100
        print(f"  travel per episode, cm: median {np.median(t):.1f}, max {t.max():.1f}; episodes over 5 cm: {(t > 5).sum()}")


if __name__ == "__main__":
    main()
