"""The declared resize of camera images of another size than the model's: bilinear, the aspect ratio kept by
padding with black (letterbox, centred), on uint8 (H, W, 3) or (c, H, W, 3). The server applies it to every
camera image whose size differs; the client applies it before sending, to save bandwidth. numpy only."""

from __future__ import annotations

import numpy as np

from wam.types import IMAGE_PREFIX


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (..., h, w, 3) -> uint8 (..., H, W, 3): scaled by min(H/h, W/w) (bilinear), then padded."""
    H, W = size
    h, w = image.shape[-3:-1]
    if (h, w) == (H, W):
        return image
    scale = min(H / h, W / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # sample positions (pixel centres) in the source image
    y = np.clip((np.arange(nh) + 0.5) / scale - 0.5, 0, h - 1)
    x = np.clip((np.arange(nw) + 0.5) / scale - 0.5, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (y - y0)[:, None, None], (x - x0)[None, :, None]
    src = image.astype(np.float32)
    top = src[..., y0, :, :][..., :, x0, :] * (1 - wx) + src[..., y0, :, :][..., :, x1, :] * wx
    bottom = src[..., y1, :, :][..., :, x0, :] * (1 - wx) + src[..., y1, :, :][..., :, x1, :] * wx
    scaled = np.round(top * (1 - wy) + bottom * wy).astype(np.uint8)  # (..., nh, nw, 3)
    out = np.zeros((*image.shape[:-3], H, W, image.shape[-1]), np.uint8)
    oy, ox = (H - nh) // 2, (W - nw) // 2
    out[..., oy:oy + nh, ox:ox + nw, :] = scaled
    return out


def fit_images(data: dict, cameras: tuple[str, ...] | list[str], size: tuple[int, int]) -> dict:
    """A wire observation dict with every camera's uint8 (..., h, w, 3) image letterboxed to `size`; anything
    else (another dtype, a bad shape) is left as it is, for the observation's own check to name."""
    out = dict(data)
    for cam in cameras:
        x = out.get(IMAGE_PREFIX + cam)
        if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (3, 4) and x.shape[-1] == 3 and min(x.shape[-3:-1]) > 0:
            out[IMAGE_PREFIX + cam] = letterbox(x, tuple(size))
    return out
