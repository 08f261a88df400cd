"""Renderers behind one keyword-only signature, chosen by settings and imported lazily:

    renderer.render(gaussians, *, world_to_camera [V,4,4], intrinsics [V,3,3], width, height,
                    background=None) -> RenderOutput(rgb [V,H,W,3], depth [V,H,W], alpha [V,H,W])

- ``torch_ewa``: the reference (EWA splatting with gsplat's compositing rules), differentiable.
- ``torch_points``: fast z-buffered splat of pixel footprints (hole-free held-out renders), the CPU default.
- ``gsplat``: CUDA rasterizer (optional extra), checked against ``torch_ewa``.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from torch import Tensor

from service.pipeline.types import Gaussians, RenderOutput
from service.settings import RendererBackend

_MODULES = {
    RendererBackend.TORCH_POINTS: "service.pipeline.render.torch_points",
    RendererBackend.TORCH_EWA: "service.pipeline.render.torch_ewa",
    RendererBackend.GSPLAT: "service.pipeline.render.gsplat_backend",
}


@runtime_checkable
class Renderer(Protocol):
    name: str
    differentiable: bool

    def render(
        self,
        gaussians: Gaussians,
        *,
        world_to_camera: Tensor,
        intrinsics: Tensor,
        width: int,
        height: int,
        background: Tensor | None = None,
    ) -> RenderOutput: ...

    def versions(self) -> dict[str, str]: ...


def renderer_availability() -> dict[str, tuple[bool, str]]:
    report = {}
    for backend, module_name in _MODULES.items():
        try:
            report[backend.value] = importlib.import_module(module_name).is_available()
        except ImportError as exc:
            report[backend.value] = (False, f"not installed: {exc}")
    return report


def resolve_renderer_backend(name: RendererBackend | str, device_type: str) -> RendererBackend:
    """'auto' -> gsplat on CUDA when it is usable, else torch_points."""
    backend = RendererBackend(name)
    if backend != RendererBackend.AUTO:
        return backend
    if device_type == "cuda" and renderer_availability()[RendererBackend.GSPLAT.value][0]:
        return RendererBackend.GSPLAT
    return RendererBackend.TORCH_POINTS


def get_renderer(name: RendererBackend | str, *, device_type: str = "cpu") -> Renderer:
    backend = resolve_renderer_backend(name, device_type)
    if backend == RendererBackend.TORCH_POINTS:
        from service.pipeline.render.torch_points import TorchPointRenderer

        return TorchPointRenderer()
    if backend == RendererBackend.TORCH_EWA:
        from service.pipeline.render.torch_ewa import TorchEWARenderer

        return TorchEWARenderer()
    if backend == RendererBackend.GSPLAT:
        from service.pipeline.render.gsplat_backend import GsplatRenderer

        return GsplatRenderer()
    raise ValueError(f"unknown renderer {name!r}")


__all__ = ["Renderer", "get_renderer", "renderer_availability", "resolve_renderer_backend"]
