"""Tier 1: contracts of the network on the tiny preset."""

import dataclasses

import pytest
import torch

from wam import flow
from wam.config import ModelConfig, preset
from wam.models.transformer import ACTION, CONTEXT, VIDEO, WAMTransformer, patchify, unpatchify
from wam.testing import concrete, fake_batch

CFG = concrete(preset("tiny")).model


def _model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return WAMTransformer(cfg)


def _randomise_heads(model):
    # adaLN-Zero starts every block as the identity and the heads at zero; move off that point so that
    # gradients and masks are tested on a generic network.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def test_output_shapes_follow_the_config():
    model, b = _model(), 3
    batch = fake_batch(CFG, b)
    out_v, out_a = model(batch.video, batch.actions, torch.rand(b), torch.rand(b), batch.context)
    assert out_v.shape == (b, CFG.future_frames, CFG.views, 3, CFG.future_size, CFG.future_size)
    assert out_a.shape == (b, CFG.action_horizon, CFG.action_dim)


def test_loss_keys_and_per_element_shapes():
    model, b = _model(), 2
    batch = fake_batch(CFG, b)
    per = flow.losses(model, batch.video, batch.actions, batch.context, torch.rand(b), torch.rand(b),
                      torch.randn_like(batch.video), torch.randn_like(batch.actions), "data", "velocity")
    assert set(per) == {"video", "action"}
    assert per["video"].shape == batch.video.shape and per["action"].shape == batch.actions.shape
    assert (per["video"] >= 0).all() and (per["action"] >= 0).all()


def test_every_trainable_parameter_gets_a_gradient():
    model, b = _randomise_heads(_model()), 2
    batch = fake_batch(CFG, b)
    per = flow.losses(model, batch.video, batch.actions, batch.context, torch.rand(b), torch.rand(b),
                      torch.randn_like(batch.video), torch.randn_like(batch.actions), "data", "velocity")
    (per["video"].mean() + per["action"].mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, f"no gradient reached {missing}"


def test_inputs_are_not_mutated():
    model, b = _randomise_heads(_model()), 2
    batch = fake_batch(CFG, b)
    tensors = [batch.video, batch.actions, batch.context.images, batch.context.state, batch.context.text]
    copies = [t.clone() for t in tensors]
    t_v, t_a = torch.rand(b), torch.rand(b)
    t_copies = (t_v.clone(), t_a.clone())
    flow.losses(model, *tensors[:2], batch.context, t_v, t_a, torch.randn_like(batch.video),
                torch.randn_like(batch.actions), "data", "velocity")["action"].sum().backward()
    flow.sample(model, batch.context, batch.video.shape, batch.actions.shape, steps=2, video_steps=2,
                video_target="data", action_target="velocity")
    for t, c in zip(tensors, copies):
        assert torch.equal(t, c)
    assert torch.equal(t_v, t_copies[0]) and torch.equal(t_a, t_copies[1])


def test_context_tokens_never_see_noisy_tokens():
    """The attention mask keeps clean context tokens from attending to future-frame or action tokens, so
    their hidden states are the same whatever the noisy inputs are (the basis of a context KV cache)."""
    model, b = _randomise_heads(_model()), 2
    batch = fake_batch(CFG, b)
    captured = []
    model.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o[0].detach()))
    model(batch.video, batch.actions, torch.full((b,), 0.3), torch.full((b,), 0.3), batch.context)
    model(torch.randn_like(batch.video), torch.randn_like(batch.actions), torch.full((b,), 0.9),
          torch.full((b,), 0.1), batch.context)
    n = model.n_ctx
    assert torch.allclose(captured[0][:, :n], captured[1][:, :n], atol=1e-6)
    # ...while the noisy tokens do depend on each other (the mask is not simply blocking everything).
    assert not torch.allclose(captured[0][:, n:], captured[1][:, n:], atol=1e-3)
    assert model.mask[model.groups == CONTEXT][:, model.groups != CONTEXT].sum() == 0
    assert model.mask[model.groups == ACTION][:, model.groups == VIDEO].all()


def test_bad_model_configs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(image_size=100)
    with pytest.raises(ValueError, match="distinct names"):
        ModelConfig(cameras=("top", "top"))
    assert ModelConfig(cameras=("wrist",)).cameras == ("wrist",)  # which cameras exist is the env's and the data's
    from wam.envs import make_env

    with pytest.raises(ValueError, match="unknown camera 'wrist'"):
        make_env("metaworld:reach-v3", ("wrist",), 32)
    with pytest.raises(ValueError, match="valid presets"):
        preset("huge")


def test_default_preset_builds():
    model = WAMTransformer(concrete(preset("default")).model)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 20e6


def test_patchify_roundtrip_and_layout():
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(x, 8), 8, 16), x)
    p = patchify(x, 8)
    assert torch.equal(p[1, 1].reshape(3, 8, 8), x[1, :, :8, 8:])  # token 1 is the top-right patch


def test_future_frames_are_conditioned_on_the_current_context_frame():
    """Future-frame tokens see the *last* context frame patch by patch (concat); changing an earlier
    context frame must not change the concatenated input, changing the last one must."""
    model, b = _randomise_heads(_model()), 1
    batch = fake_batch(CFG, b)
    captured = []
    model.video_in.register_forward_hook(lambda m, i, o: captured.append(i[0].detach()))
    run = lambda images: model(batch.video, batch.actions, torch.rand(b), torch.rand(b),  # noqa: E731
                               type(batch.context)(images, batch.context.state, batch.context.text))
    run(batch.context.images)
    earlier = batch.context.images.clone()
    earlier[:, 0] = 0
    run(earlier)
    last = batch.context.images.clone()
    last[:, -1] = 0
    run(last)
    assert torch.equal(captured[0], captured[1]) and not torch.equal(captured[0], captured[2])


def test_images_only_model_ignores_the_state():
    cfg = dataclasses.replace(CFG, state_dim=0)
    model, b = _randomise_heads(_model(cfg)), 2
    batch = fake_batch(CFG, b)
    t = torch.rand(b)
    out = model(batch.video, batch.actions, t, t, batch.context)
    other = type(batch.context)(batch.context.images, torch.randn(b, 4), batch.context.text)
    again = model(batch.video, batch.actions, t, t, other)
    assert torch.equal(out[1], again[1]) and model.n_ctx == _model().n_ctx - 1
