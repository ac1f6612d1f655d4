"""The layout is the architecture: dependencies point one way (types and configs at the bottom, then models
and flow, then data and envs, then policy, then train / eval / serve, then the CLI), a benchmark never imports
another, and the core imports without the optional heavy dependencies."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent / "wam"


def _imports(path: Path) -> set[str]:
    """Every wam module a file imports, at the top or lazily inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wam"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from wam import flow`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("wam"))
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = {_module(p): _imports(p) for p in ROOT.rglob("*.py")}

# what each part may not import (prefixes), at any depth of the file
FORBIDDEN = {
    "wam.types": ("wam.",),
    "wam.recipes": ("wam.config", "wam.models", "wam.data", "wam.envs", "wam.policy", "wam.train", "wam.cli"),
    "wam.config": ("wam.envs", "wam.data", "wam.models", "wam.policy", "wam.train", "wam.evaluate", "wam.cli"),
    "wam.backbones": ("wam.data", "wam.envs", "wam.policy", "wam.train", "wam.evaluate", "wam.cli"),
    "wam.models": ("wam.data", "wam.envs", "wam.policy", "wam.runtime", "wam.rollout", "wam.train",
                   "wam.evaluate", "wam.imagine", "wam.bench", "wam.cli", "wam.demo", "wam.checkpoint"),
    "wam.flow": ("wam.data", "wam.envs", "wam.policy", "wam.train", "wam.evaluate", "wam.cli"),
    "wam.data": ("wam.policy", "wam.runtime", "wam.rollout", "wam.train", "wam.evaluate", "wam.bench", "wam.cli"),
    "wam.envs": ("wam.models", "wam.data", "wam.policy", "wam.train", "wam.evaluate", "wam.bench", "wam.cli",
                 "wam.flow", "wam.config"),
    "wam.runtime": ("wam.models", "wam.policy", "wam.train", "wam.evaluate", "wam.cli", "wam.envs"),
    "wam.safety": ("wam.models", "wam.policy", "wam.train", "wam.evaluate", "wam.cli", "wam.envs", "wam.serve"),
    "wam.evaluate": ("wam.serve.server", "wam.serve.batcher", "wam.bench", "wam.cli"),
    "wam.rollout": ("wam.models", "wam.policy", "wam.train", "wam.evaluate", "wam.cli", "wam.envs"),
    "wam.policy": ("wam.train", "wam.evaluate", "wam.bench", "wam.cli", "wam.envs"),
    "wam.train": ("wam.bench", "wam.cli", "wam.demo"),
    # the judge is a client of a served policy (ws://), as `wam eval --remote` is: never the server's side
    "wam.judge": ("wam.train", "wam.bench", "wam.cli", "wam.demo", "wam.serve.server", "wam.serve.batcher"),
    "wam.serve": ("wam.train", "wam.evaluate", "wam.bench", "wam.cli", "wam.demo", "wam.imagine"),
    # the robot's side: numpy, msgpack and websockets, never torch
    "wam.serve.client": ("wam.policy", "wam.models", "wam.data", "wam.runtime", "wam.config", "wam.checkpoint",
                         "wam.flow", "wam.modes", "wam.serve.server", "wam.testing"),
    "wam.serve.watchdog": ("wam.policy", "wam.models", "wam.data", "wam.runtime", "wam.config", "wam.checkpoint",
                           "wam.flow", "wam.modes", "wam.serve.server", "wam.testing"),
}


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependencies_point_one_way(part):
    bad = {m: sorted(i for i in imports if i.startswith(FORBIDDEN[part]) and not i.startswith(part + "."))
           for m, imports in MODULES.items() if m == part or m.startswith(part + ".")}
    bad = {m: v for m, v in bad.items() if v}
    assert not bad, f"{part} must not import {FORBIDDEN[part]}: {bad}"


def test_a_benchmark_never_imports_another():
    benches = [m for m in MODULES if m.startswith("wam.bench.") and m != "wam.bench.common"]
    assert benches, "no benchmarks found"
    for m in benches:
        others = {i for i in MODULES[m] if i.startswith("wam.bench.") and i not in ("wam.bench.common", m)
                  and not i.startswith("wam.bench.common.")}
        assert not others, f"{m} imports {others}"


def test_the_core_imports_without_the_heavy_optional_dependencies():
    code = ("import sys\n"
            "import wam.cli, wam.train, wam.evaluate, wam.policy, wam.runtime, wam.rollout, wam.types, wam.envs\n"
            "import wam.models.wan, wam.models.cosmos, wam.bench.latency, wam.bench.memory, wam.bench.recipes\n"
            "heavy = sorted(m for m in ('diffusers', 'peft', 'metaworld', 'mujoco') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_serving_client_imports_without_torch():
    code = "import sys\nimport wam.serve.client, wam.serve.watchdog\nassert 'torch' not in sys.modules\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    import wam.extras

    monkeypatch.setitem(wam.extras.EXTRAS, "wam_no_such_module", "pretrained")
    with pytest.raises(ModuleNotFoundError, match=r"a pretrained backbone needs wam_no_such_module.*pip install 'wam\[pretrained\]'"):
        wam.extras.require("wam_no_such_module", "a pretrained backbone")


def test_an_extra_older_than_its_minimum_is_refused_with_the_pip_command(monkeypatch):
    """lerobot's venv pins diffusers<0.36: it imports, but lacks the classes our backbones use."""
    import wam.extras

    monkeypatch.setitem(wam.extras.EXTRAS, "pytest", "pretrained")
    monkeypatch.setitem(wam.extras.MINIMUM, "pytest", (999, 0))
    with pytest.raises(ImportError, match=r"save_tiny needs pytest>=999.0, but \d+\.\d+ is installed: pip install 'wam\[pretrained\]'"):
        wam.extras.require("pytest", "save_tiny")
    monkeypatch.setitem(wam.extras.MINIMUM, "pytest", (1, 0))
    assert wam.extras.unavailable("pytest") is None and wam.extras.require("pytest", "x") is pytest


def test_machine_speed_is_one_positive_number():
    from wam.machine import describe, matmul_gflops

    assert 0.01 < matmul_gflops(size=64, seconds=0.05) < 1e6
    assert "GFLOP/s (fp32 matmul" in describe()
