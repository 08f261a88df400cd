"""Image metrics: the separable SSIM against its 2D-window reference."""

import torch

from service.pipeline.terms.metrics import _ssim_map, masked_ssim, ssim_map


def test_separable_ssim_matches_the_2d_window_reference():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(37, 52, 3, generator=g)
    for rendered in (target, target + 0.1 * torch.randn(37, 52, 3, generator=g),
                     torch.rand(37, 52, 3, generator=g)):  # fmt: skip
        torch.testing.assert_close(ssim_map(rendered, target), _ssim_map(rendered, target),
                                   atol=2e-5, rtol=0)  # fmt: skip


def test_ssim_of_an_image_with_itself_is_one_and_of_noise_is_low():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(30, 40, 3, generator=g)
    mask = torch.ones(30, 40, dtype=torch.bool)
    assert abs(masked_ssim(image, image, mask) - 1.0) < 1e-5
    assert masked_ssim(torch.rand(30, 40, 3, generator=g), image, mask) < 0.1
