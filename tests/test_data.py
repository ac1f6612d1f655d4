"""The LeRobotDataset v3.0 writer/reader and the training windows, on synthetic episodes (no simulator)."""

import json

import numpy as np
import pytest
import torch

from wam.config import ModelConfig
from wam.data.frames import FrameStore
from wam.data.reader import DataError, read_dataset
from wam.data.transforms import Normalizer
from wam.data.windows import Windows
from wam.data.writer import DatasetSpec, DatasetWriter, Episode

CAMS = ("oblique", "top")
SPEC = DatasetSpec(fps=10, cameras=dict.fromkeys(CAMS, (16, 16)), state_names=("x", "y", "z", "g"),
                   action_names=("dx", "dy", "dz", "dg"), success=True, episode_columns=("wam/env_task", "wam/seed"))


def _episode(t, seed, start, task="reach-v3", size=16):
    """Frames whose pixels encode (camera, global frame index): camera c fills channel c with 8 * index + c."""
    rng = np.random.default_rng(seed)
    images = {cam: np.zeros((t, size, size, 3), np.uint8) for cam in CAMS}
    for c, cam in enumerate(CAMS):
        for i in range(t):
            images[cam][i, :, :, c] = 8 * (start + i) + 4 * c
    return Episode(images=images, state=rng.normal(size=(t, 4)).astype(np.float32),
                   action=rng.uniform(-1, 1, (t, 4)).astype(np.float32), task=f"do {task}",
                   success=np.arange(t) == t - 1, columns={"wam/env_task": task, "wam/seed": seed})


def _code(image, camera):
    """Decode the global frame index from a frame of `camera` (robust to compression noise)."""
    return int(round((float(image[..., camera].mean()) - 4 * camera) / 8))


def _write(root, lengths=(7, 5), **kw):
    w = DatasetWriter(root, SPEC, **kw)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    eps = [_episode(t, i, int(s), task=("reach-v3", "drawer-close-v3")[i % 2]) for i, (t, s) in enumerate(zip(lengths, starts))]
    for ep in eps:
        w.add(ep)
    return w.finish(), eps


def _load(root, size=16):
    d = read_dataset(root)
    return d, FrameStore(d, size, progress=False)


def test_roundtrip_keeps_states_actions_and_frames(tmp_path):
    root, eps = _write(tmp_path / "ds")
    d, frames = _load(root)
    assert len(frames) == 12 and frames.read(0, np.arange(12)).shape == (12, 16, 16, 3)
    np.testing.assert_allclose(d.state, np.concatenate([e.state for e in eps]), rtol=1e-6)
    np.testing.assert_allclose(d.action, np.concatenate([e.action for e in eps]), rtol=1e-6)
    assert list(d.episode_from) == [0, 7] and list(d.episode_to) == [7, 12]
    assert d.instructions == ["do reach-v3", "do drawer-close-v3"]
    assert d.env_tasks == ["reach-v3", "drawer-close-v3"] and d.seeds == [0, 1]
    # lossy video, but every frame of every camera comes back at its own global index
    for c in range(2):
        assert [_code(frames.read(c, [i])[0], c) for i in range(12)] == list(range(12))


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
    w = DatasetWriter(tmp_path / "ds", SPEC)
    w.add(_episode(5, 0, 0))
    assert not (tmp_path / "ds").exists()
    with pytest.raises(FileNotFoundError, match="unfinished collection"):
        read_dataset(tmp_path / "ds")
    w.abort()
    assert not (tmp_path / "ds.partial").exists()


def test_missing_or_corrupt_files_are_named(tmp_path):
    root, _ = _write(tmp_path / "ds")
    video = root / "videos/observation.images.top/chunk-000/file-000.mp4"
    video.write_bytes(video.read_bytes()[:200])
    with pytest.raises(DataError, match="file-000.mp4"):
        _load(root)
    video.unlink()
    with pytest.raises(DataError, match="episode 0 .camera observation.images.top.: its video .* is missing"):
        read_dataset(root)
    (root / "meta/info.json").unlink()
    with pytest.raises(DataError, match="info.json is missing"):
        read_dataset(root)


def test_existing_dataset_is_not_overwritten_silently(tmp_path):
    _write(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="--overwrite"):
        DatasetWriter(tmp_path / "ds", SPEC)


def test_windows_serve_what_the_config_declares(tmp_path):
    root, eps = _write(tmp_path / "ds")
    d, frames = _load(root)
    cfg = ModelConfig(image_size=16, stem_channels=(8, 8), future_size=8, future_patch=4, context_frames=2,
                      context_stride=2, future_frames=2, future_stride=2, action_horizon=4).for_data(CAMS, 4, 4)
    norm = Normalizer.from_stats(d.stats)
    win = Windows(d, frames, cfg, norm, torch.zeros(2, 384))
    b = win.get(np.array([0, 5, 7, 10]))  # start of ep 0, near the end of ep 0 (0..6), start of ep 1 (7..11), inside ep 1
    assert b.context.images.shape == (4, 2, 2, 3, 16, 16)
    assert b.video.shape == (4, 2, 2, 3, 8, 8) and b.actions.shape == (4, 4, 4)
    frame = lambda x, c: _code(((x.permute(1, 2, 0) + 1) * 127.5).numpy(), c)  # noqa: E731
    # context offsets (-2, 0) clamp to each sample's own episode start (7 for the sample at 7, not 5)
    assert [[frame(b.context.images[i, j, 1], 1) for j in range(2)] for i in range(4)] == [[0, 0], [3, 5], [7, 7], [8, 10]]
    # future frames at +2, +4, masked past the episode end
    assert b.video_mask.tolist() == [[1, 1], [0, 0], [1, 1], [0, 0]]
    assert [frame(b.video[2, j, 0], 0) for j in range(2)] == [9, 11]
    assert b.action_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    torch.testing.assert_close(norm.unactions(b.actions[1, :2]), torch.from_numpy(eps[0].action[5:7]))
    with pytest.raises(ValueError, match="cameras"):
        Windows(d, frames, ModelConfig(cameras=("side",), image_size=16, stem_channels=(8, 8), future_size=8,
                                       future_patch=4, state_dim=4, action_dim=4), norm, torch.zeros(2, 384))


def test_normalizer_roundtrip_through_tensors():
    n = Normalizer.standard([1, 2, 3, 4], [2, 2, 2, 2], [-1, -2, 0, -1], [1, 2, 5, 1])
    m = Normalizer.from_tensors(n.tensors())
    a = torch.rand(5, 4) * 2 - 1
    torch.testing.assert_close(m.unactions(m.actions(a)), a)
    assert m.actions(torch.tensor([[1.0, 2.0, 5.0, 1.0]])).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_loader_workers_give_the_batches_of_the_inline_loop_and_ranks_read_disjoint_frames(tmp_path):
    from wam.data.loader import batches

    root, _ = _write(tmp_path / "ds", lengths=(7, 5, 9))
    d, frames = _load(root)
    cfg = ModelConfig(image_size=16, stem_channels=(8, 8), future_size=8, future_patch=4, action_horizon=2,
                      future_stride=2).for_data(CAMS, 4, 4)
    win = Windows(d, frames, cfg, Normalizer.from_stats(d.stats), torch.zeros(2, 384))
    inline = list(batches(win, 3, 1, seed=5, steps=range(2, 6), workers=0))
    pooled = list(batches(win, 3, 1, seed=5, steps=range(2, 6), workers=2))
    for (s, a, ga), (t, b, gb) in zip(inline, pooled, strict=True):
        assert s == t
        torch.testing.assert_close(a.context.images, b.context.images)
        torch.testing.assert_close(a.actions, b.actions)
        assert torch.equal(torch.randn(4, generator=ga), torch.randn(4, generator=gb))  # the loss's noise goes on alike
    seen = [set() for _ in range(2)]
    for rank in range(2):
        for _, b, _ in batches(win, 8, 0, seed=0, steps=range(20), workers=0, rank=rank, world=2):
            seen[rank].update(int(round((float(x[0].mean()) + 1) * 127.5 / 8)) for x in b.context.images[:, -1, 0])
    assert max(seen[0]) < min(seen[1])  # each rank's windows start in its own half of the frames


def test_checkpoints_before_per_mode_normalisation_still_load():
    old = {"normalizer.state_mean": torch.tensor([1.0, 2.0]), "normalizer.state_std": torch.tensor([2.0, 0.0]),
           "normalizer.action_min": torch.tensor([-1.0, 0.0]), "normalizer.action_max": torch.tensor([1.0, 4.0])}
    n = Normalizer.from_tensors(old)
    x = torch.tensor([[3.0, 2.0]])
    torch.testing.assert_close(n.state(x), torch.tensor([[1.0, 0.0]]))  # (x - mean) / max(std, 1e-4)
    a = torch.tensor([[1.0, 0.0], [-1.0, 4.0]])
    torch.testing.assert_close(n.actions(a), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))  # min/max -> [-1, 1]
    torch.testing.assert_close(n.action_min, old["normalizer.action_min"])
    torch.testing.assert_close(n.action_max, old["normalizer.action_max"])
