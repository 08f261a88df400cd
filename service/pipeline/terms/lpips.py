"""LPIPS (AlexNet variant) from locally provided weights, written here (torchvision is not a
dependency): a perceptual distance, 0 for identical images, larger for more different ones.

    d(x, y) = sum over 5 layers l of mean over pixels of  w_l . (f_l(x) - f_l(y))^2

where f_l are AlexNet's ReLU activations after each of its 5 convolutions, unit-normalised
over channels, and w_l >= 0 are LPIPS' learned 1x1 "linear" layers. Images are mapped to
[-1,1] and shifted/scaled per channel first (LPIPS' scaling layer).

Weights (docs/models.md), as published, in one directory or one file:

- the backbone: torchvision's AlexNet state dict (``alexnet-owt-7be5be79.pth``; keys
  ``features.{0,3,6,8,10}.{weight,bias}``), or the lpips package's full-model layout
  (``net.slice{1..5}.{i}.{weight,bias}``);
- the linear layers: the lpips package's ``weights/v0.1/alex.pth`` (keys
  ``lin{0..4}.model.1.weight``, shape [1,C,1,1]).

Files may be ``.pth``/``.pt`` (read with ``weights_only=True``: no pickled code runs) or
``.safetensors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# AlexNet's convolutions: (index in torchvision's `features`, in, out, kernel, stride, padding).
ALEX_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
              (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))  # fmt: skip
POOL_AFTER = (0, 3)  # a 3x3 stride-2 max pool follows these convolutions
SHIFT = (-0.030, -0.088, -0.188)  # LPIPS scaling layer, for inputs in [-1,1]
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class LpipsWeightsError(ValueError):
    """LPIPS weights missing or in an unknown layout."""


class AlexLPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad)
            for _, cin, cout, kernel, stride, pad in ALEX_CONVS
        )
        self.lins = nn.ModuleList(nn.Conv2d(cout, 1, 1, bias=False) for _, _, cout, *_ in ALEX_CONVS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def features(self, images: Tensor) -> list[Tensor]:  # images [B,3,H,W] in [0,1]
        x = (images * 2 - 1 - self.shift) / self.scale
        taps = []
        for (index, *_), conv in zip(ALEX_CONVS, self.convs):
            x = F.relu(conv(x))
            taps.append(x)
            if index in POOL_AFTER:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        return taps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # [B,3,H,W] each, in [0,1] -> [B]
        distance = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for fx, fy, lin in zip(self.features(x), self.features(y), self.lins):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            distance = distance + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return distance


def read_state_dicts(path: str | Path) -> dict[str, Tensor]:
    """All tensors from one weights file, or from every weights file in a directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        raise LpipsWeightsError(f"LPIPS weights not found at {path}")
    if not files:
        raise LpipsWeightsError(f"no {', '.join(WEIGHT_SUFFIXES)} files in {path}")
    merged: dict[str, Tensor] = {}
    for file in files:
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(file))
            else:
                state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated file, pickled objects, not a state dict...
            raise LpipsWeightsError(f"cannot read LPIPS weights {file}: {exc}") from None
        if not isinstance(state, dict):
            raise LpipsWeightsError(f"{file} does not hold a state dict")
        merged.update({k: v for k, v in state.items() if isinstance(v, Tensor)})
    return merged


def to_our_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the published layouts' keys to AlexLPIPS's (``convs.i.*``, ``lins.i.weight``)."""
    conv_of_index = {index: i for i, (index, *_) in enumerate(ALEX_CONVS)}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        match = (re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
                 or re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", key))  # fmt: skip
        if match and int(match.group(1)) in conv_of_index:
            out[f"convs.{conv_of_index[int(match.group(1))]}.{match.group(2)}"] = value
            continue
        match = re.fullmatch(r"lins?\.?(\d)\.model\.1\.weight", key)
        if match:
            out[f"lins.{match.group(1)}.weight"] = value
    return out


def build_lpips(state: dict[str, Tensor]) -> AlexLPIPS:
    """AlexLPIPS with weights from a (merged) published state dict; clear errors otherwise."""
    weights = to_our_layout(state)
    model = AlexLPIPS()
    expected = {k for k in model.state_dict() if k not in ("shift", "scale")}
    missing = expected - weights.keys()
    if any(k.startswith("convs.") for k in missing):
        raise LpipsWeightsError(
            "LPIPS weights lack the AlexNet backbone (torchvision's alexnet-owt-7be5be79.pth, "
            "keys features.N.weight): see docs/models.md"
        )
    if missing:
        raise LpipsWeightsError(
            "LPIPS weights lack the linear layers (the lpips package's weights/v0.1/alex.pth, "
            "keys linN.model.1.weight): see docs/models.md"
        )
    try:
        model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatch: another network's weights
        raise LpipsWeightsError(f"LPIPS weights do not fit AlexNet: {exc}") from None
    return model.eval().requires_grad_(False)


def load_lpips(path: str | Path, *, device: torch.device | str = "cpu") -> Callable[[Tensor, Tensor], float]:
    """The reconstruction term's LPIPS: (rendered [H,W,3], target [H,W,3]) in [0,1] -> distance."""
    model = build_lpips(read_state_dicts(path)).to(device)

    @torch.inference_mode()
    def lpips(rendered: Tensor, target: Tensor) -> float:
        x = rendered.permute(2, 0, 1)[None].float().to(device)
        y = target.permute(2, 0, 1)[None].float().to(device)
        return float(model(x, y)[0])

    return lpips
