"""Datasets that lerobot 0.4.4 itself wrote (tests/fixtures/lerobot, made by scripts/lerobot_fixtures.py), read by
wam without lerobot: the tables, the frames lerobot's own reader returns (expected.json), its delta_timestamps
windows, the frame cache, training and offline evaluation, and every bad-data error."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from wam.config import DataConfig, ModelConfig
from wam.data import frames as frame_cache
from wam.data.frames import FrameStore
from wam.data.reader import DataError, read_dataset, split
from wam.data.resize import fit
from wam.data.transforms import Normalizer
from wam.data.windows import Windows

FIXTURES = Path(__file__).parent / "fixtures" / "lerobot"


@pytest.fixture
def copy(tmp_path):
    """A fixture copied to tmp (the frame cache goes beside the data; the repository stays clean)."""
    def make(name: str) -> Path:
        return shutil.copytree(FIXTURES / name, tmp_path / name, ignore=shutil.ignore_patterns("cache"))
    return make


def _expected(name):
    return json.loads((FIXTURES / name / "expected.json").read_text())


def _thumbnail(x: np.ndarray) -> list:
    H, W = x.shape[:2]
    x = x[:8 * (H // 8), :8 * (W // 8)].astype(np.float64)
    return np.round(x.reshape(8, H // 8, 8, W // 8, 3).mean((1, 3))).astype(np.uint8).tolist()


def _native(rec, cam: int, position: int) -> np.ndarray:
    """The decoded frame at its stored size, chosen the way the frame cache chooses it (nearest presentation time)."""
    c, src = rec.cameras[cam], rec.sources[cam]
    e = int(np.searchsorted(rec.episode_to, position, side="right"))
    path = rec.root / src.files[src.file_of[e]]
    if c.storage == "image":
        frames = np.concatenate([b for b, _ in frame_cache._decode_images(path, c.key)])
        return frames[src.rows[position]]
    decoded = list(frame_cache._decode_video(path))
    frames, times = np.concatenate([b for b, _ in decoded]), np.concatenate([t for _, t in decoded])
    want = src.from_ts[e] + rec.timestamp[position]
    return frames[frame_cache._nearest(times, np.array([want]), rec.fps, 0, str(path))[0]]


@pytest.mark.parametrize("name", ["so100", "aloha", "images"])
def test_tables_and_frames_match_what_lerobot_reads(name, copy):
    exp = _expected(name)
    rec = read_dataset(copy(name))
    assert len(rec.index) == exp["len"] and len(rec.episode_ids) == exp["num_episodes"] and rec.fps == exp["fps"]
    assert [c.key for c in rec.cameras] == exp["camera_keys"]
    assert [(int(a), int(b)) for a, b in zip(rec.episode_from, rec.episode_to)] == \
        [(e["dataset_from_index"], e["dataset_to_index"]) for e in exp["episodes"]]
    assert rec.names("observation.state") == exp["features"]["observation.state"]["names"]
    for s in exp["samples"]:
        i = s["index"]  # every episode selected: positions are the dataset's indices
        assert rec.index[i] == i and rec.episode_ids[rec.episode_of[i]] == s["episode_index"]
        np.testing.assert_array_equal(rec.state[i], np.float32(s["observation.state"]))
        np.testing.assert_array_equal(rec.action[i], np.float32(s["action"]))
        assert rec.timestamp[i] == pytest.approx(s["timestamp"], abs=1e-6)
        assert rec.instructions[rec.task_index[i]] == s["task"]
        for c, key in enumerate(rec.cameras):
            x = _native(rec, c, i)
            want = s["cameras"][key.key]
            assert list(x.shape) == [want["shape"][1], want["shape"][2], 3]
            assert _thumbnail(x) == want["thumbnail_8x8"]
            np.testing.assert_allclose(x.reshape(-1, 3).mean(0), want["channel_mean"], atol=1e-9)


def test_cameras_of_different_sizes_are_fitted_by_the_declared_transform(copy):
    root = copy("so100")
    for resize in ("pad", "crop"):
        rec = read_dataset(root, DataConfig(resize=resize))
        store = FrameStore(rec, 32, resize, progress=False)
        for c in range(2):
            for i in (0, 77, 233):
                np.testing.assert_array_equal(store.read(c, [i])[0], fit(_native(rec, c, i), 32, resize))
    padded = fit(_native(rec, 0, 0), 32, "pad")  # 72 x 96 -> 24 x 32, black bands above and below
    assert padded[:4].max() == 0 and padded[-4:].max() == 0 and padded[8:24].mean() > 20


def test_delta_timestamps_windows_match_lerobots(copy):
    exp = _expected("so100")
    rec = read_dataset(copy("so100"))
    store = FrameStore(rec, 32, progress=False)
    cfg = ModelConfig(image_size=32, stem_channels=(8, 16, 16), context_frames=2, context_stride=1, future_frames=1,
                      future_stride=1, future_size=16, action_horizon=4).for_data(rec.camera_names, 6, 6)
    win = Windows(rec, store, cfg, Normalizer.from_stats(rec.stats), torch.zeros(2, 384))
    cam = next(k for k in exp["delta_timestamps"]["delta_timestamps"] if k != "action")
    for w in exp["delta_timestamps"]["windows"]:
        b = win.get(np.array([w["index"]]))
        np.testing.assert_allclose(win.norm.unactions(b.actions[0]).numpy(), w["action"], rtol=1e-5, atol=1e-4)
        assert (b.action_mask[0] == 0).tolist() == w["action_is_pad"]
        ctx = np.array([w["index"] - 1, w["index"]])  # offsets (-1, 0), clamped to the episode's first frame
        first = rec.episode_from[rec.episode_of[w["index"]]]
        assert (ctx < first).tolist() == w[f"{cam}_is_pad"]


def test_frame_cache_is_reused_and_rebuilt_when_the_transform_changes(copy, monkeypatch):
    root = copy("so100")
    rec = read_dataset(root)
    built = []
    real = frame_cache.build
    monkeypatch.setattr(frame_cache, "build", lambda todo, *a, **k: (built.append(len(todo)), real(todo, *a, **k)))
    first = FrameStore(rec, 32, "pad", progress=False).read(0, np.arange(10))
    again = FrameStore(rec, 32, "pad", progress=False).read(0, np.arange(10))
    assert built == [10]  # 4 front + 6 wrist files, once
    np.testing.assert_array_equal(first, again)
    FrameStore(rec, 32, "crop", progress=False)
    FrameStore(rec, 64, "pad", progress=False)
    assert built == [10, 10, 10]
    assert sorted(p.name for p in (root / "cache/frames/observation.images.front").iterdir()) == \
        ["32px-crop", "32px-pad", "64px-pad"]
    # a selection of episodes decodes only the files it touches
    shutil.rmtree(root / "cache")
    FrameStore(read_dataset(root, DataConfig(episodes="0")), 32, "pad", progress=False)
    assert built[-1] == 2


def test_episode_selection_and_validation_split(copy):
    root = copy("so100")
    rec = read_dataset(root, DataConfig(episodes="1:4,5"))
    assert rec.episode_ids.tolist() == [1, 2, 3, 5] and rec.episode_from[0] == 0
    np.testing.assert_array_equal(rec.state[:33], read_dataset(root).state[40:73])
    train, val = split(read_dataset(root, DataConfig(val_fraction=0.34)))
    assert val.episode_ids.tolist() == [0, 5] and train.episode_ids.tolist() == [1, 2, 3, 4]
    train, val = split(read_dataset(root, DataConfig(val_episodes="2")))
    assert val.episode_ids.tolist() == [2] and 2 not in train.episode_ids
    with pytest.raises(DataError, match="dataset has episodes 0..5"):
        read_dataset(root, DataConfig(episodes="4:9"))
    cams = read_dataset(root, DataConfig(cameras=("wrist,front",)))
    assert cams.camera_names == ("wrist", "front")
    with pytest.raises(DataError, match="side not in .* its cameras are front, wrist"):
        read_dataset(root, DataConfig(cameras=("side",)))


# ------------------------------------------------------------------------------------------------ bad data
def _rewrite_data(root: Path, change) -> Path:
    path = root / "data/chunk-000/file-000.parquet"
    df = pq.read_table(path).to_pandas()
    change(df)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


def _rewrite_episodes(root: Path, change) -> None:
    for path in sorted((root / "meta/episodes").glob("*/*.parquet")):
        df = pd.read_parquet(path)
        change(df)
        df.to_parquet(path, index=False)


def test_bad_data_is_named_by_episode_file_and_frame(copy):
    root = copy("aloha")
    with pytest.raises(DataError, match="--data.state-key 'observation.joints' is not a feature .* its features are "
                                        "observation.state, action"):
        read_dataset(root, DataConfig(state_key="observation.joints"))

    def nan(df):
        row = df.index[(df.episode_index == 2) & (df.frame_index == 5)][0]
        state = np.array(df.at[row, "observation.state"], np.float32)
        state[3] = np.nan
        df.at[row, "observation.state"] = state
    path = _rewrite_data(root, nan)
    with pytest.raises(DataError, match=rf"episode 2 \({path}, frame 5\): observation.state\[3\] is nan; expected finite"):
        read_dataset(root)
    rec = read_dataset(root, DataConfig(skip_bad_episodes=True))
    assert rec.episode_ids.tolist() == [0, 1, 3] and rec.skipped[0][0] == 2 and "nan" in rec.skipped[0][1]


def test_non_finite_statistics_and_frames_outside_the_video_are_skipped_and_reported(copy):
    from wam.data.frames import open_frames
    from wam.data.reader import usable_stats

    root = copy("aloha")
    stats = json.loads((root / "meta/stats.json").read_text())
    stats["observation.state"]["mean"][3] = float("nan")  # what lerobot writes when one frame is NaN
    (root / "meta/stats.json").write_text(json.dumps(stats))
    key = "videos/observation.images.cam_high/from_timestamp"
    _rewrite_episodes(root, lambda df: df.__setitem__(key, df[key] - 0.1 * (df["episode_index"] == 0)))
    with pytest.raises(DataError, match=r"episode 0 \(videos/observation.images.cam_high/.*file-000.mp4, frame 0\): "
                                        r"no video frame near -0.1000 s"):
        open_frames(read_dataset(root), 32, progress=False)
    rec, store = open_frames(read_dataset(root, DataConfig(skip_bad_episodes=True)), 32, progress=False)
    assert rec.episode_ids.tolist() == [1, 2, 3] and [e for e, _ in rec.skipped] == [0] and len(store) == len(rec.index)
    fixed = usable_stats(rec, rec.data)["observation.state"]
    np.testing.assert_allclose(fixed["mean"], rec.state.mean(0), rtol=1e-5)
    assert np.isfinite(Normalizer.from_stats(usable_stats(rec, rec.data)).state_center).all()


def test_backwards_timestamps_lengths_and_short_videos(copy):
    root = copy("so100")

    def backwards(df):
        rows = df.index[df.episode_index == 1]
        df.loc[rows[10], "timestamp"] = df.loc[rows[8], "timestamp"]
    _rewrite_data(root, backwards)
    with pytest.raises(DataError, match=r"episode 1 \(.*file-000.parquet, frame 10\): the timestamp goes backwards"):
        read_dataset(root)

    root = copy("images")
    _rewrite_episodes(root, lambda df: df.__setitem__("length", df["length"] + (df["episode_index"] == 1)))
    with pytest.raises(DataError, match="episode 1 .* holds 30 frames of it, meta/episodes says its length is 31"):
        read_dataset(root)

    root = copy("aloha")
    key = "videos/observation.images.cam_high/from_timestamp"
    _rewrite_episodes(root, lambda df: df.__setitem__(key, df[key] + 0.5 * (df["episode_index"] == 3)))
    with pytest.raises(DataError, match=r"episode 3 \(.*cam_high.*file-000.mp4, frame 35\): needs the video at .* "
                                        r"but the file ends at"):
        read_dataset(root)
    rec = read_dataset(root, DataConfig(skip_bad_episodes=True))
    assert [e for e, _ in rec.skipped] == [3]


def test_other_codebase_versions_name_the_converter(copy):
    root = copy("images")
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DataError, match="is LeRobotDataset 'v2.1'; expected 'v3.0'; convert it with lerobot .*"
                                        "convert_dataset_v21_to_v30"):
        read_dataset(root)


def test_bad_data_at_the_command_line_is_one_line_and_status_2(copy, tmp_path, capsys):
    from wam.cli import main

    root = copy("so100")
    with pytest.raises(SystemExit) as e:
        main(["train", "tiny", "--train.data", str(root), "--train.out", str(tmp_path / "r"), "--data.action-key", "act"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--data.action-key 'act' is not a feature" in err[0]


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("name", ["so100", "images"])
def test_train_tiny_then_offline_eval_on_a_lerobot_dataset(name, copy, tmp_path, capsys):
    from wam.cli import main

    root, out = copy(name), tmp_path / "run"
    main(["train", "tiny", "--train.data", str(root), "--train.out", str(out), "--data.val-fraction", "0.34",
          "--data.workers", "0"])
    config = json.loads((out / "last/config.json").read_text())
    assert config["model"]["cameras"] == list(read_dataset(root).camera_names)
    assert config["model"]["state_dim"] == config["model"]["action_dim"] == 6
    assert config["data"]["val_episodes"] and config["data"]["config"]["resize"] == "pad"
    main(["eval", str(out / "last"), "--data", str(root), "--out", str(tmp_path / "off")])
    summary = json.loads((tmp_path / "off/offline.json").read_text())
    assert summary["held_out"] and summary["episodes"] == config["data"]["val_episodes"]
    names = config["data"]["action_names"]
    assert list(summary["action_mse_per_dim"]) == names and len(summary["action_mse_per_step"]) == 4
    assert np.isfinite(summary["action_mse"]) and summary["frames"]["copy_psnr"] > 0
    assert (tmp_path / "off/report.html").is_file() and (tmp_path / "off/trace.png").is_file()
    assert "windows of" in capsys.readouterr().out
    main(["eval", str(out / "last"), "--data", str(root), "--episodes", "0:3", "--out", str(tmp_path / "all")])
    trained = json.loads((tmp_path / "all/offline.json").read_text())["trained_on"]
    assert trained and not set(trained) & set(config["data"]["val_episodes"])
    assert "were trained on" in capsys.readouterr().out
    for argv, said in ((["eval", str(out / "last")], "trained on data with no simulator"),
                       (["train", "tiny", "--train.data", str(root), "--train.out", str(out), "--data.resize", "crop",
                         "--data.val-fraction", "0.34", "--train.steps", "6"], "--data.resize: 'pad' saved, 'crop' now")):
        with pytest.raises(SystemExit):
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err


@pytest.mark.parametrize("storage", ["image", "video"])
def test_a_dataset_over_many_files_reads_as_the_same_data_in_one(storage, tmp_path):
    from wam.testing import synthetic_dataset

    # crf=0 is lossless x264 (yuv444p): x264's bits differ from run to run even on one thread (wam.video), but
    # lossless frames do not, so the many-file encoding must decode to the very same frames as the one-file one
    kw = dict(episodes=7, length=range(9, 17), cameras={"front": (24, 32), "wrist": (16, 16)}, state_dim=6,
              action_dim=6, fps=15, tasks=3, storage=storage, seed=3, crf=0)
    one = read_dataset(synthetic_dataset(tmp_path / "one", **kw))
    many = read_dataset(synthetic_dataset(tmp_path / "many", data_file_mb=0.002, video_file_mb=0.003, chunks_size=2, **kw))
    data_files = list((tmp_path / "many/data").rglob("*.parquet"))
    assert len(data_files) > 2 and len({p.parent for p in data_files}) > 1  # several files, several chunks
    assert min(len(s.files) for s in many.sources) > 2 and all(len(s.files) == 1 for s in one.sources)
    if storage == "video":  # some files hold several episodes: reading one starts inside its file
        shared = [np.bincount(s.file_of).max() for s in many.sources]
        assert max(shared) > 1, shared
    for key in ("state", "action", "timestamp", "index", "task_index", "episode_from", "episode_to"):
        np.testing.assert_array_equal(getattr(one, key), getattr(many, key))
    a, b = FrameStore(one, 16, progress=False), FrameStore(many, 16, progress=False)
    truth = FrameStore(read_dataset(synthetic_dataset(tmp_path / "png", **{**kw, "storage": "image"})), 16, progress=False)
    n = np.arange(len(one.index))
    for c in range(2):
        x, y, t = (s.read(c, n).astype(int) for s in (a, b, truth))
        np.testing.assert_array_equal(x, y)  # the very same frames, in the same order
        assert np.abs(x - t).max() <= 1  # lossless up to the RGB <-> YUV rounding
