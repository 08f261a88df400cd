"""Depth Anything 3 backend: production loading of a tiny random checkpoint (offline), the
whole pipeline on a few small frames, and the conversions at the adapter (pure, on tensors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("depth_anything_3", reason="depth-anything-3 not installed (scripts/install.sh)")

from service.pipeline.geometry import da3_checkpoint  # noqa: E402
from service.pipeline.geometry.da3 import (  # noqa: E402
    MAX_FOV_DEG,
    MIN_FOV_DEG,
    RawPrediction,
    clamp_intrinsics,
    confidence_to_unit,
    extrinsics_to_world_to_camera,
    head_gaussians_to_ours,
    prediction_to_geometry,
    preprocess_frames,
    processing_size,
    scale_intrinsics,
)
from service.pipeline.geometry.da3_checkpoint import CheckpointError, load_da3  # noqa: E402
from service.pipeline.types import GeometryError  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.synthetic import make_clip  # noqa: E402
from tests.tiny_models import save_da3_small  # noqa: E402


@pytest.fixture(scope="module")
def da3_dir(tmp_path_factory):
    return save_da3_small(tmp_path_factory.mktemp("da3_small"), seed=0)


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    da3_checkpoint._LOADED.clear()  # make the loader really read the directory
    yield
    da3_checkpoint._LOADED.clear()


def da3_settings(da3_dir, **extra) -> Settings:
    values = dict(geometry_backend="da3", da3_model=str(da3_dir), da3_process_res=84,
                  renderer="torch_points", max_frames=6, long_side=80, device="cpu",
                  da3_warm_up_shapes=["6x48x80"])  # fmt: skip
    return Settings(**{**values, **extra})


# -- loading ---------------------------------------------------------------------------------
def test_saved_checkpoint_has_the_hub_layout(da3_dir):
    config = json.loads((da3_dir / "config.json").read_text())
    assert config["model_name"] == "da3-small"
    assert config["config"]["__object__"]["name"] == "DepthAnything3Net"
    from safetensors import safe_open

    with safe_open(str(da3_dir / "model.safetensors"), "pt") as handle:
        assert all(key.startswith("model.") for key in handle.keys())


def test_reloaded_offline_through_the_production_loader(da3_dir, offline):
    torch.manual_seed(0)
    reference = da3_checkpoint.DA3Checkpoint.from_preset("da3-small").model.state_dict()
    loaded = load_da3(str(da3_dir), device=torch.device("cpu"))
    assert loaded.model_name == "da3-small" and not loaded.has_gaussian_head
    state = loaded.network.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    assert load_da3(str(da3_dir), device=torch.device("cpu")) is loaded  # once per process


def test_missing_checkpoint_is_a_clear_error(tmp_path, offline):
    with pytest.raises(CheckpointError, match="cannot load DA3 checkpoint"):
        load_da3(str(tmp_path / "nowhere"), device=torch.device("cpu"))
    directory, why = da3_checkpoint.resolve_checkpoint(str(tmp_path))
    assert directory is None and "lacks config.json" in why


def test_config_without_a_network_description_falls_back_to_the_preset(da3_dir, offline, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(da3_dir / "model.safetensors", bare / "model.safetensors")
    (bare / "config.json").write_text(json.dumps({"model_name": "da3-small"}))  # no "config"
    loaded = load_da3(str(bare), device=torch.device("cpu"))
    assert loaded.model_name == "da3-small"
    reference = load_da3(str(da3_dir), device=torch.device("cpu")).network.state_dict()
    state = loaded.network.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


def test_availability_reads_the_settings_it_is_given(da3_dir, offline, monkeypatch):
    from service.pipeline.geometry import da3, geometry_availability, resolve_geometry_backend
    from service.settings import get_settings

    monkeypatch.setenv("REWARD3D_DA3_MODEL", str(da3_dir / "not-here"))  # the process settings
    get_settings.cache_clear()
    try:
        given = da3_settings(da3_dir, geometry_backend="auto")
        ok, why = da3.is_available(given)
        assert ok and str(da3_dir) in why
        assert geometry_availability(given)["da3"][0] is True
        assert da3.is_available()[0] is False  # no settings: the process ones
        # auto picks DA3 only on CUDA, so on a CPU the given settings still mean classical.
        assert resolve_geometry_backend(given).value == "classical"
    finally:
        get_settings.cache_clear()


def test_config_naming_code_outside_the_package_is_refused():
    config = {"__object__": {"path": "os", "name": "system", "args": "as_params"}}
    with pytest.raises(CheckpointError, match="outside the depth_anything_3 package"):
        da3_checkpoint.build_network(config)
    nested = {"__object__": {"path": "depth_anything_3.model.da3", "name": "X"},
              "net": {"__object__": {"path": "subprocess", "name": "run"}}}  # fmt: skip
    with pytest.raises(CheckpointError, match="net"):
        da3_checkpoint.check_config_is_safe(nested)


# -- the whole pipeline ------------------------------------------------------------------------
def test_pipeline_runs_with_random_da3_and_returns_finite_terms(da3_dir, offline):
    from service.pipeline import RewardPipeline

    clip = make_clip("orbit", num_frames=6, height=48, width=80)
    pipeline = RewardPipeline(da3_settings(da3_dir))
    output = pipeline.run(clip.frames, prompt="The camera orbits to the left.")
    result = output.result
    assert result.geometry.backend == "da3"
    assert (result.geometry.height, result.geometry.width) == (48, 80)
    for name in ("reconstruction", "trajectory"):
        term = result.terms[name]
        assert term.status.value == "ok", term.reason
        assert math.isfinite(term.score) and 0 <= term.score <= 1
    assert math.isfinite(result.total)
    # Random-init cameras: every focal length ends up within the allowed field of view.
    intrinsics = torch.tensor(result.geometry.intrinsics)
    fov_x = 2 * torch.rad2deg(torch.atan(0.5 * 80 / intrinsics[:, 0, 0]))
    fov_y = 2 * torch.rad2deg(torch.atan(0.5 * 48 / intrinsics[:, 1, 1]))
    for fov in (fov_x, fov_y):
        assert bool(((fov >= MIN_FOV_DEG - 1e-6) & (fov <= MAX_FOV_DEG + 1e-6)).all())
    diagnostics = result.geometry.diagnostics
    assert diagnostics["da3_process_size"] == "56x84"
    assert diagnostics["da3_cameras_clamped"] >= 1  # this seed's pose head says fy ~ 1e7 px
    versions = result.versions.backends
    assert versions["da3_licence"] == "Apache-2.0" and versions["da3_acceleration"] == "eager"
    # Deterministic: the same clip again gives the same result.
    again = pipeline.run(clip.frames, prompt="The camera orbits to the left.").result
    assert again.terms["reconstruction"].score == result.terms["reconstruction"].score
    assert again.geometry.world_to_camera == result.geometry.world_to_camera


def test_da3_sees_the_source_frames_resized_once(da3_dir, offline):
    """The network's input is each sampled source frame resized once (area) to the
    processing size, not the working-resolution frame enlarged again."""
    from service.pipeline import RewardPipeline
    from service.pipeline.decode import resize_source_frame
    from service.pipeline.geometry.da3 import normalise_uint8_frames
    from service.schemas import ScoreOptions

    source = np.random.default_rng(1).integers(0, 256, (4, 96, 160, 3), dtype=np.uint8)
    pipeline = RewardPipeline(da3_settings(da3_dir, da3_warm_up_shapes=["4x96x160"]))
    network = pipeline.geometry_model().loaded.network
    seen = []
    hook = network.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        output = pipeline.run(source, options=ScoreOptions(terms=["trajectory"], max_frames=4))
    finally:
        hook.remove()
    assert (output.video.height, output.video.width) == (48, 80)  # working size (long side 80)
    (images,) = seen
    size = processing_size(96, 160, 84)
    assert size == (56, 84) and images.shape == (1, 4, 3, *size)
    expected = normalise_uint8_frames(torch.from_numpy(np.stack([resize_source_frame(f, size) for f in source])))
    torch.testing.assert_close(images, expected, atol=0, rtol=0)
    # What the network saw before: the 48x80 working frames enlarged to 56x84 (blurrier).
    upsampled = preprocess_frames(output.video.frames, size)
    assert float((upsampled - expected).abs().max()) > 0.5
    # Geometry comes back at the working size, whatever the processing aspect was.
    geometry = output.geometry
    assert geometry.depth.shape == (4, 48, 80) and geometry.diagnostics["da3_process_size"] == "56x84"


def test_warm_up_runs_every_configured_shape_twice_with_three_or_more_frames(da3_dir, offline, monkeypatch):
    from service.pipeline.geometry import acceleration
    from service.pipeline.geometry.da3 import DA3Geometry

    # A compiled path "available" on this CPU (the compiler a stand-in that compiles nothing),
    # so warm-up takes the compiled branch; the shapes it runs are what is checked.
    monkeypatch.setattr(acceleration, "candidate_paths", lambda mode, device: ["torch_compile", "eager"])
    monkeypatch.setattr(acceleration, "path_prerequisites", lambda path: (True, "stand-in"))
    monkeypatch.setattr(acceleration, "compile_backbone", lambda module, path, engine_cache: module)
    shapes = []
    original = DA3Geometry._forward

    def recording(self, images, path=None):
        shapes.append((tuple(images.shape), path))
        return original(self, images, path)

    monkeypatch.setattr(DA3Geometry, "_forward", recording)
    settings = da3_settings(da3_dir, da3_compile="torch_compile", da3_warm_up_shapes=["5x96x160", "3x48x48"])
    backend = DA3Geometry(settings=settings)
    assert backend.acceleration.path == "torch_compile"
    first, second = (1, 5, 3, 56, 84), (1, 3, 3, 84, 84)
    assert shapes == [(first, "torch_compile")] * 2 + [(second, "torch_compile")] * 2
    # Plain eager (the CPU): one pass, at the first shape.
    shapes.clear()
    monkeypatch.setattr(acceleration, "candidate_paths", lambda mode, device: ["eager"])
    DA3Geometry(settings=da3_settings(da3_dir, da3_warm_up_shapes=["5x96x160", "3x48x48"]))
    assert shapes == [(first, "eager")]


def test_compiled_backbone_does_not_recompile_for_a_request_of_a_warmed_up_shape(da3_dir, offline, monkeypatch):
    """A real torch.compile of the DA3 backbone on the CPU (dynamo with its ``eager`` backend:
    the graph capture, guards and recompiles are dynamo's; only code generation is skipped,
    it needs triton on CUDA). After warm-up, a request of a configured shape compiles nothing."""
    from torch._dynamo.utils import counters

    from service.pipeline import RewardPipeline
    from service.pipeline.geometry import acceleration
    from service.schemas import ScoreOptions

    def compile_with_dynamo_only(module, path, engine_cache):
        return torch.compile(module, backend="eager", dynamic=None)  # as compile_backbone, minus codegen

    monkeypatch.setattr(acceleration, "candidate_paths", lambda mode, device: ["torch_compile", "eager"])
    monkeypatch.setattr(acceleration, "path_prerequisites", lambda path: (True, "stand-in"))
    monkeypatch.setattr(acceleration, "compile_backbone", compile_with_dynamo_only)

    def graphs_compiled() -> int:
        return int(counters["stats"]["unique_graphs"])

    torch._dynamo.reset()
    counters.clear()
    try:
        settings = da3_settings(da3_dir, da3_compile="torch_compile", da3_warm_up_shapes=["4x48x80"],
                                max_frames=4)  # fmt: skip
        pipeline = RewardPipeline(settings)
        assert pipeline.geometry_model().acceleration.path == "torch_compile"
        after_warm_up = graphs_compiled()
        assert after_warm_up > 0  # the counter does see compilation
        clip = make_clip("orbit", num_frames=4, height=48, width=80)
        frames = (np.asarray(clip.frames) * 255).round().astype(np.uint8)
        pipeline.run(frames, options=ScoreOptions(terms=["trajectory"]))
        assert graphs_compiled() == after_warm_up, "a request of the warmed-up shape recompiled"
    finally:
        torch._dynamo.reset()


# -- conversions at the adapter (pure) -------------------------------------------------------
def test_processing_size_is_patch_aligned_and_keeps_the_aspect():
    assert processing_size(480, 832, 504) == (294, 504)
    for height, width, res in [(72, 128, 84), (300, 300, 140), (50, 700, 504), (10, 20, 28)]:
        h, w = processing_size(height, width, res)
        assert h % 14 == 0 and w % 14 == 0 and min(h, w) >= 14
        assert abs(max(h, w) - res) <= 7
    frames = torch.rand(3, 48, 80, 3)
    images = preprocess_frames(frames, (56, 84))
    assert images.shape == (1, 3, 3, 56, 84)
    grey = preprocess_frames(torch.full((1, 14, 14, 3), 0.485), (14, 14))
    assert abs(float(grey[0, 0, 0].mean())) < 1e-6  # ImageNet mean maps to 0 in channel 0


def test_intrinsics_scale_with_the_image():
    processed = torch.tensor([[[50.0, 0, 42], [0, 60.0, 28], [0, 0, 1]]])
    working = scale_intrinsics(processed, (56, 84), (48, 80))
    # A point's pixel position scales with the image: u' = u * W'/W, v' = v * H'/H.
    point = torch.tensor([0.3, -0.2, 2.0], dtype=torch.float64)
    uv_processed = (processed[0].double() @ point)[:2] / point[2]
    uv_working = (working[0] @ point)[:2] / point[2]
    assert torch.allclose(uv_working, uv_processed * torch.tensor([80 / 84, 48 / 56], dtype=torch.float64))


def test_absurd_focal_lengths_are_clamped_and_reported():
    intrinsics = torch.tensor([[[1e7, 0, 40], [0, 1e-3, 24], [0, 0, 1]],
                               [[60.0, 0, 40], [0, 60.0, 24], [0, 0, 1]]], dtype=torch.float64)  # fmt: skip
    clamped, was_clamped = clamp_intrinsics(intrinsics, 48, 80)
    assert was_clamped.tolist() == [True, False]
    assert torch.equal(clamped[1], intrinsics[1])
    fov_x = math.degrees(2 * math.atan(40 / float(clamped[0, 0, 0])))
    fov_y = math.degrees(2 * math.atan(24 / float(clamped[0, 1, 1])))
    assert fov_x == pytest.approx(MIN_FOV_DEG) and fov_y == pytest.approx(MAX_FOV_DEG)


def raw_prediction(num_frames=3, h=28, w=42, focal=30.0, gaussians=None) -> RawPrediction:
    extrinsics = torch.zeros(num_frames, 3, 4)
    extrinsics[:, :3, :3] = torch.eye(3)
    extrinsics[:, 0, 3] = torch.arange(num_frames) * 0.1
    intrinsics = torch.tensor([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]]).repeat(num_frames, 1, 1)
    return RawPrediction(depth=torch.full((num_frames, h, w), 2.0),
                         confidence=torch.full((num_frames, h, w), 3.0),
                         extrinsics=extrinsics, intrinsics=intrinsics, gaussians=gaussians)  # fmt: skip


def test_prediction_to_geometry_converts_to_our_conventions():
    raw = raw_prediction()
    raw.depth[0, 0, 0] = float("nan")
    raw.depth[1, 0, 0] = -1.0
    geometry = prediction_to_geometry(raw, working_hw=(24, 36))
    assert geometry.depth.shape == (3, 24, 36)
    assert geometry.world_to_camera.shape == (3, 4, 4) and geometry.world_to_camera.dtype == torch.float64
    assert torch.equal(geometry.world_to_camera[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(3, 4))
    assert geometry.world_to_camera[2, 0, 3] == pytest.approx(0.2)
    assert geometry.intrinsics[0, 0, 0] == pytest.approx(30.0 * 36 / 42)
    assert geometry.intrinsics[0, 1, 2] == pytest.approx(12.0)
    assert float(geometry.depth[0, 0, 0]) == 0.0 and float(geometry.confidence[0, 0, 0]) == 0.0
    assert float(geometry.depth[1, 0, 0]) == 0.0
    assert float(geometry.confidence[2, 5, 5]) == pytest.approx(1 - 1 / 3)
    assert geometry.diagnostics["da3_cameras_clamped"] == 0


def test_non_finite_cameras_or_depth_fail_with_a_reason():
    raw = raw_prediction()
    raw.extrinsics[1, 0, 3] = float("inf")
    with pytest.raises(GeometryError, match="non-finite cameras"):
        prediction_to_geometry(raw, working_hw=(24, 36))
    raw = raw_prediction()
    raw.depth.fill_(float("nan"))
    with pytest.raises(GeometryError, match="no finite positive depth"):
        prediction_to_geometry(raw, working_hw=(24, 36))


def test_extrinsics_are_reorthonormalised():
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    rotation = rotation * torch.sign(torch.det(rotation))
    extrinsics = torch.cat([rotation + 1e-3 * torch.randn(3, 3, dtype=torch.float64),
                            torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)], dim=1)[None]  # fmt: skip
    world_to_camera = extrinsics_to_world_to_camera(extrinsics)
    r = world_to_camera[0, :3, :3]
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert float(torch.det(r)) == pytest.approx(1.0)
    assert torch.allclose(r, rotation, atol=5e-3)


def test_confidence_maps_into_the_unit_interval():
    conf = torch.tensor([1.0, 2.0, 10.0, float("inf"), 0.5])
    assert torch.allclose(confidence_to_unit(conf), torch.tensor([0.0, 0.5, 0.9, 1.0, 0.0]))


def test_gaussian_head_output_becomes_our_gaussians_within_budget():
    frames, h, w = 2, 8, 12
    count = frames * h * w
    means = torch.randn(count, 3)
    harmonics = torch.zeros(count, 3, 9)
    harmonics[:, :, 0] = 1.0  # DC only: colour = 0.5 + C0
    gaussians = head_gaussians_to_ours(
        means, torch.full((count, 3), 0.01), torch.tensor([[2.0, 0, 0, 0]]).repeat(count, 1),
        harmonics, torch.full((count,), 0.7), num_frames=frames, height=h, width=w,
        max_gaussians=48,
    )  # fmt: skip
    assert gaussians.num_gaussians == 2 * 4 * 6  # stride 2 on each frame
    assert torch.allclose(gaussians.colors, torch.full_like(gaussians.colors, 0.5 + 0.28209479177387814))
    assert torch.allclose(gaussians.quats, torch.tensor([[1.0, 0, 0, 0]]).expand_as(gaussians.quats))
    assert torch.allclose(gaussians.scales, torch.full_like(gaussians.scales, 0.02))  # grown by the stride
    assert gaussians.source_frame.tolist() == [0] * 24 + [1] * 24
    # The kept Gaussians are the centres of 2x2 blocks: pixel (1, 1) of frame 0 first.
    assert torch.equal(gaussians.means[0], means[1 * w + 1])


def test_head_gaussians_follow_the_scene_scale():
    count = 2 * 4 * 6
    means, scales = torch.randn(count, 3), torch.rand(count, 3)
    arguments = dict(rotations_wxyz=torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1),
                     harmonics=torch.zeros(count, 3, 9), opacities=torch.full((count,), 0.5),
                     num_frames=2, height=4, width=6, max_gaussians=10_000)  # fmt: skip
    plain = head_gaussians_to_ours(means, scales, **arguments)
    metric = head_gaussians_to_ours(means, scales, scene_scale=2.5, **arguments)
    torch.testing.assert_close(metric.means, 2.5 * plain.means)
    torch.testing.assert_close(metric.scales, 2.5 * plain.scales)
    torch.testing.assert_close(metric.quats, plain.quats)
    torch.testing.assert_close(metric.colors, plain.colors)


def test_clamped_cameras_drop_the_head_gaussians():
    from service.pipeline.types import Gaussians

    head = Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]),
                     scales=torch.ones(1, 3), opacities=torch.ones(1), colors=torch.ones(1, 3),
                     source_frame=torch.zeros(1, dtype=torch.long))  # fmt: skip
    assert prediction_to_geometry(raw_prediction(gaussians=head), working_hw=(28, 42)).gaussians is head
    absurd = prediction_to_geometry(raw_prediction(focal=1e8, gaussians=head), working_hw=(28, 42))
    assert absurd.gaussians is None and absurd.diagnostics["gaussians_from_head"] is False


# -- GPU ----------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_da3_on_cuda_bf16_with_acceleration(da3_dir, offline, tmp_path):
    from service.pipeline import RewardPipeline

    clip = make_clip("orbit", num_frames=8, height=72, width=128)
    settings = da3_settings(da3_dir, device="cuda", renderer="auto", da3_process_res=126,
                            da3_engine_cache=tmp_path / "engines", max_frames=8, long_side=128)  # fmt: skip
    pipeline = RewardPipeline(settings)
    result = pipeline(np.asarray(clip.frames), prompt="The camera orbits to the left.")
    assert result.geometry.backend == "da3"
    assert all(math.isfinite(t.score) for t in result.terms.values() if t.score is not None)
    # Eager is what a failed acceleration falls back to: here it counts as a failure (unless
    # no compiler is installed at all, which is a skip, not a pass).
    from service.pipeline.geometry.acceleration import path_prerequisites

    if not any(path_prerequisites(path)[0] for path in ("tensorrt", "torch_compile")):
        pytest.skip("neither torch-tensorrt nor triton is installed: nothing to accelerate with")
    path = result.versions.backends["da3_acceleration"]
    reason = pipeline.geometry_model().acceleration.reason
    assert path in ("tensorrt", "torch_compile"), f"acceleration fell back to {path}: {reason}"
