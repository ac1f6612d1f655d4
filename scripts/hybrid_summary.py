"""docs/hybrid.json and its table: the VLA, the hybrids, the best pure WAM recipe and action-only, per split of
`wam bench generalise` and on latency, from the benches' own outputs:

    python scripts/hybrid_summary.py docs/generalise.json runs/bench/latency-hybrid/latency.json docs/hybrid.json

For each split it takes every entry of the VLA and hybrid recipes, action-only, and the pure WAM recipe with the best
mean success on that split (not a VLM recipe, not action-only); `few` entries are the recipes without action-free
video and with same-task video. Latency: each recipe's median ms per chunk from `wam bench latency --cells`.
Prints the markdown table docs/hybrid.md carries.
"""

import json
import sys

from wam.backbones import VLM_RECIPES

BASELINE = "action-only"
SPLITS = ("unseen", "shift", "few", "in-distribution", "unseen-avdc")


def _base(name: str) -> str:
    return name.partition("+")[0].partition("@")[0]


def summary(generalise: dict, latency: dict | None) -> dict:
    out: dict = {"source": "wam bench generalise (docs/generalise.json) and wam bench latency --cells", "splits": {},
                 "recipes": {}}
    for split in SPLITS:
        entries = generalise.get(split) or {}
        wam = {n: e for n, e in entries.items() if _base(n) not in (*VLM_RECIPES, BASELINE) and "+" not in n}
        best = max(wam, key=lambda n: wam[n]["mean_success"]) if wam else None
        keep = [n for n in entries if _base(n) in (*VLM_RECIPES, BASELINE) or n == best
                or (best is not None and n.startswith(best + "+"))]
        out["splits"][split] = {"best_wam": best, "entries": {n: entries[n]["mean_success"] for n in keep}}
        for n in keep:
            who = "best-wam" if n.partition("+")[0] == best else n.partition("+")[0]
            key = who + (n[len(n.partition("+")[0]):] if "+" in n else "")
            row = out["recipes"].setdefault(key, {"mean_success": {}})
            row["mean_success"][split] = entries[n]["mean_success"]
            if who == "best-wam":
                row.setdefault("best_wam_by_split", {})[split] = n
    if latency:
        for name, row in latency["paths"].items():
            recipe = row["recipe"]
            key = recipe if recipe in (*VLM_RECIPES, BASELINE) else None
            with_frames = "with its frames" in name
            for k, r in out["recipes"].items():
                if key is None and k == "best-wam" and recipe in {_base(v) for v in r.get("best_wam_by_split", {}).values()}:
                    r.setdefault("latency_ms", {})[name.split(":")[0]] = row["median_ms"]
            if key is not None and key in out["recipes"]:
                out["recipes"][key].setdefault("latency_ms", {})["with frames" if with_frames else "policy"] = row["median_ms"]
    return out


def markdown(s: dict) -> str:
    splits = [sp for sp in SPLITS if s["splits"].get(sp, {}).get("entries")]
    lines = ["| recipe | " + " | ".join(splits) + " | ms/chunk |", "| --- |" + " --- |" * (len(splits) + 1)]
    for name, row in s["recipes"].items():
        cells = [f"{row['mean_success'][sp]:.2f}" if sp in row["mean_success"] else "-" for sp in splits]
        ms = ", ".join(f"{k} {v:.0f}" for k, v in row.get("latency_ms", {}).items()) or "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ms} |")
    best = "; ".join(f"{sp}: {s['splits'][sp]['best_wam']}" for sp in splits if s["splits"][sp]["best_wam"])
    return "\n".join(lines) + f"\n\nbest-wam per split: {best}\n"


if __name__ == "__main__":
    gen = json.loads(open(sys.argv[1]).read())
    lat = json.loads(open(sys.argv[2]).read()) if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    s = summary(gen, lat)
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            json.dump(s, f, indent=2)
    print(markdown(s))
