"""Stills from several `wam imagine` videos of the same episode, one row each under the real frames:

    python docs/still_compare.py OUT.png N LABEL=DIR/imagine.mp4 [LABEL=DIR/imagine.mp4 ...]

`wam imagine` writes the real frames in the top half of each video frame and the imagined ones below; the first
video gives the real row, every video its imagined row, N evenly spaced frames side by side, labelled on the left.
"""

import sys

import numpy as np
from PIL import Image, ImageDraw

from wam.video import read_mp4

out, n, named = sys.argv[1], int(sys.argv[2]), [a.split("=", 1) for a in sys.argv[3:]]
videos = [(label, read_mp4(path)) for label, path in named]
length = min(len(v) for _, v in videos)
picks = np.linspace(0, length - 1, n).round().astype(int)
h = videos[0][1].shape[1] // 2


def row(frames: np.ndarray, top: bool) -> np.ndarray:
    part = [f[:h] if top else f[h:] for f in frames[picks]]
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([x for p in part for x in (p, gap)][:-1], axis=1)


rows = [("real", row(videos[0][1], True))] + [(label, row(v, False)) for label, v in videos]
pad = 110
canvas = Image.new("RGB", (pad + rows[0][1].shape[1], len(rows) * (h + 4)), "white")
draw = ImageDraw.Draw(canvas)
for i, (label, r) in enumerate(rows):
    canvas.paste(Image.fromarray(r), (pad, i * (h + 4)))
    draw.text((4, i * (h + 4) + h // 2 - 6), label, fill="black")
canvas.save(out, optimize=True)
print(f"{out}: frames {picks.tolist()} of {length}, rows {[label for label, _ in rows]}")
