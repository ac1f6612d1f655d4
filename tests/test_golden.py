"""Tier 4, regression: the tiny preset's training losses and sampled actions equal the pinned golden values
(tests/golden/tiny.json, written by tests/golden.py). A change that moves them is a change of behaviour."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import golden  # noqa: E402

PINNED = json.loads(golden.FILE.read_text())
RTOL, ATOL = 1e-4, 1e-5  # float32 rounding across machines and torch builds, not behaviour


def _close(got, want, what):
    if want is None:
        assert got is None, what
        return
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=RTOL, atol=ATOL, err_msg=what)


def test_sampled_actions_and_frames_match_the_golden_values():
    got = golden.sampled()
    assert set(got) == set(PINNED["sampled"])
    for name, want in PINNED["sampled"].items():
        _close(got[name]["actions"], want["actions"], f"{name} actions")
        _close(got[name]["frames"], want["frames"], f"{name} frames")


def test_policy_output_matches_the_golden_values():
    got = golden.policy()
    _close(got["actions"], PINNED["policy"]["actions"], "policy actions")
    _close(got["frames"], PINNED["policy"]["frames"], "policy frames")


def test_closed_loop_actions_match_the_golden_values():
    got = golden.closed_loop()
    for name, want in PINNED["closed_loop"].items():
        assert got[name]["fresh"] == want["fresh"], name
        _close(got[name]["actions"], want["actions"], f"{name} closed-loop actions")


def test_training_losses_match_the_golden_values(tiny_dataset):
    got = golden.losses(tiny_dataset)
    for name, rows in PINNED["losses"].items():
        assert [r["step"] for r in got[name]] == [r["step"] for r in rows]
        for key in ("loss", "video", "action", "grad_norm"):
            _close([r[key] for r in got[name]], [r[key] for r in rows], f"{name} {key}")


def test_golden_values_are_not_trivial():
    """The pinned numbers carry signal: actions differ between recipes and losses move between steps."""
    # joint and decoupled differ only in how training draws noise levels: untrained, they sample alike
    acts = [np.asarray(v["actions"]) for k, v in PINNED["sampled"].items() if k != "joint"]
    assert all(np.abs(a).max() > 1e-3 for a in acts)
    assert len({round(float(a.sum()), 4) for a in acts}) == len(acts)
    for rows in PINNED["losses"].values():
        assert len({round(r["loss"], 6) for r in rows}) == len(rows)
