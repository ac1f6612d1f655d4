"""Serving a policy over the network, on openpi's websocket wire (msgpack with numpy arrays). The action guard
every served chunk passes is wam/safety.py (in-process evaluation executes it too).

    wire.py      the msgpack-numpy codec (openpi's array encoding; never pickle)
    errors.py    the typed errors a client gets back, {"error": {"type", "message"}}
    images.py    the declared resize of camera images of another size (server side and client side)
    schemas.py   the observation schemas: the checkpoint's own, RoboArena/DROID's through a declared mapping
    server.py    `wam serve`: sessions, the inference worker, /healthz, the API key
    batcher.py   requests of several sessions run together in one forward pass
    record.py    `wam serve --record DIR`: every request and reply, one file each (msgpack, never pickle)
    replay.py    `wam replay DIR CHECKPOINT`: the recording answered again in process, actions compared
    client.py    `RemotePolicy`, a `wam.types.Policy` over the wire (numpy, msgpack, websockets; no torch)
    watchdog.py  the robot-side chunk executor that holds when a chunk misses its deadline (no torch)
"""
