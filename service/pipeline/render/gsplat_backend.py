"""Renderer ``gsplat``: the CUDA rasterizer of nerfstudio's gsplat behind our renderer interface.

Imported lazily (only when chosen), CUDA only. Same conventions as the torch reference
(torch_ewa.py): world-to-camera 4x4 (OpenCV axes), intrinsics in pixels, wxyz quaternions,
scales as standard deviations, z-depth; expected depth normalised by alpha ("RGB+ED"), 0 where
nothing was hit; background composited as ``rgb + (1 - alpha) * background``.

Differences from the reference that a parity test must respect (tests/test_gsplat.py):
gsplat caps a Gaussian's alpha at 0.999 where the reference caps at 0.99, so scenes whose
opacities stay below 0.99 render identically up to float32 rounding; the projection rules
(0.3 px^2 blur, 1.3x field-of-view clamp, near plane, radius) are the ones the reference copies.

The CUDA kernels may be compiled on first use: ``warm_up()`` renders a tiny scene so that cost
is paid at start-up, not by the first request.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from service.pipeline.render.projection import NEAR_PLANE
from service.pipeline.types import Gaussians, RenderOutput

EPS_2D = 0.3  # the reference's screen-space blur (projection.BLUR_PX2)


def is_available() -> tuple[bool, str]:
    if importlib.util.find_spec("gsplat") is None:
        return False, "gsplat is not installed (the `gpu` extra, on CUDA machines)"
    if not torch.cuda.is_available():
        return False, "gsplat needs a CUDA device; none on this machine"
    return True, "CUDA rasterizer"


class GsplatRenderer:
    name = "gsplat"
    differentiable = True

    def __init__(self) -> None:
        ok, why = is_available()
        if not ok:
            raise RuntimeError(f"renderer gsplat unusable: {why}")
        import gsplat

        self._rasterization = gsplat.rasterization
        self._version = getattr(gsplat, "__version__", "unknown")
        self.warm_up()

    def versions(self) -> dict[str, str]:
        return {"renderer": f"gsplat-{self._version}"}

    def warm_up(self) -> None:
        """Render a tiny scene once (compiles / loads the CUDA kernels)."""
        device = torch.device("cuda")
        count = 16
        generator = torch.Generator().manual_seed(0)
        gaussians = Gaussians(
            means=(torch.rand(count, 3, generator=generator) - 0.5).to(device) + torch.tensor([0, 0, 3.0], device=device),
            quats=torch.tensor([[1.0, 0, 0, 0]], device=device).repeat(count, 1),
            scales=torch.full((count, 3), 0.05, device=device),
            opacities=torch.full((count,), 0.5, device=device),
            colors=torch.rand(count, 3, generator=generator).to(device),
            source_frame=torch.zeros(count, dtype=torch.long, device=device),
        )
        intrinsics = torch.tensor([[[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]], device=device)
        self.render(gaussians, world_to_camera=torch.eye(4, device=device)[None],
                    intrinsics=intrinsics, width=32, height=32)  # fmt: skip
        torch.cuda.synchronize(device)

    def render(
        self,
        gaussians: Gaussians,
        *,
        world_to_camera: Tensor,  # [V,4,4]
        intrinsics: Tensor,  # [V,3,3] pixels
        width: int,
        height: int,
        background: Tensor | None = None,  # [3], default black
    ) -> RenderOutput:
        device = gaussians.means.device
        if device.type != "cuda":
            raise RuntimeError("gsplat renders CUDA tensors: move the Gaussians to the GPU")
        views = world_to_camera.shape[0]
        if background is None:
            background = torch.zeros(3, device=device)
        if gaussians.num_gaussians == 0:
            empty = torch.zeros(views, height, width, device=device)
            rgb = background.float().to(device).expand(views, height, width, 3).clone()
            return RenderOutput(rgb=rgb, depth=empty, alpha=empty.clone())
        colours_depth, alphas, _ = self._rasterization(
            means=gaussians.means.float().contiguous(),  # [N,3]
            quats=gaussians.quats.float().contiguous(),  # [N,4] wxyz (gsplat's convention too)
            scales=gaussians.scales.float().contiguous(),  # [N,3]
            opacities=gaussians.opacities.float().contiguous(),  # [N]
            colors=gaussians.colors.float().contiguous(),  # [N,3] RGB, no spherical harmonics
            viewmats=world_to_camera.float().to(device).contiguous(),  # [V,4,4] world-to-camera
            Ks=intrinsics.float().to(device).contiguous(),  # [V,3,3]
            width=width,
            height=height,
            near_plane=NEAR_PLANE,
            eps2d=EPS_2D,
            render_mode="RGB+ED",  # colour + expected depth (normalised by alpha)
            rasterize_mode="classic",
            packed=True,
        )
        alpha = alphas[..., 0]  # [V,H,W]
        depth = torch.where(alpha > 0, colours_depth[..., 3], torch.zeros_like(alpha))
        # Background composited here (gsplat's own would also pad the depth channel).
        rgb = colours_depth[..., :3] + (1 - alpha[..., None]) * background.float().to(device)
        return RenderOutput(rgb=rgb, depth=depth, alpha=alpha)
