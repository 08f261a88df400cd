"""Image similarity on a validity mask: PSNR, SSIM (and the hook for LPIPS).

Images are [H,W,3] float in [0,1]; masks [H,W] bool (pixels that were rendered).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def masked_psnr(rendered: Tensor, target: Tensor, mask: Tensor) -> float:
    """PSNR (dB, peak 1.0) over the masked pixels; nan when the mask is empty."""
    count = int(mask.sum())
    if count == 0:
        return float("nan")
    squared = ((rendered - target) ** 2)[mask]
    mse = float(squared.mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def _gaussian_taps(device: torch.device) -> Tensor:  # [SSIM_WINDOW], sums to 1
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - SSIM_WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _gaussian_window(device: torch.device) -> Tensor:  # [3,1,11,11] depthwise 2D window
    g = _gaussian_taps(device)
    return (g[:, None] * g[None, :]).expand(3, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def _ssim_terms(mu_x: Tensor, mu_y: Tensor, xx: Tensor, yy: Tensor, xy: Tensor) -> Tensor:
    sigma_x, sigma_y, sigma_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return numerator / denominator


def ssim_map(rendered: Tensor, target: Tensor) -> Tensor:
    """Per-pixel SSIM [H,W] (Gaussian window 11, sigma 1.5, averaged over channels).

    The Gaussian window is separable: one 11-tap pass per axis (22 multiply-adds per pixel
    instead of 121), over the five blurred maps at once. Same values as ``_ssim_map``."""
    x = rendered.permute(2, 0, 1).float()
    y = target.permute(2, 0, 1).float()
    pad = SSIM_WINDOW // 2
    maps = torch.cat([x, y, x * x, y * y, x * y])[None]  # [1,15,H,W]
    # Reflect-padding the products equals the products of the padded images (pointwise).
    maps = F.pad(maps, (pad,) * 4, mode="reflect")
    taps = _gaussian_taps(x.device)
    blurred = F.conv2d(maps, taps.view(1, 1, -1, 1).expand(15, 1, -1, 1), groups=15)
    blurred = F.conv2d(blurred, taps.view(1, 1, 1, -1).expand(15, 1, 1, -1), groups=15)
    mu_x, mu_y, xx, yy, xy = blurred[0].split(3)
    return _ssim_terms(mu_x, mu_y, xx, yy, xy).mean(0)


def _ssim_map(rendered: Tensor, target: Tensor) -> Tensor:
    """Reference for ``ssim_map``: the 2D 11x11 window, one blur per map."""
    x = rendered.permute(2, 0, 1)[None].float()
    y = target.permute(2, 0, 1)[None].float()
    window = _gaussian_window(x.device)
    pad = SSIM_WINDOW // 2
    x_p = F.pad(x, (pad,) * 4, mode="reflect")
    y_p = F.pad(y, (pad,) * 4, mode="reflect")

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, window, groups=3)

    mu_x, mu_y = blur(x_p), blur(y_p)
    return _ssim_terms(mu_x, mu_y, blur(x_p * x_p), blur(y_p * y_p), blur(x_p * y_p))[0].mean(0)


def masked_ssim(rendered: Tensor, target: Tensor, mask: Tensor) -> float:
    """Mean SSIM over the masked pixels; nan when the mask is empty."""
    if int(mask.sum()) == 0:
        return float("nan")
    return float(ssim_map(rendered, target)[mask].mean())


def image_detail(image: Tensor) -> float:
    """Mean gradient magnitude of the luminance (per pixel, image in [0,1]).

    Flat images (blank, fog) carry no evidence: re-rendering them is trivially 'consistent'.
    Typical footage: 0.02-0.1; a blank frame: 0.
    """
    luminance = image @ torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype)
    grad_x = (luminance[:, 1:] - luminance[:, :-1]).abs().mean()
    grad_y = (luminance[1:, :] - luminance[:-1, :]).abs().mean()
    return float(0.5 * (grad_x + grad_y))
