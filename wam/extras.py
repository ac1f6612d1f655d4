"""Optional heavy dependencies, imported only where they are needed, with the extra that installs them.

    pretrained   diffusers, peft: the Wan and Cosmos backbones, LoRA fine-tuning, tiny random folders for tests
    serve        msgpack, websockets: `wam serve`, `wam eval --remote`, wam.serve.client.RemotePolicy
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"diffusers": "pretrained", "peft": "pretrained", "msgpack": "serve", "websockets": "serve"}


def require(module: str, what: str) -> ModuleType:
    """Import `module`, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        extra = EXTRAS.get(module)
        how = f"pip install 'wam[{extra}]'" if extra else f"pip install {module}"
        raise ModuleNotFoundError(f"{what} needs {module}, which is not installed: {how}", name=module) from e
