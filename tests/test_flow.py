"""Tier 2: the flow-matching math against closed forms."""

import math

import pytest
import torch

from wam import flow
from wam.evaluate import wilson
from wam.model import Context


def test_path_endpoints_and_velocity():
    x1, x0 = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    assert torch.equal(flow.path(x1, x0, torch.zeros(4)), x0)
    assert torch.equal(flow.path(x1, x0, torch.ones(4)), x1)
    t = torch.tensor([0.1, 0.4, 0.5, 0.9])
    eps = 1e-3
    numeric = (flow.path(x1, x0, t + eps) - flow.path(x1, x0, t - eps)) / (2 * eps)
    assert torch.allclose(numeric, x1 - x0, atol=1e-3)


def test_data_prediction_converts_to_the_true_velocity():
    x1, x0 = torch.randn(3, 7), torch.randn(3, 7)
    t = torch.tensor([0.0, 0.3, 0.8])
    xt = flow.path(x1, x0, t)
    assert torch.allclose(flow.velocity_from(x1, xt, t, "data"), x1 - x0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown target"):
        flow.velocity_from(x1, xt, t, "epsilon")


class _Oracle(torch.nn.Module):
    """Knows the data point: outputs it ('data') or the straight-line velocity from the start noise."""

    def __init__(self, video, actions, start, target):
        super().__init__()
        self.video, self.actions, self.start, self.target = video, actions, start, target

    def forward(self, xv, xa, tv, ta, ctx):
        if self.target == "data":
            return self.video, self.actions
        return self.video - self.start[0], self.actions - self.start[1]


@pytest.mark.parametrize("target", ["data", "velocity"])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_sampler_integrates_a_known_velocity_field_exactly(target, steps):
    video, actions = torch.randn(2, 1, 1, 3, 4, 4), torch.randn(2, 5, 4)
    start = (torch.randn_like(video), torch.randn_like(actions))
    ctx = Context(torch.zeros(2, 1, 1, 3, 8, 8), torch.zeros(2, 4), torch.zeros(2, 384))
    v, a = flow.sample(_Oracle(video, actions, start, target), ctx, video.shape, actions.shape, steps,
                       target, target, noise=start)
    assert torch.allclose(v, video, atol=1e-5) and torch.allclose(a, actions, atol=1e-5)


def test_noise_level_distributions_stay_in_range():
    g = torch.Generator().manual_seed(0)
    for dist in ("uniform", "logit_normal", "beta"):
        t = flow.sample_t(10_000, dist, g)
        assert t.min() >= 0 and t.max() <= 1
    assert flow.sample_t(10_000, "beta", g).mean() > 0.55  # Beta(1.5, 1) has mean 0.6
    with pytest.raises(ValueError, match="expected uniform"):
        flow.sample_t(3, "gamma")


def test_wilson_interval_matches_the_closed_form():
    lo, hi = wilson(8, 10)
    assert math.isclose(lo, 0.4902, abs_tol=1e-3) and math.isclose(hi, 0.9433, abs_tol=1e-3)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
