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


def _gaussian_window(device: torch.device) -> Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - SSIM_WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim_map(rendered: Tensor, target: Tensor) -> Tensor:
    """Per-pixel SSIM [H,W] (Gaussian window 11, sigma 1.5, averaged over channels)."""
    x = rendered.permute(2, 0, 1)[None].float()
    y = target.permute(2, 0, 1)[None].float()
    window = _gaussian_window(x.device)
    pad = SSIM_WINDOW // 2
    x_p = F.pad(x, (pad,) * 4, mode="reflect")
    y_p = F.pad(y, (pad,) * 4, mode="reflect")

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, window, groups=3)

    mu_x, mu_y = blur(x_p), blur(y_p)
    sigma_x = blur(x_p * x_p) - mu_x**2
    sigma_y = blur(y_p * y_p) - mu_y**2
    sigma_xy = blur(x_p * y_p) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return (numerator / denominator)[0].mean(0)


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
