"""Image metrics for predicted frames against real ones: PSNR and SSIM on uint8 (..., H, W, 3) frames."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two uint8 images (or stacks), on the 0-255 scale."""
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr_of(error: float) -> float:
    """PSNR (dB) of a mean squared error on the 0-255 scale; 99 for none."""
    return 99.0 if error == 0 else 10 * math.log10(255.0**2 / error)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images (or stacks), dB; 99 for identical ones."""
    return psnr_of(mse(a, b))


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of uint8 (..., H, W, 3) pairs, averaged over pixels and channels:
    one value per leading index. A Gaussian window (7 px, sigma 1.5: the frames here are small), constants
    K1 = 0.01, K2 = 0.03 of the 255 range, reflect padding."""
    lead = a.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(a)).reshape(-1, *a.shape[-3:]).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(np.ascontiguousarray(b)).reshape(-1, *b.shape[-3:]).permute(0, 3, 1, 2).double()
    window = min(window, *(n - (n + 1) % 2 for n in x.shape[-2:]))  # odd, and no larger than the frame
    r = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, window, window)

    def blur(z):
        return F.conv2d(F.pad(z, (window // 2,) * 4, mode="reflect"), kernel, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean((1, 2, 3)).reshape(lead).numpy()
