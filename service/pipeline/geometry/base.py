"""The geometry interface: every backend turns a Video into a Geometry.

A backend is a class with a ``name``, a ``predict(video, *, ...)`` method and ``versions()``;
it may have ``input_size(height, width) -> (h, w)``: the size it wants each source frame at
(decode then fills ``Video.geometry_frames``, resized once from the source). Its module has
``is_available(settings) -> (bool, reason)`` so ``reward3d info`` can say why a backend
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
