"""report.html: one page with the results table, plots (success with 95% intervals, training curves) and
the rollout videos (real cameras on top, the model's predicted future frames below)."""

from __future__ import annotations

import html
import json
from pathlib import Path


_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}}figure{{display:inline-block;margin:6px}}
figcaption{{font-size:12px}}</style></head><body>
"""


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

    names += _loss_plot(out, checkpoint)
    return names


def _loss_plot(out: Path, checkpoint: Path) -> list[str]:
    """loss.png from the checkpoint's training metrics, if they are there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    metrics = Path(checkpoint).parent / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "loss" in r]
        if rows:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            steps = [r["step"] for r in rows]
            for key, label in (("action", "action"), ("video", "video"), ("environment", "environment-state")):
                if all(key in r for r in rows):  # the environment-state loss where training had it
                    ax.plot(steps, [r[key] for r in rows], label=f"{label} loss")
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
    page = _HEAD.format(title="wam evaluation") + f"""<h1>wam evaluation</h1>
<p>Checkpoint <code>{html.escape(str(checkpoint))}</code> (step {summary.get('train_step')}, {summary.get('parameters') or 0:,} parameters).
Closed loop in Meta-World v3, held-out variation seeds {summary['seeds'][0]}..{summary['seeds'][1]},
{summary['episodes_per_task']} episodes per task, at most {summary['max_steps']} steps,
{summary['sampler']['steps']} sampler steps, {summary['sampler']['execute']} actions executed per chunk.
{('Instruction override: <b>' + html.escape(summary['instruction_override']) + '</b>.') if summary['instruction_override'] else ''}
{('Shift at evaluation: <b>' + html.escape(summary['shift']) + '</b>, drawn per episode from its seed.') if summary.get('shift') else ''}</p>
<h2>Mean success {summary['mean_success']:.2f}</h2>
<table><tr><th>task</th><th>success</th><th>95% CI</th><th>episodes</th><th>mean steps</th><th>ms / chunk</th></tr>{rows}</table>
<p>Median {summary['median_ms_per_chunk']:.1f} ms per action chunk (p90 {summary['p90_ms_per_chunk']:.1f} ms).</p>
{''.join(f"<img src='{p}'>" for p in plots)}
{_failures(summary)}
<h2>Rollouts</h2><p>Top row: the cameras. Rows below: the model's predicted future frames from its latest plan.</p>
{videos}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path


def _failures(summary: dict) -> str:
    """The report's section on why rollouts failed (wam eval --diagnose; wam/judge/failure.py)."""
    if not summary.get("failures"):
        return ""
    f = summary["failures"]
    verdicts = [v for v in ("plan", "action", "neither", "not applicable", "succeeded")
                if any(c.get(v) for c in f["counts"].values())]
    rows = "".join(f"<tr><td>{html.escape(t)}</td>" + "".join(f"<td>{c.get(v, 0)}</td>" for v in verdicts) + "</tr>"
                   for t, c in f["counts"].items())
    figures = []
    for e in f["episodes"]:
        img = f"<img src='{e['evidence']}' width='384'>" if e.get("evidence") else ""
        detail = (f" at step {e['moment']}; plan error {e['plan_error']:.4f} vs copying the frame {e['copy_error']:.4f}; "
                  f"with the expert's frames: {'success' if e['swap_success'] else 'failure'}"
                  if e.get("moment") is not None else "")
        figures.append(f"<figure>{img}<figcaption>{html.escape(e['task'])} seed {e['seed']}: "
                       f"<b>{html.escape(e['verdict'])}</b>{detail}<br>{html.escape(e['reason'])}</figcaption></figure>")
    figures = "".join(figures)
    return f"""<h2>Why rollouts failed</h2>
<p>For each failed episode diagnosed: the moment its actions turned away from the scripted expert's; there, the
model's predicted frames (left) against the expert's (right), under the real views; then the oracle swap: from that
moment the model decodes its actions from the expert's frames. <b>plan</b>: that succeeds and its own plan was no better
than copying the current frame; <b>action</b>: even the expert's frames are decoded into failing actions;
<b>neither</b>: that succeeds and its plan was close.</p>
<table><tr><th>task</th>{''.join(f'<th>{v}</th>' for v in verdicts)}</tr>{rows}</table>
{figures}"""


def write_offline_report(out: Path, summary: dict, checkpoint: Path, names: list[str], trace: tuple, strip: list) -> Path:
    """report.html of an offline evaluation (offline.py): action error per dimension and per chunk step, one
    episode's predicted chunks over its recorded actions, the predicted frames' PSNR/SSIM beside copying the
    current frame, and a strip of real / predicted / copied frames. trace: (the episode's actions (T, a), the
    window starts, the chunks predicted there (w, k, a)); strip: [(real, predicted, current) (v, s, s, 3)]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    plots = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    rmse = [summary["action_rmse_per_dim"][n] for n in names]
    axes[0].bar(range(len(names)), rmse, color="#4c72b0")
    axes[0].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[0].set_ylabel("RMSE (robot units)")
    axes[0].set_title("action error per dimension", fontsize=10)
    steps = summary["action_mse_per_step"]
    axes[1].plot(range(len(steps)), steps, marker="o")
    axes[1].set_xlabel("step of the chunk")
    axes[1].set_ylabel("MSE")
    axes[1].set_title("action error along the chunk", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "actions.png", dpi=100)
    plt.close(fig)
    plots.append("actions.png")

    actions, starts, chunks = trace
    dims = min(len(names), 8)
    fig, axes = plt.subplots(dims, 1, figsize=(10, 1.4 * dims + 0.6), sharex=True, squeeze=False)
    for d in range(dims):
        ax = axes[d, 0]
        ax.plot(actions[:, d], color="k", lw=1.2, label="recorded")
        for t0, chunk in zip(starts, chunks):
            ax.plot(np.arange(t0, t0 + len(chunk)), chunk[:, d], color="#dd8452", lw=0.9, alpha=0.8)
        ax.set_ylabel(names[d], fontsize=8)
    axes[0, 0].set_title("first episode: recorded actions (black), predicted chunks (orange)", fontsize=10)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(out / "trace.png", dpi=100)
    plt.close(fig)
    plots.append("trace.png")

    frames = summary.get("frames")
    if frames:
        offsets = list(frames["per_offset"])
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.plot([int(o) for o in offsets], [frames["per_offset"][o][key] for o in offsets], marker="o", label="predicted")
            ax.plot([int(o) for o in offsets], [frames["per_offset"][o]["copy_" + key] for o in offsets], marker="s",
                    ls="--", label="copy the current frame")
            ax.set_xlabel("frames ahead")
            ax.set_ylabel(key.upper())
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "frames.png", dpi=100)
        plt.close(fig)
        plots.append("frames.png")
    if strip:
        from PIL import Image

        rows = [np.concatenate([np.concatenate(list(x), axis=1) for x in example], axis=1) for example in strip]
        img = np.concatenate(rows, axis=0)
        rep = max(1, 64 // strip[0][0].shape[-2])  # each frame at least 64 px high
        Image.fromarray(np.kron(img, np.ones((rep, rep, 1), np.uint8))).save(out / "strip.png")

    dims_rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{summary['action_mse_per_dim'][n]:.4g}</td>"
                        f"<td>{summary['action_rmse_per_dim'][n]:.4g}</td></tr>" for n in names)
    frame_rows = "" if not frames else "".join(
        f"<tr><td>t+{o}</td><td>{r['psnr']:.2f}</td><td>{r['copy_psnr']:.2f}</td><td>{r['ssim']:.3f}</td>"
        f"<td>{r['copy_ssim']:.3f}</td><td>{r['n']}</td></tr>" for o, r in frames["per_offset"].items())
    skipped = "".join(f"<li>episode {s['episode']}: {html.escape(s['why'])}</li>" for s in summary["skipped"])
    page = _HEAD.format(title="wam offline evaluation") + f"""<h1>wam offline evaluation</h1>
<p>Checkpoint <code>{html.escape(str(checkpoint))}</code> on <code>{html.escape(summary['data'])}</code>:
{summary['windows']} windows (every {summary['stride']} frames) of {len(summary['episodes'])} episodes
{'held out at training' if summary['held_out'] else ''}, {summary['sampler']['steps']} sampler steps.</p>
<h2>Action MSE {summary['action_mse']:.4g} (robot units)</h2>
<table><tr><th>dimension</th><th>MSE</th><th>RMSE</th></tr>{dims_rows}</table>
{''.join(f"<img src='{p}'>" for p in plots[:2])}
{'<h2>Predicted frames</h2><table><tr><th>frame</th><th>PSNR</th><th>copy PSNR</th><th>SSIM</th><th>copy SSIM</th><th>n</th></tr>' + frame_rows + '</table>' if frames else ''}
{"<img src='frames.png'>" if frames else ''}
{"<p>Real (left), predicted (middle), the current frame held (right), at the last predicted offset:</p><img src='strip.png'>" if strip else ''}
{'<h2>Skipped episodes</h2><ul>' + skipped + '</ul>' if skipped else ''}
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
