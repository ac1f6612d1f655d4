"""Pretrained diffusers backbones (Wan, Cosmos): tiny random configs of the real classes, saved in the diffusers
folder layout and loaded through the code path real weights take."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from wam.testing import skip_without_pretrained

skip_without_pretrained()

from wam import finetune, flow  # noqa: E402
from wam.models.folders import LayoutError
from wam.models.folders import load as load_folder
from wam.models.latent import FrameCodec
from wam.testing import concrete, fake_observation, save_tiny
from wam.backbones import build
from wam.config import preset, with_backbone
from wam.models.base import Context


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    folders = {kind: save_tiny(root / kind, kind) for kind in ("wan", "cosmos")}
    folders["wan2.2"] = save_tiny(root / "wan2.2", "wan", vae="2.2")  # 16x VAE, as Wan 2.2 TI2V-5B's
    return folders


def _cfg(kind, folder):
    p = with_backbone(concrete(preset("tiny")), kind, folder)
    return dataclasses.replace(p.model, text_tokens=8)


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    images = torch.rand(b, cfg.context_frames, cfg.views, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    ctx = Context(images=images, state=torch.randn(b, cfg.state_dim, generator=g),
                  text=model.embed_text(["press the button from the top", "close the drawer"][:b]))
    ctx.latents = model.encode_frames(images)
    video = torch.randn(model.video_shape(b), generator=g)
    actions = torch.randn(b, cfg.action_horizon, cfg.action_dim, generator=g)
    return ctx, video, actions


def test_bad_folders_are_refused_with_the_file_named(folders, tmp_path):
    with pytest.raises(LayoutError, match="model_index.json is missing"):
        load_folder(tmp_path, "wan")
    broken = shutil.copytree(folders["wan"], tmp_path / "no-text")
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(LayoutError, match="text_encoder is missing"):
        load_folder(broken, "wan")
    with pytest.raises(LayoutError, match="declares 'WanTransformer3DModel'; a 'cosmos' backbone expects"):
        load_folder(folders["wan"], "cosmos")
    no_weights = shutil.copytree(folders["wan"], tmp_path / "no-weights")
    (no_weights / "vae/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(LayoutError, match="vae holds no weights"):
        load_folder(no_weights, "wan")
    wrong = shutil.copytree(folders["wan"], tmp_path / "wrong-config")
    config = json.loads((wrong / "transformer/config.json").read_text())
    (wrong / "transformer/config.json").write_text(json.dumps({**config, "ffn_dim": 64}))
    with pytest.raises(LayoutError, match="do not load into WanTransformer3DModel"):
        load_folder(wrong, "wan")
    with pytest.raises(ValueError, match="wan needs --model.backbone-path/--backbone-path DIR"):
        dataclasses.replace(concrete(preset("tiny")).model, backbone="wan")
    # the Wan 2.2 VAE makes frames 16x smaller, and the transformer reads 2x2 patches of them
    with pytest.raises(ValueError, match="image_size must be a multiple of 32, got 48"):
        build(dataclasses.replace(_cfg("wan", folders["wan2.2"]), image_size=48))
    codec = FrameCodec(load_folder(folders["wan2.2"], "wan", ("vae",)).vae)
    assert codec.down == 16 and codec.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 4, 4)


def test_wan_adapter_is_wans_own_forward_on_a_video(folders):
    """With no action tokens and one timestep for all, the adapter's use of Wan's modules is Wan's forward."""
    model = build(_cfg("wan", folders["wan"]))
    video = torch.randn(2, 4, 3, 4, 8)
    text = model.embed_text(["reach the goal", "press the button"])
    ours = model.denoise(video, torch.zeros(2, 0, 24), torch.full((2, 3 * 2 * 4), 500.0), text)[0]
    theirs = model.backbone(video, torch.full((2,), 500.0), text).sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_cosmos_adapter_is_cosmos_own_forward(folders, tmp_path):
    """Same check for Cosmos (its forward needs torchvision only for the padding mask: compared without one)."""
    from diffusers import CosmosTransformer3DModel

    from wam.models.cosmos import CosmosWAM

    torch.manual_seed(0)
    bb = CosmosTransformer3DModel(in_channels=5, out_channels=4, num_attention_heads=2, attention_head_dim=12,
                                  num_layers=2, mlp_ratio=2.0, text_embed_dim=16, adaln_lora_dim=8,
                                  max_size=(32, 64, 128), rope_scale=(1.0, 1.0, 1.0), concat_padding_mask=False)
    model = CosmosWAM(_cfg("cosmos", folders["cosmos"]), bb)
    lat = torch.randn(2, 3, 1, 4, 4, 4)  # (b, T, v, z, h, w)
    times = torch.rand(2, 3)
    text = torch.randn(2, 8, 16)
    ours = model.denoise(lat, times, 1, text)
    x = lat.permute(0, 3, 1, 4, 2, 5).reshape(2, 4, 3, 4, 4)
    mask = torch.zeros(2, 1, 3, 4, 4)
    mask[:, :, :1] = 1
    theirs = bb(x, times[:, None, :, None, None], text, condition_mask=mask).sample
    assert torch.allclose(ours[:, :, 0].permute(0, 2, 1, 3, 4), theirs, atol=1e-5)


@pytest.mark.parametrize("kind", ["wan", "cosmos"])
def test_adapter_learns_and_every_finetune_mode_trains_what_it_says(folders, kind):
    for mode in finetune.MODES:
        torch.manual_seed(0)
        if kind == "cosmos" and mode == "frozen":  # no action stream outside the backbone: refused
            with pytest.raises(ValueError, match="nothing left to train"):
                finetune.apply(build(_cfg(kind, folders[kind])), mode)
            continue
        model = finetune.apply(build(_cfg(kind, folders[kind])), mode, rank=4, gradient_checkpointing=True)
        ctx, video, actions = _inputs(model)
        out_v, out_a = model(video, actions, torch.rand(2), torch.rand(2), ctx)
        assert out_v.shape == video.shape and out_a.shape == actions.shape
        (out_v.square().mean() + out_a.square().mean()).backward()
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        backbone = {n for n in trained if n.startswith("backbone.") and "lora_" not in n}
        lora = {n for n in trained if "lora_" in n}
        assert (len(backbone) > 0) == (mode == "full") and (len(lora) > 0) == (mode == "lora")
        assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_A" not in n)
    # a few steps of flow matching on one batch lower its loss
    model = finetune.apply(build(_cfg(kind, folders[kind])), "full")
    ctx, video, actions = _inputs(model, seed=1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    t, nv, na = torch.rand(2, generator=g), torch.randn(video.shape, generator=g), torch.randn(actions.shape, generator=g)
    first = None
    for _ in range(40):
        per = flow.losses(model, video, actions, ctx, t, t, nv, na, "velocity", "velocity")
        loss = per["video"].mean() + per["action"].mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_cosmos_frames_pack_and_unpack():
    from wam.models.cosmos import from_frame, to_frame

    vec = torch.randn(3, 7)
    frame = to_frame(vec, (2, 4, 5, 5))
    assert frame.shape == (3, 2, 4, 5, 5) and torch.allclose(from_frame(frame, 7), vec, atol=1e-6)


@pytest.mark.parametrize("kind,folder", [("wan", "wan"), ("cosmos", "cosmos"), ("wan", "wan2.2")])
def test_pretrained_wam_trains_resumes_and_acts_in_closed_loop(folders, kind, folder, tiny_dataset, tmp_path):
    """`wam train --backbone KIND --backbone-path DIR`, then one closed-loop Meta-World episode from the checkpoint."""
    from wam.checkpoint import load_model
    from wam.evaluate import EvalConfig, SamplerOverrides, evaluate
    from wam.train import train

    p = with_backbone(concrete(preset("tiny")), kind, folders[folder])
    model_cfg = dataclasses.replace(p.model, text_tokens=8)
    train_cfg = dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "run", steps=3, ckpt_every=2,
                                    finetune="lora", lora_rank=4)
    sampler = dataclasses.replace(p.sampler, best_of=2 if kind == "cosmos" else 1, decode_frames=False)
    last = train(train_cfg, model_cfg, sampler, progress=False)
    assert any((tiny_dataset / "cache").glob("latents-*.safetensors"))  # computed once, reused
    config = json.loads((last / "config.json").read_text())
    assert 0 < config["trainable"] < config["total"] and config["step"] == 3
    model, _, _ = load_model(last)
    assert any("lora_" in n for n, _ in model.named_parameters())
    rows = [json.loads(r) for r in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    # resume: a fresh run on the same out continues from step 3 and stops at 4
    last = train(dataclasses.replace(train_cfg, steps=4), model_cfg, sampler, progress=False)
    assert json.loads((last / "config.json").read_text())["step"] == 4 and len(rows) == 3
    summary = evaluate(EvalConfig(checkpoint=last, episodes=1, max_steps=6, workers=1, videos=1,
                                  tasks="drawer-close-v3", out=tmp_path / "eval",
                                  sampler=SamplerOverrides(execute=3)), progress=False)
    assert summary["tasks"]["drawer-close-v3"]["episodes"] == 1
    # the checkpoint's own sampler survives evaluation (best-of-N for cosmos, no VAE decode), with the changes asked
    used = summary["sampler"]
    assert (used["best_of"], used["decode_frames"], used["execute"], used["steps"]) == (sampler.best_of, False, 3, 2)
    assert (tmp_path / "eval/report.html").exists()


def test_best_of_n_executes_the_chunk_with_the_highest_value(folders):
    from wam.config import SamplerConfig
    from wam.policy import WAMPolicy
    from wam.data.transforms import Normalizer

    model = build(_cfg("cosmos", folders["cosmos"]))
    cfg = model.cfg
    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    seen = []
    value_of = model.value_of
    model.value_of = lambda video: seen.append(value_of(video)) or seen[-1]  # record the candidates' values
    policy = WAMPolicy(model, norm, {}, SamplerConfig(steps=2, best_of=4, decode_frames=False), seed=0)
    obs = fake_observation(policy.metadata, prompt="close the drawer")
    out = policy.infer(obs)
    assert out.actions.shape == (cfg.action_horizon, cfg.action_dim) and out.frames is None
    assert seen[0].shape == (4,) and len(set(seen[0].tolist())) == 4  # four different candidates
    assert out.value == pytest.approx(seen[0].max().item())
    policy = WAMPolicy(build(_cfg("wan", folders["wan"])), norm, {}, SamplerConfig(best_of=2))
    with pytest.raises(ValueError, match="predicts a value"):
        policy.infer(obs)


def test_best_of_n_batched_across_requests_equals_each_alone(folders):
    from wam.config import SamplerConfig
    from wam.data.transforms import Normalizer
    from wam.policy import WAMPolicy

    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    policy = WAMPolicy(build(_cfg("cosmos", folders["cosmos"])), norm, {}, SamplerConfig(steps=2, best_of=3, decode_frames=False))
    obs = [fake_observation(policy.metadata, seed=i, prompt=p) for i, p in enumerate(["close the drawer", "reach"])]
    alone = [policy.infer(o, torch.Generator().manual_seed(i)) for i, o in enumerate(obs)]
    together = policy.infer_batch(obs, [torch.Generator().manual_seed(i) for i in range(2)])  # 2 x 3 rows
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
        assert a.value == pytest.approx(b.value, abs=1e-5)


def test_the_backbone_folder_is_given_at_load_time_and_checked_by_its_fingerprint(tiny_dataset, tmp_path):
    """A LoRA checkpoint leaves the backbone in its folder: loaded from a copy of that folder elsewhere (a serving
    machine), refused from another backbone's folder, and a recorded folder that is gone says what to pass."""
    from wam.checkpoint import load_model
    from wam.policy import WAMPolicy
    from wam.train import train

    trained_on = save_tiny(tmp_path / "wan", "wan")
    p = with_backbone(concrete(preset("tiny")), "wan", trained_on)
    train_cfg = dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "run", steps=1, finetune="lora",
                                    lora_rank=4)
    last = train(train_cfg, dataclasses.replace(p.model, text_tokens=8), p.sampler, progress=False)
    want, _, _ = load_model(last)
    moved = shutil.move(str(trained_on), tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="does not exist; pass --backbone-path DIR"):
        load_model(last)
    model, _, config = load_model(last, backbone_path=moved)
    assert config["model"]["backbone_path"] == str(moved) and model.cfg.backbone_path == str(moved)
    for a, b in zip(want.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    policy = WAMPolicy.from_checkpoint(last, backbone_path=moved)
    assert policy.model.cfg.backbone_path == str(moved)
    other = save_tiny(tmp_path / "other", "wan", seed=1)
    with pytest.raises(ValueError, match="is not the backbone this checkpoint was fine-tuned from"):
        load_model(last, backbone_path=other)
