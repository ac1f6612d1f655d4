"""The table of backbones (backbones.py) and the capabilities each network declares (models/base.py): the config's
validation reads the table, and a network's capabilities say what it can really do."""

import dataclasses

import pytest
import torch

from wam import flow
from wam.backbones import BACKBONES, backbone, build
from wam.config import ModelConfig, preset, with_backbone
from wam.recipes import OWN, RECIPES
from wam.testing import concrete, fake_batch, save_tiny, skip_without_pretrained

TINY = concrete(preset("tiny")).model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    skip_without_pretrained()
    root = tmp_path_factory.mktemp("backbones")
    return {kind: save_tiny(root / kind, kind) for kind in ("wan", "cosmos")}


def test_every_row_names_real_recipes_and_a_build_function():
    for spec in BACKBONES.values():
        assert spec.recipes and set(spec.recipes) <= set(RECIPES)
        assert spec.video_targets and spec.action_targets and spec.frames in ("pixels", "latents")
        module, function = spec.build.split(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
    assert set(OWN) == set(backbone("wam").recipes) and "cosmos-policy" not in OWN


def test_unknown_backbones_and_disallowed_recipes_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="unknown backbone 'magic'; valid backbones are: wam, wan, cosmos"):
        ModelConfig(backbone="magic")
    with pytest.raises(ValueError, match=r"--model.backbone/--backbone cosmos does not go with --model.recipe/--recipe "
                                         r"decoupled: backbone 'cosmos' trains cosmos-policy; recipe 'decoupled' trains on wam, wan"):
        ModelConfig(backbone="cosmos", backbone_path="/x", recipe="decoupled")
    with pytest.raises(ValueError, match="backbone 'wam' trains decoupled, joint, flash.*trains on cosmos"):
        ModelConfig(recipe="cosmos-policy")
    with pytest.raises(ValueError, match="--model.video-target data does not go with --model.backbone/--backbone wan: "
                                         "it outputs velocity"):
        ModelConfig(backbone="wan", backbone_path="/x", video_target="data")
    with pytest.raises(ValueError, match="cosmos needs --model.backbone-path/--backbone-path DIR"):
        ModelConfig(backbone="cosmos")
    with pytest.raises(ValueError, match="backbone wam reads no folder; backbones that do: wan, cosmos"):
        ModelConfig(backbone_path="/x")


def test_defaults_come_from_the_backbones_row():
    assert (TINY.recipe, TINY.video_target, TINY.action_target) == (None, None, None)  # a preset stays open
    wam = TINY.resolved()
    assert (wam.recipe, wam.video_target, wam.action_target) == ("decoupled", "data", "velocity")
    cosmos = ModelConfig(backbone="cosmos", backbone_path="/x").resolved()
    assert (cosmos.recipe, cosmos.video_target, cosmos.action_target) == ("cosmos-policy", "velocity", "velocity")
    assert ModelConfig(backbone="wan", backbone_path="/x").resolved().recipe == "decoupled"
    assert ModelConfig(recipe="action-only").resolved().future_frames == 0
    assert wam.resolved() is wam


def test_our_transformers_capabilities_follow_its_attention_mask():
    def caps(name, **changes):
        return build(dataclasses.replace(TINY, recipe=name, **changes)).capabilities

    assert caps("decoupled").cached and not caps("decoupled").frames_in_prefix
    assert not caps("decoupled").frames_optional and caps("decoupled", actions_see_frames=False).frames_optional
    assert caps("video-then-idm").frames_in_prefix and not caps("video-then-idm").frames_optional
    blind = caps("action-only")
    assert not blind.frames_in_prefix and not blind.frames_optional  # no frame tokens at all
    assert not any((caps("decoupled").latent_frames, caps("decoupled").value, caps("decoupled").pretrained))


def test_frames_optional_really_lets_the_sampler_leave_the_frames_out():
    model = build(dataclasses.replace(TINY, actions_see_frames=False)).eval()
    ctx = fake_batch(model.cfg, 1).context
    prefix = model.encode(ctx)
    _, actions = model.decode(prefix, None, torch.zeros(1, model.cfg.action_horizon, model.cfg.action_dim),
                              torch.zeros(1), torch.zeros(1))
    assert actions.shape[1:] == (model.cfg.action_horizon, model.cfg.action_dim)
    seeing = build(TINY).eval()
    with pytest.raises(ValueError, match="read the frame tokens"):
        seeing.decode(seeing.encode(ctx), None, torch.zeros(1, 4, 4), torch.zeros(1), torch.zeros(1))


def test_pretrained_capabilities_match_their_protocols(folders):
    wan = build(dataclasses.replace(with_backbone(concrete(preset("tiny")), "wan", folders["wan"]).model, text_tokens=8))
    cosmos = build(dataclasses.replace(with_backbone(concrete(preset("tiny")), "cosmos", folders["cosmos"]).model, text_tokens=8))
    assert wan.capabilities.latent_frames and wan.capabilities.pretrained
    assert not wan.capabilities.cached and not wan.capabilities.value
    assert cosmos.capabilities.value and cosmos.capabilities.packed_video and cosmos.capabilities.latent_frames
    for model in (wan, cosmos):
        ctx = fake_batch(model.cfg, 1).context
        lat = model.encode_frames(ctx.images)
        assert lat.shape[:3] == ctx.images.shape[:3]
        assert isinstance(model.backbone, torch.nn.Module) and len(model.blocks) == 2
    assert cosmos.value_of(torch.zeros(cosmos.video_shape(3))).shape == (3,)
    # the sampler does not try a cache that is not there: the plain forward, once per step
    calls = []
    wan.register_forward_hook(lambda *_: calls.append(1))
    ctx = fake_batch(wan.cfg, 1).context
    ctx.text, ctx.latents = wan.embed_text(["reach the goal"]), wan.encode_frames(ctx.images)
    flow.sample(wan, ctx, wan.video_shape(1), (1, 4, 4), steps=2, video_steps=2, video_target="velocity",
                action_target="velocity", cache=True)
    assert len(calls) == 2
