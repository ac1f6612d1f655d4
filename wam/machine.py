"""How fast this machine is, in one number: fp32 matrix-multiply GFLOP/s on the torch threads in use, measured
in about a second. Printed beside wall-clock times so a slow machine can be told from a problem."""

from __future__ import annotations

import time

import torch


def matmul_gflops(size: int = 512, seconds: float = 1.0) -> float:
    """GFLOP/s of (size x size) @ (size x size) float32 matmuls on torch's current number of threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):  # warm-up
        a @ b
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(8):
            a @ b
        n += 8
    return 2 * size**3 * n / elapsed / 1e9


def describe() -> str:
    threads = torch.get_num_threads()
    return f"{matmul_gflops():.0f} GFLOP/s (fp32 matmul, {threads} thread{'s' if threads > 1 else ''}, torch {torch.__version__})"
