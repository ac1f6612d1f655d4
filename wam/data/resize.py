"""The declared resize of camera images to the model's square input, numpy only (the robot-side client uses it).

Training (the frame cache), offline evaluation, `wam serve` and its client all fit frames through `fit`, so a robot's
frames reach the model exactly as the training frames did."""

from __future__ import annotations

import numpy as np

RESIZE = ("pad", "crop")
"""How a camera image of another shape than the model's square input is fitted: "pad" scales it to fit inside and
pads the rest with black, centred (letterbox: nothing is cut off, the aspect ratio is kept); "crop" scales it to
cover and cuts the centre (no border, the edges are lost)."""


def _weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights with antialiasing: a triangle filter over source pixel centres,
    widened by the reduction factor when shrinking (so a downscale averages instead of aliasing), rows summing to 1."""
    scale = n_out / n_in
    support = max(1.0, 1.0 / scale)
    centre = (np.arange(n_out) + 0.5) / scale - 0.5
    x = np.arange(n_in)
    w = np.maximum(0.0, 1.0 - np.abs(x[None, :] - centre[:, None]) / support)
    empty = w.sum(1) == 0  # (cannot happen for support >= 1, kept for safety) nearest pixel
    w[empty, np.clip(np.round(centre[empty]).astype(int), 0, n_in - 1)] = 1.0
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def fit(images: np.ndarray, size: int | tuple[int, int], mode: str = "pad") -> np.ndarray:
    """uint8 (..., h, w, 3) -> uint8 (..., H, W, 3) by `mode` (RESIZE), resampled linearly with antialiasing.
    Images already of the size come back as they are."""
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    h, w = images.shape[-3:-1]
    if (h, w) == (H, W):
        return images
    if mode not in RESIZE:
        raise ValueError(f"resize {mode!r}: expected one of {', '.join(RESIZE)}")
    scale = (min if mode == "pad" else max)(H / h, W / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if mode == "crop":
        nh, nw = max(nh, H), max(nw, W)
    # two matmuls over (..., c, h, w), one 2-D product per image and channel: the same result for a frame whether
    # it is fitted alone or in a batch (a frame cached in training is bit-identical to one fitted when served)
    x = np.moveaxis(images, -1, -3).astype(np.float32)
    x = _weights(h, nh) @ x @ _weights(w, nw).T
    x = np.moveaxis(np.clip(np.round(x), 0, 255).astype(np.uint8), -3, -1)
    if mode == "crop":
        top, left = (nh - H) // 2, (nw - W) // 2
        return np.ascontiguousarray(x[..., top:top + H, left:left + W, :])
    out = np.zeros((*images.shape[:-3], H, W, images.shape[-1]), np.uint8)
    top, left = (H - nh) // 2, (W - nw) // 2
    out[..., top:top + nh, left:left + nw, :] = x
    return out
