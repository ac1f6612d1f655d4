"""lerobot's own LeRobotDataset reads what `wam collect` writes: lengths, episodes, frames at lerobot's timestamps,
delta_timestamps windows against our training windows, and the statistics.

Needs lerobot, which lives in its own venv (torch 2.14.1, torchcodec); elsewhere this file is skipped:

    scripts/lerobot-venv.sh
    HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest -m lerobot tests/test_lerobot_interop.py
"""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("lerobot.datasets.lerobot_dataset", reason="lerobot is not installed in this venv: build its own "
                    "with scripts/lerobot-venv.sh and run this file there (see its docstring)")
pytestmark = pytest.mark.lerobot

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from wam.config import ModelConfig  # noqa: E402
from wam.data.frames import FrameStore  # noqa: E402
from wam.data.reader import read_dataset  # noqa: E402
from wam.data.transforms import Normalizer  # noqa: E402
from wam.data.windows import Windows  # noqa: E402


def _lerobot(root, **kw):
    return LeRobotDataset("wam/collected", root=root, video_backend="torchcodec", **kw)


def _uint8(frame: torch.Tensor) -> np.ndarray:
    """lerobot's float (3, H, W) in [0, 1] -> uint8 (H, W, 3)."""
    return (frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_lerobot_reads_lengths_episodes_states_actions_and_stats(tiny_dataset):
    ds, ours = _lerobot(tiny_dataset), read_dataset(tiny_dataset)
    assert len(ds) == len(ours.index) and ds.num_episodes == len(ours.episode_ids)
    for i in range(0, len(ds), 17):
        item = ds[i]
        assert int(item["episode_index"]) == ours.episode_ids[ours.episode_of[i]] and int(item["index"]) == i
        np.testing.assert_array_equal(item["observation.state"].numpy(), ours.state[i])
        np.testing.assert_array_equal(item["action"].numpy(), ours.action[i])
        np.testing.assert_array_equal(item["observation.environment_state"].numpy(), ours.environment_state[i])
        assert float(item["timestamp"]) == pytest.approx(ours.timestamp[i], abs=1e-6)
        assert item["task"] == ours.instructions[ours.task_index[i]]
    stats = json.loads((tiny_dataset / "meta/stats.json").read_text())
    for key in ("observation.state", "action", "observation.environment_state"):
        np.testing.assert_allclose(np.asarray(ds.meta.stats[key]["mean"]), stats[key]["mean"], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(ds.meta.stats[key]["std"]), stats[key]["std"], rtol=1e-6)


def test_frames_at_lerobots_timestamps_equal_ours(tiny_dataset):
    ds, ours = _lerobot(tiny_dataset), read_dataset(tiny_dataset)
    size = ours.cameras[0].shape[0]
    store = FrameStore(ours, size, progress=False)  # the stored size: nothing is resampled
    worst = 0.0
    for i in range(0, len(ds), 13):
        item = ds[i]
        for v, cam in enumerate(ours.cameras):
            theirs, mine = _uint8(item[cam.key]), store.read(v, [i])[0]
            worst = max(worst, float(np.abs(theirs.astype(int) - mine).mean()))
    assert worst < 1.0, worst  # two decoders of the same stream (torchcodec vs PyAV): rounding at most


def test_delta_timestamps_windows_match_ours(tiny_dataset):
    ours = read_dataset(tiny_dataset)
    fps, cam = ours.fps, ours.cameras[0]
    k, stride = 4, 2
    ds = _lerobot(tiny_dataset, delta_timestamps={"action": [j / fps for j in range(k)],
                                                  cam.key: [-stride / fps, 0.0]})
    size = cam.shape[0]
    cfg = ModelConfig(image_size=size, stem_channels=(8, 16, 16), context_frames=2, context_stride=stride,
                      future_frames=1, future_stride=2, future_size=size // 2, future_patch=4,
                      action_horizon=k).for_data(ours.camera_names, 4, 4)
    win = Windows(ours, FrameStore(ours, size, progress=False), cfg, Normalizer.from_stats(ours.stats),
                  torch.zeros(len(ours.instructions), cfg.text_dim))
    ends = [int(ours.episode_to[0]) - 2, int(ours.episode_from[1]), int(ours.episode_from[1]) + 1, 5]
    for i in ends:
        item, b = ds[i], win.get(np.array([i]))
        np.testing.assert_allclose(win.norm.unactions(b.actions[0]).numpy(), item["action"].numpy(), rtol=1e-5,
                                   atol=1e-5)
        assert (b.action_mask[0] == 0).tolist() == item["action_is_pad"].tolist()
        first = int(ours.episode_from[ours.episode_of[i]])
        assert [i - stride < first, False] == item[f"{cam.key}_is_pad"].tolist()
        ctx = ((b.context.images[0, :, 0].permute(0, 2, 3, 1) + 1) * 127.5).round().numpy()  # (2, H, W, 3)
        theirs = np.stack([_uint8(f) for f in item[cam.key]])
        assert np.abs(ctx - theirs).mean() < 1.0  # padded frames repeat the episode's first, ours clamp to it
