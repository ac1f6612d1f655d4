"""Episodes on disk in the LeRobotDataset v3.0 layout, written atomically and read back whole.

    ROOT/meta/info.json                                   features, fps, paths, counts
    ROOT/meta/stats.json                                  per-feature min/max/mean/std/count/q01/q99
    ROOT/meta/tasks.parquet                               instruction (index) -> task_index
    ROOT/meta/episodes/chunk-000/file-000.parquet         one row per episode: length, file and time ranges
    ROOT/data/chunk-000/file-000.parquet                  one row per frame: state, action, indices
    ROOT/videos/observation.images.CAM/chunk-000/file-000.mp4   episodes concatenated, one mp4 per camera

`DatasetWriter` builds everything in ROOT.partial and renames it to ROOT at the very end, so an
interrupted collection never leaves a folder that looks like a finished dataset. `load_dataset` checks
every file it needs and raises with the path and what was expected.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_FILE_MB = 200
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]


def image_key(camera: str) -> str:
    return f"observation.images.{camera}"


@dataclass
class Episode:
    """One recorded episode. T frames; `success[t]` is Meta-World's flag after executing `action[t]`."""

    images: np.ndarray  # (v, T, H, W, 3) uint8
    state: np.ndarray  # (T, 4) float32
    action: np.ndarray | None  # (T, 4) float32; None for an action-free (video-only) episode
    success: np.ndarray  # (T,) bool
    instruction: str
    env_task: str  # Meta-World task name, e.g. "reach-v3"
    seed: int  # the variation seed


# ============================================================================================ writing
class DatasetWriter:
    def __init__(self, root: str | Path, fps: int, cameras: tuple[str, ...], image_size: int,
                 robot_type: str = "sawyer", extra: dict | None = None, overwrite: bool = False):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} already exists; pass --overwrite to replace it")
        self.tmp = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.fps, self.cameras, self.image_size = fps, tuple(cameras), image_size
        self.robot_type, self.extra, self.overwrite = robot_type, dict(extra or {}), overwrite
        self.tasks: dict[str, int] = {}
        self.rows: dict[str, list] = {k: [] for k in ("state", "action", "success", "frame", "episode", "task", "labelled")}
        self.episodes: list[dict] = []
        self._writers: dict[str, object] = {}
        self._video_file = {cam: 0 for cam in self.cameras}
        self._video_frames = {cam: 0 for cam in self.cameras}
        self._image_samples: dict[str, list[np.ndarray]] = {cam: [] for cam in self.cameras}

    def _writer(self, cam: str):
        from wam.video import VideoWriter

        w = self._writers.get(cam)
        if w is not None and w.path.exists() and w.path.stat().st_size > VIDEO_FILE_MB * 2**20:
            w.close()
            self._video_file[cam] += 1
            self._video_frames[cam] = 0
            w = None
        if w is None:
            path = self.tmp / VIDEO_PATH.format(video_key=image_key(cam), chunk_index=0, file_index=self._video_file[cam])
            w = self._writers[cam] = VideoWriter(path, self.fps, self.image_size, self.image_size)
        return w

    def add(self, ep: Episode) -> None:
        v, t = ep.images.shape[:2]
        if v != len(self.cameras) or ep.images.shape[2:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"episode images {ep.images.shape} do not match cameras {self.cameras} at {self.image_size} px")
        index = len(self.episodes)
        task_index = self.tasks.setdefault(ep.instruction, len(self.tasks))
        start = len(self.rows["frame"])
        row = {"episode_index": index, "tasks": [ep.instruction], "length": t,
               "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": start, "dataset_to_index": start + t,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
               "wam/env_task": ep.env_task, "wam/seed": ep.seed, "wam/has_actions": ep.action is not None}
        action = ep.action if ep.action is not None else np.zeros((t, len(ACTION_NAMES)), np.float32)
        for c, cam in enumerate(self.cameras):
            w = self._writer(cam)
            key = image_key(cam)
            row[f"videos/{key}/chunk_index"] = 0
            row[f"videos/{key}/file_index"] = self._video_file[cam]
            row[f"videos/{key}/from_timestamp"] = self._video_frames[cam] / self.fps
            row[f"videos/{key}/to_timestamp"] = (self._video_frames[cam] + t) / self.fps
            for frame in ep.images[c]:
                w.write(frame)
            self._video_frames[cam] += t
            self._image_samples[cam].append(ep.images[c, :: max(1, t // 4)].copy())  # a copy: let the episode go
        for key, x in (("observation.state", ep.state), ("action", action)):
            for stat, value in array_stats(x).items():
                row[f"stats/{key}/{stat}"] = value
        self.episodes.append(row)
        self.rows["state"].append(ep.state.astype(np.float32))
        self.rows["action"].append(action.astype(np.float32))
        self.rows["labelled"].extend([ep.action is not None] * t)
        self.rows["success"].append(ep.success.astype(bool))
        self.rows["frame"].extend(range(t))
        self.rows["episode"].extend([index] * t)
        self.rows["task"].extend([task_index] * t)

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self) -> Path:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.episodes:
            self.abort()
            raise RuntimeError("no episode was recorded; nothing to write")
        for w in self._writers.values():
            w.close()
        state = np.concatenate(self.rows["state"])
        action = np.concatenate(self.rows["action"])
        n = len(state)

        def vec(x: np.ndarray) -> pa.Array:
            return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1])

        frame = np.asarray(self.rows["frame"], np.int64)
        table = pa.table({
            "observation.state": vec(state),
            "action": vec(action),
            "next.success": pa.array(np.concatenate(self.rows["success"])),
            "timestamp": pa.array((frame / self.fps).astype(np.float32)),
            "frame_index": pa.array(frame),
            "episode_index": pa.array(np.asarray(self.rows["episode"], np.int64)),
            "index": pa.array(np.arange(n, dtype=np.int64)),
            "task_index": pa.array(np.asarray(self.rows["task"], np.int64)),
        })
        _parquet(self.tmp / DATA_PATH.format(chunk_index=0, file_index=0), lambda p: pq.write_table(table, p))
        episodes = pd.DataFrame(self.episodes)
        _parquet(self.tmp / EPISODES_PATH.format(chunk_index=0, file_index=0), lambda p: episodes.to_parquet(p, index=False))
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())}, index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(self.tmp / "meta/tasks.parquet")

        labelled = np.asarray(self.rows["labelled"])
        # Action statistics come from the labelled episodes only (action-free ones store zeros).
        stats = {"observation.state": array_stats(state), "action": array_stats(action[labelled] if labelled.any() else action)}
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            stats[key] = array_stats(table.column(key).to_numpy().reshape(-1, 1))
        for cam in self.cameras:
            px = np.concatenate(self._image_samples[cam]).reshape(-1, 3).astype(np.float32) / 255.0
            stats[image_key(cam)] = {k: np.asarray(v).reshape(3, 1, 1).tolist() if k != "count" else v
                                     for k, v in array_stats(px).items()}
        (self.tmp / "meta/stats.json").write_text(json.dumps(stats, indent=2))
        (self.tmp / "meta/info.json").write_text(json.dumps(self._info(n), indent=2))

        if self.root.exists():
            shutil.rmtree(self.root)
        os.replace(self.tmp, self.root)
        return self.root

    def _info(self, n: int) -> dict:
        vid = {"video.height": self.image_size, "video.width": self.image_size, "video.codec": "h264",
               "video.pix_fmt": "yuv444p", "video.is_depth_map": False, "video.fps": self.fps,
               "video.channels": 3, "has_audio": False}
        features = {image_key(c): {"dtype": "video", "shape": [self.image_size, self.image_size, 3],
                                   "names": ["height", "width", "channels"], "info": vid} for c in self.cameras}
        features.update({
            "observation.state": {"dtype": "float32", "shape": [4], "names": STATE_NAMES},
            "action": {"dtype": "float32", "shape": [4], "names": ACTION_NAMES},
            "next.success": {"dtype": "bool", "shape": [1], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        })
        return {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self.episodes), "total_frames": n, "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": self.fps, "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": features,
            "wam": {"cameras": list(self.cameras), "image_size": self.image_size, **self.extra},
        }


def _parquet(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)


def array_stats(x: np.ndarray) -> dict:
    x = np.asarray(x, np.float64)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "q01": np.quantile(x, 0.01, 0).tolist(),
            "q99": np.quantile(x, 0.99, 0).tolist(), "count": [int(len(x))]}


# ============================================================================================ reading
@dataclass
class Demonstrations:
    """A whole dataset in memory. N frames over E episodes, frames in global index order."""

    root: Path
    info: dict
    stats: dict
    cameras: tuple[str, ...]
    images: np.ndarray  # (v, N, H, W, 3) uint8
    state: np.ndarray  # (N, 4) float32
    action: np.ndarray  # (N, 4) float32
    episode_index: np.ndarray  # (N,) int64
    task_index: np.ndarray  # (N,) int64
    episode_from: np.ndarray  # (E,) first global index of each episode
    episode_to: np.ndarray  # (E,) one past its last
    has_actions: np.ndarray  # (E,) bool: False for action-free (video-only) episodes
    instructions: list[str]  # by task_index
    env_tasks: list[str]  # Meta-World task name per episode
    seeds: list[int]  # variation seed per episode

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: expected {what}. The dataset is incomplete; collect it again with `wam collect`.")
    return path


def load_dataset(root: str | Path) -> Demonstrations:
    import pandas as pd
    import pyarrow.parquet as pq

    from wam.video import read_mp4

    root = Path(root)
    if not root.is_dir():
        hint = " (an unfinished collection is still in .partial)" if root.with_name(root.name + ".partial").exists() else ""
        raise FileNotFoundError(f"no dataset at {root}{hint}; create one with `wam collect --out {root}`")
    info = json.loads(_require(root / "meta/info.json", "the LeRobotDataset v3.0 info file").read_text())
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise ValueError(f"{root} is LeRobotDataset {info.get('codebase_version')!r}; expected {CODEBASE_VERSION!r}")
    stats = json.loads(_require(root / "meta/stats.json", "normalisation statistics").read_text())
    tasks = pd.read_parquet(_require(root / "meta/tasks.parquet", "the task table"))
    instructions = [str(t) for t in tasks.sort_values("task_index").index]
    ep_files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        _require(root / EPISODES_PATH.format(chunk_index=0, file_index=0), "the episode table")
    episodes = pd.concat([pd.read_parquet(p) for p in ep_files]).sort_values("episode_index").reset_index(drop=True)
    if len(episodes) != info["total_episodes"]:
        raise ValueError(f"{root}: meta/episodes lists {len(episodes)} episodes, info.json says {info['total_episodes']}")

    cols = []
    for (c, f), _ in episodes.groupby(["data/chunk_index", "data/file_index"]):
        path = _require(root / info["data_path"].format(chunk_index=c, file_index=f), "frame data")
        cols.append(pq.read_table(path).to_pandas())
    data = pd.concat(cols).sort_values("index").reset_index(drop=True)
    if len(data) != info["total_frames"]:
        raise ValueError(f"{root}: data holds {len(data)} frames, info.json says {info['total_frames']}")

    cameras = tuple(k.removeprefix("observation.images.") for k, v in info["features"].items() if v["dtype"] == "video")
    fps = int(info["fps"])
    size = info["features"][image_key(cameras[0])]["shape"][0]
    images = np.empty((len(cameras), len(data), size, size, 3), np.uint8)
    for c, cam in enumerate(cameras):
        key = image_key(cam)
        decoded: dict[tuple[int, int], np.ndarray] = {}
        for _, row in episodes.iterrows():
            file = (int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"]))
            if file not in decoded:
                path = root / info["video_path"].format(video_key=key, chunk_index=file[0], file_index=file[1])
                decoded = {file: read_mp4(_require(path, f"the {cam} camera video"))}
            frames = decoded[file]
            start = int(round(row[f"videos/{key}/from_timestamp"] * fps))
            length, lo = int(row["length"]), int(row["dataset_from_index"])
            if start + length > len(frames):
                raise ValueError(f"{path} has {len(frames)} frames; episode {row['episode_index']} needs frames "
                                 f"{start}..{start + length}: the video is truncated or corrupt")
            images[c, lo:lo + length] = frames[start:start + length]

    return Demonstrations(
        root=root, info=info, stats=stats, cameras=cameras, images=images,
        state=np.stack(data["observation.state"].to_numpy()).astype(np.float32),
        action=np.stack(data["action"].to_numpy()).astype(np.float32),
        episode_index=data["episode_index"].to_numpy(np.int64),
        task_index=data["task_index"].to_numpy(np.int64),
        episode_from=episodes["dataset_from_index"].to_numpy(np.int64),
        episode_to=episodes["dataset_to_index"].to_numpy(np.int64),
        has_actions=episodes.get("wam/has_actions", pd.Series([True] * len(episodes))).to_numpy(bool),
        instructions=instructions,
        env_tasks=[str(t) for t in episodes.get("wam/env_task", pd.Series([""] * len(episodes)))],
        seeds=[int(s) for s in episodes.get("wam/seed", pd.Series([-1] * len(episodes)))],
    )
