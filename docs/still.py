"""Stills from a rollout video: `python docs/still.py VIDEO.mp4 OUT.png [N]` puts N evenly spaced frames side by side."""

import sys

import numpy as np
from PIL import Image

from wam.video import read_mp4

frames = read_mp4(sys.argv[1])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 6
picks = np.linspace(0, len(frames) - 1, n).round().astype(int)
gap = np.full((frames.shape[1], 4, 3), 255, np.uint8)
row = np.concatenate([x for i in picks for x in (frames[i], gap)][:-1], axis=1)
Image.fromarray(row).save(sys.argv[2])
print(f"{sys.argv[2]}: frames {picks.tolist()} of {len(frames)}")
