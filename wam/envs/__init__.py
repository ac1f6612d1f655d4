"""Environments by name: `make_env("metaworld:reach-v3", cameras, image_size)`.

A name is KIND:TASK. Each kind is a factory registered with `register_env`, imported only when used (Meta-World
and MuJoCo load only for a `metaworld:` env). Every env follows `wam.types.Env`. Room is left for other kinds
(a dataset replay, an imagined env inside a world model) as one `register_env` call each.

`make_env(name, cameras, image_size, shift="colour")` evaluates under a distribution shift (envs/shift.py); a
factory that takes shifts accepts a `shift` keyword, and one that does not is never passed it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from wam.types import Env

EnvFactory = Callable[[str, tuple[str, ...], int], Env]
"""(task, cameras, image_size) -> Env; one that takes shifts has a `shift: str | None` keyword too"""

ENVS: dict[str, EnvFactory] = {}


def register_env(kind: str, factory: EnvFactory) -> None:
    if ":" in kind or not kind:
        raise ValueError(f"an env kind is a non-empty name without ':', got {kind!r}")
    ENVS[kind] = factory


def parse_env_name(name: str) -> tuple[str, str]:
    """'KIND:TASK' -> (kind, task), with an error naming the registered kinds."""
    kind, sep, task = str(name).partition(":")
    if not sep or not kind or not task:
        raise ValueError(f"env name {name!r}: expected KIND:TASK, e.g. metaworld:reach-v3 (kinds: {', '.join(ENVS)})")
    if kind not in ENVS:
        raise ValueError(f"unknown env kind {kind!r} in {name!r}; registered kinds are: {', '.join(ENVS)}")
    return kind, task


def make_env(name: str, cameras: tuple[str, ...], image_size: int, shift: str | None = None) -> Env:
    kind, task = parse_env_name(name)
    factory = ENVS[kind]
    if shift is None:
        return factory(task, tuple(cameras), image_size)
    if "shift" not in inspect.signature(factory).parameters:
        raise ValueError(f"{kind} envs take no shift (asked for {shift!r} in {name!r})")
    return factory(task, tuple(cameras), image_size, shift=shift)


def _metaworld(task: str, cameras: tuple[str, ...], image_size: int, shift: str | None = None) -> Env:
    from wam.envs.metaworld import MetaWorldEnv

    return MetaWorldEnv(task, cameras, image_size, shift)


register_env("metaworld", _metaworld)
