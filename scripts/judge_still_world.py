"""The judge with a world model that predicts nothing: every imagined frame is the current one, so each imagined
episode shows its real first frame throughout. Everything else is `wam bench judge`'s: the policies, the state model
that steps the arm's state through their actions, the success head, the seeds, the real results. If this null world
ranks the policies as well as the learned one, the learned world model's frames add nothing to the ranking.

    python scripts/judge_still_world.py --out runs/bench/judge-still --world CKPT --head DIR --policies P1 P2 ...

(every flag is `wam bench judge`'s; --world still names a checkpoint: its cameras, sizes and future offsets are used,
its predictions are not).
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F

from wam.cli import main
from wam.data.transforms import images_to_model
from wam.judge.dream import World


def still(self, images, state, prompt, actions, generator, rows, execute):
    """World.predict's contract, predicting that nothing moves."""
    m = self.cfg
    now = images[:, -1]  # (b, v, H, W, 3) uint8
    small = F.avg_pool2d(images_to_model(torch.from_numpy(np.ascontiguousarray(now))).flatten(0, 1),
                         m.image_size // m.future_size).reshape(len(now), -1, 3, m.future_size, m.future_size)
    f = len(m.future_offsets)
    return torch.stack([small] * f, 1), np.stack([now] * f, 1), None


if __name__ == "__main__":
    World.predict = still
    main(["bench", "judge", *sys.argv[1:]])
