"""The frame cache: every camera's frames decoded once, at the model's input size, into uint8 arrays on disk.

    CACHE/frames/<camera key>/<size>px-<resize>/<source file>-<digest>.frames      uint8 (n, size, size, 3), raw
    CACHE/frames/<camera key>/<size>px-<resize>/<source file>-<digest>.times.npy   (n,) float64 presentation times

One cache file per source file (an mp4 that holds many episodes of a camera, or a data parquet whose image
feature holds PNG frames), so a selection of episodes decodes only the files it touches, an interrupted build
resumes at the next file, and datasets of any size stream through. The digest covers the source file (name,
size, first and last MiB) and the format version; the folder names the transform (size, pad or crop), so a
changed transform builds a new cache and an unchanged one is reused across runs. `.frames` files are plain
row-major arrays: `np.memmap(path, np.uint8, "r").reshape(-1, size, size, 3)` maps one.

`FrameStore.read(view, idx)` gathers frames by position with os.pread: training touches random frames of a
dataset far larger than RAM and its resident memory stays that of the batch (the page cache is the kernel's).
Frame k of an episode is the decoded frame presented nearest to from_timestamp + timestamp[k], as lerobot looks it
up; one further than half a frame period away (lerobot's own tolerance is 1e-4 s; a looser one accepts a
re-encoded video's rounding) is an error naming the episode, the file and the frame, or, with
--data.skip-bad-episodes, leaves the episode out (`open_frames`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from wam.data.reader import DataError, Recordings
from wam.data.resize import fit

CACHE_VERSION = 1
BATCH = 64  # frames fitted at once while building


def cache_dir(rec: Recordings) -> Path:
    return Path(rec.data.cache_dir) if rec.data.cache_dir else rec.root / "cache"


def _digest(path: Path) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{path.name}:{path.stat().st_size}".encode())
    with path.open("rb") as f:
        h.update(f.read(2**20))
        if path.stat().st_size > 2**21:
            f.seek(-(2**20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


class _Unit:
    """One cached source file: n frames of side `size`, read by position."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size
        self.frame_bytes = size * size * 3
        self.n = path.stat().st_size // self.frame_bytes
        times = path.with_name(path.name.removesuffix(".frames") + ".times.npy")
        self.times = np.load(times) if times.is_file() else None
        self._fd, self._pid = None, None

    def read(self, rows: np.ndarray, out: np.ndarray) -> None:
        if self._pid != os.getpid():  # a DataLoader worker opens its own descriptor (the inherited one stays shut)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        for j, r in enumerate(rows):
            buf = os.pread(self._fd, self.frame_bytes, int(r) * self.frame_bytes)
            out[j] = np.frombuffer(buf, np.uint8).reshape(self.size, self.size, 3)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid = None, None

    def __del__(self):
        self.close()

    def __getstate__(self):  # descriptors are per process
        return {**self.__dict__, "_fd": None, "_pid": None}


class FrameStore:
    """Every selected frame of every chosen camera at `size` x `size` (module docstring)."""

    def __init__(self, rec: Recordings, size: int, resize: str = "pad", progress: bool = True):
        self.size, self.resize = size, resize
        self.cameras = rec.camera_names
        self._units: list[list[_Unit]] = []
        paths: list[list[Path]] = []  # per camera, its cache files
        self._unit_of: list[np.ndarray] = []  # per camera (N,) index into its units
        self._row_of: list[np.ndarray] = []  # per camera (N,) frame position in that unit
        todo = []
        for cam, src in zip(rec.cameras, rec.sources):
            folder = cache_dir(rec) / "frames" / cam.key / f"{size}px-{resize}"
            paths.append([])
            for name in src.files:
                source = rec.root / name
                if not source.is_file():
                    raise DataError(f"{source} is missing: expected camera {cam.key}'s frames")
                stem = name.replace("/", "-").rsplit(".", 1)[0]
                path = folder / f"{stem}-{_digest(source)}.frames"
                paths[-1].append(path)
                if not path.is_file():
                    todo.append((cam, source, path))
        if todo:
            build(todo, size, resize, progress)
        lengths = rec.episode_to - rec.episode_from
        fps = rec.fps
        self.bad: list[tuple[int, str]] = []  # (episode, why): frames the video does not have (skip_bad_episodes)
        for c, (cam, src) in enumerate(zip(rec.cameras, rec.sources)):
            units = [_Unit(p, size) for p in paths[c]]
            self._units.append(units)
            unit_of = np.repeat(src.file_of, lengths).astype(np.int32)
            if cam.storage == "image":
                rows = src.rows.astype(np.int64)
            else:
                rows = np.empty(len(unit_of), np.int64)
                for e in range(len(lengths)):
                    lo, hi = rec.episode_from[e], rec.episode_to[e]
                    unit = units[src.file_of[e]]
                    want = src.from_ts[e] + rec.timestamp[lo:hi]
                    try:
                        rows[lo:hi] = _nearest(unit.times, want, fps, episode=int(rec.episode_ids[e]),
                                               file=src.files[src.file_of[e]])
                    except DataError as err:
                        if not rec.data.skip_bad_episodes:
                            raise
                        self.bad.append((int(rec.episode_ids[e]), str(err)))
                        rows[lo:hi] = 0
            bad = rows >= np.array([units[u].n for u in unit_of]) if len(rows) else np.zeros(0, bool)
            if bad.any():
                k = int(np.argmax(bad))
                e = int(np.searchsorted(rec.episode_to, k, side="right"))
                raise DataError(f"episode {int(rec.episode_ids[e])} ({src.files[unit_of[k]]}, frame "
                                f"{k - rec.episode_from[e]}): row {rows[k]} is past the {units[unit_of[k]].n} frames "
                                f"cached; delete {units[unit_of[k]].path} and run again")
            self._unit_of.append(unit_of)
            self._row_of.append(rows)

    def __len__(self) -> int:
        return len(self._unit_of[0])

    def fingerprint(self) -> str:
        """Names exactly these frames: the cache files (named by their sources' digests and the transform) and the
        frame each position reads."""
        h = hashlib.sha1()
        for units, unit_of, rows in zip(self._units, self._unit_of, self._row_of):
            h.update("|".join(u.path.name for u in units).encode())
            h.update(unit_of.tobytes())
            h.update(rows.tobytes())
        return h.hexdigest()[:16]

    def close(self) -> None:
        for units in self._units:
            for u in units:
                u.close()

    def read(self, view: int, idx: np.ndarray) -> np.ndarray:
        """uint8 (len(idx), size, size, 3): camera `view`'s frames at positions idx (any shape, flattened)."""
        idx = np.asarray(idx).reshape(-1)
        out = np.empty((len(idx), self.size, self.size, 3), np.uint8)
        units, rows = self._unit_of[view][idx], self._row_of[view][idx]
        for u in np.unique(units):
            m = np.nonzero(units == u)[0]
            buf = np.empty((len(m), self.size, self.size, 3), np.uint8)
            self._units[view][u].read(rows[m], buf)
            out[m] = buf
        return out


def open_frames(rec: Recordings, size: int, resize: str = "pad", progress: bool = True) -> tuple[Recordings, FrameStore]:
    """The frames of `rec`, and `rec` itself less the episodes whose video lacks frames (with
    --data.skip-bad-episodes: each is added to rec.skipped; without, the first raises)."""
    store = FrameStore(rec, size, resize, progress)
    if not store.bad:
        return rec, store
    bad = {e for e, _ in store.bad}
    keep = [i for i, e in enumerate(rec.episode_ids) if int(e) not in bad]
    if not keep:
        raise DataError(f"{rec.root}: no episode is left to read; every selected one is bad, the first: {store.bad[0][1]}")
    store.close()
    rec = dataclasses.replace(rec.select(keep), skipped=[*rec.skipped, *store.bad])
    return rec, FrameStore(rec, size, resize, progress=False)


def _nearest(times: np.ndarray, want: np.ndarray, fps: float, episode: int, file: str) -> np.ndarray:
    j = np.clip(np.searchsorted(times, want), 1, len(times) - 1) if len(times) > 1 else np.zeros(len(want), int)
    if len(times) > 1:
        j = np.where(np.abs(times[j - 1] - want) <= np.abs(times[j] - want), j - 1, j)
    off = np.abs(times[j] - want)
    if (off > 0.5 / fps).any():
        k = int(np.argmax(off > 0.5 / fps))
        raise DataError(f"episode {episode} ({file}, frame {k}): no video frame near {want[k]:.4f} s (the nearest is "
                        f"at {times[j[k]]:.4f} s; the file spans {times[0]:.3f}..{times[-1]:.3f} s); expected a frame "
                        f"within half a frame period of every timestamp")
    return j


# ============================================================================================ building
def build(todo: list, size: int, resize: str, progress: bool = True) -> None:
    """Decode each (camera, source, cache path) once into its cache file, with one progress bar for all."""
    from tqdm import tqdm

    total = sum(_count(cam, source) for cam, source, _ in todo)
    bar = tqdm(total=total, desc=f"frame cache {size}px {resize}", unit="frame", disable=not progress)
    try:
        for cam, source, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")  # two builders never share a file
            frames = _ahead(_decode_video(source) if cam.storage == "video" else _decode_images(source, cam.key))
            times = []
            with tmp.open("wb") as f:
                for batch, t in frames:
                    f.write(np.ascontiguousarray(fit(batch, size, resize)).tobytes())
                    times.extend(t)
                    bar.update(len(batch))
            np.save(path.with_name(path.name.removesuffix(".frames") + ".times.npy"), np.asarray(times, np.float64))
            os.replace(tmp, path)  # the frames file appears last: its presence means complete
    finally:
        bar.close()


def _ahead(batches, depth: int = 4):
    """The batches of a generator, decoded by a thread ahead of the caller (decoding and fitting release the GIL, so
    the two overlap on two cores); an exception in the decoder is raised here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(depth)
    done = object()

    def run():
        try:
            for b in batches:
                q.put(b)
            q.put(done)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    threading.Thread(target=run, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _count(cam, source: Path) -> int:
    if cam.storage == "image":
        import pyarrow.parquet as pq

        return pq.ParquetFile(source).metadata.num_rows
    import av

    try:
        with av.open(str(source)) as c:
            return int(c.streams.video[0].frames or 0)
    except (av.error.FFmpegError, IndexError) as e:
        raise DataError(f"video file {source} is corrupt or holds no video stream ({e})") from e


def _decode_video(path: Path):
    """(uint8 (n, H, W, 3), times) batches of an mp4, in presentation order."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            batch, times = [], []
            for frame in c.decode(stream):
                batch.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time))
                if len(batch) == BATCH:
                    yield np.stack(batch), times
                    batch, times = [], []
            if batch:
                yield np.stack(batch), times
    except av.error.FFmpegError as e:
        raise DataError(f"video file {path} is corrupt ({e})") from e


def _decode_images(path: Path, key: str):
    """(uint8 (n, H, W, 3), row numbers) batches of the image feature `key` of a data parquet (PNG or JPEG bytes)."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    column = pq.read_table(path, columns=[key]).column(key).to_pylist()
    for start in range(0, len(column), BATCH):
        batch = []
        for r, cell in enumerate(column[start:start + BATCH], start):
            raw = cell.get("bytes") if isinstance(cell, dict) else cell
            if not raw:
                raise DataError(f"{path} row {r}: image feature {key!r} holds no bytes (path "
                                f"{cell.get('path') if isinstance(cell, dict) else None!r}); expected PNG bytes")
            try:
                batch.append(np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))
            except OSError as e:
                raise DataError(f"{path} row {r}: image feature {key!r} is not a readable image ({e})") from e
        yield np.stack(batch), [float(r) for r in range(start, start + len(batch))]
