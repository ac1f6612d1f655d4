"""Imagined against real success of the same policies under several judge heads, one panel per head, from the
judge.json files `wam bench judge` wrote (or the JSON `wam judge rescore --out` wrote): for docs/judge-heads.png.

    python scripts/plot_judge_heads.py OUT.png LABEL=BENCH_OUT [LABEL=BENCH_OUT|LABEL=RESCORED.json ...]

docs/judge-heads.png:
    python scripts/plot_judge_heads.py docs/judge-heads.png "arm state + frames=runs/bench/judge2-robot" \\
        "environment state=runs/bench/judge2-env-noframes" "+ offsets=runs/bench/judge2-env-offsets" \\
        "+ motion=runs/bench/judge2-env-motion"
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        raise SystemExit(__doc__)
    out, panels = sys.argv[1], [a.split("=", 1) for a in sys.argv[2:]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.8), sharey=True)
    for ax, (label, folder) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        path = Path(folder)
        r = json.loads((path if path.suffix == ".json" else path / "judge.json").read_text())
        real = [p["real"] for p in r["policies"]]
        imagined = [p["imagined"] for p in r["policies"]]
        ax.plot([0, 1], [0, 1], color="0.8", lw=1)
        ax.scatter(real, imagined, s=18)
        for k, (x, y) in enumerate(zip(real, imagined)):
            ax.annotate(str(k), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="real success", title=f"{label}\nSpearman {r['spearman']:.2f}, "
               f"MMRV {r['mmrv']:.3f}", aspect="equal")
        ax.title.set_fontsize(8)
    (list(axes) if len(panels) > 1 else [axes])[0].set_ylabel("imagined success")
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(out, dpi=120)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
