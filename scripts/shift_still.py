"""The default scene and each visual shift (wam/envs/shift.py) for one task and seed, one row per shift, the default
cameras side by side: `python scripts/shift_still.py docs/shift.png [TASK] [SEED]` (made with drawer-close-v3 and
100000, the first evaluation seed)."""

import sys

import numpy as np
from PIL import Image, ImageDraw

from wam.envs.metaworld import DEFAULT_CAMERAS, MetaWorldEnv
from wam.envs.shift import VISUAL_SHIFTS

out = sys.argv[1]
task = sys.argv[2] if len(sys.argv) > 2 else "drawer-close-v3"
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
size, label, gap = 160, 80, 4
rows = []
for shift in (None, *VISUAL_SHIFTS):
    env = MetaWorldEnv(task, DEFAULT_CAMERAS, size, shift)
    images = env.reset(seed).images
    env.close()
    name = Image.new("RGB", (label, size), "white")
    ImageDraw.Draw(name).text((6, size // 2 - 6), shift or "default", fill="black")
    white = np.full((size, gap, 3), 255, np.uint8)
    rows.append(np.concatenate([np.asarray(name), *(x for c in DEFAULT_CAMERAS for x in (white, images[c]))], axis=1))
grid = np.concatenate([x for r in rows for x in (r, np.full((gap, r.shape[1], 3), 255, np.uint8))][:-1], axis=0)
Image.fromarray(grid).save(out, optimize=True)
print(f"{out}: {task}, seed {seed}, cameras {', '.join(DEFAULT_CAMERAS)}; rows: default, {', '.join(VISUAL_SHIFTS)}")
