"""Episodes on disk in the LeRobotDataset v3.0 layout (wam/data/layout.py), read back whole.

`load_dataset` checks every file it needs and raises with the path and what was expected. Writing is
wam/data/writer.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wam.data.layout import CODEBASE_VERSION, EPISODES_PATH, image_key


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
