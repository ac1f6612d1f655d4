"""Recipes and modes: each recipe trains and samples, its attention mask does what the recipe says, cached
inference equals the plain forward, and the world-model mode really uses the actions."""

import dataclasses

import pytest
import torch

from wam import flow, modes
from wam.config import ModelConfig, TrainConfig, preset, with_recipe
from wam.models.transformer import ACTION, CONTEXT, VIDEO, WAMTransformer
from wam.models.base import Context
from wam.recipes import MODES, OWN, OWN_POLICIES, RECIPES, check_mode, draw_times
from wam.train import loss_terms
from wam.testing import concrete, fake_batch

TINY = concrete(preset("tiny"))


def _model(name: str, seed: int = 0) -> WAMTransformer:
    torch.manual_seed(seed)
    model = WAMTransformer(with_recipe(TINY, name).model)
    with torch.no_grad():  # move off the adaLN-Zero start so every path carries signal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("name", OWN_POLICIES)
def test_every_recipe_trains_a_step_and_samples(name):
    p = with_recipe(TINY, name)
    model = _model(name)
    batch = fake_batch(p.model, 3)
    terms = loss_terms(model.train(), batch, TINY.train, p.model, torch.Generator().manual_seed(0))
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and terms["action"] > 0
    assert (terms["video"] > 0) == RECIPES[name].predicts_video
    frames, actions = modes.run(model.eval(), "policy", batch.context, p.sampler, generator=torch.Generator().manual_seed(0))
    assert actions.shape == batch.actions.shape and torch.isfinite(actions).all()
    assert frames.shape == batch.video.shape


@pytest.mark.parametrize("name", OWN)
def test_cached_inference_equals_the_plain_forward(name):
    """encode/decode (context, and frames where allowed, computed once) is the same function as forward,
    and the cached sampler gives the same frames and actions as the uncached one for the same noise."""
    model = _model(name)
    p = with_recipe(TINY, name)
    batch = fake_batch(p.model, 2)
    t_v, t_a = torch.tensor([0.2, 0.7]), torch.tensor([0.5, 0.1])
    ref_v, ref_a = model(batch.video, batch.actions, t_v, t_a, batch.context)
    prefix = model.encode(batch.context)
    out_v, out_a = model.decode(prefix, batch.video, batch.actions, t_v, t_a)
    assert torch.allclose(out_a, ref_a, atol=1e-5)
    if ref_v is not None:
        assert torch.allclose(out_v, ref_v, atol=1e-5)
    if model.capabilities.frames_in_prefix:
        prefix = model.encode(batch.context, batch.video, t_v)
        out_v, out_a = model.decode(prefix, None, batch.actions, t_v, t_a)
        assert torch.allclose(out_v, ref_v, atol=1e-5) and torch.allclose(out_a, ref_a, atol=1e-5)
    for mode in RECIPES[name].modes:
        given = {"world_model": {"actions": batch.actions}, "inverse_dynamics": {"video": batch.video}}.get(mode, {})
        runs = [modes.run(model, mode, batch.context, dataclasses.replace(p.sampler, cache=c),
                          generator=torch.Generator().manual_seed(1), **given) for c in (True, False)]
        assert torch.allclose(runs[0][0], runs[1][0], atol=1e-4) and torch.allclose(runs[0][1], runs[1][1], atol=1e-4)


def test_the_world_model_recipe_predicts_frames_from_actions_blind_to_the_instruction():
    """world-model: labelled samples give the actions clean (no action loss), action-free ones leave them absent;
    its world-model samples and its world_model mode never read the instruction, but do read the actions."""
    labelled = torch.tensor([True, False, True, True])
    t_v, t_a, w_v, w_a = draw_times("world-model", 4, torch.Generator().manual_seed(0), labelled)
    assert torch.equal(t_a, labelled.float()) and not w_a.any() and w_v.all()
    p = with_recipe(TINY, "world-model")
    model = _model("world-model")
    batch = fake_batch(p.model, 3)
    other = dataclasses.replace(batch, context=dataclasses.replace(batch.context, text=torch.randn_like(batch.context.text)))
    terms = [loss_terms(model, b, TINY.train, p.model, torch.Generator().manual_seed(0)) for b in (batch, other)]
    assert terms[0]["video"] > 0 and terms[0]["action"] == 0 and torch.equal(terms[0]["loss"], terms[1]["loss"])
    run = lambda ctx, actions: modes.run(model, "world_model", ctx, p.sampler, actions=actions,  # noqa: E731
                                         generator=torch.Generator().manual_seed(1))[0]
    frames = run(batch.context, batch.actions)
    assert torch.equal(frames, run(other.context, batch.actions))
    assert not torch.allclose(frames, run(batch.context, torch.randn_like(batch.actions)), atol=1e-4)
    for mode in ("policy", "inverse_dynamics"):
        with pytest.raises(ValueError, match="world model alone"):
            check_mode("world-model", mode)


def _groups_read(model: WAMTransformer, who: int) -> set[int]:
    rows = model.mask[model.groups == who]
    return {g for g in (CONTEXT, VIDEO, ACTION) if rows[:, model.groups == g].any()}


def test_attention_masks_follow_each_recipe():
    expect = {"joint": ({0, 1, 2}, {0, 1, 2}), "decoupled": ({0, 1, 2}, {0, 1, 2}), "flash": ({0, 1, 2}, {0, 1, 2}),
              "video-then-idm": ({0, 1}, {1, 2}), "features": ({0, 1}, {0, 1, 2}), "action-only": (set(), {0, 2})}
    for name, (video_reads, action_reads) in expect.items():
        model = _model(name)
        assert _groups_read(model, CONTEXT) == {CONTEXT}, name
        assert _groups_read(model, VIDEO) == video_reads, name
        assert _groups_read(model, ACTION) == action_reads, name
    only = _model("action-only")
    assert only.n_vid == 0 and only.video_in is None and only.video_out is None  # no frame tokens at all


def test_frames_never_depend_on_actions_where_the_recipe_forbids_it():
    for name in ("video-then-idm", "features"):
        model = _model(name)
        batch = fake_batch(model.cfg, 2)
        t = torch.full((2,), 0.4)
        a = model(batch.video, batch.actions, t, t, batch.context)[0]
        b = model(batch.video, torch.randn_like(batch.actions), t, t, batch.context)[0]
        assert torch.allclose(a, b, atol=1e-6), name
    model = _model("decoupled")  # ...while in decoupled they do
    batch = fake_batch(model.cfg, 2)
    t = torch.full((2,), 0.4)
    assert not torch.allclose(model(batch.video, batch.actions, t, t, batch.context)[0],
                              model(batch.video, torch.randn_like(batch.actions), t, t, batch.context)[0], atol=1e-4)


def test_video_then_idm_decodes_actions_from_the_finished_frames():
    model = _model("video-then-idm")
    p = with_recipe(TINY, "video-then-idm")
    batch = fake_batch(p.model, 2)
    calls = []
    encode, decode = model.encode, model.decode
    model.encode = lambda ctx, video=None, t=None: calls.append(("encode", None if t is None else t[0].item(), video)) or encode(ctx, video, t)
    model.decode = lambda pre, v, a, tv, ta: calls.append(("decode", tv[0].item(), None)) or decode(pre, v, a, tv, ta)
    frames, _ = modes.run(model, "policy", batch.context, p.sampler, generator=torch.Generator().manual_seed(0))
    encodes = [i for i, c in enumerate(calls) if c[0] == "encode"]
    decodes = [i for i, c in enumerate(calls) if c[0] == "decode"]
    assert len(encodes) == p.sampler.steps + 1 and len(decodes) == p.sampler.steps  # frames steps, then the finished frames once
    assert max(encodes) < min(decodes)  # every action step comes after the frames are finished
    assert calls[encodes[-1]][1] == 1.0 and torch.equal(calls[encodes[-1]][2], frames)
    assert all(calls[i][1] == 1.0 for i in decodes)
    # The inverse dynamics reads the frames: other frames, other actions.
    model.encode, model.decode = encode, decode
    t_a, ones = torch.full((2,), 0.5), torch.ones(2)
    base = model(batch.video, batch.actions, ones, t_a, batch.context)[1]
    assert not torch.allclose(base, model(torch.randn_like(batch.video), batch.actions, ones, t_a, batch.context)[1], atol=1e-4)


def test_training_noise_levels_follow_each_recipe():
    g = torch.Generator().manual_seed(0)
    n = 20_000
    t_v, t_a, w_v, w_a = draw_times("joint", n, g)
    assert torch.equal(t_v, t_a) and w_v.all() and w_a.all()
    t_v, t_a, _, _ = draw_times("decoupled", n, g)
    assert abs(torch.corrcoef(torch.stack([t_v, t_a]))[0, 1]) < 0.05 and abs(t_v.mean() - 0.5) < 0.02
    t_v, t_a, _, _ = draw_times("flash", n, g)
    assert abs(t_v.mean() - 0.25) < 0.02 and abs(t_a.mean() - 0.5) < 0.02  # Beta(1, 3) frames, uniform actions
    assert 0 <= t_v.min() and t_v.max() <= 1
    t_v, t_a, w_v, w_a = draw_times("video-then-idm", n, g)
    assert torch.equal(w_v + w_a, torch.ones(n)) and abs(w_a.mean() - 0.5) < 0.02
    assert (t_v[w_a == 1] == 1).all() and (t_a[w_v == 1] == 0).all()  # IDM on clean frames; video without actions
    assert not draw_times("action-only", n, g)[2].any()


def test_action_free_samples_train_only_the_frames():
    cfg = with_recipe(TINY, "decoupled").model
    model = _model("decoupled").train()
    batch = fake_batch(cfg, 4)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    free = dataclasses.replace(batch, has_actions=torch.zeros(4, dtype=torch.bool))
    terms = loss_terms(model, free, TINY.train, cfg, g())
    assert terms["action"] == 0 and terms["video"] > 0
    model.zero_grad()
    terms["loss"].backward()
    assert model.action_out.linear.weight.grad.abs().sum() == 0  # nothing learns to output actions
    mixed = dataclasses.replace(batch, has_actions=torch.tensor([True, False, True, False]))
    assert loss_terms(model, mixed, TINY.train, cfg, g())["action"] > 0


def test_unknown_names_and_unservable_modes_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid recipes are: joint, decoupled, flash"):
        ModelConfig(recipe="magic")
    with pytest.raises(ValueError, match="valid modes are: policy, world_model"):
        check_mode("decoupled", "dream")
    with pytest.raises(ValueError, match="cannot serve mode 'world_model'.*It serves: policy"):
        check_mode("joint", "world_model")
    assert ModelConfig(recipe="action-only").resolved().future_frames == 0  # future_frames defaults to 2
    with pytest.raises(ValueError, match="--model.recipe/--recipe decoupled predicts future frames: --model.future-frames"):
        ModelConfig(recipe="decoupled", future_frames=0)
    model = _model("action-only")
    batch = fake_batch(model.cfg, 1)
    with pytest.raises(ValueError, match="cannot serve mode 'video'"):
        modes.run(model, "video", batch.context, TINY.sampler)
    with pytest.raises(ValueError, match="needs `actions=`"):
        modes.run(_model("decoupled"), "world_model", batch.context, TINY.sampler)
    for name, r in RECIPES.items():
        assert set(r.modes) <= set(MODES) and ("policy" in r.modes) == (name != "world-model")


def _action_tinted_frames(n: int, cfg: ModelConfig, g: torch.Generator):
    """Random context frames; the future frame is the current one pooled, half-blended with a colour given by
    the first action's first three components. The future cannot be known without the actions."""
    H, s = cfg.image_size, cfg.future_size
    images = torch.rand(n, cfg.context_frames, cfg.views, 3, H, H, generator=g) * 2 - 1
    actions = torch.rand(n, cfg.action_horizon, cfg.action_dim, generator=g) * 2 - 1
    current = torch.nn.functional.avg_pool2d(images[:, -1].flatten(0, 1), H // s).reshape(n, 1, cfg.views, 3, s, s)
    tint = actions[:, 0, :3].reshape(n, 1, 1, 3, 1, 1)
    video = (0.5 * current + 0.5 * tint).expand(n, cfg.future_frames, cfg.views, 3, s, s).contiguous()
    return Context(images, torch.zeros(n, cfg.state_dim), torch.zeros(n, cfg.text_dim)), video, actions


def test_world_model_mode_predicts_the_future_better_with_the_true_actions():
    """Trained briefly on frames that only the actions can explain (with the world-model objective: actions
    given clean, t = 1), the world-model mode must beat itself fed with shuffled actions; it would not if
    the sampler or the network ignored the given actions."""
    cfg = dataclasses.replace(with_recipe(TINY, "decoupled").model, future_patch=4, width=64, cameras=("oblique",),
                              action_horizon=2)
    torch.manual_seed(0)
    model = WAMTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        ctx, video, actions = _action_tinted_frames(32, cfg, g)
        per = flow.losses(model, video, actions, ctx, torch.rand(32, generator=g), torch.ones(32),
                          torch.randn(video.shape, generator=g), torch.randn(actions.shape, generator=g), "data", "velocity")
        opt.zero_grad()
        per["video"].mean().backward()
        opt.step()
    model.eval()
    ctx, video, actions = _action_tinted_frames(64, cfg, torch.Generator().manual_seed(99))
    sampler = dataclasses.replace(TINY.sampler, steps=4)
    err = {}
    for name, given in (("true", actions), ("shuffled", actions[torch.randperm(64, generator=torch.Generator().manual_seed(1))])):
        frames, out = modes.run(model, "world_model", ctx, sampler, actions=given, generator=torch.Generator().manual_seed(2))
        assert torch.equal(out, given)  # given actions come back untouched
        err[name] = ((frames - video) ** 2).mean().item()
    assert err["true"] < 0.85 * err["shuffled"], err


@pytest.mark.parametrize("name", ["joint", "decoupled", "flash"])
def test_fast_path_leaves_out_the_frames_and_gives_the_same_actions(name):
    """With actions_see_frames=False the mask keeps actions from reading frames, so sampling the actions
    without any frame tokens must give exactly the actions of the full joint pass."""
    p = with_recipe(TINY, name)
    cfg = dataclasses.replace(p.model, actions_see_frames=False)
    torch.manual_seed(0)
    model = WAMTransformer(cfg)
    with torch.no_grad():
        for q in model.parameters():
            q.add_(torch.randn_like(q) * 0.05)
    model.eval()
    assert _groups_read(model, ACTION) == {CONTEXT, ACTION} and _groups_read(model, VIDEO) == {CONTEXT, VIDEO, ACTION}
    assert model.capabilities.frames_optional and not _model(name).capabilities.frames_optional
    batch = fake_batch(cfg, 2)
    seen = []
    model.video_in.register_forward_hook(lambda m, i, o: seen.append(1))
    full = modes.run(model, "policy", batch.context, dataclasses.replace(p.sampler, video_steps=p.sampler.steps),
                     generator=torch.Generator().manual_seed(5))
    assert seen  # the full path ran the frame tokens
    seen.clear()
    fast = modes.run(model, "policy", batch.context, dataclasses.replace(p.sampler, video_steps=0),
                     generator=torch.Generator().manual_seed(5))
    assert not seen  # the fast path never built a frame token
    assert torch.allclose(fast[1], full[1], atol=1e-5)
    with pytest.raises(ValueError, match="pass noisy_video"):
        _model(name).decode(_model(name).encode(batch.context), None, batch.actions, torch.zeros(2), torch.zeros(2))


def test_actions_must_see_frames_where_the_recipe_decodes_them_from_frames():
    for name in ("video-then-idm", "features"):
        with pytest.raises(ValueError, match="--model.actions-see-frames must be True"):
            dataclasses.replace(with_recipe(TINY, name).model, actions_see_frames=False)


def test_plan_then_act_decodes_actions_blind_to_the_instruction():
    """plan-then-act plans the frames with the instruction, then decodes the actions with it zeroed: given the same
    frames another instruction gives the same actions (inverse dynamics, policy), while the plan itself changes; in
    training, the samples that train the actions see no instruction either."""
    name = "plan-then-act"
    model = _model(name)
    cfg = with_recipe(TINY, name)
    batch = fake_batch(cfg.model, 2)
    other = dataclasses.replace(batch.context, text=torch.randn_like(batch.context.text))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    _, a1 = modes.run(model, "inverse_dynamics", batch.context, cfg.sampler, video=batch.video, generator=g())
    _, a2 = modes.run(model, "inverse_dynamics", other, cfg.sampler, video=batch.video, generator=g())
    assert torch.equal(a1, a2)
    v1, p1 = modes.run(model, "policy", batch.context, cfg.sampler, generator=g())
    v2, p2 = modes.run(model, "policy", other, cfg.sampler, generator=g())
    assert not torch.allclose(v1, v2, atol=1e-4) and not torch.allclose(p1, p2, atol=1e-4)  # another plan, other actions
    _, again = modes.run(model, "inverse_dynamics", other, cfg.sampler, video=v1, generator=g())
    _, same = modes.run(model, "inverse_dynamics", batch.context, cfg.sampler, video=v1, generator=g())
    assert torch.equal(again, same)
    images = dataclasses.replace(batch.context, images=torch.randn_like(batch.context.images))
    assert not torch.allclose(modes.run(model, "inverse_dynamics", images, cfg.sampler, video=batch.video, generator=g())[1],
                              a1, atol=1e-4)  # the context images still matter
    # training: an action sample's loss does not depend on the instruction
    labelled = dataclasses.replace(batch, has_actions=torch.ones(2, dtype=torch.bool))
    seeds = [s for s in range(50) if draw_times(name, 2, torch.Generator().manual_seed(s), labelled.has_actions)[3].all()]
    assert seeds
    g0 = lambda: torch.Generator().manual_seed(seeds[0])  # noqa: E731
    base = loss_terms(model, labelled, TINY.train, cfg.model, g0())
    moved = loss_terms(model, dataclasses.replace(labelled, context=other), TINY.train, cfg.model, g0())
    assert torch.equal(base["action"], moved["action"])


def test_action_free_samples_always_train_the_video_model_of_plan_then_act():
    g = torch.Generator().manual_seed(0)
    labelled = torch.arange(1000) % 2 == 0
    t_v, t_a, w_v, w_a = draw_times("plan-then-act", 1000, g, labelled)
    assert (w_a[~labelled] == 0).all() and (w_v[~labelled] == 1).all()  # no IDM sample without actions
    assert 0.4 < w_a[labelled].mean() < 0.6


def test_a_residual_frame_head_starts_as_the_copy_of_the_current_frame():
    """With video_residual the untrained world model predicts the current frame (pooled to the future size); the
    legacy head predicts zeros (a grey frame)."""
    cfg = with_recipe(TINY, "decoupled").model
    batch = fake_batch(cfg, 2)
    torch.manual_seed(0)
    model = WAMTransformer(cfg).eval()
    current = model._current(batch.context)
    out, _ = model(batch.video, batch.actions, torch.zeros(2), torch.zeros(2), batch.context)
    assert torch.equal(out, current[:, None].expand_as(out))
    legacy = WAMTransformer(dataclasses.replace(cfg, video_residual=False)).eval()
    assert (legacy(batch.video, batch.actions, torch.zeros(2), torch.zeros(2), batch.context)[0] == 0).all()
    from wam.config import model_from_dict, to_dict

    old = {k: v for k, v in to_dict(cfg.resolved()).items() if k != "video_residual"}
    assert model_from_dict(old).video_residual is False  # a checkpoint from before the field


@pytest.mark.parametrize("name,mode", [("decoupled", "policy"), ("decoupled", "world_model"),
                                       ("plan-then-act", "policy"), ("plan-then-act", "video")])
def test_the_video_deadzone_soft_thresholds_the_predicted_change_and_only_that(name, mode):
    """sampler.video_deadzone: each pixel's predicted change from the current frame is shrunk toward zero by the
    amount (changes below it dropped); 0 leaves the frames as sampled; a large amount gives the current frame
    exactly; actions denoised beside the frames are unchanged, a policy that acts through its plan decodes the
    shrunk plan; given frames (inverse dynamics) are untouched; a model whose frames are not a change is refused."""
    from wam.config import SamplerConfig

    model = _model(name)
    cfg = model.cfg
    batch = fake_batch(cfg, 2)
    current = model._current(batch.context)[:, None]
    plain = SamplerConfig(steps=2, video_steps=2)
    given = {"actions": batch.actions} if mode == "world_model" else {}

    def run(mode: str, amount: float, **given):
        noise = (torch.randn(model.video_shape(2), generator=torch.Generator().manual_seed(1)),
                 torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=torch.Generator().manual_seed(2)))
        return modes.run(model, mode, batch.context, dataclasses.replace(plain, video_deadzone=amount), noise=noise,
                         **given)

    ref_v, ref_a = run(mode, 0.0, **given)
    change = ref_v - current
    amount = float(change.abs().median())
    assert 0 < amount < float(change.abs().max())
    out_v, out_a = run(mode, amount, **given)
    small = change.abs() <= amount
    assert torch.equal(out_v[small], current.expand_as(out_v)[small])  # the static scene held exactly
    assert torch.allclose((out_v - current)[~small], change[~small] - amount * change[~small].sign(), atol=1e-6)
    if name == "plan-then-act" and mode == "policy":  # actions decoded from the plan: from the plan as shrunk
        assert not torch.equal(out_a, ref_a)
        assert torch.allclose(out_a, run("inverse_dynamics", amount, video=out_v)[1], atol=1e-6)
    else:
        assert torch.equal(out_a, ref_a)
    assert torch.equal(run(mode, 10.0, **given)[0], current.expand_as(out_v))
    if name == "plan-then-act":
        assert torch.equal(run("inverse_dynamics", 10.0, video=ref_v)[0], ref_v)  # given frames come back as given
    with pytest.raises(ValueError, match="video_deadzone must be >= 0"):
        SamplerConfig(video_deadzone=-0.1)
    legacy = WAMTransformer(dataclasses.replace(cfg, video_residual=False)).eval()
    with pytest.raises(ValueError, match="change from the current frame"):
        modes.run(legacy, mode, batch.context, dataclasses.replace(plain, video_deadzone=0.1), **given)


@pytest.mark.parametrize("name", ["decoupled", "plan-then-act", "self-label", "features"])
def test_motion_keypoint_tokens_are_frame_tokens_of_every_path(name):
    """With motion_keypoints each future frame and camera gets one more frame token (keypoints and their motion since
    the current frame): the cached paths still equal forward, the frames keep their shape, and the tokens carry the
    future frames (another future frame moves them), where the recipe lets actions read frames."""
    cfg = dataclasses.replace(with_recipe(TINY, name).model, motion_keypoints=3)
    torch.manual_seed(0)
    model = WAMTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    plain = WAMTransformer(with_recipe(TINY, name).model)
    assert model.n_vid == plain.n_vid + cfg.future_frames * cfg.views and model.n_patches == plain.n_vid
    batch = fake_batch(cfg, 2)
    t_v, t_a = torch.tensor([1.0, 0.7]), torch.tensor([0.5, 0.1])
    ref_v, ref_a = model(batch.video, batch.actions, t_v, t_a, batch.context)
    assert ref_v.shape == batch.video.shape
    out_v, out_a = model.decode(model.encode(batch.context), batch.video, batch.actions, t_v, t_a)
    assert torch.allclose(out_v, ref_v, atol=1e-5) and torch.allclose(out_a, ref_a, atol=1e-5)
    if model.capabilities.frames_in_prefix:
        out_v, out_a = model.decode(model.encode(batch.context, batch.video, t_v), None, batch.actions, t_v, t_a)
        assert torch.allclose(out_v, ref_v, atol=1e-5) and torch.allclose(out_a, ref_a, atol=1e-5)
    moved = batch.video.roll(2, dims=-1)
    tokens = model.motion(batch.video, model._current(batch.context))
    assert tokens.shape == (2, cfg.future_frames * cfg.views, cfg.width)
    assert not torch.allclose(model.motion(moved, model._current(batch.context)), tokens, atol=1e-5)
