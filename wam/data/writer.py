"""Writing episodes into the LeRobotDataset v3.0 layout (wam/data/layout.py), streamed and atomic.

A `DatasetSpec` declares the features before the first episode: each camera's (height, width) and storage, the
state and action names (and, optionally, the environment state's: observation.environment_state), fps.
`DatasetWriter.add(episode)` checks the episode against it and writes it at once:
its frames into the open mp4 of each "video" camera (PNG bytes in the data parquet for an "image" camera, as
lerobot stores them through HF datasets), its rows into the open data parquet, its row into the open
meta/episodes parquet (ten at a time) and its statistics into running aggregates (wam/data/stats.py). Memory
does not grow with the number of episodes beyond the task table.

Files rotate as lerobot's do: before an episode, a data parquet or mp4 that the episode would take past its size
limit (`data_file_mb`, `video_file_mb`; the episodes parquet shares `data_file_mb`) is closed and the next
`file-YYY` opened; after `chunks_size` files, `chunk-XXX` moves on. Sizes are estimated from what was written
(the mp4 from the encoded bytes), so a file can end slightly over its limit.

Everything is built in ROOT.partial and renamed to ROOT by `finish()`, so an interrupted collection never leaves
a folder that looks like a finished dataset; `abort()` removes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wam.data.layout import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILE_MB,
    DATA_PATH,
    ENVIRONMENT_STATE_KEY,
    EPISODES_PATH,
    VIDEO_FILE_MB,
    VIDEO_PATH,
    image_key,
)
from wam.data.stats import RunningStats, feature_stats, image_stats

STORAGES = ("video", "image")
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # lerobot's DEFAULT_FEATURES
EPISODE_ROWS_PER_WRITE = 10  # lerobot's metadata_buffer_size
PNG_LEVEL = 1  # zlib level of image-storage PNGs (lerobot's image writer uses 1: fast, still lossless)
Scalar = str | int | float | bool


class EpisodeMismatch(ValueError):
    """An episode that does not match the writer's DatasetSpec; the message names the feature, expected and got."""


# ============================================================================================ what is written
@dataclass(frozen=True)
class DatasetSpec:
    """The features every episode holds, declared before the first one is written."""

    fps: int
    cameras: dict[str, tuple[int, int]]  # name -> (height, width); stored as observation.images.NAME
    state_names: tuple[str, ...]  # observation.state, float32 (len(state_names),)
    action_names: tuple[str, ...]  # action, float32 (len(action_names),)
    storage: str | dict[str, str] = "video"  # "video" (mp4) | "image" (PNG in the parquet): all cameras, or by name
    robot_type: str | None = None
    success: bool = False  # a per-frame bool `next.success` column
    episode_columns: tuple[str, ...] = ()  # extra per-episode columns, e.g. "wam/env_task" (one scalar each)
    environment_state_names: tuple[str, ...] = ()  # observation.environment_state, float32, when given (object
    #                                                poses, goals: privileged simulator state, LeRobot's name)

    def __post_init__(self):
        if int(self.fps) != self.fps or self.fps < 1:
            raise ValueError(f"fps must be a positive integer, got {self.fps!r}")
        cameras = {str(c): (int(h), int(w)) for c, (h, w) in dict(self.cameras).items()}
        for cam, (h, w) in cameras.items():
            if not cam or "/" in cam or h < 1 or w < 1:
                raise ValueError(f"camera {cam!r}: expected a name without '/' and a positive (height, width), got {(h, w)}")
        storage = dict.fromkeys(cameras, self.storage) if isinstance(self.storage, str) else dict(self.storage)
        if set(storage) != set(cameras) or any(s not in STORAGES for s in storage.values()):
            raise ValueError(f"storage must be one of {STORAGES} or a dict of them for cameras {sorted(cameras)}, "
                             f"got {self.storage!r}")
        for what in ("state_names", "action_names", "environment_state_names"):
            names = tuple(str(n) for n in getattr(self, what))
            if (not names and what != "environment_state_names") or len(set(names)) != len(names):
                raise ValueError(f"{what} must be one or more distinct names, got {names}")
            object.__setattr__(self, what, names)
        reserved = {"tasks", "length", "episode_index", "wam/has_actions"}
        bad = [c for c in self.episode_columns if c in reserved or c.startswith(("stats/", "videos/", "data/", "meta/", "dataset_"))]
        if bad or len(set(self.episode_columns)) != len(self.episode_columns):
            raise ValueError(f"episode_columns must be distinct names that lerobot's own columns do not use, got {bad or self.episode_columns}")
        object.__setattr__(self, "cameras", cameras)
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "episode_columns", tuple(self.episode_columns))

    def cameras_stored_as(self, storage: str) -> list[str]:
        return [c for c in self.cameras if self.storage[c] == storage]


@dataclass
class Episode:
    """One episode of T frames, as `DatasetWriter.add` takes it."""

    images: dict[str, np.ndarray]  # camera -> (T, H, W, 3) uint8
    state: np.ndarray  # (T, len(state_names))
    action: np.ndarray | None  # (T, len(action_names)); None: action-free (video only): zeros are stored, the row
    #                            says wam/has_actions False, and the dataset's action statistics leave it out
    task: str  # the instruction
    success: np.ndarray | None = None  # (T,) bool `next.success`, when the spec declares it
    columns: dict[str, Scalar] = field(default_factory=dict)  # one value for each of spec.episode_columns
    environment_state: np.ndarray | None = None  # (T, len(environment_state_names)), when the spec declares them

    @property
    def length(self) -> int:
        return len(self.state)


def check_episode(spec: DatasetSpec, ep: Episode, index: int) -> None:
    """Raise EpisodeMismatch naming the first feature of `ep` that does not match `spec`."""
    def fail(what: str, expected: str, got: str):
        raise EpisodeMismatch(f"episode {index}: {what}: expected {expected}, got {got}")

    def shape(x) -> str:
        x = np.asarray(x)
        return f"{x.shape} {x.dtype}"

    state, s, a = np.asarray(ep.state), len(spec.state_names), len(spec.action_names)
    if state.ndim != 2 or len(state) < 1 or state.shape[1] != s:
        fail("observation.state", f"(T >= 1, {s}) for {spec.state_names}", shape(state))
    t = len(state)
    if ep.action is not None and np.shape(ep.action) != (t, a):
        fail("action", f"({t}, {a}) for {spec.action_names} (T = {t}, the state's length)", shape(ep.action))
    e = len(spec.environment_state_names)
    if e and np.shape(ep.environment_state) != (t, e):
        fail(ENVIRONMENT_STATE_KEY, f"({t}, {e}) for {spec.environment_state_names}",
             "none" if ep.environment_state is None else shape(ep.environment_state))
    if not e and ep.environment_state is not None:
        fail(ENVIRONMENT_STATE_KEY, "none (the spec declares no environment_state_names)", shape(ep.environment_state))
    for key, x in (("observation.state", state), ("action", ep.action), (ENVIRONMENT_STATE_KEY, ep.environment_state)):
        if x is not None and not (np.issubdtype(np.asarray(x).dtype, np.number) and np.isfinite(x).all()):
            fail(key, "finite numbers", f"{shape(x)} with NaN, inf or non-numbers")
    if set(ep.images) != set(spec.cameras):
        fail("cameras", str(sorted(spec.cameras)), str(sorted(ep.images)))
    for cam, (h, w) in spec.cameras.items():
        frames = np.asarray(ep.images[cam])
        if frames.shape != (t, h, w, 3) or frames.dtype != np.uint8:
            fail(f"camera {cam!r} ({image_key(cam)})", f"({t}, {h}, {w}, 3) uint8", shape(frames))
    if spec.success != (ep.success is not None):
        fail("next.success", "(T,) bool" if spec.success else "None (the spec declares no success column)",
             "None" if ep.success is None else shape(ep.success))
    if ep.success is not None and np.shape(ep.success) != (t,):
        fail("next.success", f"({t},) bool", shape(ep.success))
    if set(ep.columns) != set(spec.episode_columns):
        fail("episode columns", str(sorted(spec.episode_columns)), str(sorted(ep.columns)))
    if not isinstance(ep.task, str) or not ep.task:
        fail("task", "a non-empty instruction string", repr(ep.task))


# ============================================================================================ files in sequence
class _Rotating:
    """One kind of file in its chunk-XXX/file-YYY sequence: the open one and how many units (frames or episode
    rows) it holds; `size(handle)` says how many bytes those take so far."""

    def __init__(self, path: Callable[[int, int], Path], limit_mb: float, chunks_size: int,
                 open_: Callable[[Path], object], size: Callable[[object], int]):
        self.path_of, self.limit, self.chunks_size = path, limit_mb * 2**20, chunks_size
        self._open, self._size = open_, size
        self.chunk = self.file = self.units = 0
        self.handle = None

    def place(self, units: int) -> tuple[int, int, int]:
        """Where the next `units` go: (chunk, file, units before them in that file). Moves to the next file first
        if they would take the open one past its limit; `open()` then gives the file to write them to."""
        if self.handle is not None and self.units and self._size(self.handle) * (self.units + units) / self.units >= self.limit:
            self.close()
            self.file += 1
            if self.file == self.chunks_size:
                self.chunk, self.file = self.chunk + 1, 0
            self.units = 0
        offset, self.units = self.units, self.units + units
        return self.chunk, self.file, offset

    def open(self):
        if self.handle is None:
            path = self.path_of(self.chunk, self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = self._open(path)
        return self.handle

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            handle.close()


def _parquet(schema: Callable[[], pa.Schema]):
    return lambda path: pq.ParquetWriter(path, schema(), compression="snappy", use_dictionary=True)


def _file_size(writer) -> int:
    return os.path.getsize(writer.where)


# ============================================================================================ the writer
class DatasetWriter:
    """Streams episodes into ROOT in the LeRobotDataset v3.0 layout; see the module notes."""

    def __init__(self, root: str | Path, spec: DatasetSpec, *, overwrite: bool = False, extra: dict | None = None,
                 chunks_size: int = CHUNKS_SIZE, data_file_mb: float = DATA_FILE_MB,
                 video_file_mb: float = VIDEO_FILE_MB, crf: int = 18, preset: str = "veryfast",
                 pix_fmt: str = "yuv444p"):
        """`extra` goes to info.json under "wam" (keys may be added until `finish`). `crf`, `preset` and `pix_fmt`
        are x264's (wam.video.VideoWriter): lower crf is better quality, "ultrafast" is the quickest preset."""
        if chunks_size < 1 or data_file_mb <= 0 or video_file_mb <= 0:
            raise ValueError(f"chunks_size, data_file_mb and video_file_mb must be positive, got "
                             f"{chunks_size}, {data_file_mb}, {video_file_mb}")
        if pix_fmt.startswith(("yuv420", "yuv422")) and any(h % 2 or w % 2 for h, w in spec.cameras.values()):
            raise ValueError(f"{pix_fmt} needs even camera sizes, got {spec.cameras}; use pix_fmt='yuv444p'")
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} already exists; pass --overwrite to replace it")
        self.tmp = self.root.with_name(self.root.name + ".partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.spec, self.extra = spec, dict(extra or {})
        self.chunks_size, self.data_file_mb, self.video_file_mb = chunks_size, data_file_mb, video_file_mb
        self.video_options = {"crf": crf, "preset": preset, "pix_fmt": pix_fmt}
        self.tasks: dict[str, int] = {}
        self.episodes = self.frames = 0
        self.stats: dict[str, RunningStats] = {}
        self._labelled_actions = RunningStats()  # the dataset's action statistics skip action-free episodes
        self._rows: list[dict] = []  # episode rows not yet written
        self._row_schema = None
        self._column_types: dict[str, type] = {}

        vec = lambda n: pa.list_(pa.float32(), n)
        png = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        fields = [("observation.state", vec(len(spec.state_names))), ("action", vec(len(spec.action_names)))]
        fields += [(ENVIRONMENT_STATE_KEY, vec(len(spec.environment_state_names)))] * bool(spec.environment_state_names)
        fields += [("next.success", pa.bool_())] * spec.success
        fields += [(image_key(c), png) for c in spec.cameras_stored_as("image")]
        fields += [("timestamp", pa.float32())] + [(k, pa.int64()) for k in INDEX_COLUMNS[1:]]
        self._data_schema = pa.schema(fields)
        self._data = _Rotating(lambda c, f: self.tmp / DATA_PATH.format(chunk_index=c, file_index=f), data_file_mb,
                               chunks_size, _parquet(lambda: self._data_schema), _file_size)
        self._meta = _Rotating(lambda c, f: self.tmp / EPISODES_PATH.format(chunk_index=c, file_index=f),
                               data_file_mb, chunks_size, _parquet(lambda: self._row_schema), _file_size)
        self._videos = {cam: self._video_files(cam) for cam in spec.cameras_stored_as("video")}
        # one thread per camera encodes its frames (PyAV and PIL release the GIL) while this one does the rest
        self._pool = ThreadPoolExecutor(len(spec.cameras), "wam-writer") if spec.cameras else None

    def _video_files(self, cam: str) -> _Rotating:
        from wam.video import VideoWriter

        h, w = self.spec.cameras[cam]
        path = lambda c, f: self.tmp / VIDEO_PATH.format(video_key=image_key(cam), chunk_index=c, file_index=f)
        # encoded bytes so far, over the frames written (the encoder holds the last few back until it closes)
        size = lambda v: v.bytes * v.frames // max(v.packets, 1)
        return _Rotating(path, self.video_file_mb, self.chunks_size,
                         lambda p: VideoWriter(p, self.spec.fps, h, w, **self.video_options), size)

    # ---------------------------------------------------------------------------------------- one episode
    def add(self, ep: Episode) -> None:
        """Check `ep` against the spec (EpisodeMismatch names what differs) and write it."""
        spec, index, t = self.spec, self.episodes, ep.length
        check_episode(spec, ep, index)
        self._check_column_types(ep, index)
        task_index = self.tasks.setdefault(ep.task, len(self.tasks))
        state = np.asarray(ep.state, np.float32)
        action = np.zeros((t, len(spec.action_names)), np.float32) if ep.action is None else np.asarray(ep.action, np.float32)
        frame = np.arange(t, dtype=np.int64)
        columns = {
            "observation.state": state, "action": action,
            "timestamp": (frame / spec.fps).astype(np.float32), "frame_index": frame,
            "episode_index": np.full(t, index, np.int64), "index": self.frames + frame,
            "task_index": np.full(t, task_index, np.int64),
        }
        if spec.success:
            columns["next.success"] = np.asarray(ep.success, bool)
        if spec.environment_state_names:
            columns[ENVIRONMENT_STATE_KEY] = np.asarray(ep.environment_state, np.float32)

        chunk, file, start = self._data.place(t)
        row = {"episode_index": index, "tasks": [ep.task], "length": t, "data/chunk_index": chunk,
               "data/file_index": file, "dataset_from_index": self.frames, "dataset_to_index": self.frames + t}
        jobs = {}
        for cam, files in self._videos.items():
            chunk, file, start = files.place(t)
            jobs[cam] = self._pool.submit(_encode, files.open(), ep.images[cam])
            key = image_key(cam)
            row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                        f"videos/{key}/from_timestamp": start / spec.fps,
                        f"videos/{key}/to_timestamp": (start + t) / spec.fps})
        for cam in spec.cameras_stored_as("image"):
            jobs[cam] = self._pool.submit(_pngs, ep.images[cam])

        stats = {k: feature_stats(v.reshape(t, -1)) for k, v in columns.items()}
        stats.update({image_key(cam): image_stats(np.asarray(ep.images[cam])) for cam in spec.cameras})
        wait(jobs.values())
        pngs = {image_key(cam): job.result() for cam, job in jobs.items()}  # raises what a camera's thread raised
        pngs = {k: v for k, v in pngs.items() if v is not None}  # a video camera's job returns None
        table = {k: _arrow(v) for k, v in columns.items()} | pngs
        self._data.open().write_table(pa.table(table, schema=self._data_schema))  # columns in the schema's order
        for key, s in stats.items():
            self.stats.setdefault(key, RunningStats()).add(s)
        if ep.action is not None:
            self._labelled_actions.add(stats["action"])
        row.update({"wam/has_actions": ep.action is not None, **{k: _scalar(v) for k, v in ep.columns.items()}})
        row.update({f"stats/{key}/{name}": value for key, s in stats.items() for name, value in s.items()})
        self._rows.append(row)
        self.episodes, self.frames = index + 1, self.frames + t
        if len(self._rows) >= EPISODE_ROWS_PER_WRITE:
            self._write_rows()

    def _check_column_types(self, ep: Episode, index: int) -> None:
        for name, value in ep.columns.items():
            kind = type(_scalar(value))
            if kind not in (str, int, float, bool):
                raise EpisodeMismatch(f"episode {index}: column {name!r}: expected a str, int, float or bool, got {kind.__name__}")
            if self._column_types.setdefault(name, kind) is not kind:
                raise EpisodeMismatch(f"episode {index}: column {name!r}: expected {self._column_types[name].__name__} "
                                      f"like the first episode's, got {kind.__name__}")

    def _write_rows(self) -> None:
        if not self._rows:
            return
        chunk, file, _ = self._meta.place(len(self._rows))
        rows = [{**r, "meta/episodes/chunk_index": chunk, "meta/episodes/file_index": file} for r in self._rows]
        table = pa.Table.from_pylist(rows, schema=self._row_schema)
        self._row_schema = table.schema  # the first rows fix it
        self._meta.open().write_table(table)
        self._rows = []

    # ---------------------------------------------------------------------------------------- the end
    def abort(self) -> None:
        """Close everything and remove ROOT.partial."""
        if self._pool:
            self._pool.shutdown(cancel_futures=True)
        for files in (self._data, self._meta, *self._videos.values()):
            with contextlib.suppress(Exception):
                files.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def finish(self) -> Path:
        """Close the files, write meta/{tasks.parquet, stats.json, info.json} and move ROOT.partial to ROOT."""
        import pandas as pd

        if not self.episodes:
            self.abort()
            raise RuntimeError("no episode was recorded; nothing to write")
        self._write_rows()
        if self._pool:
            self._pool.shutdown()
        for files in (self._data, self._meta, *self._videos.values()):
            files.close()
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())}, index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(self.tmp / "meta/tasks.parquet")
        stats = {key: s.result() for key, s in self.stats.items()}
        if self._labelled_actions.count:
            stats["action"] = self._labelled_actions.result()
        (self.tmp / "meta/stats.json").write_text(json.dumps(stats, indent=2))
        (self.tmp / "meta/info.json").write_text(json.dumps(self.info(), indent=2))
        if self.root.exists():
            shutil.rmtree(self.root)
        os.replace(self.tmp, self.root)
        return self.root

    def info(self) -> dict:
        """meta/info.json for what has been written so far."""
        spec = self.spec
        features = {}
        for cam, (h, w) in spec.cameras.items():
            features[image_key(cam)] = {"dtype": spec.storage[cam], "shape": [h, w, 3], "names": ["height", "width", "channels"]}
            if spec.storage[cam] == "video":
                features[image_key(cam)]["info"] = {
                    "video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": self.video_options["pix_fmt"],
                    "video.is_depth_map": False, "video.fps": spec.fps, "video.channels": 3, "has_audio": False}
        features["observation.state"] = {"dtype": "float32", "shape": [len(spec.state_names)], "names": list(spec.state_names)}
        features["action"] = {"dtype": "float32", "shape": [len(spec.action_names)], "names": list(spec.action_names)}
        if spec.environment_state_names:
            features[ENVIRONMENT_STATE_KEY] = {"dtype": "float32", "shape": [len(spec.environment_state_names)],
                                               "names": list(spec.environment_state_names)}
        if spec.success:
            features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
        for key in INDEX_COLUMNS:
            features[key] = {"dtype": "float32" if key == "timestamp" else "int64", "shape": [1], "names": None}
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": spec.robot_type,
            "total_episodes": self.episodes, "total_frames": self.frames, "total_tasks": len(self.tasks),
            "chunks_size": self.chunks_size, "data_files_size_in_mb": self.data_file_mb,
            "video_files_size_in_mb": self.video_file_mb, "fps": spec.fps, "splits": {"train": f"0:{self.episodes}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if self._videos else None, "features": features,
        }
        return {**info, "wam": self.extra} if self.extra else info


def _encode(video, frames: np.ndarray) -> None:
    for frame in frames:
        video.write(frame)


def _pngs(frames: np.ndarray) -> list[dict]:
    """Frames as HF datasets' Image cells, the PNG bytes embedded (what lerobot's image features hold)."""
    from PIL import Image

    cells = []
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="PNG", compress_level=PNG_LEVEL)
        cells.append({"bytes": buf.getvalue(), "path": f"frame-{i:06d}.png"})
    return cells


def _arrow(x: np.ndarray) -> pa.Array | np.ndarray:
    """A (T, n) array as a fixed-size-list column (HF datasets' Sequence(length=n)); a (T,) one as it is."""
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]) if x.ndim == 2 else x


def _scalar(value) -> Scalar:
    return value.item() if isinstance(value, np.generic) else value
