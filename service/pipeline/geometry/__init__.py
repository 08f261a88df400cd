"""Geometry backends behind one interface (base.GeometryModel), chosen by settings.

Each backend module is imported only when chosen, so optional dependencies (DA3, CUDA) load
only where they are used.
"""

from __future__ import annotations

import importlib

from service.pipeline.geometry.base import GeometryModel
from service.settings import GeometryBackend, Settings

_MODULES = {
    GeometryBackend.CLASSICAL: "service.pipeline.geometry.classical",
    GeometryBackend.DA3: "service.pipeline.geometry.da3",
    GeometryBackend.ORACLE: "service.pipeline.geometry.oracle",
}


def geometry_availability(settings: Settings | None = None) -> dict[str, tuple[bool, str]]:
    """For each backend: can it run on this machine with ``settings`` (default: the process
    settings), and why (not)."""
    report = {}
    for backend, module_name in _MODULES.items():
        try:
            module = importlib.import_module(module_name)
            report[backend.value] = module.is_available(settings)
        except ImportError as exc:
            report[backend.value] = (False, f"not installed: {exc}")
    return report


def resolve_geometry_backend(settings: Settings) -> GeometryBackend:
    """'auto' means DA3 when it can run here (CUDA and a checkpoint), else the classical one."""
    if settings.geometry_backend != GeometryBackend.AUTO:
        return settings.geometry_backend
    from service.pipeline.device import resolve_device

    # The device first: off CUDA the answer is classical whatever DA3's state, and importing
    # the DA3 module only to ask costs ~1 s of every CPU `reward3d score` (issue 14 profile).
    if resolve_device(settings.device).type != "cuda":
        return GeometryBackend.CLASSICAL
    usable, _ = geometry_availability(settings).get(GeometryBackend.DA3.value, (False, ""))
    return GeometryBackend.DA3 if usable else GeometryBackend.CLASSICAL


def get_geometry(backend: GeometryBackend | str, *, settings: Settings, **kwargs) -> GeometryModel:
    """Build the named backend. ``oracle`` takes ``arrays=`` (see geometry/oracle.py)."""
    backend = GeometryBackend(backend)
    if backend == GeometryBackend.AUTO:
        backend = resolve_geometry_backend(settings)
    if backend == GeometryBackend.ORACLE:
        from service.pipeline.geometry.oracle import OracleGeometry

        return OracleGeometry(**kwargs)
    if backend == GeometryBackend.CLASSICAL:
        from service.pipeline.geometry.classical import ClassicalGeometry

        return ClassicalGeometry(settings=settings, **kwargs)
    if backend == GeometryBackend.DA3:
        from service.pipeline.geometry.da3 import DA3Geometry

        return DA3Geometry(settings=settings, **kwargs)
    raise ValueError(f"unknown geometry backend {backend!r}")


__all__ = ["GeometryModel", "get_geometry", "geometry_availability", "resolve_geometry_backend"]
