"""Geometry backend ``da3``: Depth Anything 3 predicts depth, confidence and cameras for all
frames in one forward pass (and, for checkpoints with a Gaussian head, 3D Gaussians).

Data flow of :meth:`DA3Geometry.predict`:

1. the sampled SOURCE frames, resized once at decode (uint8; area when shrinking, cubic when
   enlarging) so the long side is ``da3_process_res`` and each side a multiple of 14 (DA3's
   patch size, the size upstream's ``upper_bound_resize`` gives), ImageNet-normalised:
   ``[1,T,3,h,w]`` (a Video decoded without them: its working frames, resized again);
2. one forward pass: bf16 autocast on CUDA (optionally a TensorRT / torch.compile backbone,
   see acceleration.py); a plain fp32 call on CPU (no autocast: DA3's own ``inference()``
   picks fp16 autocast on CPU, 2-3x slower);
3. convert at this adapter (nowhere else) to our conventions (docs/conventions.md):
   DA3's ``extrinsics`` are world-to-camera [T,3,4] in OpenCV axes -> ``world_to_camera``
   [T,4,4]; intrinsics are in pixels at the processed size -> scaled to the working size;
   depth (z-depth) and confidence resized to the working size (nearest: no flying pixels
   across depth edges); DA3's confidence (1 + exp(x), in (1, inf)) -> ``1 - 1/conf`` in [0,1);
4. sanity: non-finite depth becomes "unknown" (0); non-finite cameras raise GeometryError;
   focal lengths outside a 5-160 degree field of view (random-init weights give 1e7 px) are
   clamped into it, and the clamp is reported in the diagnostics;
5. Gaussian head (when the checkpoint has one and no camera was clamped): its world-space
   Gaussians (DC colour of their spherical harmonics, subsampled to the budget) are handed to
   the pipeline in ``Geometry.gaussians``; otherwise the pipeline lifts its own.

The network is loaded once per process (da3_checkpoint.load_da3) and warmed up when the
backend is built, at the shapes real requests will have (``da3_warm_up_shapes``), so a
compiled backbone does not recompile inside a request. Several videos can share one forward
pass (``predict_many``) where upstream's heads allow it (why_videos_cannot_share_a_call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.pipeline.device import resolve_device
from service.pipeline.gaussians import grid_stride
from service.pipeline.geometry import acceleration
from service.pipeline.geometry.acceleration import (
    AccelerationResult,
    accelerate_backbone,
    mark_frames_dynamic,
)
from service.pipeline.geometry.da3_checkpoint import (
    LICENCES,
    CheckpointError,
    load_da3,
    package_available,
    resolve_checkpoint,
)
from service.pipeline.types import Gaussians, Geometry, GeometryError, Video
from service.settings import Settings, get_settings

PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_FOV_DEG = 5.0  # narrower than a long telephoto: not a camera a video model produces
MAX_FOV_DEG = 160.0  # wider than any rectilinear lens
SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: colour = 0.5 + SH_C0 * dc
DPT_CHUNK = 8  # frames per chunk in upstream's DPT head (its forward's default chunk_size)
# Stochastic bits inside the network (sky-depth quantiles on random pixel samples in the
# metric/nested variants) are seeded, so the same video gives the same geometry every time.
FORWARD_SEED = 0


def is_available(settings: Settings | None = None) -> tuple[bool, str]:
    """Can DA3 run here with ``settings`` (default: the process settings)?"""
    ok, why = package_available()
    if not ok:
        return False, why
    source = (settings or get_settings()).da3_model
    directory, where = resolve_checkpoint(source)
    if directory is None:
        return False, f"checkpoint not found: {where}"
    return True, f"{where}"


# -- 1. pre-processing (pure) ---------------------------------------------------------------
def processing_size(height: int, width: int, process_res: int) -> tuple[int, int]:
    """(h, w) DA3 processes an H x W source at: the long side scaled to ``process_res``
    (sides rounded to whole pixels), then each side to its nearest multiple of 14 (ties
    upwards, at least 14): the size upstream's ``upper_bound_resize`` arrives at."""

    def nearest_multiple(side: int) -> int:
        down = side // PATCH * PATCH
        return max(PATCH, down + PATCH if side - down >= PATCH - (side - down) else down)

    scale = process_res / max(height, width)
    return (nearest_multiple(max(1, round(height * scale))),
            nearest_multiple(max(1, round(width * scale))))  # fmt: skip


def normalise_uint8_frames(frames: Tensor) -> Tensor:
    """frames [T,h,w,3] uint8 RGB (already at the processing size) -> network input
    [1,T,3,h,w] float32, ImageNet-normalised (x / 255, minus mean, over std)."""
    images = frames.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std)[None].contiguous()


def preprocess_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """frames [T,H,W,3] float in [0,1] -> network input [1,T,3,h,w], ImageNet-normalised.
    The fallback for videos without ``geometry_frames`` (a resize of already resized frames)."""
    images = frames.permute(0, 3, 1, 2).float()
    if tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                               antialias=True).clamp(0, 1)  # fmt: skip
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std)[None].contiguous()


# -- 3./4. conversion to our conventions (pure) ---------------------------------------------
def extrinsics_to_world_to_camera(extrinsics: Tensor) -> Tensor:
    """DA3 world-to-camera [T,3,4] (or [T,4,4]), OpenCV axes -> ``world_to_camera`` [T,4,4]
    float64, its rotation re-orthonormalised (the network's quaternion is normalised in
    low precision)."""
    extrinsics = extrinsics.to(torch.float64)
    count = extrinsics.shape[0]
    u, _, vh = torch.linalg.svd(extrinsics[:, :3, :3])
    rotation = u @ vh
    flip = torch.det(rotation) < 0  # an improper result: flip the smallest direction
    if flip.any():
        u = u.clone()
        u[flip, :, -1] *= -1
        rotation = u @ vh
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    world_to_camera[:, :3, :3] = rotation
    world_to_camera[:, :3, 3] = extrinsics[:, :3, 3]
    return world_to_camera


def scale_intrinsics(intrinsics: Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Tensor:
    """Intrinsics [T,3,3] in pixels at ``from_hw`` -> pixels at ``to_hw`` (pixel centres at
    +0.5, the image spanning [0,W] x [0,H], so a resize scales fx, cx by W'/W and fy, cy by H'/H)."""
    scaled = intrinsics.to(torch.float64).clone()
    scaled[:, 0, :] *= to_hw[1] / from_hw[1]
    scaled[:, 1, :] *= to_hw[0] / from_hw[0]
    scaled[:, 2, :] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    return scaled


def clamp_intrinsics(intrinsics: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Keep focal lengths within a MIN_FOV_DEG..MAX_FOV_DEG field of view and the principal
    point inside the image. intrinsics [T,3,3] pixels -> (clamped [T,3,3], was_clamped [T])."""
    out = intrinsics.clone()

    def focal_range(size: int) -> tuple[float, float]:
        half = 0.5 * size
        return (half / math.tan(math.radians(MAX_FOV_DEG / 2)),
                half / math.tan(math.radians(MIN_FOV_DEG / 2)))  # fmt: skip

    fx_lo, fx_hi = focal_range(width)
    fy_lo, fy_hi = focal_range(height)
    out[:, 0, 0] = out[:, 0, 0].clamp(fx_lo, fx_hi)
    out[:, 1, 1] = out[:, 1, 1].clamp(fy_lo, fy_hi)
    out[:, 0, 2] = out[:, 0, 2].clamp(0, width)
    out[:, 1, 2] = out[:, 1, 2].clamp(0, height)
    clamped = (out != intrinsics).flatten(1).any(dim=1)
    return out, clamped


def confidence_to_unit(confidence: Tensor) -> Tensor:
    """DA3 confidence (1 + exp(x), in (1, inf)) -> [0,1): conf 2 -> 0.5, conf 10 -> 0.9."""
    return (1.0 - 1.0 / confidence.clamp_min(1.0)).nan_to_num(0.0)


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """[T,h,w] -> [T,H,W] by nearest neighbour (depth must not blend across edges)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="nearest")[:, 0]


def head_gaussians_to_ours(
    means: Tensor,  # [T*h*w,3] world points, frame-major (view, row, column)
    scales: Tensor,  # [T*h*w,3] std devs, scene units
    rotations_wxyz: Tensor,  # [T*h*w,4] world rotations, wxyz
    harmonics: Tensor,  # [T*h*w,3,K] spherical-harmonic coefficients (K = (degree+1)^2)
    opacities: Tensor,  # [T*h*w] in [0,1]
    *,
    num_frames: int,
    height: int,
    width: int,
    max_gaussians: int,
    scene_scale: float = 1.0,
) -> Gaussians:
    """DA3's pixel-aligned head output -> our Gaussians, within the budget.

    ``scene_scale`` multiplies means and scales: nested checkpoints rescale depth and camera
    translations to metric units after the head has run (upstream leaves the head's
    Gaussians in the network's own units), so the Gaussians must follow, or they would be
    rendered with cameras from a differently sized scene.

    Colour is the view-independent part (degree-0 band) of the spherical harmonics: our
    renderers take RGB. Over budget, every s-th pixel in each direction is kept and its scale
    grows by s so the kept Gaussians still cover the image (as in gaussians.lift_gaussians).
    """
    stride = grid_stride(height * width, num_frames, max_gaussians)
    grid = torch.arange(num_frames * height * width, device=means.device).view(num_frames, height, width)
    offset = stride // 2
    keep = grid[:, offset::stride, offset::stride].reshape(-1)
    colours = (0.5 + SH_C0 * harmonics[keep, :, 0]).clamp(0, 1)
    quats = rotations_wxyz[keep].float()
    quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    gaussians = Gaussians(
        means=(means[keep].float() * scene_scale).contiguous(),
        quats=quats.contiguous(),
        scales=(scales[keep].float() * (stride * scene_scale)).contiguous(),
        opacities=opacities[keep].float().clamp(0, 1).contiguous(),
        colors=colours.float().contiguous(),
        source_frame=(keep // (height * width)).to(torch.long),
    )
    finite = (
        torch.isfinite(gaussians.means).all(-1)
        & torch.isfinite(gaussians.scales).all(-1)
        & torch.isfinite(gaussians.quats).all(-1)
        & torch.isfinite(gaussians.opacities)
    )
    return gaussians if bool(finite.all()) else gaussians.select(finite)


@dataclass(frozen=True)
class RawPrediction:
    """What one DA3 forward pass gives, batch dimension removed, on the CPU in float32."""

    depth: Tensor  # [T,h,w] z-depth
    confidence: Tensor  # [T,h,w] in (1, inf)
    extrinsics: Tensor  # [T,3,4] world-to-camera, OpenCV
    intrinsics: Tensor  # [T,3,3] pixels at h x w
    gaussians: Gaussians | None  # from the Gaussian head, world frame (None: no head)


def prediction_to_geometry(
    raw: RawPrediction, *, working_hw: tuple[int, int], backend: str = "da3", **diagnostics
) -> Geometry:
    """Steps 3-5 above: DA3's outputs at the processed size -> our Geometry at the working size."""
    processed_hw = tuple(raw.depth.shape[-2:])
    if not (torch.isfinite(raw.extrinsics).all() and torch.isfinite(raw.intrinsics).all()):
        raise GeometryError("DA3 returned non-finite cameras (NaN or inf in its pose head)")
    world_to_camera = extrinsics_to_world_to_camera(raw.extrinsics)
    intrinsics = scale_intrinsics(raw.intrinsics, processed_hw, working_hw)
    intrinsics, clamped = clamp_intrinsics(intrinsics, *working_hw)

    depth = raw.depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    confidence = torch.where(valid, confidence_to_unit(raw.confidence.float()), 0.0)
    depth = torch.where(valid, depth, 0.0)
    if not bool(valid.any()):
        raise GeometryError("DA3 returned no finite positive depth")
    depth = resize_maps(depth, working_hw)
    confidence = resize_maps(confidence, working_hw)

    # The head's Gaussians were placed with the network's own cameras: useless if we had to
    # clamp those cameras (the pipeline then lifts its own from the clamped ones).
    gaussians = raw.gaussians if not bool(clamped.any()) else None
    positive = confidence[confidence > 0]
    return Geometry(
        depth=depth.contiguous(),
        confidence=confidence.clamp(0, 1).contiguous(),
        world_to_camera=world_to_camera,
        intrinsics=intrinsics,
        registered=torch.ones(depth.shape[0], dtype=torch.bool),
        backend=backend,
        diagnostics={
            "da3_process_size": f"{processed_hw[0]}x{processed_hw[1]}",
            "da3_cameras_clamped": int(clamped.sum()),
            "da3_valid_depth_fraction": float(valid.float().mean()),
            "da3_confidence_median": float(positive.median()) if positive.numel() else 0.0,
            "gaussians_from_head": gaussians is not None,
            **diagnostics,
        },
        gaussians=gaussians,
    )


def why_videos_cannot_share_a_call(network: nn.Module, num_frames: int) -> str | None:
    """Why ``network`` must not see several videos in one call of ``num_frames`` frames, or
    None when it may.

    - Upstream's ``DPT`` head (metric/mono branches and the Giant's Gaussian head, which
      subclasses it) splits frames into chunks of ``DPT_CHUNK`` with a loop over ``S`` on
      features already flattened to ``B*S``: with B > 1 and S > DPT_CHUNK it processes only
      the first video's frames (``DualDPT`` loops over ``B*S``, as fixed upstream).
    - The nested model fits ONE metric scale factor over the whole batch, so a video's
      geometry would depend on the others batched with it.
    """
    from depth_anything_3.model.da3 import NestedDepthAnything3Net
    from depth_anything_3.model.dpt import DPT

    if any(isinstance(m, NestedDepthAnything3Net) for m in network.modules()):
        return "nested model: one metric scale is fitted over the whole batch"
    chunked = [m for m in network.modules() if isinstance(m, DPT) and type(m).forward is DPT.forward]
    if chunked and num_frames > DPT_CHUNK:
        return f"{type(chunked[0]).__name__} head: frame chunking breaks batches of > {DPT_CHUNK} frames"
    return None


class DA3Geometry:
    """The ``da3`` backend: built once per pipeline, network shared by the whole process."""

    name = "da3"

    def __init__(self, *, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.device = resolve_device(self.settings.device)
        try:
            self.loaded = load_da3(self.settings.da3_model, device=self.device)
        except CheckpointError as exc:
            raise RuntimeError(str(exc)) from None
        self.acceleration = AccelerationResult("eager", "not warmed up yet")
        self.warm_up()

    def versions(self) -> dict[str, str]:
        return {
            # da3-2: the network sees the source frames resized once (da3-1: working frames
            # resized again), and nested Gaussians carry the metric scale: scores changed.
            "geometry": f"da3-2:{self.loaded.model_name}@{self.settings.da3_process_res}",
            "da3_source": self.loaded.source,
            "da3_licence": LICENCES.get(self.loaded.model_name, "unknown"),
            "da3_gaussians": "head" if self.loaded.has_gaussian_head else "pixel-aligned (ours)",
            "da3_acceleration": self.acceleration.path,
        }

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The size (h, w) DA3 wants an H x W source frame at (decode resizes to it once)."""
        return processing_size(height, width, self.settings.da3_process_res)

    def warm_up_examples(self) -> list[Tensor]:
        """Network inputs [1,T,3,h,w] at the shapes real requests will have: each configured
        ``da3_warm_up_shapes`` entry (frames x source height x width) at its processing size."""
        generator = torch.Generator().manual_seed(0)
        examples = []
        for frames, height, width in self.settings.warm_up_shapes():
            size = self.input_size(height, width)
            pixels = torch.randint(0, 256, (frames, *size, 3), dtype=torch.uint8, generator=generator)
            examples.append(normalise_uint8_frames(pixels).to(self.device))
        return examples

    def warm_up(self) -> None:
        """Choose the backbone's execution path and compile it here, at the configured request
        shapes, so that no request compiles (or builds a TensorRT engine). Compiled paths run
        every shape twice (the second pass must hit what the first compiled); plain eager
        runs the first shape once (nothing to compile, it only proves the network runs)."""
        examples = self.warm_up_examples()
        compiled = acceleration.candidate_paths(self.settings.da3_compile, self.device.type) != ["eager"]
        self.acceleration = accelerate_backbone(
            self.loaded, mode=self.settings.da3_compile,
            example=examples if compiled or self.device.type == "cuda" else examples[:1],
            passes=2 if compiled else 1, run=self._forward,
            engine_cache=self.settings.da3_engine_cache, max_frames=self.settings.da3_max_frames,
        )  # fmt: skip

    def network_input(self, video: Video) -> Tensor:
        """[1,T,3,h,w]: the source frames resized once at decode (``geometry_frames``), or,
        for a Video decoded without them, its working frames resized again."""
        if video.geometry_frames is not None:
            return normalise_uint8_frames(video.geometry_frames.to(self.device))
        size = processing_size(video.height, video.width, self.settings.da3_process_res)
        return preprocess_frames(video.frames.to(self.device), size)

    def predict(self, video: Video) -> Geometry:
        return self._to_geometry(self._forward(self.network_input(video))[0], video)

    def predict_many(self, videos: list[Video]) -> list[Geometry]:
        """Several videos in one forward pass when they share a shape and the network allows
        it (why_videos_cannot_share_a_call); one call per video otherwise. Each result is the
        one ``predict`` gives for that video alone."""
        inputs = [self.network_input(video) for video in videos]
        shapes = {tuple(images.shape) for images in inputs}
        if len(videos) < 2 or len(shapes) != 1 or why_videos_cannot_share_a_call(
            self.loaded.network, inputs[0].shape[1]
        ):
            return [self._to_geometry(self._forward(images)[0], video) for images, video in zip(inputs, videos)]
        raws = self._forward(torch.cat(inputs, dim=0))
        return [self._to_geometry(raw, video) for raw, video in zip(raws, videos)]

    def _to_geometry(self, raw: RawPrediction, video: Video) -> Geometry:
        return prediction_to_geometry(
            raw,
            working_hw=(video.height, video.width),
            da3_model=self.loaded.model_name,
            da3_acceleration=self.acceleration.path,
        )

    # -- 2. the forward pass ----------------------------------------------------------------
    def _forward(self, images: Tensor, path: str | None = None) -> list[RawPrediction]:
        """One pass over images [B,T,3,h,w] (B videos); ``path`` is the backbone's execution
        path (default: the one chosen at warm-up). One RawPrediction per video."""
        network = self.loaded.network
        infer_gs = self.loaded.has_gaussian_head
        cuda = self.device.type == "cuda"
        path = path or self.acceleration.path
        if path != "eager":
            mark_frames_dynamic(images, self.settings.da3_max_frames)
        devices = [self.device] if cuda else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(FORWARD_SEED)
            # bf16 autocast on CUDA (the heads switch it off for themselves); TensorRT engines
            # carry their own fp16 precision and take fp32 inputs.
            autocast = cuda and path != "tensorrt"
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                output = network(images, None, None, [], infer_gs=infer_gs, use_ray_pose=False,
                                 ref_view_strategy="saddle_balanced")  # fmt: skip
        num_frames, height, width = output["depth"].shape[1:]
        # Nested checkpoints: the metric scale upstream applied to depth and cameras only.
        scene_scale = float(output.get("scale_factor") or 1.0)
        raws = []
        for index in range(images.shape[0]):
            gaussians = None
            if infer_gs and output.get("gaussians") is not None:
                head = output["gaussians"]
                gaussians = head_gaussians_to_ours(
                    head.means[index], head.scales[index], head.rotations[index],
                    head.harmonics[index], head.opacities[index].reshape(-1),
                    num_frames=num_frames, height=height, width=width,
                    max_gaussians=self.settings.max_gaussians, scene_scale=scene_scale,
                )  # fmt: skip
            raws.append(RawPrediction(
                depth=output["depth"][index].float().cpu(),
                confidence=output["depth_conf"][index].float().cpu(),
                extrinsics=output["extrinsics"][index].float().cpu(),
                intrinsics=output["intrinsics"][index].float().cpu(),
                gaussians=gaussians,
            ))  # fmt: skip
        return raws
