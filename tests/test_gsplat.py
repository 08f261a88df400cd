"""The gsplat renderer: usable only with CUDA; where CUDA is, it matches the torch reference."""

from __future__ import annotations

import pytest
import torch

from service.pipeline.render import get_renderer, renderer_availability
from service.pipeline.render.gsplat_backend import is_available
from service.pipeline.types import Gaussians


def random_scene(count: int, seed: int, device: str) -> Gaussians:
    """Gaussians in front of an identity camera; opacities below 0.99, where gsplat's alpha cap
    (0.999) and the reference's (0.99) cannot differ."""
    g = torch.Generator().manual_seed(seed)
    quats = torch.randn(count, 4, generator=g)
    return Gaussians(
        means=torch.cat([torch.rand(count, 2, generator=g) * 2 - 1, 2 + 2 * torch.rand(count, 1, generator=g)], 1),
        quats=quats / quats.norm(dim=1, keepdim=True),
        scales=0.02 + 0.08 * torch.rand(count, 3, generator=g),
        opacities=0.1 + 0.85 * torch.rand(count, generator=g),
        colors=torch.rand(count, 3, generator=g),
        source_frame=torch.zeros(count, dtype=torch.long),
    ).to(device)


def test_gsplat_says_why_it_cannot_run_here():
    ok, why = is_available()
    report = renderer_availability()["gsplat"]
    assert report == (ok, why)
    if not torch.cuda.is_available():
        assert not ok and ("CUDA" in why or "not installed" in why)
        with pytest.raises(RuntimeError, match="gsplat unusable"):
            get_renderer("gsplat", device_type="cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gsplat_matches_the_torch_reference(seed):
    pytest.importorskip("gsplat", reason="gsplat not installed (the `gpu` extra)")
    from service.pipeline.render.gsplat_backend import GsplatRenderer
    from service.pipeline.render.torch_ewa import TorchEWARenderer

    gaussians = random_scene(300, seed, "cuda")
    world_to_camera = torch.eye(4, device="cuda").repeat(2, 1, 1)
    world_to_camera[1, 0, 3] = 0.2  # a second, shifted view
    intrinsics = torch.tensor([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]], device="cuda").repeat(2, 1, 1)
    background = torch.tensor([0.2, 0.4, 0.6], device="cuda")
    kwargs = dict(world_to_camera=world_to_camera, intrinsics=intrinsics, width=64, height=48,
                  background=background)  # fmt: skip
    fast = GsplatRenderer().render(gaussians, **kwargs)
    reference = TorchEWARenderer().render(gaussians, **kwargs)
    for name in ("rgb", "alpha"):
        difference = (getattr(fast, name) - getattr(reference, name)).abs()
        assert float(difference.mean()) < 1e-4, name
        assert float(difference.max()) < 2e-3, name
    both = (fast.alpha > 0.5) & (reference.alpha > 0.5)
    assert torch.allclose(fast.depth[both], reference.depth[both], rtol=1e-3, atol=1e-3)
