"""The LeRobotDataset v3.0 layout on disk: its version, file templates and default sizes (lerobot 0.4.4).

    ROOT/meta/info.json                                   features, fps, paths, counts
    ROOT/meta/stats.json                                  per-feature min/max/mean/std/count/quantiles
    ROOT/meta/tasks.parquet                               instruction (index) -> task_index
    ROOT/meta/episodes/chunk-XXX/file-YYY.parquet         one row per episode: length, file and time ranges, stats
    ROOT/data/chunk-XXX/file-YYY.parquet                  one row per frame: state, action, indices (and images)
    ROOT/videos/observation.images.CAM/chunk-XXX/file-YYY.mp4   episodes concatenated, several per file
"""

from __future__ import annotations

import json
from pathlib import Path

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
ENVIRONMENT_STATE_KEY = "observation.environment_state"  # lerobot's OBS_ENV_STATE: object poses, goals (privileged)


def image_key(camera: str) -> str:
    return f"observation.images.{camera}"


def records(root: str | Path, key: str) -> bool:
    """Whether the dataset at ROOT (meta/info.json there) declares the feature KEY."""
    info = Path(root) / "meta" / "info.json"
    return info.is_file() and key in json.loads(info.read_text()).get("features", {})
