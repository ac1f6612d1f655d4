"""One episode as `wam bench judge` imagined it beside what really happened: rows of frames (both cameras), evenly
spaced over each episode, the imagined rollouts first (one row per bench output folder), the real one last (recorded
here by `wam eval --videos 1`). For docs/judge.md's figure of an imagined episode.

    python scripts/judge_imagined_vs_real.py OUT.png TASK SEED POLICY_SLUG REAL_MP4 BENCH_OUT [BENCH_OUT ...]
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from wam.video import read_mp4

COLUMNS = 6


def row(frames: np.ndarray, label: str) -> np.ndarray:
    picked = np.concatenate([frames[i] for i in np.linspace(0, len(frames) - 1, COLUMNS).astype(int)], 1)
    img = Image.fromarray(np.pad(picked, ((14, 0), (0, 0), (0, 0)), constant_values=255))
    ImageDraw.Draw(img).text((2, 1), label, fill=(0, 0, 0))
    return np.asarray(img)


def main() -> None:
    out, task, seed, slug, real, benches = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
    rows = []
    for b in benches:
        video = Path(b) / "imagined" / slug / "videos" / f"p00-{task}-{seed}.mp4"
        frames = read_mp4(video)
        rows.append(row(frames, f"imagined ({Path(b).name}): {len(frames) - 1} chunks"))
    frames = read_mp4(real)[:, :96]  # the eval video's top panel: the real views
    rows.append(row(frames, f"real: {len(frames)} steps"))
    width = max(r.shape[1] for r in rows)
    sheet = Image.fromarray(np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                                            for r in rows], 0))
    sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)  # a small file for docs/
    print(f"written: {out}")


if __name__ == "__main__":
    main()
