"""The labels a `wam bench generalise` cell gave its action-free video, against the actions the pool hides from it.

A cell trained since the bench records this itself (its `labels`, in OUT/cells/.../record.json and the report); this
scores a cell whose record predates that (the `pose` lever's first cells): R^2 overall and per held-out task, as
wam.bench.generalise.labels_against_truth computes it.

    python scripts/generalise_label_score.py --out runs/bench/generalise-env --recipe hybrid-foresight@pose
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wam.bench.generalise import GeneraliseBenchConfig, collect_pool, conditions, labels_against_truth, plan_of, pools_of


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="the bench's OUT")
    p.add_argument("--recipe", required=True, help="the cell's recipe name, e.g. hybrid-foresight@pose")
    p.add_argument("--condition", default="mt10+unseen-video")
    args = p.parse_args()
    plan = plan_of(GeneraliseBenchConfig(out=args.out))
    cond = conditions(plan)[args.condition]
    pool = collect_pool(args.out, cond.pool, pools_of(plan)[cond.pool], plan, workers=1)  # the pool as collected
    labels = args.out / "cells" / cond.name / args.recipe / "train" / "labels"
    found = [labels / "pose.npz"] if (labels / "pose.npz").exists() else sorted(labels.glob("step-*.npz"))
    if not found:
        raise SystemExit(f"{labels}: no labels (pose.npz or step-N.npz); did the cell label its video?")
    r = labels_against_truth(found[-1], pool, cond.data_config(pool))
    fmt = lambda xs: [None if x is None else round(x, 2) for x in xs]  # noqa: E731
    print(f"{found[-1]}: {r['all']['frames']} frames, R^2 {r['all']['r2']:.3f} (x, y, z, gripper "
          f"{fmt(r['all']['r2_per_dim'])})")
    for t, e in r["tasks"].items():
        print(f"    {t:18s} R^2 {e['r2']:.3f} {fmt(e['r2_per_dim'])}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
