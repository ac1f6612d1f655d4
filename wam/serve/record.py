"""`wam serve --record DIR`: every request and reply of every connection, one file per message, never pickle.

    DIR/server.msgpack                          the server's handshake info (schema, mapping, fingerprint, sampler)
    DIR/c00003-open.msgpack                     connection 3's options (history, errors)
    DIR/c00003-s000007-request.msgpack          its 7th message, the bytes as received (.txt for a text frame)
    DIR/c00003-s000007-reply.msgpack            the reply sent for it (wire.pack: msgpack with numpy arrays)

Recording stops, with one log line, once the files would pass --record-max-mb; the server goes on serving.
`wam replay` (replay.py) reads these files back."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from wam.serve import wire

log = logging.getLogger("wam.serve")

NAME = re.compile(r"c(\d{5})-s(\d{6})-(request|reply)\.(msgpack|txt)$")


class Recorder:
    """Writes the files above under `root`, at most `max_mb` in all."""

    def __init__(self, root: Path, max_mb: float, server_info: dict):
        if max_mb <= 0:
            raise ValueError(f"--record-max-mb must be > 0, got {max_mb}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if any(self.root.iterdir()):
            raise ValueError(f"--record {self.root}: the folder is not empty; record into a new one")
        self.max_bytes, self.written, self.stopped = int(max_mb * 2**20), 0, False
        self.connections = 0
        self.lock = threading.Lock()
        self._write("server.msgpack", wire.pack(server_info))

    def open(self, options: dict) -> int:
        """A new connection's number (its options recorded)."""
        with self.lock:
            self.connections += 1
            conn = self.connections
        self._write(f"c{conn:05d}-open.msgpack", wire.pack(options))
        return conn

    def request(self, conn: int, seq: int, message: bytes | str) -> None:
        text = isinstance(message, str)
        self._write(f"c{conn:05d}-s{seq:06d}-request.{'txt' if text else 'msgpack'}",
                    message.encode() if text else bytes(message))

    def reply(self, conn: int, seq: int, reply: dict) -> None:
        if not self.stopped:
            self._write(f"c{conn:05d}-s{seq:06d}-reply.msgpack", wire.pack(reply))

    def _write(self, name: str, data: bytes) -> None:
        with self.lock:
            if self.stopped:
                return
            if self.written + len(data) > self.max_bytes:
                self.stopped = True
                log.warning("recording stopped: --record-max-mb %.1f reached (%d bytes in %s)",
                            self.max_bytes / 2**20, self.written, self.root)
                return
            self.written += len(data)
        (self.root / name).write_bytes(data)
