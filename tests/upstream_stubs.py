"""Stand-ins for the few torchvision transforms that ``depth_anything_3.api`` imports at module
level (its input processor). PyPI's torchvision does not import beside the CPU torch used
here, and the parity tests need upstream's own API, so these are small re-implementations of
the documented behaviour of ``ToTensor``, ``Normalize`` and ``CenterCrop``; installed into
``sys.modules`` only while a test module that needs them runs, and only when torchvision
itself is missing."""

from __future__ import annotations

import sys
import types
from contextlib import contextmanager

import numpy as np
import torch


class ToTensor:
    """PIL image / HxWxC uint8 array -> CxHxW float32 in [0,1]."""

    def __call__(self, picture) -> torch.Tensor:
        array = np.asarray(picture)
        if array.ndim == 2:
            array = array[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        return tensor.float().div(255) if array.dtype == np.uint8 else tensor.float()


class Normalize:
    """(x - mean) / std per channel, on a CxHxW tensor."""

    def __init__(self, mean, std) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor - self.mean.to(tensor)) / self.std.to(tensor)


class CenterCrop:
    """The central (h, w) window of a ...xHxW tensor."""

    def __init__(self, size) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        height, width = tensor.shape[-2:]
        top, left = (height - self.size[0]) // 2, (width - self.size[1]) // 2
        return tensor[..., top : top + self.size[0], left : left + self.size[1]]


@contextmanager
def torchvision_transforms_stand_in():
    """``import torchvision.transforms`` works inside the block (a stand-in if needed)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor, transforms.Normalize, transforms.CenterCrop = ToTensor, Normalize, CenterCrop
    package.transforms = transforms
    package.__reward3d_stand_in__ = True
    sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})
    try:
        yield
    finally:
        for name in ("torchvision", "torchvision.transforms"):
            sys.modules.pop(name, None)
