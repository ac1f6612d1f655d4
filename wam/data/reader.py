"""Any LeRobotDataset v3.0 folder, read as lerobot writes it: the tables in RAM, the frames left on disk.

    ROOT/meta/info.json          codebase_version "v3.0", fps, features {key: dtype, shape, names}, path templates
    ROOT/meta/stats.json         per-feature statistics (the normaliser's source)
    ROOT/meta/tasks.parquet      task string (index) -> task_index
    ROOT/meta/episodes/*/*.parquet   one row per episode: length, data file, per camera its video file and time range
    ROOT/data/*/*.parquet        one row per frame: state, action, timestamp, indices (image features inline, PNG)
    ROOT/videos/KEY/*/*.mp4      one camera's episodes, concatenated; files rotate by size

`read_dataset(root, data)` reads the tables (many data files, many tasks, any state and action keys and sizes),
checks every episode and returns `Recordings`: state, action, timestamps and indices of the selected episodes,
plus where each camera's frames lie (`FrameSource`). The frames themselves are decoded once into the on-disk
frame cache at the model's input size (frames.py). Every problem raises a `DataError` naming the episode, the
file, the frame and what was expected; with `--data.skip-bad-episodes` a bad episode is left out instead and
reported (`Recordings.skipped`), never dropped silently.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from wam.config import DataConfig
from wam.config import parse_episodes as _parse
from wam.data.layout import ENVIRONMENT_STATE_KEY

CODEBASE_VERSION = "v3.0"
IMAGE_PREFIX = "observation.images."
CONVERTER = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=REPO_ID"


SUCCESS_KEY = "next.success"


class DataError(ValueError):
    """Bad data: the message names the episode, the file and the frame, and what was expected."""


@dataclass(frozen=True)
class Camera:
    key: str  # the dataset's feature key, e.g. observation.images.front
    name: str  # what the model and the policy call it: the key after observation.images. (front)
    shape: tuple[int, int]  # (H, W) as stored
    storage: str  # "video" (mp4 files) or "image" (PNG in the data parquet)


@dataclass(frozen=True)
class FrameSource:
    """Where one camera's frame of each selected episode lies. For video: the mp4 file (relative to the root) and
    the time in it of the episode's first frame; frame k of the episode is at from_ts + timestamp[k], as lerobot
    looks it up (its writer starts every episode's timestamps at 0). For image storage: the data file and the row
    in it of every frame."""

    files: tuple[str, ...]  # the distinct files this camera's selected frames come from
    file_of: np.ndarray  # (E,) for each selected episode, its file in `files`
    from_ts: np.ndarray  # (E,) video time of its first frame (video storage)
    rows: np.ndarray | None = None  # (N,) row of each frame in its data file (image storage)


@dataclass
class Recordings:
    """The selected episodes of a dataset: N frames over E episodes, contiguous per episode, in episode order."""

    root: Path
    info: dict
    stats: dict
    data: DataConfig
    cameras: tuple[Camera, ...]  # in the order chosen (--data.cameras)
    sources: tuple[FrameSource, ...]  # one per camera
    state: np.ndarray  # (N, S) float32 (S = 0 without a state feature)
    action: np.ndarray  # (N, A) float32
    timestamp: np.ndarray  # (N,) float64, the data's timestamp column (seconds; 0 at an episode's first frame)
    index: np.ndarray  # (N,) the dataset's global frame index
    task_index: np.ndarray  # (N,)
    episode_ids: np.ndarray  # (E,) the dataset's episode_index of each selected episode
    episode_from: np.ndarray  # (E,) first position (in these arrays) of each episode
    episode_to: np.ndarray  # (E,) one past its last
    has_actions: np.ndarray  # (E,) False for action-free (video-only) episodes
    instructions: list[str]  # by task_index
    env_tasks: list[str]  # (E,) simulator task per episode ("" for a real robot's data)
    seeds: list[int]  # (E,) variation seed per episode (-1 when unknown)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (episode, why), with --data.skip-bad-episodes
    has_state: np.ndarray | None = None  # (E,) False where the robot state is not read (--data.video-only-episodes)
    success: np.ndarray | None = None  # (N,) bool `next.success` (solved after this frame's action), where recorded
    environment_state: np.ndarray | None = None  # (N, Z) float32 observation.environment_state, where recorded
    #                                              (zeros for --data.video-only-episodes, whose state is hidden)

    def __post_init__(self):
        if self.has_state is None:
            self.has_state = np.ones(len(self.episode_ids), bool)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def episode_of(self) -> np.ndarray:
        """(N,) the position (0..E-1) of each frame's episode."""
        return np.repeat(np.arange(len(self.episode_ids)), self.episode_to - self.episode_from)

    def names(self, key: str) -> list[str]:
        names = self.info["features"].get(key, {}).get("names")
        if isinstance(names, dict):  # lerobot sometimes nests them: {"motors": [...]}
            names = next(iter(names.values()), None)
        return [str(n) for n in names] if isinstance(names, list) else []

    def select(self, positions: np.ndarray | list[int]) -> Recordings:
        """These episodes only (positions 0..E-1 into this selection), renumbered contiguously."""
        positions = np.asarray(positions, np.int64)
        frames = np.concatenate([np.arange(self.episode_from[e], self.episode_to[e]) for e in positions]) \
            if len(positions) else np.zeros(0, np.int64)
        lengths = self.episode_to[positions] - self.episode_from[positions]
        to = np.cumsum(lengths)
        sources = tuple(replace(s, file_of=s.file_of[positions], from_ts=s.from_ts[positions],
                                rows=None if s.rows is None else s.rows[frames]) for s in self.sources)
        return replace(self, sources=sources, state=self.state[frames], action=self.action[frames],
                       timestamp=self.timestamp[frames], index=self.index[frames], task_index=self.task_index[frames],
                       episode_ids=self.episode_ids[positions], episode_from=to - lengths, episode_to=to,
                       has_actions=self.has_actions[positions], has_state=self.has_state[positions], env_tasks=[self.env_tasks[e] for e in positions],
                       seeds=[self.seeds[e] for e in positions],
                       success=None if self.success is None else self.success[frames],
                       environment_state=None if self.environment_state is None else self.environment_state[frames])


# ============================================================================================ reading
def read_info(root: str | Path) -> dict:
    """meta/info.json of a v3.0 dataset; a missing folder, another version or a broken file is a clear error."""
    root = Path(root)
    if not root.is_dir():
        hint = " (an unfinished collection is still in .partial)" if root.with_name(root.name + ".partial").exists() else ""
        raise FileNotFoundError(f"no dataset at {root}{hint}: expected a LeRobotDataset v3.0 folder (meta/, data/, "
                                f"videos/); record one with lerobot or `wam collect --out {root}`")
    path = root / "meta/info.json"
    if not path.is_file():
        old = (root / "meta/episodes.jsonl").exists()
        raise DataError(f"{path} is missing: expected a LeRobotDataset v3.0 folder" +
                        (f" (this looks like v2.x; convert it with lerobot: {CONVERTER})" if old else ""))
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e})") from e
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        how = f"; convert it with lerobot >= 0.4: {CONVERTER}" if str(version).startswith("v2") else ""
        raise DataError(f"{root} is LeRobotDataset {version!r}; expected {CODEBASE_VERSION!r}{how}")
    for k in ("fps", "features", "data_path", "total_episodes", "total_frames"):
        if k not in info:
            raise DataError(f"{path} has no {k!r}: expected a v3.0 info file (keys {sorted(info)})")
    return info


def dataset_cameras(info: dict) -> list[Camera]:
    """Every image or video feature, in info.json's order."""
    cams = []
    for key, f in info["features"].items():
        if f.get("dtype") in ("video", "image"):
            shape = f.get("shape") or []
            names = f.get("names") or []
            if len(shape) != 3:
                raise DataError(f"feature {key!r} has shape {shape}: expected (height, width, channels)")
            if list(names[:1]) == ["channels"] or shape[0] == 3 and shape[2] != 3:  # (C, H, W) as some writers declare
                shape = [shape[1], shape[2], shape[0]]
            name = key.removeprefix(IMAGE_PREFIX)
            cams.append(Camera(key=key, name=name, shape=(int(shape[0]), int(shape[1])), storage=f["dtype"]))
    return cams


def choose_cameras(info: dict, wanted: tuple[str, ...], root: Path) -> list[Camera]:
    cams = dataset_cameras(info)
    if not cams:
        raise DataError(f"{root}/meta/info.json declares no image or video feature: a model needs at least one camera")
    if not wanted:
        return cams
    by = {c.key: c for c in cams} | {c.name: c for c in cams}
    missing = [w for w in wanted if w not in by]
    if missing:
        raise DataError(f"--data.cameras {','.join(wanted)}: {', '.join(missing)} not in {root}; its cameras are "
                        f"{', '.join(c.name for c in cams)} (keys {', '.join(c.key for c in cams)})")
    return [by[w] for w in wanted]


def parse_episodes(spec: str | None, total: int, flag: str = "--data.episodes") -> list[int] | None:
    try:
        return _parse(spec, total, flag)
    except ValueError as e:
        raise DataError(str(e)) from None


def _vectors(column, rows: int, key: str, where: str) -> np.ndarray:
    """A parquet list column as float32 (rows, d)."""
    import pyarrow as pa

    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if len(flat) % max(rows, 1):
            raise DataError(f"{where}: {key!r} rows have different lengths; expected one fixed-size vector per frame")
        return flat.astype(np.float32).reshape(rows, -1)
    return col.to_numpy(zero_copy_only=False).astype(np.float32).reshape(rows, -1)  # a scalar feature


def read_dataset(root: str | Path, data: DataConfig = DataConfig()) -> Recordings:
    """The selected episodes of the dataset at `root` (module docstring). Validation set aside by
    data.val_episodes / val_fraction is not removed here: see `split`."""
    root = Path(root).resolve()
    info = read_info(root)
    features = info["features"]
    for key, flag in ((data.action_key, "--data.action-key"), (data.state_key, "--data.state-key")):
        if key and key not in features:  # an empty --data.state-key: the dataset has no state
            available = [k for k, f in features.items() if f.get("dtype") not in ("video", "image")]
            raise DataError(f"{flag} {key!r} is not a feature of {root}; its features are {', '.join(available)}"
                            f" (cameras: {', '.join(c.key for c in dataset_cameras(info))})")
    cameras = choose_cameras(info, data.cameras, root)
    stats_path = root / "meta/stats.json"
    if not stats_path.is_file():
        raise DataError(f"{stats_path} is missing: expected the dataset's statistics (lerobot writes them when it "
                        f"finalises a dataset); the normaliser reads them")
    try:
        stats = json.loads(stats_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{stats_path} is not valid JSON ({e}); expected the dataset's statistics") from e
    instructions = read_tasks(root)
    episodes = read_episode_table(root)
    ep_files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if len(episodes) != info["total_episodes"]:
        raise DataError(f"{root}: meta/episodes lists {len(episodes)} episodes, info.json's total_episodes is "
                        f"{info['total_episodes']}")
    if not (episodes["episode_index"].to_numpy() == np.arange(len(episodes))).all():
        raise DataError(f"{root}: meta/episodes' episode_index is not 0..{len(episodes) - 1}")
    chosen = parse_episodes(data.episodes, len(episodes))
    if chosen is not None:
        episodes = episodes.iloc[chosen].reset_index(drop=True)
    for cam in cameras:
        if cam.storage == "video":
            if not info.get("video_path"):
                raise DataError(f"{root}/meta/info.json has no video_path but camera {cam.key} is a video feature")
            need = [f"videos/{cam.key}/{k}" for k in ("chunk_index", "file_index", "from_timestamp")]
            absent = [c for c in need if c not in episodes.columns]
            if absent:
                raise DataError(f"{ep_files[0]} has no columns {absent}: expected where camera {cam.key}'s video lies")

    # ---- the frame tables, one data file at a time (only the columns needed; image bytes stay on disk)
    required = [k for k in (data.state_key, data.action_key) if k] + ["timestamp", "frame_index", "episode_index", "index"]
    selected = set(episodes["episode_index"].tolist())
    files = sorted({(int(c), int(f)) for c, f in zip(episodes["data/chunk_index"], episodes["data/file_index"])})
    parts = []
    for c, f in files:
        path = root / info["data_path"].format(chunk_index=c, file_index=f)
        if not path.is_file():
            raise DataError(f"{path} is missing: expected the frame data of episodes "
                            f"{sorted(episodes.loc[(episodes['data/chunk_index'] == c) & (episodes['data/file_index'] == f), 'episode_index'].tolist())[:5]}")
        schema = _parquet(path, None, schema=True)
        absent = [k for k in required if k not in schema.names]
        if absent:
            raise DataError(f"{path} has no columns {absent}: expected them for every frame (columns {schema.names})")
        table = _parquet(path, required + [k for k in ("task_index", SUCCESS_KEY, ENVIRONMENT_STATE_KEY) if k in schema.names])
        n = table.num_rows
        part = {"file": np.full(n, len(parts)), "row": np.arange(n)}
        for k in table.column_names:
            part[k] = (_vectors(table.column(k), n, k, str(path)) if k in (data.state_key, data.action_key, ENVIRONMENT_STATE_KEY)
                       else table.column(k).to_numpy(zero_copy_only=False))
        parts.append(part)
    frames = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if all(k in p for p in parts)}
    keep = np.isin(frames["episode_index"], list(selected))
    order = np.lexsort((frames["index"][keep], frames["episode_index"][keep]))
    frames = {k: v[keep][order] for k, v in frames.items()}
    data_files = [str(root / info["data_path"].format(chunk_index=c, file_index=f)) for c, f in files]

    # ---- every episode checked; a bad one raises, or is skipped and reported
    ep_rows = frames["episode_index"]
    starts = np.searchsorted(ep_rows, episodes["episode_index"].to_numpy(), side="left")
    ends = np.searchsorted(ep_rows, episodes["episode_index"].to_numpy(), side="right")
    state = frames.get(data.state_key, np.zeros((len(ep_rows), 0), np.float32))
    action = frames[data.action_key]
    ts = frames["timestamp"].astype(np.float64)
    fps = float(info["fps"])
    bad: list[tuple[int, str]] = []
    for i, row in episodes.iterrows():
        e, lo, hi = int(row["episode_index"]), int(starts[i]), int(ends[i])
        where = f"episode {e} ({data_files[int(frames['file'][lo])] if hi > lo else 'no data file'}"
        problem = _episode_problem(row, lo, hi, state, action, ts, frames["frame_index"], data, fps, where,
                                   cameras, root, info)
        if problem:
            bad.append((e, problem))
    if bad and not data.skip_bad_episodes:
        e, why = bad[0]
        more = f" ({len(bad) - 1} more bad episodes; --data.skip-bad-episodes leaves them out and lists them)" if len(bad) > 1 else \
            " (--data.skip-bad-episodes leaves it out and reports it)"
        raise DataError(why + more)
    skip = {e for e, _ in bad}
    good = [i for i, e in enumerate(episodes["episode_index"]) if int(e) not in skip]
    if not good:
        raise DataError(f"{root}: no episode is left to read" + (f"; every selected one is bad, the first: {bad[0][1]}"
                                                               if bad else ""))
    episodes = episodes.iloc[good].reset_index(drop=True)
    starts, ends = starts[good], ends[good]
    take = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
    lengths = ends - starts
    to = np.cumsum(lengths)

    sources = []
    for cam in cameras:
        if cam.storage == "video":
            keys = [(int(a), int(b)) for a, b in zip(episodes[f"videos/{cam.key}/chunk_index"],
                                                     episodes[f"videos/{cam.key}/file_index"])]
            paths = sorted(set(keys))
            names = tuple(info["video_path"].format(video_key=cam.key, chunk_index=a, file_index=b) for a, b in paths)
            sources.append(FrameSource(files=names, file_of=np.array([paths.index(k) for k in keys]),
                                       from_ts=episodes[f"videos/{cam.key}/from_timestamp"].to_numpy(np.float64)))
        else:
            used = sorted(set(frames["file"][take].tolist()))
            sources.append(FrameSource(files=tuple(str(Path(data_files[u]).relative_to(root)) for u in used),
                                       file_of=np.array([used.index(int(frames["file"][a])) for a in starts]),
                                       from_ts=np.zeros(len(starts)), rows=frames["row"][take]))

    col = lambda name, default: episodes[name].tolist() if name in episodes.columns else [default] * len(episodes)  # noqa: E731
    # action-free video by selection: its actions and state are zeroed here, so nothing downstream can read them
    blind = np.isin(episodes["episode_index"].to_numpy(np.int64),
                    parse_episodes(data.video_only_episodes, int(info["total_episodes"]), "--data.video-only-episodes") or [])
    state, action = np.array(state[take], np.float32), np.array(action[take], np.float32)
    hidden = np.repeat(blind, lengths)
    state[hidden], action[hidden] = 0.0, 0.0
    environment = frames.get(ENVIRONMENT_STATE_KEY)
    if environment is not None:
        environment = np.array(environment[take], np.float32)
        environment[hidden] = 0.0
    return Recordings(
        root=root, info=info, stats=stats, data=data, cameras=tuple(cameras), sources=tuple(sources),
        state=state, action=action, has_state=~blind,
        timestamp=ts[take], index=frames["index"][take].astype(np.int64),
        task_index=frames["task_index"][take].astype(np.int64) if "task_index" in frames else np.zeros(len(take), np.int64),
        episode_ids=episodes["episode_index"].to_numpy(np.int64), episode_from=to - lengths, episode_to=to,
        has_actions=np.asarray(col("wam/has_actions", True), bool) & ~blind, instructions=instructions,
        env_tasks=[str(t) for t in col("wam/env_task", "")], seeds=[int(s) for s in col("wam/seed", -1)],
        skipped=bad,
        success=frames[SUCCESS_KEY][take].astype(bool) if SUCCESS_KEY in frames else None, environment_state=environment)


def read_tasks(root: Path) -> list[str]:
    """meta/tasks.parquet: the instruction of each task_index, in order ("" for an index the table lacks)."""
    tasks_path = Path(root) / "meta/tasks.parquet"
    if not tasks_path.is_file():
        raise DataError(f"{tasks_path} is missing: expected the task table (task string -> task_index)")
    tasks = _parquet(tasks_path, None).to_pandas()
    if "task_index" not in tasks.columns:
        raise DataError(f"{tasks_path} has no task_index column (columns {list(tasks.columns)})")
    by_index = {int(i): str(t) for t, i in zip(tasks.index if "task" not in tasks.columns else tasks["task"],
                                             tasks["task_index"])}
    return [by_index.get(i, "") for i in range(max(by_index, default=-1) + 1)]


def read_episode_table(root: Path):
    """meta/episodes/*/*.parquet as one pandas table, one row per episode in episode_index order."""
    import pandas as pd

    ep_files = sorted((Path(root) / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DataError(f"{root}/meta/episodes/ holds no chunk-*/file-*.parquet: expected the episode table")
    episodes = pd.concat([_parquet(p, None).to_pandas() for p in ep_files]).sort_values("episode_index")
    episodes = episodes.reset_index(drop=True)
    absent = [c for c in ("episode_index", "length", "data/chunk_index", "data/file_index") if c not in episodes.columns]
    if absent:
        raise DataError(f"{ep_files[0]} has no columns {absent}: expected the v3.0 episode table (columns "
                        f"{list(episodes.columns)[:12]})")
    return episodes


def _episode_problem(row, lo: int, hi: int, state, action, ts, frame_index, data: DataConfig, fps: float, where: str,
                     cameras: list[Camera], root: Path, info: dict) -> str | None:
    """Why episode `row` cannot be trained on, or None."""
    e = int(row["episode_index"])
    length = int(row["length"]) if "length" in row else hi - lo
    if hi - lo != length:
        return f"{where}): the data file holds {hi - lo} frames of it, meta/episodes says its length is {length}"
    if "dataset_from_index" in row and int(row["dataset_to_index"]) - int(row["dataset_from_index"]) != length:
        return (f"{where}): meta/episodes gives dataset_from_index {int(row['dataset_from_index'])} and "
                f"dataset_to_index {int(row['dataset_to_index'])} for an episode of length {length}")
    if length == 0:
        return f"{where}): it has no frames"
    for key, x in ((data.state_key, state), (data.action_key, action)):
        if x.shape[1] == 0:
            continue
        finite = np.isfinite(x[lo:hi])
        if not finite.all():
            k, d = np.argwhere(~finite)[0]
            return f"{where}, frame {k}): {key}[{d}] is {x[lo + k, d]}; expected finite values"
    fi = frame_index[lo:hi]
    if not (fi == np.arange(length)).all():
        k = int(np.argmax(fi != np.arange(length)))
        return f"{where}, frame {k}): frame_index is {int(fi[k])}; expected 0..{length - 1} in order"
    t = ts[lo:hi]
    step = np.diff(t)
    if (step <= 0).any():
        k = int(np.argmax(step <= 0)) + 1
        return (f"{where}, frame {k}): the timestamp goes {'backwards' if step[k - 1] < 0 else 'nowhere'} "
                f"({t[k - 1]:.4f} s then {t[k]:.4f} s); expected increasing timestamps")
    for cam in cameras:
        if cam.storage != "video":
            continue
        a, b = int(row[f"videos/{cam.key}/chunk_index"]), int(row[f"videos/{cam.key}/file_index"])
        path = root / info["video_path"].format(video_key=cam.key, chunk_index=a, file_index=b)
        if not path.is_file():
            return f"episode {e} (camera {cam.key}): its video {path} is missing"
        end = video_end(path)
        need = float(row[f"videos/{cam.key}/from_timestamp"]) + float(t[-1])
        if need > end + 0.5 / fps:
            return (f"episode {e} ({path}, frame {length - 1}): needs the video at {need:.3f} s but the file ends at "
                    f"{end:.3f} s; expected the video to cover the episode's timestamps (truncated or corrupt?)")
    return None


_END: dict[tuple[str, int], float] = {}


def video_end(path: Path) -> float:
    """The time of an mp4's last frame, seconds (from the stream's header; cached per file and size)."""
    import av

    key = (str(path), path.stat().st_size)
    if key not in _END:
        try:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                rate = float(s.average_rate or s.guessed_rate or 1)
                if s.frames:
                    _END[key] = float(s.start_time or 0) * float(s.time_base) + (s.frames - 1) / rate
                elif s.duration is not None:
                    _END[key] = float((s.start_time or 0) + s.duration) * float(s.time_base) - 1 / rate
                else:
                    _END[key] = float(c.duration or 0) / 1e6 - 1 / rate
        except (av.error.FFmpegError, IndexError) as e:
            raise DataError(f"video file {path} is corrupt or holds no video stream ({e})") from e
    return _END[key]


def split(rec: Recordings) -> tuple[Recordings, Recordings | None]:
    """(training episodes, held-out validation episodes or None) by data.val_episodes (dataset indices) or
    data.val_fraction (evenly spaced over the selection)."""
    data, e = rec.data, len(rec.episode_ids)
    if data.val_episodes is not None:
        wanted = set(parse_episodes(data.val_episodes, int(rec.info["total_episodes"]), "--data.val-episodes"))
        val = [i for i, ep in enumerate(rec.episode_ids) if int(ep) in wanted]
        if not val:
            raise DataError(f"--data.val-episodes {data.val_episodes!r}: none of these episodes is among the selected "
                            f"{len(rec.episode_ids)}")
    elif data.val_fraction > 0:
        n = max(1, round(data.val_fraction * e))
        val = sorted(set(np.linspace(0, e - 1, n).round().astype(int).tolist()))
    else:
        return rec, None
    train = [i for i in range(e) if i not in set(val)]
    if not train:
        raise DataError(f"the validation split takes all {e} selected episodes; none is left to train on")
    return rec.select(train), rec.select(val)


def data_config_of(config: dict, **changes) -> DataConfig:
    """How the checkpoint with run config `config` read its data (feature keys, resize, normalisation), with its
    cameras pinned to the ones the model reads, in its order, and `changes` on top (the episodes to read)."""
    data = config.get("data", {})
    saved = data.get("config") or {}
    keep = {"state_key", "action_key", "resize", "state_norm", "action_norm", "cache_dir"}
    kw = {k: v for k, v in saved.items() if k in keep}
    kw["cameras"] = tuple(data.get("camera_keys") or config["model"]["cameras"])
    names = {f.name for f in dataclasses.fields(DataConfig)}
    return DataConfig(**{**kw, **{k: v for k, v in changes.items() if k in names}})


def _parquet(path: Path, columns: list[str] | None, schema: bool = False):
    """A parquet file's table (or schema), or a DataError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path) if schema else pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is not a readable parquet file ({e})") from e


def usable_stats(rec: Recordings, data: DataConfig) -> dict:
    """meta/stats.json, unless its state or action entry is not finite (lerobot's statistics carry a bad episode's
    NaN into the whole dataset's): then that entry is computed from the episodes kept (`rec`), and said so. With
    --data.episodes or --data.video-only-episodes the dataset's statistics would cover episodes (or actions and
    states) that are not read, so both entries come from the frames whose state and actions are read."""
    from wam.data.stats import feature_stats

    stats = dict(rec.stats)
    lengths = rec.episode_to - rec.episode_from
    labelled = np.repeat(rec.has_actions, lengths)  # action-free episodes store zeros
    known = np.repeat(rec.has_state, lengths)
    for key, x in ((data.state_key, rec.state[known]), (data.action_key, rec.action[labelled])):
        if not key or x.shape[1] == 0 or len(x) == 0:
            continue
        entry = stats.get(key) or {}
        finite = all(np.isfinite(np.asarray(v, np.float64)).all() for k, v in entry.items() if k != "count")
        if data.video_only_episodes is not None or data.episodes is not None:  # meta/stats.json covers episodes not read
            stats[key] = feature_stats(x)
            continue
        if entry and finite:
            continue
        print(f"meta/stats.json {'has no' if not entry else 'has non-finite'} statistics for {key!r}; the normaliser "
              f"uses those of the {len(x)} frames kept")
        stats[key] = feature_stats(x)
    return stats
