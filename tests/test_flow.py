"""Tier 2: the flow-matching math against closed forms."""

import math

import pytest
import torch

from wam import flow
from wam.evaluate import wilson
from wam.models.base import Capabilities, Context


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

    capabilities = Capabilities()  # the plain forward only

    def __init__(self, video, actions, start, target):
        super().__init__()
        self.video, self.actions, self.start, self.target = video, actions, start, target

    def forward(self, xv, xa, tv, ta, ctx):
        if self.target == "data":
            return self.video, self.actions
        return self.video - self.start[0], self.actions - self.start[1]


@pytest.mark.parametrize("target", ["data", "velocity"])
@pytest.mark.parametrize("steps,video_steps,decode", [(1, 1, "together"), (3, 3, "together"), (10, 10, "together"),
                                                      (4, 1, "together"), (2, 5, "together"), (3, 2, "video_then_actions")])
def test_sampler_integrates_a_known_velocity_field_exactly(target, steps, video_steps, decode):
    video, actions = torch.randn(2, 1, 1, 3, 4, 4), torch.randn(2, 5, 4)
    start = (torch.randn_like(video), torch.randn_like(actions))
    ctx = Context(torch.zeros(2, 1, 1, 3, 8, 8), torch.zeros(2, 4), torch.zeros(2, 384))
    v, a = flow.sample(_Oracle(video, actions, start, target), ctx, video.shape, actions.shape, steps=steps,
                       video_steps=video_steps, video_target=target, action_target=target, decode=decode, noise=start)
    assert torch.allclose(v, video, atol=1e-5) and torch.allclose(a, actions, atol=1e-5)


@pytest.mark.parametrize("video_steps,action_steps", [(10, 10), (1, 4), (4, 1), (3, 7), (0, 5), (5, 0)])
def test_schedules_finish_each_sampled_modality_on_its_own_grid(video_steps, action_steps):
    for decode in ("together", "video_then_actions"):
        plan = flow.schedule(video_steps, action_steps, decode)
        for steps, col in ((video_steps, 2), (action_steps, 3)):
            assert math.isclose(sum(p[col] for p in plan), 1.0 if steps else 0.0)
            assert sum(p[col] > 0 for p in plan) == steps
        for tv, ta, dv, da in plan:
            assert 0 <= tv < 1 or dv == 0
            assert 0 <= ta < 1 or da == 0
    # Few frame steps (DreamZero-Flash): the frames stay pure noise while the actions are denoised.
    plan = flow.schedule(1, 4, "together")
    assert [p[0] for p in plan] == [0.0] * 4 and plan[-1][2] == 1.0
    # UniPi: every frame step comes before the first action step, which then sees finished frames.
    plan = flow.schedule(3, 2, "video_then_actions")
    assert [p[2] > 0 for p in plan] == [True, True, True, False, False]
    assert all(p[0] == 1.0 for p in plan[3:])
    with pytest.raises(ValueError, match="at least one"):
        flow.schedule(0, 0)
    with pytest.raises(ValueError, match="unknown decode"):
        flow.schedule(1, 1, "sideways")


def test_wilson_interval_matches_the_closed_form():
    lo, hi = wilson(8, 10)
    assert math.isclose(lo, 0.4902, abs_tol=1e-3) and math.isclose(hi, 0.9433, abs_tol=1e-3)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0


def test_guide_holds_weighted_actions_and_leaves_the_rest():
    video, actions = torch.randn(2, 1, 1, 3, 4, 4), torch.randn(2, 5, 4)
    start = (torch.randn_like(video), torch.randn_like(actions))
    ctx = Context(torch.zeros(2, 1, 1, 3, 8, 8), torch.zeros(2, 4), torch.zeros(2, 384))
    known = torch.randn_like(actions)
    weights = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0])
    kw = dict(steps=4, video_steps=4, video_target="velocity", action_target="velocity", noise=start)
    _, a = flow.sample(_Oracle(video, actions, start, "velocity"), ctx, video.shape, actions.shape, guide=(known, weights), **kw)
    assert torch.allclose(a[:, :2], known[:, :2], atol=1e-5)  # held exactly
    assert torch.allclose(a[:, 3:], actions[:, 3:], atol=1e-5)  # untouched
    # weight 0.5 at each of 4 steps: the deviation from the oracle's path is pulled to
    # sum_i 0.5 * 0.5^(4-i) * (i/4) of the way to the guide = 0.7656
    frac = (a[:, 2] - actions[:, 2]) / (known[:, 2] - actions[:, 2])
    assert torch.allclose(frac, torch.full_like(frac, 0.765625), atol=1e-4)
