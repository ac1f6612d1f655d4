"""Who attends to whom in the VLA and each hybrid, read from the models' own masks:
`python scripts/hybrid_attention.py docs/hybrid-attention.png`.

Each panel is one recipe built at the tiny preset on the offline prefix (`--backbone lite`): rows are the queries of
each token group, columns the keys they may read (the VLM prefix, then the expert's groups), taken from the model's
`mask` buffer and its prefix columns (every expert token reads the prefix; the prefix reads only itself). Row labels
say which weights compute the tokens and when they run at inference.
"""

import dataclasses
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
import numpy as np

from wam.backbones import build
from wam.config import preset
from wam.models.transformer import ACTION, CONTEXT, VIDEO
from wam.testing import concrete

RECIPES = ("vla", "hybrid-foresight", "hybrid-mot")
COLUMNS = ("VLM prefix\n(images, words)", "state", "future\nframes", "actions")


def group_mask(model) -> np.ndarray:
    """(4, 4): row group (prefix, state, frames, actions) may read column group; NaN where the group does not exist."""
    groups = [CONTEXT] * model.n_ctx + [VIDEO] * model.n_vid + [ACTION] * model.n_act
    groups = np.array(groups)
    mask = model.mask.numpy()
    out = np.full((4, 4), np.nan)
    out[0] = [1, 0, 0, 0]  # the VLM reads only itself (prefix-LM)
    for i, g in enumerate((CONTEXT, VIDEO, ACTION), start=1):
        if not (groups == g).any():
            continue
        out[i, 0] = 1
        for j, h in enumerate((CONTEXT, VIDEO, ACTION), start=1):
            out[i, j] = float(mask[groups == g][:, groups == h].any()) if (groups == h).any() else np.nan
    for j, h in enumerate((CONTEXT, VIDEO, ACTION), start=1):
        if not (groups == h).any():
            out[:, j] = np.nan
    return out


def rows(recipe: str, model) -> list[str]:
    cached = "once per chunk"
    steps = "every step"
    if recipe == "hybrid-mot":
        return [f"VLM prefix\n(VLM weights, {cached})", f"state\n(video stream, {cached})",
                f"frames\n(video stream, {cached})", f"actions\n(action stream, {steps})"]
    frames = "frames\n(expert, skipped unless asked)" if model.capabilities.frames_optional else "frames"
    return [f"VLM prefix\n(VLM weights, {cached})", f"state\n(expert, {cached})", frames, f"actions\n(expert, {steps})"]


def main(path: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, name in zip(axes, RECIPES):
        p = concrete(preset("tiny"))
        cfg = dataclasses.replace(p.model, backbone="lite", recipe=name, prefix_width=32, prefix_depth=2, action_width=16)
        model = build(cfg)
        m = group_mask(model)
        shown = np.where(np.isnan(m), 0, m + 1)  # 0 no such tokens, 1 not read, 2 read
        ax.imshow(shown, cmap=ListedColormap(["#dddddd", "#ffffff", "#5aae61"]), vmin=0, vmax=2)
        for i in range(4):
            for j in range(4):
                text = "-" if np.isnan(m[i, j]) else ("reads" if m[i, j] else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=9)
        ax.set_xticks(range(4), COLUMNS, fontsize=8)
        ax.set_yticks(range(4), rows(name, model), fontsize=8)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("keys (what is read)", fontsize=8)
    fig.suptitle("Who attends to whom (rows read columns; '-': no such tokens), from each model's mask", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/hybrid-attention.png")
