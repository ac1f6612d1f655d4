"""`RemotePolicy`: a `wam.types.Policy` served by `wam serve`, over the wire (numpy, msgpack and websockets
only, no torch: it runs on the robot's computer).

    policy = RemotePolicy("ws://gpu-box:8000", api_key=None)      # the metadata comes from the handshake
    policy.reset(seed=0)                                           # the reset endpoint: history cleared, seeded
    out = policy.infer(obs)                                        # an Observation -> PolicyOutput

Where the frame history sits: with history="server" (the default) the client sends the current frame of each
camera and the server's session stacks the context frames (the metadata declares context_offsets (0,)); that
fits a client that queries once per control step. A client that queries only when its chunk runs out (a chunk
executor, as `wam eval --remote`) keeps the history itself: history="client" makes the metadata declare the
model's own context offsets, and `runtime.closed_loop(RemotePolicy(url, history="client"), execute)` puts the
FrameHistory in front of the chunk executor, exactly as in process; frames are then stacked once, client side.

Every wait for the server is bounded by `timeout` seconds (TimeoutError). A typed error reply raises
`RemoteError` (an `ObservationError` for `invalid_observation`, as in process)."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from wam.serve import wire
from wam.serve.images import fit_images
from wam.types import Observation, ObservationError, PolicyMetadata, PolicyOutput


class RemoteError(RuntimeError):
    """The server refused a message: `kind` is one of wam.serve.errors.TYPES."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


class RemoteObservationError(RemoteError, ObservationError):
    """The server refused an observation (the message names the key, the expected and the received value)."""


def _raise(error: dict):
    kind, message = str(error.get("type")), str(error.get("message"))
    raise (RemoteObservationError if kind == "invalid_observation" else RemoteError)(kind, message)


class RemotePolicy:
    """A policy served by `wam serve` (see the module docstring)."""

    def __init__(self, url: str, api_key: str | None = None, history: str = "server", timeout: float = 60.0,
                 max_message_mb: float = 64.0):
        from websockets.sync.client import connect

        if history not in ("server", "client"):
            raise ValueError(f"history must be 'server' or 'client', got {history!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
        self.url = urlunsplit(parts._replace(path=parts.path or "/", query=urlencode({"history": history})))
        self.timeout = timeout
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self.ws = connect(self.url, additional_headers=headers, open_timeout=timeout, close_timeout=5,
                          compression=None, max_size=int(max_message_mb * 2**20)).__enter__()  # closed by close()
        self.server_info: dict = self._receive()
        self._metadata = PolicyMetadata.from_dict(self.server_info)

    @property
    def metadata(self) -> PolicyMetadata:
        return self._metadata

    def _receive(self) -> dict:
        reply = self.ws.recv(timeout=self.timeout)
        if isinstance(reply, str):
            _raise(json.loads(reply).get("error", {"type": "text_frame", "message": reply}))
        reply = wire.unpack(reply)
        if "error" in reply:
            _raise(reply["error"])
        return reply

    def reset(self, seed: int | None = None) -> None:
        self.ws.send(wire.pack({"endpoint": "reset", **({"seed": int(seed)} if seed is not None else {})}))
        self._receive()

    def infer(self, obs: Observation) -> PolicyOutput:
        start = time.perf_counter()
        meta = self._metadata
        self.ws.send(wire.pack(fit_images(obs.to_dict(), meta.cameras, meta.image_size, meta.resize)))  # resized here: less to send
        reply = self._receive()
        timing = {**reply.get("policy_timing", {}), "round_trip_ms": (time.perf_counter() - start) * 1000}
        if "total_ms" in reply.get("server_timing", {}):
            timing["server_ms"] = reply["server_timing"]["total_ms"]
        return PolicyOutput(actions=np.asarray(reply["actions"], np.float32), frames=reply.get("frames"),
                            value=reply.get("value"), timing=timing)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> "RemotePolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
