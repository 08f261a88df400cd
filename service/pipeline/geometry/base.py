"""The geometry interface: every backend turns a Video into a Geometry.

A backend is a class with a ``name``, a ``predict(video, *, ...)`` method and ``versions()``;
its module has ``is_available() -> (bool, reason)`` so ``reward3d info`` can say why a backend
is unusable on this machine without importing heavy dependencies at start-up.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from service.pipeline.types import Geometry, Video


@runtime_checkable
class GeometryModel(Protocol):
    name: str

    def predict(self, video: Video) -> Geometry:
        """Depth, confidence and cameras for every frame of ``video`` (at its working size)."""
        ...

    def versions(self) -> dict[str, str]:
        """Model/algorithm versions that change scores (they enter cache keys)."""
        ...
