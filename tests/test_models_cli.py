"""`reward3d models check` and the DA3 line of `reward3d info`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.tiny_models import save_tiny_qwen3_vl

runner = CliRunner()


def test_models_check_reports_configured_models(tmp_path, monkeypatch):
    pytest.importorskip("depth_anything_3")
    from tests.tiny_models import save_da3_small

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("REWARD3D_GEOMETRY_BACKEND", "da3")
    monkeypatch.setenv("REWARD3D_DA3_MODEL", str(save_da3_small(tmp_path / "da3")))
    monkeypatch.setenv("REWARD3D_VLM_MODEL", str(save_tiny_qwen3_vl(tmp_path / "vlm")))
    result = runner.invoke(app, ["models", "check", "--load", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["failed"] == []
    da3, vlm = report["models"]["da3"], report["models"]["vlm"]
    assert da3["found"] and da3["loaded"] and da3["licence"] == "Apache-2.0" and da3["model"] == "da3-small"
    assert "without Gaussian head" in da3["detail"]
    assert vlm["found"] and vlm["loaded"] and "digit token ids" in vlm["detail"]
    assert not report["models"]["lpips"]["configured"]


def test_models_check_fails_for_a_missing_configured_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("REWARD3D_GEOMETRY_BACKEND", "oracle")
    monkeypatch.setenv("REWARD3D_VLM_MODEL", str(tmp_path / "missing"))
    monkeypatch.setenv("REWARD3D_LPIPS_WEIGHTS", str(tmp_path / "nothing.pth"))
    result = runner.invoke(app, ["models", "check", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == ["lpips", "vlm"]
    assert "does not exist" in report["models"]["vlm"]["where"]


def test_info_names_the_da3_backbone_path(monkeypatch):
    monkeypatch.setenv("REWARD3D_DEVICE", "cpu")  # a CUDA machine with triton would plan torch_compile
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["active"]["da3_acceleration"].startswith("eager")


def test_models_list_says_each_checkpoints_licence_and_gaussians(monkeypatch):
    monkeypatch.setenv("REWARD3D_DA3_MODEL", "depth-anything/DA3-GIANT")
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    da3 = json.loads(result.stdout)["da3"]
    default = [name for name, entry in da3.items() if entry["default"]]
    assert default == ["da3-base"] and da3["da3-base"]["licence"] == "Apache-2.0"
    assert "pixel-aligned" in da3["da3-base"]["gaussians"]  # ours: commercially usable default
    assert da3["da3-giant"]["licence"] == "CC-BY-NC-4.0" and "head" in da3["da3-giant"]["gaussians"]
    assert da3["da3-giant"]["configured"] and not da3["da3-base"]["configured"]
    from service.settings import Settings

    assert Settings.model_fields["da3_model"].default == da3["da3-base"]["hub_id"]
