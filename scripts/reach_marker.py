"""How large is reach-v3's goal marker in each camera? Pixels it covers and its bounding box, per held-out episode.

    python scripts/reach_marker.py [--cameras oblique top oblique_near] [--image-size 96] [--episodes 6]

Renders the first observation of the held-out reach episodes (seeds from 100000, as `wam eval`) twice, with the goal
site shown and hidden (its alpha set to 0), and counts the pixels that differ (summed |RGB| difference above 30).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from wam.envs.metaworld import MetaWorldEnv
    from wam.evaluate import EVAL_SEED

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", nargs="+", default=["oblique", "top", "oblique_near"])
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--episodes", type=int, default=6)
    args = ap.parse_args()

    env = MetaWorldEnv("reach-v3", cameras=tuple(args.cameras), image_size=args.image_size)
    model = env._env.model
    goal = [model.site(i).name for i in range(model.nsite)].index("goal")
    sizes = {c: [] for c in args.cameras}
    try:
        for seed in range(EVAL_SEED, EVAL_SEED + args.episodes):
            shown = env.reset(seed).images
            alpha = model.site_rgba[goal, 3]
            model.site_rgba[goal, 3] = 0.0
            hidden = env.render()
            model.site_rgba[goal, 3] = alpha
            row = []
            for c in args.cameras:
                mask = np.abs(shown[c].astype(int) - hidden[c].astype(int)).sum(-1) > 30
                ys, xs = np.nonzero(mask)
                w, h = (int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1) if len(xs) else (0, 0)
                sizes[c].append((int(mask.sum()), w, h))
                row.append(f"{c} {mask.sum()} px ({w} x {h})")
            print(f"seed {seed}: " + "; ".join(row))
    finally:
        env.close()
    for c, s in sizes.items():
        a = np.array(s)
        print(f"{c} at {args.image_size} px: {a[:, 0].min()}-{a[:, 0].max()} px covered, "
              f"{a[:, 1:].min()}-{a[:, 1:].max()} px across")


if __name__ == "__main__":
    main()
