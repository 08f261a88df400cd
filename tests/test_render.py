"""Renderers: the EWA compositor against a brute-force oracle; the point splat against both."""

import math

import pytest
import torch

from service.pipeline.gaussians import lift_gaussians
from service.pipeline.render import get_renderer, renderer_availability
from service.pipeline.render._reference import _render_ewa
from service.pipeline.render.torch_ewa import render_ewa
from service.pipeline.render.torch_points import render_points
from service.pipeline.terms.metrics import masked_psnr
from service.pipeline.types import Gaussians, Geometry


def random_scene(seed: int, count: int = 25) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(count, 3, generator=g) * torch.tensor([0.6, 0.4, 0.8]) + torch.tensor([0, 0, 3.0])
    means[0, 2] = 0.005  # behind the near plane: must be culled
    return Gaussians(
        means=means,
        quats=torch.nn.functional.normalize(torch.randn(count, 4, generator=g), dim=-1),
        scales=torch.rand(count, 3, generator=g) * 0.25 + 0.02,
        opacities=torch.rand(count, generator=g),
        colors=torch.rand(count, 3, generator=g),
        source_frame=torch.zeros(count, dtype=torch.long),
    )


def cameras(views: int = 2):
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(views, 1, 1)
    world_to_camera[1:, 0, 3] = 0.3  # a second, shifted view
    intrinsics = torch.tensor([[22.0, 0, 12.5], [0, 21.0, 9.5], [0, 0, 1]], dtype=torch.float64)
    return world_to_camera, intrinsics.repeat(views, 1, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ewa_matches_brute_force_compositor(seed):
    scene = random_scene(seed)
    world_to_camera, intrinsics = cameras()
    background = torch.tensor([0.2, 0.4, 0.6])
    fast = render_ewa(scene, world_to_camera=world_to_camera, intrinsics=intrinsics, width=25,
                      height=19, background=background)
    slow = _render_ewa(scene, world_to_camera=world_to_camera, intrinsics=intrinsics, width=25,
                       height=19, background=background)
    torch.testing.assert_close(fast.rgb, slow.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.alpha, slow.alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.depth, slow.depth, atol=1e-4, rtol=1e-5)
    assert fast.alpha.max() > 0.5  # the scene is actually visible


def stack_on_axis(count: int, opacity: float) -> Gaussians:
    """``count`` Gaussians on the optical axis, 0.1 apart from z = 2, coloured R, G, B, R..."""
    return Gaussians(
        means=torch.tensor([[0.0, 0, 2 + 0.1 * i] for i in range(count)]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1),
        scales=torch.full((count, 3), 0.5),
        opacities=torch.full((count,), opacity),
        colors=torch.eye(3).repeat(4, 1)[:count],
        source_frame=torch.zeros(count, dtype=torch.long),
    )


def test_ewa_alpha_is_capped_at_0_99():
    world_to_camera, intrinsics = cameras(1)
    out = render_ewa(stack_on_axis(1, 1.0), world_to_camera=world_to_camera,
                     intrinsics=intrinsics, width=25, height=19)
    # The principal point (12.5, 9.5) is pixel (9, 12)'s centre: the Gaussian's peak.
    assert float(out.alpha[0, 9, 12]) == pytest.approx(0.99, abs=1e-6)


def test_ewa_stops_before_transmittance_reaches_1e_4():
    # alpha 0.95 each: T after 1, 2, 3 Gaussians = 0.05, 0.0025, 1.25e-4 (> 1e-4: kept);
    # the 4th would give 6.25e-6, so it and everything behind it is skipped.
    world_to_camera, intrinsics = cameras(1)
    out = render_ewa(stack_on_axis(6, 0.95), world_to_camera=world_to_camera,
                     intrinsics=intrinsics, width=25, height=19)
    red, green, blue = (float(c) for c in out.rgb[0, 9, 12])
    assert red == pytest.approx(0.95, abs=1e-5)  # the 4th Gaussian (red again) did not add
    assert green == pytest.approx(0.95 * 0.05, abs=1e-5)
    assert blue == pytest.approx(0.95 * 0.0025, abs=1e-6)
    assert float(out.alpha[0, 9, 12]) == pytest.approx(1 - 1.25e-4, abs=1e-6)


def test_ewa_is_differentiable():
    scene = random_scene(5)
    colors = scene.colors.clone().requires_grad_(True)
    means = scene.means.clone().requires_grad_(True)
    scene = Gaussians(means, scene.quats, scene.scales, scene.opacities, colors, scene.source_frame)
    world_to_camera, intrinsics = cameras(1)
    out = render_ewa(scene, world_to_camera=world_to_camera, intrinsics=intrinsics, width=25, height=19)
    out.rgb.sum().backward()
    assert colors.grad is not None and colors.grad.abs().sum() > 0
    assert means.grad is not None and torch.isfinite(means.grad).all()


def test_single_gaussian_lands_where_the_pinhole_model_says():
    # A small Gaussian at (x, y, z) peaks at pixel (fx x / z + cx, fy y / z + cy).
    point = torch.tensor([[0.3, -0.2, 2.0]])
    scene = Gaussians(point, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.01),
                      torch.ones(1), torch.ones(1, 3), torch.zeros(1, dtype=torch.long))
    world_to_camera, intrinsics = cameras(1)
    u = 22.0 * 0.3 / 2 + 12.5  # 15.8
    v = 21.0 * -0.2 / 2 + 9.5  # 7.4
    for render in (render_ewa, render_points):
        out = render(scene, world_to_camera=world_to_camera, intrinsics=intrinsics, width=25, height=19)
        row, col = divmod(int(out.alpha[0].argmax()), 25)
        assert (col, row) == (math.floor(u), math.floor(v)), render.__name__


def dense_surface(height=24, width=32, period=1.3):
    """Pixel-aligned Gaussians of a textured slanted plane, seen from frame 0's camera."""
    v = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    u = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    # A smooth texture (period ~8 px): both renderers resolve it; white noise would only
    # measure how much each one blurs.
    frames = torch.stack([0.5 + 0.4 * torch.sin(u / period + k) * torch.cos(v / (1.3 * period) - k)
                          for k in range(3)], dim=-1)[None]
    depth = (2.0 + 0.02 * v).expand(height, width)[None].contiguous()
    intrinsics = torch.tensor([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]], dtype=torch.float64)
    geometry = Geometry(
        depth=depth, confidence=torch.ones_like(depth),
        world_to_camera=torch.eye(4, dtype=torch.float64)[None], intrinsics=intrinsics[None],
        registered=torch.ones(1, dtype=torch.bool), backend="test",
    )
    return frames, geometry


def test_point_splat_reproduces_the_frame_from_its_own_pixels():
    frames, geometry = dense_surface()
    gaussians = lift_gaussians(frames, geometry)
    out = render_points(gaussians, world_to_camera=geometry.world_to_camera,
                        intrinsics=geometry.intrinsics, width=32, height=24)
    assert float(out.alpha.min()) > 0.99
    assert masked_psnr(out.rgb[0], frames[0], out.alpha[0] > 0.5) > 50
    torch.testing.assert_close(out.depth[0], geometry.depth[0], atol=1e-4, rtol=0)


def test_point_splat_approximates_the_ewa_reference():
    frames, geometry = dense_surface()
    gaussians = lift_gaussians(frames, geometry)
    shifted = geometry.world_to_camera.clone()
    shifted[0, 0, 3] = 0.05  # a nearby viewpoint
    kwargs = dict(world_to_camera=shifted, intrinsics=geometry.intrinsics, width=32, height=24)
    ewa, points = render_ewa(gaussians, **kwargs), render_points(gaussians, **kwargs)
    both = (ewa.alpha[0] > 0.9) & (points.alpha[0] > 0.9)
    assert both.float().mean() > 0.8
    # Same surface, same place: depths agree closely, colours roughly (EWA blurs more).
    assert (ewa.depth[0][both] - points.depth[0][both]).abs().max() < 0.05
    assert (ewa.rgb[0][both] - points.rgb[0][both]).abs().mean() < 0.11


def _rotation_y(angle: float) -> torch.Tensor:  # [4,4] world_to_camera turning about y
    m = torch.eye(4, dtype=torch.float64)
    m[0, 0] = m[2, 2] = math.cos(angle)
    m[0, 2], m[2, 0] = math.sin(angle), -math.sin(angle)
    return m


def _novel_views() -> dict[str, torch.Tensor]:  # name -> world_to_camera [1,4,4]
    shift, closer, oblique = torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), _rotation_y(0.35)
    shift[0, 3] = 0.05  # sideways: sub-pixel resampling
    closer[2, 3] = -0.6  # 1.4x magnification: footprints must grow to meet
    oblique[0, 3], oblique[2, 3] = 0.6, -0.3  # turned 20 degrees: foreshortening changes
    return {"shift": shift[None], "closer": closer[None], "oblique": oblique[None]}


@pytest.mark.parametrize("view", ["shift", "closer", "oblique"])
def test_point_splat_matches_the_ewa_reference_on_a_smooth_surface(view):
    # Stated tolerance (smooth texture, period ~38 px): where both are opaque, colour within
    # 0.03 on average and 0.08 at worst, depth within 2.5 % (EWA composites translucent
    # layers, so its depth leans to the front ones; it also blurs by its 0.3 px^2 floor).
    frames, geometry = dense_surface(period=6.0)
    gaussians = lift_gaussians(frames, geometry)
    kwargs = dict(world_to_camera=_novel_views()[view], intrinsics=geometry.intrinsics, width=32, height=24)
    ewa, points = render_ewa(gaussians, **kwargs), render_points(gaussians, **kwargs)
    both = (ewa.alpha[0] > 0.9) & (points.alpha[0] > 0.9)
    assert both.sum() > 200
    difference = (ewa.rgb[0][both] - points.rgb[0][both]).abs()
    assert difference.mean() < 0.03 and difference.max() < 0.08
    relative_depth = (ewa.depth[0][both] - points.depth[0][both]).abs() / ewa.depth[0][both]
    assert relative_depth.max() < 0.025


@pytest.mark.parametrize("view", ["shift", "closer", "oblique"])
def test_point_splat_has_no_holes_inside_the_surface(view):
    # Every pixel inside the reference's coverage (eroded by 2 px: the silhouettes differ, EWA
    # fattens them by its kernel tails) is opaque in the point splat.
    frames, geometry = dense_surface()
    gaussians = lift_gaussians(frames, geometry)
    kwargs = dict(world_to_camera=_novel_views()[view], intrinsics=geometry.intrinsics, width=32, height=24)
    ewa, points = render_ewa(gaussians, **kwargs), render_points(gaussians, **kwargs)
    covered = torch.nn.functional.pad((ewa.alpha[0] > 0.5).float(), (2, 2, 2, 2))  # off-image: empty
    inside = -torch.nn.functional.max_pool2d(-covered[None, None], 5, 1)[0, 0] > 0
    assert inside.sum() > 100
    assert float(points.alpha[0][inside].min()) > 0.99


def test_point_splat_depth_disagreement_between_frames_opens_no_holes():
    # Two frames lift the same surface with depths 5 % apart (beyond the 3 % tolerance), their
    # points interleaved: the nearer copy wins every pixel it covers and covers them all. (The
    # tent splat let a far copy's kernel tails win pixels and left them half covered.)
    frames, geometry = dense_surface()
    near = lift_gaussians(frames, geometry)
    far_geometry = Geometry(depth=geometry.depth * 1.05, confidence=geometry.confidence,
                            world_to_camera=geometry.world_to_camera, intrinsics=geometry.intrinsics,
                            registered=geometry.registered, backend="test")  # fmt: skip
    far = lift_gaussians(1 - frames, far_geometry)
    both = Gaussians(*(torch.cat([getattr(near, f), getattr(far, f)]) for f in near.__dataclass_fields__))
    shifted = geometry.world_to_camera.clone()
    shifted[0, 0, 3] = 0.05
    out = render_points(both, world_to_camera=shifted, intrinsics=geometry.intrinsics, width=32, height=24)
    inside = torch.zeros(24, 32, dtype=torch.bool)
    inside[2:-2, 2:-2] = True
    assert float(out.alpha[0][inside].min()) > 0.99
    near_only = render_points(near, world_to_camera=shifted, intrinsics=geometry.intrinsics, width=32, height=24)
    torch.testing.assert_close(out.rgb[0][inside], near_only.rgb[0][inside])


def test_renderer_factory_and_availability():
    report = renderer_availability()
    assert report["torch_points"][0] and report["torch_ewa"][0]
    assert get_renderer("auto", device_type="cpu").name == "torch_points"
    assert get_renderer("torch_ewa").name == "torch_ewa"
    with pytest.raises(ValueError):
        get_renderer("nonsense")


def test_lifted_gaussian_scale_is_the_pixel_footprint_at_any_stride():
    # sigma = footprint_scale * stride * depth / focal: a subsampled Gaussian covers its block.
    frames, geometry = dense_surface()
    for budget, stride in ((10_000, 1), (192, 2), (86, 3)):  # 768 pixels / stride^2, rounded up
        gaussians = lift_gaussians(frames, geometry, max_gaussians=budget, footprint_scale=0.7)
        depth = gaussians.means[:, 2]  # identity camera: z is the depth
        torch.testing.assert_close(gaussians.scales[:, 0], 0.7 * stride * depth / 30.0)
        assert gaussians.num_gaussians == (24 // stride) * (32 // stride)
