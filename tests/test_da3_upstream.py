"""Our DA3 backend against upstream depth_anything_3 itself, on the CPU: the same random
networks (built from the package's shipped configs: DA3-small as shipped, a tiny Giant with
its Gaussian head and a tiny nested Giant-Large, see tests/tiny_models.py) run through our
production loader and wrapper and through upstream's ``DepthAnything3.inference``.

Tolerances (fp32 on both sides): depth, confidence and intrinsics agree to 1e-6 relative
(measured: bit-identical), world-to-camera to 1e-6 absolute (we re-orthonormalise the
rotation: ~1e-7), the head's Gaussians field by field against upstream's own PLY export to
1e-5 relative. Against upstream as shipped (it autocasts to fp16 on a CPU): 1e-2. Figures:
bench/da3_parity.py, bench/RESULTS.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("depth_anything_3", reason="depth-anything-3 not installed (scripts/install.sh)")
# What depth_anything_3.api imports at module level (the dev extra installs them); only the
# tests that run upstream's API need them.
UPSTREAM_API_DEPENDENCIES = ("plyfile", "trimesh", "imageio", "moviepy.editor")


def needs_upstream_api() -> None:
    for name in UPSTREAM_API_DEPENDENCIES:
        pytest.importorskip(name, reason=f"upstream's API imports {name} (pip install -e '.[dev]')")

from service.pipeline.geometry import da3_checkpoint  # noqa: E402
from service.pipeline.geometry.da3 import DA3Geometry, processing_size  # noqa: E402
from service.pipeline.decode import load_video  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests import da3_parity  # noqa: E402
from tests.tiny_models import save_da3_small, save_tiny_da3  # noqa: E402

MODELS = ("da3-small", "da3-giant", "da3nested-giant-large")
PROCESS_RES = 84


@pytest.fixture(scope="module", autouse=True)
def offline_and_one_thread():
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    da3_checkpoint._LOADED.clear()
    yield
    da3_checkpoint._LOADED.clear()
    torch.set_num_threads(threads)
    patch.undo()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("da3_upstream")
    return {
        "da3-small": save_da3_small(root / "small", seed=0),
        "da3-giant": save_tiny_da3(root / "giant", "da3-giant", seed=1),
        "da3nested-giant-large": save_tiny_da3(root / "nested", "da3nested-giant-large", seed=2),
    }


@pytest.fixture(scope="module")
def frames():
    # uint8 source frames already at the processing size (56x84 for a long side of 84)
    return np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def runs(checkpoints, frames):
    """Per model, computed once: ours, and (``upstream=True``) upstream in fp32 (autocast off)."""
    cache = {}

    def get(model_name, upstream=True):
        if model_name not in cache:
            cache[model_name] = da3_parity.run_ours(checkpoints[model_name], frames, PROCESS_RES)
        ours, backend = cache[model_name]
        if not upstream:
            return ours, backend, None, None
        needs_upstream_api()
        key = (model_name, "upstream")
        if key not in cache:
            cache[key] = da3_parity.run_upstream(
                backend.loaded.network, model_name, frames, PROCESS_RES, fp32=True,
                infer_gs=backend.loaded.has_gaussian_head,
            )  # fmt: skip
        return (ours, backend, *cache[key])

    return get


def test_giant_with_its_gaussian_head_runs_infer_gs_through_the_production_loader(runs, frames):
    ours, backend, _, _ = runs("da3-giant", upstream=False)
    loaded = backend.loaded
    assert loaded.model_name == "da3-giant" and loaded.has_gaussian_head
    assert type(loaded.network).__name__ == "DepthAnything3Net"
    adapter = loaded.network.gs_adapter
    assert adapter.sh_degree == 2 and adapter.pred_offset_depth  # the Giant's head, as shipped
    t, h, w, _ = frames.shape
    gaussians = ours.gaussians
    assert gaussians["means"].shape == (t * h * w, 3)  # one per pixel (budget not reached)
    assert all(np.isfinite(value).all() for value in gaussians.values())
    assert backend.versions()["da3_gaussians"] == "head"


@pytest.mark.parametrize("model_name", MODELS)
def test_wrapper_matches_upstream_inference(runs, model_name):
    ours, _, theirs, _ = runs(model_name)
    report = da3_parity.compare(ours, theirs)
    for name in ("depth", "confidence", "intrinsics"):
        assert report[name]["max_rel"] <= 1e-6, (name, report[name])
    assert report["world_to_camera"]["max_abs"] <= 1e-6, report["world_to_camera"]


def test_wrapper_matches_upstream_as_shipped_with_its_cpu_autocast(runs, frames):
    ours, backend, _, _ = runs("da3-small")  # also checks the upstream API's dependencies
    theirs, _ = da3_parity.run_upstream(backend.loaded.network, "da3-small", frames, PROCESS_RES,
                                        fp32=False, infer_gs=False)  # fmt: skip
    report = da3_parity.compare(ours, theirs)
    for name in ("depth", "confidence", "intrinsics"):
        assert report[name]["max_rel"] <= 1e-2, (name, report[name])
    assert report["world_to_camera"]["max_abs"] <= 1e-2, report["world_to_camera"]


def test_head_gaussians_match_upstreams_own_export_field_by_field(runs):
    ours, _, theirs, prediction = runs("da3-giant")
    exported = da3_parity.exported_gaussians(prediction, theirs.depth)
    report = da3_parity.compare_gaussians(ours.gaussians, exported)
    for name, figures in report.items():
        assert figures["max_rel"] <= 1e-5, (name, figures)


def test_nested_gaussians_carry_the_metric_scale_of_depth_and_cameras(runs):
    """Upstream scales the nested model's depth and camera translations by its metric scale
    factor, not the head's Gaussians; ours are scaled too, so they live in the same scene as
    the cameras they are rendered with."""
    ours, _, theirs, prediction = runs("da3nested-giant-large")
    scale = theirs.scale_factor
    assert scale is not None and abs(np.log(scale)) > 1  # far from 1, or the test proves nothing
    exported = da3_parity.exported_gaussians(prediction, theirs.depth)
    exported["means"], exported["scales"] = exported["means"] * scale, exported["scales"] * scale
    report = da3_parity.compare_gaussians(ours.gaussians, exported)
    for name, figures in report.items():
        assert figures["max_rel"] <= 1e-5, (name, figures)


@pytest.mark.parametrize("source_hw, process_res", [((480, 832), 504), ((720, 1280), 504), ((1080, 1920), 504),
                                                    ((50, 700), 504), ((96, 160), 84), ((72, 128), 84)])  # fmt: skip
def test_processing_size_is_the_one_upstreams_input_processor_gives(source_hw, process_res):
    needs_upstream_api()
    da3_parity.upstream_api()  # binds the torchvision stand-in
    from depth_anything_3.utils.io.input_processor import InputProcessor
    image = np.zeros((*source_hw, 3), np.uint8)
    images, _, _ = InputProcessor()([image], process_res=process_res, num_workers=1)
    assert tuple(images.shape[-2:]) == processing_size(*source_hw, process_res)


def test_several_videos_share_a_forward_pass_only_where_upstream_allows_it(checkpoints):
    """Upstream's DPT head (the Giant's Gaussian head) breaks on a batch of videos with more
    than 8 frames; predict_many then runs them one by one. DualDPT-only networks batch, and
    each video's geometry is the one it gets alone."""
    from service.pipeline.geometry.da3 import why_videos_cannot_share_a_call

    rng = np.random.default_rng(3)
    sources = [rng.integers(0, 256, (9, 28, 42, 3), dtype=np.uint8) for _ in range(2)]
    for model_name, batches in (("da3-giant", False), ("da3-small", True)):
        settings = Settings(geometry_backend="da3", da3_model=str(checkpoints[model_name]), device="cpu",
                            da3_process_res=42, max_frames=9, long_side=42, da3_warm_up_shapes=["3x28x42"])  # fmt: skip
        backend = DA3Geometry(settings=settings)
        videos = [load_video(s, max_frames=9, long_side=42, geometry_size=backend.input_size) for s in sources]
        network = backend.loaded.network
        assert (why_videos_cannot_share_a_call(network, 9) is None) == batches
        if not batches:  # the upstream bug this guards against is still there
            stacked = torch.cat([backend.network_input(v) for v in videos])
            with pytest.raises(RuntimeError), torch.inference_mode():
                network(stacked, None, None, [], infer_gs=True)
        calls = []
        hook = network.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
        try:
            together = backend.predict_many(videos)
        finally:
            hook.remove()
        assert calls == ([2] if batches else [1, 1])
        for video, geometry in zip(videos, together):
            alone = backend.predict(video)
            torch.testing.assert_close(geometry.depth, alone.depth, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(geometry.world_to_camera, alone.world_to_camera, rtol=1e-4, atol=1e-5)
