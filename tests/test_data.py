"""The LeRobotDataset v3.0 writer/reader and the training windows, on synthetic episodes (no simulator)."""

import json

import numpy as np
import pytest
import torch

from wam.config import ModelConfig
from wam.dataset import DatasetWriter, Episode, load_dataset
from wam.windows import Normalizer, Windows

CAMS = ("oblique", "top")


def _episode(t, seed, task="reach-v3", size=16):
    rng = np.random.default_rng(seed)
    images = np.zeros((2, t, size, size, 3), np.uint8)
    for i in range(t):  # a bright square whose position encodes the frame index
        images[:, i, (i % 4) * 4:(i % 4) * 4 + 4, :4] = 255
    return Episode(images=images, state=rng.normal(size=(t, 4)).astype(np.float32),
                   action=rng.uniform(-1, 1, (t, 4)).astype(np.float32), success=np.arange(t) == t - 1,
                   instruction=f"do {task}", env_task=task, seed=seed)


def _write(root, lengths=(7, 5), **kw):
    w = DatasetWriter(root, fps=10, cameras=CAMS, image_size=16, **kw)
    eps = [_episode(t, i, task=("reach-v3", "drawer-close-v3")[i % 2]) for i, t in enumerate(lengths)]
    for ep in eps:
        w.add(ep)
    return w.finish(), eps


def test_roundtrip_keeps_states_actions_and_frames(tmp_path):
    root, eps = _write(tmp_path / "ds")
    d = load_dataset(root)
    assert d.images.shape == (2, 12, 16, 16, 3)
    np.testing.assert_allclose(d.state, np.concatenate([e.state for e in eps]), rtol=1e-6)
    np.testing.assert_allclose(d.action, np.concatenate([e.action for e in eps]), rtol=1e-6)
    assert list(d.episode_from) == [0, 7] and list(d.episode_to) == [7, 12]
    assert d.instructions == ["do reach-v3", "do drawer-close-v3"]
    assert d.env_tasks == ["reach-v3", "drawer-close-v3"] and d.seeds == [0, 1]
    # lossy video, but each frame's square is where it was written
    for i in range(12):
        frame = i if i < 7 else i - 7
        row = (frame % 4) * 4
        assert d.images[0, i, row + 1, 1].mean() > 200


def test_layout_follows_lerobot_v3(tmp_path):
    import pandas as pd

    root, _ = _write(tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 12
    assert info["features"]["observation.images.top"]["dtype"] == "video"
    for rel in ["meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet", "videos/observation.images.top/chunk-000/file-000.mp4"]:
        assert (root / rel).is_file(), rel
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.loc["do drawer-close-v3", "task_index"] == 1
    eps = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    assert eps["videos/observation.images.top/from_timestamp"].tolist() == [0.0, 0.7]
    stats = json.loads((root / "meta/stats.json").read_text())
    assert len(stats["action"]["mean"]) == 4 and np.asarray(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)


def test_interrupted_collection_leaves_nothing_that_looks_complete(tmp_path):
    w = DatasetWriter(tmp_path / "ds", fps=10, cameras=CAMS, image_size=16)
    w.add(_episode(5, 0))
    assert not (tmp_path / "ds").exists()
    with pytest.raises(FileNotFoundError, match="unfinished collection"):
        load_dataset(tmp_path / "ds")
    w.abort()
    assert not (tmp_path / "ds.partial").exists()


def test_missing_or_corrupt_files_are_named(tmp_path):
    root, _ = _write(tmp_path / "ds")
    video = root / "videos/observation.images.top/chunk-000/file-000.mp4"
    video.write_bytes(video.read_bytes()[:200])
    with pytest.raises(ValueError, match="file-000.mp4"):
        load_dataset(root)
    video.unlink()
    with pytest.raises(FileNotFoundError, match="top camera video"):
        load_dataset(root)
    (root / "meta/info.json").unlink()
    with pytest.raises(FileNotFoundError, match="info.json"):
        load_dataset(root)


def test_existing_dataset_is_not_overwritten_silently(tmp_path):
    _write(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="--overwrite"):
        DatasetWriter(tmp_path / "ds", fps=10, cameras=CAMS, image_size=16)


def test_windows_serve_what_the_config_declares(tmp_path):
    root, eps = _write(tmp_path / "ds")
    d = load_dataset(root)
    cfg = ModelConfig(image_size=16, stem_channels=(8, 8), future_size=8, future_patch=4, context_frames=2,
                      context_stride=2, future_frames=2, future_stride=2, action_horizon=4)
    norm = Normalizer.from_stats(d.stats)
    win = Windows(d, cfg, norm, torch.zeros(2, 384))
    b = win.get(np.array([0, 5, 10]))  # start of ep 0, near end of ep 0 (length 7), inside ep 1 (frames 7..11)
    assert b.context.images.shape == (3, 2, 2, 3, 16, 16)
    assert b.video.shape == (3, 2, 2, 3, 8, 8) and b.actions.shape == (3, 4, 4)
    # context clamps to the episode start: both context frames of index 0 are frame 0
    assert torch.equal(b.context.images[0, 0], b.context.images[0, 1])
    # future frames at +2, +4: index 5 has 7 (outside ep 0) and 9 (outside); index 10 has 12, 14 (outside ep 1)
    assert b.video_mask.tolist() == [[1, 1], [0, 0], [0, 0]]
    assert b.action_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    torch.testing.assert_close(norm.unactions(b.actions[1, :2]), torch.from_numpy(eps[0].action[5:7]))
    with pytest.raises(ValueError, match="cameras"):
        Windows(d, ModelConfig(cameras=("side",), image_size=16, stem_channels=(8, 8), future_size=8, future_patch=4),
                norm, torch.zeros(2, 384))


def test_normalizer_roundtrip_through_tensors():
    n = Normalizer([1, 2, 3, 4], [2, 2, 2, 2], [-1, -2, 0, -1], [1, 2, 5, 1])
    m = Normalizer.from_tensors(n.tensors())
    a = torch.rand(5, 4) * 2 - 1
    torch.testing.assert_close(m.unactions(m.actions(a)), a)
    assert m.actions(torch.tensor([[1.0, 2.0, 5.0, 1.0]])).tolist() == [[1.0, 1.0, 1.0, 1.0]]
