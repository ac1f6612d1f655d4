"""`wam replay DIR CHECKPOINT`: the messages `wam serve --record DIR` saved (record.py), answered again by an
in-process server of CHECKPOINT, and how far its actions are from the recorded ones.

Every recorded connection is replayed as the session it was: the same options and schema (the droid mapping
is read from the recording), its messages in order through the server's own reading of a message (so resets
seed as they did, a new session_id starts a new session, the frame history builds up the same). For each
session (connection, and session_id where the client sent one): the replies compared, the max and mean
absolute difference of the actions, and whether they are identical (an error where the recording had actions,
or the other way round, counts as a difference)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

from wam.config import SamplerOverrides
from wam.serve import wire
from wam.serve.errors import ServeError
from wam.serve.record import NAME
from wam.safety import Guarded
from wam.serve.schemas import DroidMapping, make_schema
from wam.serve.server import ServeConfig, Session, from_checkpoint


@dataclass(frozen=True)
class ReplayConfig:
    record: tyro.conf.Positional[Path]
    """The folder `wam serve --record` wrote."""
    checkpoint: tyro.conf.Positional[Path]
    sampler: SamplerOverrides = field(default_factory=SamplerOverrides)
    """The same changes to the checkpoint's sampler the server was started with (the recorded one is compared)."""


def read_recording(root: Path) -> tuple[dict, dict[int, dict], dict[int, list[tuple[bytes | str, dict | None]]]]:
    """(the server's info, each connection's options, each connection's (request, recorded reply) in order)."""
    root = Path(root)
    if not (root / "server.msgpack").is_file():
        raise FileNotFoundError(f"{root} is not a recording of `wam serve --record` (no server.msgpack)")
    info = wire.unpack((root / "server.msgpack").read_bytes())
    options = {int(p.name[1:6]): wire.unpack(p.read_bytes()) for p in root.glob("c*-open.msgpack")}
    found: dict[int, dict[int, dict]] = defaultdict(lambda: defaultdict(dict))
    for p in root.iterdir():
        m = NAME.match(p.name)
        if m:
            conn, seq, kind = int(m[1]), int(m[2]), m[3]
            data = p.read_bytes()
            found[conn][seq][kind] = (data.decode() if m[4] == "txt" else data) if kind == "request" else wire.unpack(data)
    messages = {conn: [(found[conn][s]["request"], found[conn][s].get("reply")) for s in sorted(found[conn])
                       if "request" in found[conn][s]] for conn in sorted(found)}
    return info, options, messages


def _schema(info: dict, spec):
    mapping = info.get("droid_mapping")
    return make_schema(info.get("schema", "wam"), spec, DroidMapping.from_dict(mapping) if mapping else None)


async def _replay(server, options: dict, messages) -> dict[str, list[tuple[dict | None, dict]]]:
    loop = asyncio.get_running_loop()
    session = Session(lambda: Guarded(server.new_session(), server.guard), options.get("history", "server"))
    spec = server.specs[options.get("history", "server")]
    out: dict[str, list] = defaultdict(list)
    for request, recorded in messages:
        try:
            reply = await server._answer(request, session, spec, loop)
        except ServeError as e:
            reply = e.to_dict()
        out["" if session.id is None else str(session.id)].append((recorded, reply))
    return out


def _compare(pairs) -> dict:
    diffs, mismatched = [], 0
    for recorded, reply in pairs:
        if recorded is None:  # recording stopped before this reply
            continue
        a, b = recorded.get("actions"), reply.get("actions")
        if a is None and b is None:
            continue
        if a is None or b is None or np.shape(a) != np.shape(b):
            mismatched += 1
            continue
        diffs.append(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel())
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    return {"chunks": len(diffs), "mismatched": mismatched, "max_abs": float(d.max()) if d.size else 0.0,
            "mean_abs": float(d.mean()) if d.size else 0.0, "identical": mismatched == 0 and not d.any()}


def replay(cfg: ReplayConfig) -> dict:
    """Replays the recording (see the module docstring); returns {"sessions": {name: stats}, "identical", ...}."""
    info, options, messages = read_recording(cfg.record)
    server = from_checkpoint(ServeConfig(cfg.checkpoint, sampler=cfg.sampler), schema=lambda spec: _schema(info, spec))
    sessions = {}
    try:
        for conn, msgs in messages.items():
            for sid, pairs in asyncio.run(_replay(server, options.get(conn, {}), msgs)).items():
                sessions[f"c{conn:05d}" + (f"/{sid}" if sid else "")] = _compare(pairs)
    finally:
        server.close()
    return {"sessions": sessions, "identical": all(s["identical"] for s in sessions.values()),
            "same_weights": info.get("fingerprint") == server.info.get("fingerprint"),
            "same_sampler": info.get("sampler") == server.info.get("sampler")}


def main(cfg: ReplayConfig) -> None:
    result = replay(cfg)
    for name, s in result["sessions"].items():
        print(f"{name}: {s['chunks']} chunks, max |diff| {s['max_abs']:.3g}, mean |diff| {s['mean_abs']:.3g}, "
              f"{'identical' if s['identical'] else 'DIFFERENT'}" + (f", {s['mismatched']} replies differ in kind" if s["mismatched"] else ""))
    print(json.dumps({k: v for k, v in result.items() if k != "sessions"}))
