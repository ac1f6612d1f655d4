"""The VLA and the hybrids (models/vla.py, models/mot.py) on their vision-language prefixes (models/vlm): the
transformers adapters are the models' own forward, the cached path is the forward, the foresight frames cost nothing
when skipped, fine-tuning trains what it says, and every new recipe trains and acts in Meta-World."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from wam import finetune, flow, modes
from wam.backbones import VLM_RECIPES, build
from wam.config import ModelConfig, preset
from wam.recipes import RECIPES
from wam.testing import concrete, fake_batch, skip_without_pretrained

KINDS = ("paligemma", "smolvlm")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from wam.models.vlm.folders import save_tiny

    root = tmp_path_factory.mktemp("vlm")
    return {kind: save_tiny(root / kind, kind) for kind in KINDS}


def _cfg(backbone: str, recipe: str, folders=None) -> ModelConfig:
    p = concrete(preset("tiny"))
    return dataclasses.replace(p.model, backbone=backbone, recipe=recipe, prefix_width=32, prefix_depth=2, action_width=16,
                               backbone_path=None if backbone == "lite" else str(folders[backbone])).resolved()


def _model(cfg: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = build(cfg)
    with torch.no_grad():  # off the adaLN-zero start, so every path carries signal
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _batch(model, b: int = 2, seed: int = 0):
    batch = fake_batch(model.cfg, b, seed)
    batch.context.text = model.embed_text(["close the drawer", "press the button from the top"][:b])
    return batch


@pytest.mark.parametrize("kind", KINDS)
def test_each_vlm_adapter_is_its_transformers_models_own_forward(folders, kind):
    """Our prompt, pixels and forward give the hidden states of ...ForConditionalGeneration on the inputs its own
    processor (PaliGemma) or tokenizer and image processor (SmolVLM) make from the same images and instruction."""
    import transformers
    from PIL import Image

    from wam.models.vlm.hf import TransformersVLM

    vlm = TransformersVLM(str(folders[kind]), kind, images=2).eval()
    u = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    images = torch.from_numpy(u).permute(0, 3, 1, 2).float()[None] / 127.5 - 1
    text = vlm.embed_text(["close the drawer"])
    with torch.no_grad():
        ours, real = vlm.hidden(images, text)
    pil = [Image.fromarray(x) for x in u]
    if kind == "paligemma":
        full = transformers.PaliGemmaForConditionalGeneration.from_pretrained(folders[kind]).eval()
        enc = dict(transformers.AutoProcessor.from_pretrained(folders[kind])(
            text=["<image><image>close the drawer"], images=[pil], return_tensors="pt"))
        enc.pop("labels", None)
    else:
        full = transformers.SmolVLMForConditionalGeneration.from_pretrained(folders[kind]).eval()
        pixels = transformers.AutoImageProcessor.from_pretrained(folders[kind])(images=[pil], return_tensors="pt")
        tok = vlm.tokenizer  # SmolVLM's prompt for unsplit images, written out by hand
        fake, glob, image = tok.convert_tokens_to_ids(["<fake_token_around_image>", "<global-img>", "<image>"])
        ids = ([fake, glob] + [image] * vlm.image_tokens + [fake]) * 2 + tok("close the drawer")["input_ids"]
        enc = dict(input_ids=torch.tensor([ids]),
                   pixel_values=pixels["pixel_values"], pixel_attention_mask=pixels["pixel_attention_mask"])
    # int64 ids: mixed precision casts floating inputs, and bf16 would change ids above 256
    assert text.dtype == torch.long and torch.equal(enc["input_ids"], text) and bool(real.all())
    with pytest.raises(TypeError, match="token ids arrived as torch.bfloat16"):
        vlm.hidden(images, text.bfloat16())
    with torch.no_grad():
        theirs = full(**enc, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == vlm.layers + 1
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < 1e-5
    # padding: a shorter instruction in the same batch is right-padded and masked; its states are its own alone
    two = vlm.embed_text(["close the drawer", "reach"])
    with torch.no_grad():
        padded, real = vlm.hidden(images.expand(2, -1, -1, -1, -1), two)
        alone, _ = vlm.hidden(images, vlm.embed_text(["reach"]))
    n = alone[-1].shape[1]
    assert not bool(real[1, n:].any()) and torch.allclose(padded[-1][1, :n], alone[-1][0], atol=1e-5)
    # a uniform mid-grey frame normalises to all zeros, which SmolVLM would drop as a padding image
    with torch.no_grad():
        grey, _ = vlm.hidden(torch.zeros_like(images), text)
    assert len(grey) == vlm.layers + 1 and all(bool(h.isfinite().all()) for h in grey)


def test_bad_vlm_folders_are_refused_with_the_file_named(folders, tmp_path):
    import shutil

    from wam.models.vlm.folders import LayoutError, check_layout

    with pytest.raises(LayoutError, match="no such folder"):
        check_layout(tmp_path / "missing", "paligemma")
    bad = tmp_path / "bad"
    shutil.copytree(folders["paligemma"], bad)
    with pytest.raises(LayoutError, match="declares 'PaliGemmaForConditionalGeneration'"):
        check_layout(bad, "smolvlm")
    (bad / "model.safetensors").unlink()
    with pytest.raises(LayoutError, match="holds no weights"):
        check_layout(bad, "paligemma")
    (bad / "config.json").unlink()
    with pytest.raises(LayoutError, match="config.json is missing"):
        check_layout(bad, "paligemma")
    with pytest.raises(ValueError, match="needs --model.backbone-path/--backbone-path DIR .a transformers model folder"):
        ModelConfig(backbone="smolvlm", recipe="vla")
    with pytest.raises(ValueError, match="recipe 'vla' trains on lite, paligemma, smolvlm"):
        ModelConfig(recipe="vla")


@pytest.mark.parametrize("backbone,recipe", [(b, r) for b in ("lite", *KINDS) for r in VLM_RECIPES])
def test_cached_inference_equals_the_plain_forward(folders, backbone, recipe):
    """encode (the VLM once, and what never reads the actions) + decode is forward; the cached sampler gives what the
    uncached one gives in every mode; the instruction reaches the actions through the prefix."""
    model = _model(_cfg(backbone, recipe, folders))
    batch = _batch(model)
    t_v, t_a = torch.tensor([0.2, 0.7]), torch.tensor([0.5, 0.1])
    video = batch.video if model.n_vid else None
    with torch.no_grad():
        ref_v, ref_a = model(video, batch.actions, t_v, t_a, batch.context)
        if model.capabilities.frames_in_prefix:
            out_v, out_a = model.decode(model.encode(batch.context, video, t_v), None, batch.actions, t_v, t_a)
        else:
            out_v, out_a = model.decode(model.encode(batch.context), video, batch.actions, t_v, t_a)
    assert torch.allclose(out_a, ref_a, atol=1e-5)
    assert (ref_v is None) == (recipe == "vla") and (ref_v is None or torch.allclose(out_v, ref_v, atol=1e-5))
    sampler = dataclasses.replace(concrete(preset("tiny")).sampler, video_steps=None).resolve(recipe)
    for mode in RECIPES[recipe].modes:
        given = {"world_model": {"actions": batch.actions}}.get(mode, {})
        runs = [modes.run(model, mode, batch.context, dataclasses.replace(sampler, cache=c),
                          generator=torch.Generator().manual_seed(1), **given) for c in (True, False)]
        assert torch.allclose(runs[0][1], runs[1][1], atol=1e-4)
        assert (runs[0][0] is None) or torch.allclose(runs[0][0], runs[1][0], atol=1e-4)
    other = dataclasses.replace(batch.context, text=model.embed_text(["press the button from the top", "close the drawer"]))
    with torch.no_grad():
        assert not torch.allclose(model(video, batch.actions, t_v, t_a, other)[1], ref_a, atol=1e-4)


def test_foresight_frames_are_skipped_at_no_cost_and_the_actions_are_the_same():
    """hybrid-foresight's actions never read its frames: the policy with its default sampler builds no frame token, and
    its actions equal those of the full pass that also denoises the frames (same noise)."""
    model = _model(_cfg("lite", "hybrid-foresight"))
    assert model.capabilities.frames_optional and not model.capabilities.frames_in_prefix
    batch = _batch(model)
    sampler = concrete(preset("tiny")).sampler
    seen = []
    model.video_in.register_forward_hook(lambda *_: seen.append(1))
    fast = modes.run(model, "policy", batch.context, dataclasses.replace(sampler, video_steps=None).resolve("hybrid-foresight"),
                     generator=torch.Generator().manual_seed(5))
    assert not seen and RECIPES["hybrid-foresight"].video_steps == 0
    full = modes.run(model, "policy", batch.context, dataclasses.replace(sampler, video_steps=sampler.steps),
                     generator=torch.Generator().manual_seed(5))
    assert seen and full[0].shape == batch.video.shape
    assert torch.allclose(fast[1], full[1], atol=1e-5)


def test_the_mot_frames_never_read_the_actions_and_its_streams_keep_their_widths():
    model = _model(_cfg("lite", "hybrid-mot"))
    assert model.capabilities.frames_in_prefix and not model.capabilities.frames_optional
    blk = model.blocks[0]
    assert blk.video.mlp[0].in_features == model.cfg.width and blk.action.mlp[0].in_features == model.cfg.action_width
    batch = _batch(model)
    t = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        v1, a1 = model(batch.video, batch.actions, t, t, batch.context)
        v2, a2 = model(batch.video, torch.randn_like(batch.actions), t, t, batch.context)
    assert torch.allclose(v1, v2, atol=1e-6) and not torch.allclose(a1, a2, atol=1e-4)
    # --model.actions-see-frames False: the action stream no longer reads the frames, which become optional
    blind = _model(dataclasses.replace(_cfg("lite", "hybrid-mot"), actions_see_frames=False))
    assert blind.capabilities.frames_optional
    with torch.no_grad():
        _, a1 = blind(batch.video, batch.actions, t, t, batch.context)
        _, a2 = blind(torch.randn_like(batch.video), batch.actions, t, t, batch.context)
        _, a3 = model(torch.randn_like(batch.video), batch.actions, t, t, batch.context)
    assert torch.allclose(a1, a2, atol=1e-6) and not torch.allclose(a3, model(batch.video, batch.actions, t, t, batch.context)[1], atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_every_finetune_mode_trains_what_it_says_on_a_vlm(folders, kind):
    skip_without_pretrained()
    for mode in finetune.MODES:
        torch.manual_seed(0)
        model = finetune.apply(build(_cfg(kind, "hybrid-foresight", folders)), mode, rank=4, gradient_checkpointing=True)
        model.train()
        batch = _batch(model)
        per = flow.losses(model, batch.video, batch.actions, batch.context, torch.rand(2), torch.rand(2),
                          torch.randn_like(batch.video), torch.randn_like(batch.actions), "data", "velocity")
        (per["video"].mean() + per["action"].mean()).backward()
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        vlm = {n for n in trained if n.startswith("vlm.") and "lora_" not in n}
        lora = {n for n in trained if "lora_" in n}
        assert (len(vlm) > 0) == (mode == "full") and (len(lora) > 0) == (mode == "lora"), mode
        assert {n for n in trained if n.startswith("blocks.")}  # the expert trains in every mode
        assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_A" not in n)
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_the_offline_prefix_keeps_its_imagenet_encoder_frozen():
    from wam.models.efficientnet import EfficientNetLiteEncoder, load_pretrained

    model = build(_cfg("lite", "vla"))
    reference = EfficientNetLiteEncoder()
    load_pretrained(reference)
    ours = model.vlm.stem.encoder
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))
    assert not any(p.requires_grad for p in ours.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("vlm.stem.encoder."))


@pytest.mark.parametrize("backbone,recipe,mode", [("lite", r, "full") for r in VLM_RECIPES]
                         + [("paligemma", "vla", "lora"), ("smolvlm", "hybrid-mot", "frozen")])
def test_every_new_recipe_trains_and_acts_one_closed_loop_episode(folders, backbone, recipe, mode, tiny_dataset, tmp_path):
    from wam.checkpoint import load_model
    from wam.config import preset as get
    from wam.evaluate import EvalConfig, SamplerOverrides, evaluate
    from wam.train import train

    if backbone != "lite":
        skip_without_pretrained()
    p = concrete(get("tiny"))
    model_cfg = _cfg(backbone, recipe, folders)
    last = train(dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "run", steps=3, ckpt_every=2,
                                     finetune=mode, lora_rank=4), model_cfg, p.sampler, progress=False)
    config = json.loads((last / "config.json").read_text())
    assert config["step"] == 3 and 0 < config["trainable"] < config["total"]  # a frozen encoder or VLM in every case
    assert ("backbone_fingerprint" in config) == (backbone != "lite")
    model, _, _ = load_model(last)
    assert model.cfg.recipe == recipe and model.cfg.backbone == backbone
    summary = evaluate(EvalConfig(checkpoint=last, episodes=1, max_steps=6, workers=1, videos=1, tasks="drawer-close-v3",
                                  out=tmp_path / "eval", sampler=SamplerOverrides(execute=3)), progress=False)
    assert summary["tasks"]["drawer-close-v3"]["episodes"] == 1 and (tmp_path / "eval/report.html").exists()


def _policy(recipe: str, sampler):
    from wam.data.transforms import Normalizer
    from wam.policy import WAMPolicy

    model = _model(_cfg("lite", recipe))
    norm = Normalizer.standard(np.zeros(4), np.ones(4), -np.ones(4), np.ones(4))
    return WAMPolicy(model, norm, {}, sampler)


@pytest.mark.parametrize("recipe", ["hybrid-foresight", "hybrid-mot"])
def test_bfloat16_inference_of_the_hybrids_stays_close_to_float32(recipe):
    from wam.config import SamplerConfig
    from wam.testing import fake_observation

    outs = {}
    for precision in ("float32", "bfloat16"):
        policy = _policy(recipe, SamplerConfig(steps=4, precision=precision))
        outs[precision] = policy.infer(fake_observation(policy.metadata)).actions
    diff = np.abs(outs["float32"] - outs["bfloat16"]).max()
    assert 0 < diff < 0.05, diff


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["vla", "hybrid-mot"])
def test_compiled_vla_and_mot_give_the_same_actions(recipe):
    """torch.compile of the expert's blocks (compiles C++ on CPU) changes nothing but speed."""
    from wam.config import SamplerConfig
    from wam.testing import fake_observation

    actions = []
    for compile_ in (False, True):
        policy = _policy(recipe, SamplerConfig(steps=4, compile=compile_))
        actions.append(policy.infer(fake_observation(policy.metadata)).actions)
    assert np.allclose(actions[0], actions[1], atol=1e-5)
