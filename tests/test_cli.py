"""`reward3d score` and `reward3d info`: JSON output, renders on request, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.synthetic import make_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    clip = make_clip("push_in", 6, 54, 96, detail=0.5)
    np.save(folder / "clip.npy", clip.frames)
    np.savez(folder / "geometry.npz", **clip.geometry_arrays())
    return folder


def score(*args):
    return runner.invoke(app, ["score", *map(str, args)])


def test_score_json_with_known_geometry(files):
    result = score(files / "clip.npy", "--geometry-file", files / "geometry.npz",
                   "--prompt", "Camera push in.", "--long-side", 96, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload["terms"]) == {"reconstruction", "trajectory"}
    assert payload["terms"]["trajectory"]["score"] > 0.95  # exact poses of a push-in
    assert payload["terms"]["reconstruction"]["score"] > 0.45  # small frames: a modest score
    assert payload["total_terms"] == ["reconstruction", "trajectory"]
    assert payload["geometry"]["backend"] == "oracle" and payload["geometry"]["num_frames"] == 6
    assert set(payload["timings_ms"]) >= {"decode", "geometry", "gaussians", "render", "terms"}


def test_score_is_deterministic(files):
    runs = []
    for _ in range(2):
        result = score(files / "clip.npy", "--geometry-file", files / "geometry.npz",
                       "--long-side", 96, "--json")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout.strip().splitlines()[-1])
        payload.pop("timings_ms")
        runs.append(payload)
    assert runs[0] == runs[1]
    assert runs[0]["terms"]["trajectory"]["status"] == "not_applicable"  # no prompt, no poses
    assert runs[0]["total_terms"] == ["reconstruction"]


def test_table_output_and_saved_renders(files, tmp_path):
    result = score(files / "clip.npy", "--geometry-file", files / "geometry.npz", "--long-side", 96,
                   "--prompt", "Camera push in.", "--save-renders", tmp_path / "renders")
    assert result.exit_code == 0, result.output
    assert "reconstruction" in result.stdout and "total" in result.stdout
    written = sorted(p.name for p in (tmp_path / "renders").iterdir())
    assert written == [f"frame_{i:03d}.png" for i in range(6)] + ["trajectory.png"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.mp4"], "no such file"),
        (["clip.npy", "--geometry-file", "missing.npz"], "geometry file not found"),
        (["clip.npy", "--geometry", "oracle"], "needs --geometry-file"),
        (["clip.npy", "--terms", "reconstruction,bogus"], "invalid option"),
        (["clip.npy", "--max-frames", "1"], "invalid option"),
        (["clip.npy", "--trajectory", "poses.txt"], "trajectory file"),
        (["clip.npy", "--trajectory", "nan.json"], "finite"),
        (["clip.npy", "--geometry-file", "short.npz"], "geometry has 3 frames"),
        (["clip.npy", "--geometry-file", "nan.npz"], "NaN"),
        (["clip.npy", "--geometry-file", "notnpz.npz"], "cannot read geometry file"),
        (["bad.npy"], "dtype"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(files, tmp_path, args, message):
    clip = make_clip("push_in", 6, 54, 96, detail=0.5)
    (tmp_path / "poses.txt").write_text("1 2 3")
    (tmp_path / "nan.json").write_text(json.dumps({"camera_to_world": [[[float("nan")] * 4] * 4] * 2}))
    arrays = clip.geometry_arrays()
    np.savez(tmp_path / "short.npz", **{k: v[:3] for k, v in arrays.items()})
    np.savez(tmp_path / "nan.npz", **{**arrays, "world_to_camera": np.full_like(arrays["world_to_camera"], np.nan)})
    (tmp_path / "notnpz.npz").write_bytes(b"garbage")
    np.save(tmp_path / "bad.npy", np.zeros((4, 16, 16, 3), dtype=np.complex64))
    paths = {"clip.npy": files / "clip.npy"}
    resolved = [str(paths.get(a, tmp_path / a)) if a.endswith((".npy", ".npz", ".json", ".txt", ".mp4")) else a for a in args]
    result = runner.invoke(app, ["score", *resolved, "--long-side", "96"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_info_lists_backends_and_why():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["renderers"]["torch_points"]["usable"] is True
    assert report["geometry"]["oracle"]["usable"] is True
    assert "why" in report["renderers"]["gsplat"]


def test_auto_geometry_on_cpu_is_classical_without_importing_da3():
    # The CPU path must not pay for the DA3 module (and its imports) only to learn it is off.
    code = ("import sys; from service.settings import Settings; "
            "from service.pipeline.geometry import resolve_geometry_backend as r; "
            "print(r(Settings(geometry_backend='auto', device='cpu')).value, "
            "'service.pipeline.geometry.da3' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert out.stdout.split() == ["classical", "False"]
