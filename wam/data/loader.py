"""Training batches through a `torch.utils.data.DataLoader`, built by worker processes beside the training step.

Step i's batch is what it always was: every random draw of the step (the frames, the augmentation, then the
noise levels and the noise in the loss) comes from one generator seeded by (seed, i, rank). A worker draws the
frames and the augmentation and builds the batch; the generator's state travels back with it, so the training
process goes on drawing the loss's noise from exactly where the worker stopped. Resume replays the same
batches, with or without workers, with any number of them.

Under torchrun each rank draws its windows' current frames from its own contiguous shard of the frames (rank r of w:
positions r*N/w .. (r+1)*N/w - 1, whole stretches of episodes): the ranks train on disjoint windows, and each reads
mostly its own part of the frame cache (a window's context and future frames may reach just across a shard's edge).
"""

from __future__ import annotations

import numpy as np
import torch

from wam.data.windows import Batch, Windows


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


class StepBatches(torch.utils.data.Dataset):
    """Item `step`: (the batch of that step, the state of its generator after drawing it)."""

    def __init__(self, windows: Windows, batch_size: int, shift_px: int, seed: int, rank: int = 0, world: int = 1,
                 video_share: float | None = None):
        self.windows, self.batch_size, self.shift_px = windows, batch_size, shift_px
        self.seed, self.rank, self.world = seed, rank, world
        self.first = rank * len(windows) // world
        self.shard = (rank + 1) * len(windows) // world - self.first
        if self.shard < 1:
            raise ValueError(f"rank {rank} of {world} has no frames to train on ({len(windows)} frames in all)")
        self.video_share, self.groups = video_share, None
        if video_share is not None:  # (positions in the shard of action-free frames, of demonstration frames)
            video = windows.from_video[self.first:self.first + self.shard]
            groups = torch.nonzero(video).flatten(), torch.nonzero(~video).flatten()
            self.groups = groups if len(groups[0]) and len(groups[1]) else None  # one kind alone: nothing to share

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> tuple[Batch, torch.Tensor]:
        g = step_generator(self.seed, step, self.rank)
        if self.groups is None:
            j = torch.randint(self.shard, (self.batch_size,), generator=g).numpy()
        else:  # each sample from the action-free frames with probability video_share, else from the demonstrations
            video, demos = self.groups
            from_video = torch.rand(self.batch_size, generator=g) < self.video_share
            j = torch.where(from_video, video[torch.randint(len(video), (self.batch_size,), generator=g)],
                            demos[torch.randint(len(demos), (self.batch_size,), generator=g)]).numpy()
        batch = self.windows.get(self.first + j, shift_px=self.shift_px, generator=g)
        return batch, g.get_state()


def _as_is(item):
    return item


def _worker_init(_):
    torch.set_num_threads(1)  # the training step has the cores; a worker builds one batch at a time


def batches(windows: Windows, batch_size: int, shift_px: int, seed: int, steps: range, workers: int = 2,
            rank: int = 0, world: int = 1, video_share: float | None = None):
    """(step, batch, generator) for each step in `steps`, `workers` processes building ahead (0: inline).
    `video_share`: the fraction of each batch drawn from action-free episodes' frames (None: uniform over frames)."""
    data = StepBatches(windows, batch_size, shift_px, seed, rank, world, video_share)
    if workers == 0:
        items = (data[s] for s in steps)
    else:
        items = iter(torch.utils.data.DataLoader(data, batch_size=None, sampler=list(steps), num_workers=workers,
                                                 collate_fn=_as_is, worker_init_fn=_worker_init, prefetch_factor=4,
                                                 persistent_workers=False))
    for step, (batch, state) in zip(steps, items):
        g = torch.Generator()
        g.set_state(state)
        yield step, batch, g
