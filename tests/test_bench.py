"""Tier 3: the recipes and latency benchmarks run end to end on the tiny preset and write what they promise."""

import json

from wam.bench_latency import PATHS, LatencyBenchConfig, bench_latency
from wam.bench_recipes import RecipesBenchConfig, bench_recipes


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


def test_latency_bench_on_a_random_backbone_of_a_named_size(tmp_path):
    """--size: every path timed on random weights of a named size (how the Wan-sized GPU figure is made)."""
    result = bench_latency(LatencyBenchConfig(out=tmp_path, size="tiny", calls=2, warmup=1, precision="bfloat16"))
    saved = json.loads((tmp_path / "latency.json").read_text())
    assert saved == result and saved["weights"] == "random" and saved["precision"] == "bfloat16"
    assert list(saved["paths"]) == [p.name for p in PATHS]
    assert all(r["median_ms"] > 0 and "success" not in r for r in saved["paths"].values())
    assert saved["paths"][PATHS[0].name]["parameters"] < saved["paths"][PATHS[2].name]["parameters"]
    assert "tiny with random weights" in (tmp_path / "latency.md").read_text()
