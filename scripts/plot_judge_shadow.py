"""Real, imagined and shadow success per policy, from the JSON scripts/judge_shadow_check.py wrote: one panel per task
and one for the mean, each policy a vertical line from what it did in imagination judged by the simulator (shadow,
circle) to the judge's verdict (imagined, cross), placed at its real success. For docs/judge-shadow.png:

    python scripts/plot_judge_shadow.py docs/judge-shadow.png runs/judge8/shadow-12k.json
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    rows = json.load(open(sys.argv[2]))["policies"]
    tasks = list(rows[0]["tasks"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.1 * (len(tasks) + 1), 3.6), sharey=True)
    for ax, task in zip(axes, tasks + [None]):
        get = (lambda p, k: p[k]) if task is None else (lambda p, k, t=task: p["tasks"][t][k])
        for p in rows:
            x = get(p, "real")
            ax.plot([x, x], [get(p, "shadow"), get(p, "imagined")], color="0.75", lw=1, zorder=1)
        ax.scatter([get(p, "real") for p in rows], [get(p, "shadow") for p in rows], s=22, facecolors="none",
                   edgecolors="tab:orange", label="shadow (simulator, imagined actions)", zorder=2)
        ax.scatter([get(p, "real") for p in rows], [get(p, "imagined") for p in rows], s=26, marker="x",
                   color="tab:blue", label="imagined (the judge)", zorder=3)
        ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
        ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="real success", title=task or "mean over tasks")
    axes[0].set_ylabel("success")
    axes[0].legend(loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(sys.argv[1], dpi=110)
    print(f"written: {sys.argv[1]}")


if __name__ == "__main__":
    main()
