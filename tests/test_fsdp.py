"""FSDP2 on 2 CPU processes (gloo): steps, sharded checkpoints, exact resume, and the same losses as DDP."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wam.config import preset, with_backbone
from wam.testing import concrete, save_tiny, skip_without_pretrained

WORKER = Path(__file__).with_name("fsdp_worker.py")


def losses(run: Path) -> list[float]:
    return [json.loads(r)["loss"] for r in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["wan", "wam", "paligemma"])
def test_fsdp_two_processes_resume_exactly_and_match_ddp(kind, tiny_dataset, tmp_path):
    if kind != "wam":
        skip_without_pretrained()
    from wam.checkpoint import load_model
    from wam.models.vlm.folders import save_tiny as save_tiny_vlm

    folder = (save_tiny(tmp_path / "backbone", "wan") if kind == "wan" else
              save_tiny_vlm(tmp_path / "backbone", kind) if kind == "paligemma" else tmp_path / "no-backbone")
    port = {"wan": "29541", "wam": "29542", "paligemma": "29543"}[kind]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(WORKER), str(folder), str(tiny_dataset), str(tmp_path / "out"), kind]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b, ddp = (tmp_path / "out" / n for n in ("a", "b", "ddp"))
    assert len(losses(a)) == 4
    assert losses(b) == losses(a)  # 2 steps, a sharded checkpoint, a new run resumes: the same curve
    assert losses(ddp) == pytest.approx(losses(a), rel=1e-5)  # sharding changes nothing but reduction order
    shards = sorted(p.name for p in (a / "last/train_state").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    config = json.loads((a / "last/config.json").read_text())
    assert config["world_size"] == 2 and config["step"] == 4 and config["train"]["parallel"] == "fsdp"
    # the consolidated export equals what the unsharded DDP run wrote, and it loads like any checkpoint
    fsdp_w, ddp_w = load_file(a / "last/model.safetensors"), load_file(ddp / "last/model.safetensors")
    assert fsdp_w.keys() == ddp_w.keys()
    # Two parameters of our tiny stem change nothing the model computes: the first conv's bias, which a GroupNorm of
    # one channel per group removes, and the keypoint conv's bias, which a spatial softmax removes. Their gradients are
    # zero up to rounding, which AdamW scales to steps of up to lr, so they are compared through the outputs below.
    null = {"stem.layers.0.0.bias", "stem.kp_conv.bias"} if kind == "wam" else set()
    assert max((fsdp_w[k] - ddp_w[k]).abs().max().item() for k in fsdp_w if k not in null) < 1e-5
    model, _, _ = load_model(a / "last")
    if kind == "wan":  # LoRA: the frozen backbone is read from its folder, never saved
        assert 0 < config["trainable"] < config["total"]
        assert not any("base_layer" in k for k in fsdp_w)
        assert any("lora_A" in k for k in fsdp_w)
        frozen = dict(model.named_parameters())["backbone.blocks.0.attn1.to_q.base_layer.weight"]
        original = load_file(folder / "transformer/diffusion_pytorch_model.safetensors")["blocks.0.attn1.to_q.weight"]
        assert torch.equal(frozen, original)
        # a folder whose weights changed since training is refused: the frozen weights would be wrong
        save_tiny(tmp_path / "other", "wan", seed=1)
        shutil.copy(tmp_path / "other/transformer/diffusion_pytorch_model.safetensors", folder / "transformer")
        with pytest.raises(ValueError, match="not the backbone this checkpoint was fine-tuned from"):
            load_model(a / "last")
    elif kind == "paligemma":  # LoRA on the VLM: adapters saved, its frozen weights read from the folder
        assert 0 < config["trainable"] < config["total"]
        assert any("lora_A" in k for k in fsdp_w) and not any("base_layer" in k for k in fsdp_w)
        save_tiny_vlm(tmp_path / "other", kind, seed=1)
        shutil.copy(tmp_path / "other/model.safetensors", folder)
        with pytest.raises(ValueError, match="not the backbone this checkpoint was fine-tuned from"):
            load_model(a / "last")
    else:
        assert sum(v.numel() for v in fsdp_w.values() if v.is_floating_point()) >= config["total"]
        from wam.testing import fake_batch

        reference, _, _ = load_model(ddp / "last")
        batch, t = fake_batch(model.cfg, 3, seed=0), torch.full((3,), 0.5)
        with torch.no_grad():
            got = model(batch.video, batch.actions, t, t, batch.context, environment=True)
            want = reference(batch.video, batch.actions, t, t, batch.context, environment=True)
        for g, w in zip(got, want):  # frames, actions and the environment-state head (the tiny preset trains it)
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_fsdp_refusals(tiny_dataset, tmp_path):
    from wam.train import train

    p = concrete(preset("tiny"))
    cfg = dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "run", steps=1, parallel="fsdp")
    with pytest.raises(ValueError, match="runs under torchrun"):
        train(cfg, p.model, progress=False)
    with pytest.raises(ValueError, match="parallel must be"):
        dataclasses.replace(cfg, parallel="zero3")
    # a sharded checkpoint does not resume as a single process, and says how to resume it
    train(dataclasses.replace(cfg, parallel="ddp"), p.model, progress=False)
    (tmp_path / "run/last/train_state").mkdir()
    (tmp_path / "run/last/train_state/.metadata").write_bytes(b"")
    (tmp_path / "run/last/train_state.safetensors").unlink()
    with pytest.raises(ValueError, match="resume it with --train.parallel fsdp"):
        train(dataclasses.replace(cfg, parallel="ddp", steps=2), p.model, progress=False)


def test_lora_checkpoints_leave_the_frozen_backbone_out(tiny_dataset, tmp_path):
    """A single-process LoRA run saves the adapters, the action stream and the EMA of those only."""
    skip_without_pretrained()
    from wam.checkpoint import load_model
    from wam.train import train

    folder = save_tiny(tmp_path / "wan", "wan")
    p = with_backbone(concrete(preset("tiny")), "wan", folder)
    model_cfg = dataclasses.replace(p.model, text_tokens=8)
    cfg = dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "run", steps=2, finetune="lora", lora_rank=4)
    last = train(cfg, model_cfg, p.sampler, progress=False)
    config = json.loads((last / "config.json").read_text())
    served = load_file(last / "model.safetensors")
    state = load_file(last / "train_state.safetensors")
    n_params = sum(v.numel() for k, v in served.items() if not k.startswith("normalizer."))
    assert n_params < config["total"] / 2 and not any("base_layer" in k for k in served)
    assert sum(v.numel() for k, v in state.items() if k.startswith("model.")) == n_params
    model, _, _ = load_model(last)
    for k, v in served.items():
        if not k.startswith("normalizer."):
            assert torch.equal(model.state_dict()[k], v)
