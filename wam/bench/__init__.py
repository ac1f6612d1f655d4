"""Benchmarks: one file each (`wam bench recipes | latency | memory`), sharing only common.py."""
