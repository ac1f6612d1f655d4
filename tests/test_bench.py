"""Tier 3: the recipes and latency benchmarks run end to end on the tiny preset and write what they promise."""

import dataclasses
import json

import pytest

from wam.bench.latency import PATHS, LatencyBenchConfig, bench_latency
from wam.bench.recipes import RecipesBenchConfig, bench_recipes
from wam.testing import concrete, skip_without_pretrained


def test_recipes_then_latency_bench_write_their_tables(tiny_dataset, tmp_path):
    names = sorted({p.model for p in PATHS} - {"fast-path"})
    result = bench_recipes(RecipesBenchConfig(out=tmp_path / "recipes", recipes=",".join(names), preset="tiny", steps=2,
                                              episodes=1, max_steps=3, data=tiny_dataset, pretrain=False, workers=1))
    saved = json.loads((tmp_path / "recipes/recipes.json").read_text())
    assert set(saved["recipes"]) == set(names) and saved["command"].startswith("wam bench recipes")
    for row in saved["recipes"].values():
        assert 0 <= row["mean_success"] <= 1 and row["median_ms"] > 0 and row["parameters"] > 0
        assert set(row["tasks"]) == {"button-press-topdown-v3", "drawer-close-v3"}
        assert all(set(r) >= {"success_rate", "median_ms", "ci95"} for r in row["tasks"].values())
    assert (tmp_path / "recipes/recipes.png").stat().st_size > 0
    assert "| action-only |" in (tmp_path / "recipes/recipes.md").read_text()
    assert result["recipes"]["action-only"]["parameters"] < result["recipes"]["joint"]["parameters"]

    again = bench_recipes(RecipesBenchConfig(out=tmp_path / "recipes", recipes="joint", preset="tiny", steps=2,
                                             episodes=1, max_steps=3, data=tiny_dataset, pretrain=False, workers=1))
    assert again["recipes"]["joint"]["train_s"] == result["recipes"]["joint"]["train_s"]  # reused, not retrained

    lat = bench_latency(LatencyBenchConfig(out=tmp_path / "latency", recipes=tmp_path / "recipes", calls=3, warmup=1,
                                           episodes=1, max_steps=3, workers=1))
    saved = json.loads((tmp_path / "latency/latency.json").read_text())
    assert list(saved["paths"]) == [p.name for p in PATHS]
    for row in saved["paths"].values():
        assert set(row) >= {"median_ms", "p90_ms", "ratio_to_baseline", "success"} and row["median_ms"] > 0
    assert saved["paths"][PATHS[0].name]["ratio_to_baseline"] == 1.0
    fast = json.loads((tmp_path / "latency/fast-path/train/last/config.json").read_text())
    assert fast["model"]["actions_see_frames"] is False
    assert lat["paths"]["joint, naive: 50 steps, no cache"]["sampler"]["cache"] is False


def test_latency_bench_times_the_cells_of_a_generalise_condition(tiny_dataset, tmp_path):
    """--cells: every CELL/train/last of the folders given, each with its own sampler; a recipe whose frames are
    skipped by default is also timed with them."""
    from wam.config import preset
    from wam.train import train

    p = concrete(preset("tiny"))
    for recipe, backbone in (("action-only", "wam"), ("hybrid-foresight", "lite")):
        model = dataclasses.replace(p.model, backbone=backbone, recipe=recipe, prefix_width=32, prefix_depth=1)
        train(dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "cells/c" / recipe / "train", steps=2),
              model, p.sampler, progress=False)
    result = bench_latency(LatencyBenchConfig(out=tmp_path / "latency", cells=str(tmp_path / "cells/c"), calls=2,
                                              warmup=1))
    names = list(result["paths"])
    assert len(names) == 3 and names[0].startswith("action-only:") and "hybrid-foresight with its frames" in names[2]
    assert result["paths"][names[0]]["ratio_to_baseline"] == 1.0
    assert result["paths"][names[1]]["sampler"]["video_steps"] == 0 and result["paths"][names[2]]["sampler"]["video_steps"] > 0
    with pytest.raises(FileNotFoundError, match="no CELL/train/last"):
        bench_latency(LatencyBenchConfig(out=tmp_path / "x", cells=str(tmp_path / "nothing")))


def test_latency_bench_on_a_random_backbone_of_a_named_size(tmp_path):
    """--size: every path timed on random weights of a named size (how the Wan-sized GPU figure is made)."""
    result = bench_latency(LatencyBenchConfig(out=tmp_path, size="tiny", calls=2, warmup=1, precision="bfloat16"))
    saved = json.loads((tmp_path / "latency.json").read_text())
    assert saved == result and saved["weights"] == "random" and saved["precision"] == "bfloat16"
    assert list(saved["paths"]) == [p.name for p in PATHS]
    assert all(r["median_ms"] > 0 and "success" not in r for r in saved["paths"].values())
    assert saved["paths"][PATHS[0].name]["parameters"] < saved["paths"][PATHS[2].name]["parameters"]
    assert "tiny with random weights" in (tmp_path / "latency.md").read_text()


def test_memory_bench_counts_the_real_classes_and_the_savings(tmp_path):
    skip_without_pretrained()
    from wam.bench.memory import GIB, MemoryBenchConfig, Setting, bench_memory, estimate, trace

    cfg = MemoryBenchConfig(out=tmp_path, batch_size=2, image_size=32, sizes="tiny,tiny-vla", lora_rank=4)
    result = bench_memory(cfg)
    table = (tmp_path / "memory.md").read_text()
    assert table.count("| tiny |") == 2 and table.count("| tiny-vla |") == 2 and (tmp_path / "memory.json").exists()
    vla_full = trace(Setting("tiny-vla", "full", 1, False, 24), cfg)  # PaliGemma's own class under our VLA
    vla_lora = trace(Setting("tiny-vla", "lora", 1, False, 24), cfg)
    assert vla_lora["trained"] < vla_full["trained"] == vla_full["params"] < vla_lora["params"]
    full = trace(Setting("tiny", "full", 1, False, 24), cfg)
    lora = trace(Setting("tiny", "lora", 1, False, 24), cfg)
    assert lora["trained"] < full["trained"] == full["params"] < lora["params"]  # LoRA adds, and freezes the rest
    ckpt = trace(Setting("tiny", "full", 1, True, 24), cfg)
    assert 0 < ckpt["activations"] < full["activations"]
    bigger = trace(Setting("tiny", "full", 1, False, 24), dataclasses.replace(cfg, batch_size=4))
    assert bigger["activations"] > 1.5 * full["activations"]
    sharded = estimate(Setting("tiny", "full", 4, False, 80), cfg)
    assert sharded["weights"] == pytest.approx(full["params"] * 4 / 4 / GIB) and sharded["gathered"] > 0
    assert all(r["total_gib"] > r["slack"] for r in result["rows"])


def test_serve_bench_writes_its_table(tiny_dataset, tmp_path):
    """`wam bench serve` on a tiny checkpoint, 1 and 2 clients, a few requests: outputs written and sane."""
    from wam.bench.serve import ServeBenchConfig, bench_serve
    from wam.config import preset
    from wam.train import train

    P = concrete(preset("tiny"))
    ckpt = train(dataclasses.replace(P.train, data=tiny_dataset, out=tmp_path / "run", steps=2), P.model, P.sampler, progress=False)
    result = bench_serve(ServeBenchConfig(out=tmp_path / "bench", checkpoint=ckpt, clients="1,2", requests=6, warmup=1, seconds=30))
    saved = json.loads((tmp_path / "bench/serve.json").read_text())
    assert saved == result and saved["command"].startswith("wam bench serve --checkpoint")
    assert [(r["clients"], r["batching"]) for r in saved["served"]] == [(1, True), (2, True), (1, False), (2, False)]
    for row in [saved["in_process"], *saved["served"]]:
        assert row["requests"] == 6 and row["errors"] == 0 and 0 < row["p50_ms"] <= row["p99_ms"] and row["throughput_rps"] > 0
    assert all(r["wire_overhead_ms"] > 0 and 1 <= r["mean_batch"] <= r["clients"] for r in saved["served"])
    assert saved["summary"]["clients_held"] == 2 and "GFLOP/s" in saved["machine"]
    assert "| served | 2 | on |" in (tmp_path / "bench/serve.md").read_text()
