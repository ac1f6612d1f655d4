"""Camera images of another size than the model's, fitted the way the checkpoint's training data was (pad:
letterbox, or crop: the centre; data/resize.fit, bilinear with antialiasing) on uint8 (H, W, 3) or
(c, H, W, 3). The server applies it to every camera image whose size differs; the client applies it before
sending, to save bandwidth."""

from __future__ import annotations

import numpy as np

from wam.data.resize import fit
from wam.types import IMAGE_PREFIX


def fit_images(data: dict, cameras: tuple[str, ...] | list[str], size: tuple[int, int], resize: str = "pad") -> dict:
    """A wire observation dict with every camera's uint8 (..., h, w, 3) image fitted to `size` by `resize`; anything
    else (another dtype, a bad shape) is left as it is, for the observation's own check to name."""
    out = dict(data)
    for cam in cameras:
        x = out.get(IMAGE_PREFIX + cam)
        if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (3, 4) and x.shape[-1] == 3 and min(x.shape[-3:-1]) > 0:
            out[IMAGE_PREFIX + cam] = fit(x, tuple(size), resize)
    return out
