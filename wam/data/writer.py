"""Writing episodes into the LeRobotDataset v3.0 layout (wam/data/layout.py), atomically.

`DatasetWriter` builds everything in ROOT.partial and renames it to ROOT at the very end, so an
interrupted collection never leaves a folder that looks like a finished dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wam.data.layout import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    VIDEO_FILE_MB,
    VIDEO_PATH,
    image_key,
)

STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]


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
