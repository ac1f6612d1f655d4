"""The typed errors of the wire. Every refused message is answered with one binary msgpack frame

    {"error": {"type": TYPE, "message": "what was expected and what was received"}}

and the connection keeps working; the server logs it and stays up. An unmodified openpi client's `infer()`
returns that dict (it raises only on a text frame): the dict has no "actions", so code that reads
`out["actions"]` fails with KeyError instead of moving the robot. A client that connects with `?errors=text`
gets the same object as a JSON text frame, which openpi-client raises as RuntimeError("Error in inference
server: ...").
"""

from __future__ import annotations

TYPES = {
    "not_msgpack": "the bytes are not one msgpack object",
    "text_frame": "a text frame; messages are binary msgpack",
    "message_too_large": "the message is over --max-message-mb",
    "bad_array": "an encoded numpy array that is malformed or of a refused dtype (object, void, complex, ...)",
    "bad_message": "not a dict of str keys, or a reset with other keys than endpoint and seed",
    "unknown_endpoint": "an endpoint other than infer or reset",
    "invalid_observation": "a missing or unknown key, a wrong dtype, shape or size, a non-finite state, a bad prompt",
    "non_finite_action": "the model produced NaN or inf: nothing was sent to the robot",
    "internal_error": "a bug on the server (logged with its traceback); the session is still usable",
}
"""Every error type a client can get, with what it means."""


class ServeError(Exception):
    """A refused message: `kind` is one of TYPES."""

    def __init__(self, kind: str, message: str):
        if kind not in TYPES:
            raise ValueError(f"unknown error type {kind!r}; expected one of {sorted(TYPES)}")
        super().__init__(message)
        self.kind, self.message = kind, message

    def to_dict(self) -> dict:
        return {"error": {"type": self.kind, "message": self.message}}
