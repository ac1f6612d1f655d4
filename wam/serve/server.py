"""`wam serve CHECKPOINT`: a websocket policy server on openpi's wire that the unmodified
`openpi_client.websocket_client_policy.WebsocketClientPolicy` talks to.

On connect the server sends its metadata (one msgpack dict: the policy's `PolicyMetadata.to_dict()` plus the
model's fingerprint, the wam version, the action bounds, the session's options). Then every binary message is
one msgpack dict with an `endpoint`:

    "infer" (the default)   an observation in the flat wire form (wam.types.Observation.from_dict); the reply is
                            {"actions": float32 (k, a), "policy_timing": {"infer_ms" (of the batch it ran in)},
                            "server_timing": {"total_ms", "prev_total_ms"}, "value" (models that predict one), "frames" (uint8
                            (f, v, s, s, 3), with --return-frames only)}
    "reset"                 {"endpoint": "reset", "seed": int (optional)}: clears the session's frame history and
                            seeds its sampling; the reply is {"reset": True, "seed": seed}

A refused message gets {"error": {"type", "message"}} (errors.py) and the connection keeps working.

With --schema droid the messages carry RoboArena/DROID's keys and a session_id instead, translated onto the
checkpoint's keys by a declared mapping (schemas.py); a new session_id on a connection starts a new session.
--record DIR saves every request and reply (record.py) for `wam replay` (replay.py).

Sessions. Every connection is a session: its own view of the policy with its own sampling generator
(`WAMPolicy.session`) and, by default, its own `FrameHistory` (the client sends the current frame of each
camera; the session stacks the context frames the model reads from the messages it receives, so they match the
model's offsets when the client sends one message per control step). A new prompt clears the history too.
Connecting with `?history=client` leaves the history to the client (the metadata then declares the model's own
context offsets and the client sends them stacked): `wam eval --remote` does this, because its chunk executor
queries the server only when a chunk runs out while the history must see every step. `?errors=text` sends
errors as JSON text frames (errors.py).

Inference runs off the event loop, so it keeps answering pings, handshakes and other clients. The shared model
runs on one thread: `wam serve` puts a `Batcher` (batcher.py) in front of it, which batches the requests of
sessions that arrive together into one forward pass (--max-batch, --max-wait-ms; --max-batch 1 turns it off),
each session getting exactly its unbatched result; the sessions' own work (frame history, action guard) runs on a
pool of threads that wait for their results. A server built on plain sessions (no batcher) runs everything on
one worker thread, one inference at a time. Messages over
--max-message-mb get a typed error; over twice that the transport closes the connection (1009) without reading
it into memory."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import tyro

from wam.config import SamplerOverrides
from wam.runtime import FrameHistory
from wam.safety import MARGIN, ActionGuard, Guarded, NonFiniteAction
from wam.serve import wire
from wam.serve.batcher import Batcher
from wam.serve.errors import TYPES, ServeError
from wam.serve.images import fit_images
from wam.serve.record import Recorder
from wam.serve.schemas import SCHEMAS, WamSchema, make_schema
from wam.types import Observation, ObservationError, Policy, PolicyMetadata

log = logging.getLogger("wam.serve")

API_KEY_ENV = "WAM_API_KEY"
OPTIONS = {"history": ("server", "client"), "errors": ("msgpack", "text")}
"""Per-connection options, as the URL's query (ws://host:port/?history=client); the first value is the default."""


@dataclass(frozen=True)
class ServeConfig:
    checkpoint: tyro.conf.Positional[Path]
    """Checkpoint folder (e.g. runs/train/last)."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0: every interface; then set an API key)."""
    port: int = 8000
    return_frames: bool = False
    """Send the predicted future frames in every reply (uint8 (f, v, s, s, 3))."""
    max_message_mb: float = 16.0
    """Messages over this get a typed error (message_too_large); over twice this the connection is closed."""
    api_key: str | None = None
    """Refuse handshakes without the header `Authorization: Api-Key KEY` (default: the WAM_API_KEY variable)."""
    sampler: SamplerOverrides = field(default_factory=SamplerOverrides)
    """Changes to the checkpoint's own sampler (e.g. --sampler.device cuda --sampler.steps 4)."""
    schema: str = "wam"
    """The observation keys clients send: wam (the checkpoint's own) or droid (RoboArena/DROID, schemas.py)."""
    droid_mapping: Path | None = None
    """With --schema droid: a JSON file mapping DROID images and state onto the checkpoint's (schemas.py;
    default: exterior 1, wrist, exterior 2 onto the cameras in order, state joint_position + gripper_position)."""
    record: Path | None = None
    """Save every request and reply, one file per message, into this new folder (record.py; `wam replay`)."""
    record_max_mb: float = 1024.0
    """Recording stops (with a log line) once its files would pass this."""
    max_batch: int = 8
    """Requests of different sessions run together in one forward pass, up to this many (1: no batching)."""
    max_wait_ms: float = 2.0
    """How long the first pending request waits for others to join its batch (never longer than it takes
    every open session to send one)."""

    def __post_init__(self):
        if self.schema not in SCHEMAS:
            raise ValueError(f"unknown schema {self.schema!r}; expected one of {list(SCHEMAS)}")
        if not 0 <= self.port < 65536 or self.max_message_mb <= 0:
            raise ValueError(f"need 0 <= port < 65536 and max_message_mb > 0, got {self.port} and {self.max_message_mb}")
        if self.max_batch < 1 or self.max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {self.max_batch} and {self.max_wait_ms}")


class Session:
    """One connection's state: its policy view, its frame history (unless the client keeps it), its prompt."""

    def __init__(self, new_policy: Callable[[], Policy], history: str):
        self.new_policy, self.history = new_policy, history
        self.id = None  # the client's session_id (droid schema), None until it sends one
        self.renew()

    def renew(self) -> None:
        """A new session on the same connection: a fresh policy view (its own generator) and history."""
        policy = self.new_policy()
        self.runner = FrameHistory(policy) if self.history == "server" else policy
        self.prompt: str | None = None

    def follow(self, session_id) -> None:
        """A session_id other than the one before starts a new session."""
        if session_id is not None and session_id != self.id:
            if self.id is not None:
                self.renew()
            self.id = session_id

    def reset(self, seed: int | None) -> None:
        self.runner.reset(seed)
        self.prompt = None

    def infer(self, obs: Observation):
        if self.prompt is not None and obs.prompt != self.prompt:
            self.runner.reset(None)  # a new instruction starts a new history; the sampling goes on
        self.prompt = obs.prompt
        return self.runner.infer(obs)


class PolicyServer:
    """Serves sessions of one model (see the module docstring). `new_session()` gives each connection its own
    policy view (for a WAMPolicy: `policy.session`, or a Batcher's `batcher.session`); `guard` clips and checks
    every chunk sent (wam/safety.py). With `batcher` (the one whose sessions `new_session` makes) the sessions run on
    `workers` threads while the batcher's own thread runs the model, and the server closes it with itself;
    without, everything runs on one thread."""

    def __init__(self, new_session: Callable[[], Policy], guard: ActionGuard, info: dict | None = None,
                 return_frames: bool = False, max_message_mb: float = 16.0, api_key: str | None = None,
                 schema=None, recorder: Recorder | None = None, batcher: Batcher | None = None,
                 workers: int = 32):
        self.new_session, self.guard, self.info = new_session, guard, dict(info or {})
        self.schema, self.recorder = schema or WamSchema(), recorder
        self.return_frames, self.max_bytes, self.api_key = return_frames, int(max_message_mb * 2**20), api_key
        model = new_session().metadata
        self.specs = {"client": model, "server": FrameHistory(_Declared(model)).metadata}
        self.model_spec = model
        self.schema.check(model)  # a mapping that cannot feed the model is refused before serving
        self.batcher = batcher
        # plain sessions share the model unguarded: one thread; batched ones only wait on the batcher's thread
        self.executor = ThreadPoolExecutor(workers if batcher else 1, thread_name_prefix="wam-infer")
        self.ready = threading.Event()

    # ------------------------------------------------------------------ handshake
    def metadata(self, options: dict[str, str]) -> dict:
        spec = self.specs[options["history"]]
        return {**spec.to_dict(), **self.info, "model_context_offsets": list(self.model_spec.context_offsets),
                "action_bounds": self.guard.to_dict(), "return_frames": self.return_frames,
                "max_message_mb": self.max_bytes / 2**20, "error_types": sorted(TYPES),
                **self.schema.handshake(spec), **options}

    def process_request(self, connection, request):
        """HTTP before the websocket upgrade: /healthz, the connection's options, the API key."""
        url = urlsplit(request.path)
        if url.path == "/healthz":
            ok = self.ready.is_set()
            return connection.respond(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, "ok\n" if ok else "loading\n")
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                log.warning("refused a handshake from %s: missing or wrong API key", connection.remote_address)
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong header Authorization: Api-Key KEY\n")
        try:
            _options(url.query)
        except ValueError as e:
            return connection.respond(HTTPStatus.BAD_REQUEST, f"{e}\n")
        return None

    # ------------------------------------------------------------------ one connection
    async def handler(self, ws) -> None:
        options = _options(urlsplit(ws.request.path).query)
        session = Session(lambda: Guarded(self.new_session(), self.guard), options["history"])
        spec = self.specs[options["history"]]
        loop = asyncio.get_running_loop()
        prev_ms = None
        conn = self.recorder.open(options) if self.recorder else None
        await ws.send(wire.pack(self.metadata(options)))
        try:
            seq = 0
            async for message in ws:
                seq += 1
                start = time.perf_counter()
                if conn is not None:
                    self.recorder.request(conn, seq, message)
                try:
                    reply = await self._answer(message, session, spec, loop)
                except ServeError as e:
                    if e.kind in ("non_finite_action", "internal_error"):
                        log.error("session %s: %s: %s", id(session), e.kind, e.message)
                    else:
                        log.info("session %s: refused a message: %s: %s", id(session), e.kind, e.message)
                    reply = e.to_dict()
                except Exception as e:  # a bug, not the client's fault: logged, answered, the server stays up
                    log.error("session %s: internal error\n%s", id(session), traceback.format_exc())
                    reply = ServeError("internal_error", f"{type(e).__name__}: {e}"[:500]).to_dict()
                if conn is not None:
                    self.recorder.reply(conn, seq, reply)
                if "error" in reply:
                    await ws.send(json.dumps(reply) if options["errors"] == "text" else wire.pack(reply))
                    continue
                total = (time.perf_counter() - start) * 1000
                if "actions" in reply:
                    reply["server_timing"] = {"total_ms": total, **({"prev_total_ms": prev_ms} if prev_ms else {})}
                    prev_ms = total
                await ws.send(wire.pack(reply))
        except Exception as e:  # the connection went away (or the transport closed it): only this session ends
            log.info("session %s closed: %s", id(session), e)

    async def _answer(self, message, session: Session, spec: PolicyMetadata, loop) -> dict:
        if isinstance(message, str):
            raise ServeError("text_frame", "got a text frame; send binary msgpack (openpi-client's Packer)")
        if len(message) > self.max_bytes:
            raise ServeError("message_too_large", f"the message has {len(message)} bytes, over the server's "
                                                  f"--max-message-mb of {self.max_bytes} bytes")
        data = wire.unpack(message)
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ServeError("bad_message", f"a message is a dict of str keys, got {type(data).__name__}")
        try:
            data, session_id = self.schema.translate(dict(data), spec)
        except ObservationError as e:
            raise ServeError("invalid_observation", str(e)) from None
        session.follow(session_id)
        endpoint = data.pop("endpoint", "infer")
        if not isinstance(endpoint, str):
            raise ServeError("unknown_endpoint", f"endpoint must be a str ('infer' or 'reset'), got {type(endpoint).__name__}")
        if endpoint == "reset":
            seed = data.pop("seed", None)
            if data or not (seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63)):
                raise ServeError("bad_message", f"reset takes endpoint and an optional seed (an int in [0, 2**63)), "
                                                f"got seed {seed!r:.40} and keys {sorted(data)}")
            await loop.run_in_executor(self.executor, session.reset, seed)
            return {"reset": True, "seed": seed}
        if endpoint != "infer":
            raise ServeError("unknown_endpoint", f"endpoint {endpoint!r:.40}: expected 'infer' (the default) or 'reset'")
        try:
            obs = Observation.from_dict(fit_images(data, spec.cameras, spec.image_size, spec.resize), spec)
        except ObservationError as e:
            raise ServeError("invalid_observation", str(e)) from None
        try:
            out = await loop.run_in_executor(self.executor, session.infer, obs)
        except ObservationError as e:
            raise ServeError("invalid_observation", str(e)) from None
        except NonFiniteAction as e:  # the guard refused the chunk: nothing is sent
            raise ServeError("non_finite_action", str(e)) from None
        reply = out.to_dict(frames=self.return_frames)  # the actions have passed the guard (Guarded)
        reply["policy_timing"] = reply.pop("timing")
        reply.pop("fresh")
        return reply

    # ------------------------------------------------------------------ running
    async def run(self, host: str, port: int, stop: asyncio.Event | None = None, bound: Callable[[int], None] | None = None):
        """Serve until `stop` is set (forever without one); `bound(port)` is called once listening."""
        from websockets.asyncio.server import serve

        async with serve(self.handler, host, port, process_request=self.process_request, compression=None,
                         max_size=2 * self.max_bytes) as server:
            if bound is not None:
                bound(server.sockets[0].getsockname()[1])
            await (stop.wait() if stop is not None else asyncio.Future())

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()


class _Declared:
    """A stand-in policy that only declares metadata (to derive what a FrameHistory in front of it declares)."""

    def __init__(self, metadata: PolicyMetadata):
        self.metadata = metadata


def _options(query: str) -> dict[str, str]:
    given = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown connection option(s) {unknown}; expected {sorted(OPTIONS)}")
    for k, v in given.items():
        if v not in OPTIONS[k]:
            raise ValueError(f"option {k}={v!r:.40}: expected one of {list(OPTIONS[k])}")
    return {k: given.get(k, values[0]) for k, values in OPTIONS.items()}


@contextlib.contextmanager
def running(server: PolicyServer, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[int]:
    """Serve in a background thread for the life of the block; yields the bound port (port 0: a free one)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    bound: list[int] = []
    up = threading.Event()
    failed: list[BaseException] = []

    def main():
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.run(host, port, stop, lambda p: (bound.append(p), up.set())))
        except BaseException as e:  # noqa: BLE001 (handed to the caller)
            failed.append(e)
            up.set()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="wam-serve", daemon=True)
    thread.start()
    if not up.wait(timeout) or failed:
        raise RuntimeError(f"the server did not start on {host}:{port}: {failed[0] if failed else 'timed out'}")
    server.ready.set()
    try:
        yield bound[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)


# ------------------------------------------------------------------------------ wam serve
def from_checkpoint(cfg: ServeConfig, schema: Callable | None = None) -> PolicyServer:
    """The server of a checkpoint: its policy, action bounds and fingerprint; warmed up by one inference. The
    schema is cfg's, or `schema(policy.metadata)` (`wam replay` makes the recorded one)."""
    import wam
    from wam.checkpoint import fingerprint, read_config
    from wam.config import SamplerConfig, apply, to_dict
    from wam.policy import WAMPolicy
    from wam.testing import fake_observation

    saved = SamplerConfig(**read_config(cfg.checkpoint).get("sampler", {}))
    policy = WAMPolicy.from_checkpoint(cfg.checkpoint, apply(saved, cfg.sampler))
    info = {"fingerprint": fingerprint(cfg.checkpoint), "wam_version": wam.__version__,
            "checkpoint_step": read_config(cfg.checkpoint).get("step"), "sampler": to_dict(policy.sampler)}
    info["batching"] = {"max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms}
    schema = schema(policy.metadata) if schema else make_schema(cfg.schema, policy.metadata, cfg.droid_mapping)  # refused before the warm-up
    policy.session().infer(fake_observation(policy.metadata))  # warm-up: first-call costs before /healthz says ok
    guard = ActionGuard.from_normalizer(policy.norm, MARGIN)
    recorder = None
    if cfg.record is not None:
        recorder = Recorder(cfg.record, cfg.record_max_mb, {**info, **schema.handshake(policy.metadata),
                                                            "action_bounds": guard.to_dict()})
    batcher = Batcher(policy, cfg.max_batch, cfg.max_wait_ms)
    return PolicyServer(batcher.session, guard, info, return_frames=cfg.return_frames,
                        max_message_mb=cfg.max_message_mb, api_key=cfg.api_key or os.environ.get(API_KEY_ENV) or None,
                        schema=schema, recorder=recorder, batcher=batcher, workers=max(32, 4 * cfg.max_batch))


def serve(cfg: ServeConfig) -> None:
    """Load, warm up, then serve until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = from_checkpoint(cfg)
    server.ready.set()

    def bound(port: int) -> None:
        log.info("serving %s on ws://%s:%d (GET /healthz; API key %s)", cfg.checkpoint, cfg.host, port,
                 "required" if server.api_key else "not set")

    try:
        asyncio.run(server.run(cfg.host, cfg.port, bound=bound))
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
