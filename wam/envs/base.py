"""The environment protocol every rollout loop uses."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Env(Protocol):
    def reset(self, seed: int) -> dict[str, np.ndarray]: ...
    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool]: ...
    def close(self) -> None: ...
