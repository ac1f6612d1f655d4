"""mp4 in and out through PyAV (no system ffmpeg needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoWriter:
    """Appends uint8 (H, W, 3) frames to an H.264 mp4. yuv444p keeps small coloured markers sharp. `preset` is
    x264's speed/size trade-off ("ultrafast" encodes several times faster into larger files). `bytes` counts the
    encoded bytes muxed so far over `packets` frames (the encoder holds a few frames back until `close`).
    x264 runs on one thread (encode several videos in parallel instead, as DatasetWriter does). Its bits are not
    reproducible even so: the same frames, encoded one after another in one thread, gave different files about 2
    times in 100 at 96 px and up to 1 in 4 for DatasetWriter's 16 px test camera (PyAV 18.1, FFmpeg 8.1; valgrind
    finds no uninitialised read). The frames differ by codec noise only; lossless crf=0 (yuv444p) decodes to the
    same frames every time, which is what tests that compare two encodings use."""

    def __init__(self, path: str | Path, fps: int, height: int, width: int, crf: int = 18, pix_fmt: str = "yuv444p",
                 preset: str = "veryfast"):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=int(fps))
        self._stream.width, self._stream.height = int(width), int(height)
        self._stream.pix_fmt = pix_fmt
        # one thread for the codec context and, said to x264 itself, for its lookahead too
        self._stream.options = {"crf": str(crf), "preset": preset, "x264-params": "threads=1:lookahead-threads=1"}
        self._stream.codec_context.thread_count = 1
        self.frames = self.packets = self.bytes = 0

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        self._mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        self.frames += 1

    def _mux(self, packets) -> None:
        for packet in packets:
            self.packets += 1
            self.bytes += packet.size
            self._container.mux(packet)

    def close(self) -> None:
        self._mux(self._stream.encode())
        self._container.close()


def write_mp4(path: str | Path, frames: np.ndarray, fps: int, crf: int = 18) -> None:
    """frames: uint8 (T, H, W, 3)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    w = VideoWriter(path, fps, frames.shape[1], frames.shape[2], crf=crf)
    for f in frames:
        w.write(f)
    w.close()


def read_mp4(path: str | Path) -> np.ndarray:
    """All frames of an mp4 as uint8 (T, H, W, 3). A missing or corrupt file raises with its path."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file {path} is missing")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, ValueError) as e:
        raise ValueError(f"video file {path} is corrupt or not an mp4 ({e})") from e
    if not frames:
        raise ValueError(f"video file {path} holds no frames: it is corrupt or was not finished")
    return np.stack(frames)
