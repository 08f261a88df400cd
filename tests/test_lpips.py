"""LPIPS from locally provided weights in the published layouts."""

from __future__ import annotations

import pytest
import torch

from service.pipeline.terms.lpips import (
    AlexLPIPS,
    LpipsWeightsError,
    build_lpips,
    load_lpips,
    read_state_dicts,
)
from tests.tiny_models import lpips_state_dicts


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lpips")
    backbone, lins = lpips_state_dicts(seed=0)
    torch.save(backbone, directory / "alexnet-owt-7be5be79.pth")
    torch.save(lins, directory / "alex.pth")
    return directory


def image(seed: int, size=(64, 96)) -> torch.Tensor:
    return torch.rand(*size, 3, generator=torch.Generator().manual_seed(seed))


def test_lpips_is_zero_for_identical_and_grows_with_the_difference(weights_dir):
    lpips = load_lpips(weights_dir)
    x = image(0)
    assert lpips(x, x) == pytest.approx(0.0, abs=1e-7)
    noise = image(1) - 0.5
    distances = [lpips((x + s * noise).clamp(0, 1), x) for s in (0.05, 0.2, 0.6)]
    assert 0 < distances[0] < distances[1] < distances[2]
    assert lpips(image(2), x) == pytest.approx(lpips(x, image(2)), rel=1e-5)  # symmetric


def test_the_lpips_package_layout_gives_the_same_network(weights_dir, tmp_path):
    backbone, lins = lpips_state_dicts(seed=0)
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}  # lpips' full model: net.sliceK.<torchvision index>
    combined = {f"net.slice{slices[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
                for k, v in backbone.items() if k.startswith("features.")}  # fmt: skip
    combined.update({k.replace("lin", "lins.", 1): v for k, v in lins.items()})
    combined["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in combined.items()}, str(tmp_path / "lpips_alex.safetensors"))
    a, b = load_lpips(weights_dir), load_lpips(tmp_path / "lpips_alex.safetensors")
    assert a(image(3), image(4)) == pytest.approx(b(image(3), image(4)), rel=1e-6)


def test_weights_reach_the_network():
    backbone, lins = lpips_state_dicts(seed=0)
    model = build_lpips({**backbone, **lins})
    assert torch.equal(model.convs[2].weight, backbone["features.6.weight"])
    assert torch.equal(model.lins[4].weight, lins["lin4.model.1.weight"])
    zeroed = build_lpips({**backbone, **{k: torch.zeros_like(v) for k, v in lins.items()}})
    x = image(5).permute(2, 0, 1)[None]
    assert float(zeroed(x, torch.zeros_like(x))) == 0.0  # all-zero linear layers: no distance


def test_missing_or_broken_weights_are_clear_errors(tmp_path):
    backbone, lins = lpips_state_dicts(seed=0)
    with pytest.raises(LpipsWeightsError, match="linear layers"):
        build_lpips(backbone)
    with pytest.raises(LpipsWeightsError, match="AlexNet backbone"):
        build_lpips(lins)
    with pytest.raises(LpipsWeightsError, match="not found"):
        read_state_dicts(tmp_path / "nothing")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(LpipsWeightsError, match="cannot read"):
        read_state_dicts(broken)
    wrong = {**backbone, **lins, "features.0.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(LpipsWeightsError, match="do not fit"):
        build_lpips(wrong)
    assert isinstance(AlexLPIPS(), torch.nn.Module)


def test_reconstruction_term_reports_lpips_when_weights_are_given(weights_dir):
    from service.pipeline import RewardPipeline
    from service.schemas import ScoreOptions
    from service.settings import Settings
    from service.synthetic import make_clip

    clip = make_clip("orbit", num_frames=4, height=48, width=80)
    pipeline = RewardPipeline(Settings(lpips_weights=weights_dir, renderer="torch_points"))
    result = pipeline(clip.frames, options=ScoreOptions(terms=["reconstruction"], long_side=80),
                      geometry_arrays=clip.geometry_arrays())  # fmt: skip
    metrics = result.terms["reconstruction"].metrics
    assert metrics["lpips"] is not None and metrics["lpips"] >= 0
