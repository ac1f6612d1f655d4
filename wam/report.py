"""report.html: one page with the results table, plots (success with 95% intervals, training curves) and
the rollout videos (real cameras on top, the model's predicted future frames below)."""

from __future__ import annotations

import html
import json
from pathlib import Path


def _plots(out: Path, summary: dict, checkpoint: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    tasks = list(summary["tasks"])
    rates = [summary["tasks"][t]["success_rate"] for t in tasks]
    lo = [r - summary["tasks"][t]["ci95"][0] for r, t in zip(rates, tasks)]
    hi = [summary["tasks"][t]["ci95"][1] - r for r, t in zip(rates, tasks)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(tasks), 3.2))
    ax.bar(range(len(tasks)), rates, yerr=[lo, hi], capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(tasks)), [t.removesuffix("-v3") for t in tasks], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.axhline(summary["mean_success"], color="k", ls="--", lw=1)
    ax.set_title(f"mean success {summary['mean_success']:.2f} (dashed), {summary['episodes_per_task']} episodes per task",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=100)
    plt.close(fig)
    names.append("success.png")

    metrics = Path(checkpoint).parent / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "loss" in r]
        if rows:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            steps = [r["step"] for r in rows]
            for key in ("action", "video"):
                ax.plot(steps, [r[key] for r in rows], label=f"{key} loss")
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "loss.png", dpi=100)
            plt.close(fig)
            names.append("loss.png")
    return names


def write_report(out: Path, summary: dict, checkpoint: Path) -> Path:
    out = Path(out)
    plots = _plots(out, summary, checkpoint)
    rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{r['success_rate']:.2f}</td><td>[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]</td>"
        f"<td>{r['successes']}/{r['episodes']}</td><td>{r['mean_steps']:.0f}</td><td>{r['median_ms']:.1f}</td></tr>"
        for t, r in summary["tasks"].items())
    videos = "".join(
        f"<figure><video src='{Path(e['video']).relative_to(out).as_posix()}' controls loop muted width='288'></video>"
        f"<figcaption>{html.escape(e['task'])} seed {e['seed']}: {'success' if e['success'] else 'failure'} "
        f"({e['steps']} steps)</figcaption></figure>"
        for e in summary["episodes"] if e.get("video"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>wam evaluation</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}}figure{{display:inline-block;margin:6px}}
figcaption{{font-size:12px}}</style></head><body>
<h1>wam evaluation</h1>
<p>Checkpoint <code>{html.escape(str(checkpoint))}</code> (step {summary.get('train_step')}, {summary.get('parameters') or 0:,} parameters).
Closed loop in Meta-World v3, held-out variation seeds {summary['seeds'][0]}..{summary['seeds'][1]},
{summary['episodes_per_task']} episodes per task, at most {summary['max_steps']} steps,
{summary['sampler']['steps']} sampler steps, {summary['sampler']['execute']} actions executed per chunk.
{('Instruction override: <b>' + html.escape(summary['instruction_override']) + '</b>.') if summary['instruction_override'] else ''}</p>
<h2>Mean success {summary['mean_success']:.2f}</h2>
<table><tr><th>task</th><th>success</th><th>95% CI</th><th>episodes</th><th>mean steps</th><th>ms / chunk</th></tr>{rows}</table>
<p>Median {summary['median_ms_per_chunk']:.1f} ms per action chunk (p90 {summary['p90_ms_per_chunk']:.1f} ms).</p>
{''.join(f"<img src='{p}'>" for p in plots)}
<h2>Rollouts</h2><p>Top row: the cameras. Rows below: the model's predicted future frames from its latest plan.</p>
{videos}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
