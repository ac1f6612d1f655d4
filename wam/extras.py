"""Optional heavy dependencies, imported only where they are needed, with the extra that installs them.

    pretrained   diffusers, peft: the Wan and Cosmos backbones, LoRA fine-tuning, tiny random folders for tests
    serve        msgpack, websockets: `wam serve`, `wam eval --remote`, wam.serve.client.RemotePolicy
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRAS = {"diffusers": "pretrained", "peft": "pretrained", "msgpack": "serve", "websockets": "serve"}
MINIMUM = {"diffusers": (0, 42), "peft": (0, 17)}
"""The oldest versions the code is written against (pyproject.toml's extras). An older diffusers imports but lacks
the Wan 2.2 and Cosmos classes: lerobot's venv, for one, pins diffusers<0.36."""


def _version(module: str) -> tuple[int, ...] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version(module)
    except PackageNotFoundError:
        return None
    return tuple(int(p) for p in (text.split("+")[0].split(".") + ["0"])[:2] if p.isdigit())


def unavailable(module: str, what: str | None = None) -> str | None:
    """Why `module` cannot serve `what` (not installed, or older than MINIMUM), with the pip command; None when it can."""
    extra = EXTRAS.get(module)
    how = f"pip install 'wam[{extra}]'" if extra else f"pip install {module}"
    who = f"{what} needs" if what else "needs"
    if importlib.util.find_spec(module) is None:
        return f"{who} {module}, which is not installed: {how}"
    want, got = MINIMUM.get(module), _version(module)
    if want and got and got < want:
        return f"{who} {module}>={'.'.join(map(str, want))}, but {'.'.join(map(str, got))} is installed: {how}"
    return None


def require(module: str, what: str) -> ModuleType:
    """Import `module`, or fail with the pip command that installs it (or a recent enough version)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ModuleNotFoundError(unavailable(module, what) or f"{what} needs {module}", name=module) from e
    old = unavailable(module, what)
    if old:
        raise ImportError(old, name=module)
    return mod
