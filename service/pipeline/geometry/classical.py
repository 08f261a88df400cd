"""The weights-free geometry backend: poses, dense depth and confidence on a CPU.

    ClassicalGeometry(settings=...).predict(video) -> Geometry

Steps (each a pure function in features.py, sfm.py or dense.py):

1. SIFT keypoints (RootSIFT) on every frame;
2. candidate pairs (all pairs for short clips, else temporal neighbours + retrieval), mutual
   nearest-neighbour matching with a ratio test, matches glued to the screen dropped (logos,
   pasted patches), two-view verification (E, F, H; RANSAC), pairs that stronger triangles of
   pairs contradict dropped (repetitive texture);
3. the camera's motion class from neighbouring pairs: ``static`` (keypoints do not move),
   ``rotation`` (homographies with no triangulation angle) or ``translation``;
4. poses: COLMAP's incremental mapper (translation), homographies (rotation) or the identity
   (static); intrinsics: one pinhole camera, its focal estimated by bundle adjustment from a
   prior of ``classical_fov_deg``, or given;
5. dense depth for every registered frame: DIS flow to its two best partner frames (most
   shared 3D points, enough baseline), after aligning them by a plane at the scene's median
   depth, triangulated; confidence from forward-backward consistency, epipolar distance and
   parallax (dense.py);
6. scale: median confident depth = 1 (translations scaled with it).

What a clip that cannot be reconstructed returns (never an exception, never silent garbage):
frames that were not registered have ``registered = False``, zero depth and confidence, and
the pose of the nearest registered frame as a placeholder; ``diagnostics['reason']`` says why.
A static or purely rotating camera registers its frames (the rotation is observable), but its
depth is not: depth is a constant 1, ``diagnostics['depth_observable'] = False``, and the
reconstruction term does not count such frames as 3D evidence (terms/reconstruction.py).

Deterministic: OpenCV's SIFT, matching and DIS flow have no randomness; every RANSAC and the
mapper run with seed 0 on one thread. ``GeometryError`` is raised only for internal failures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from service.pipeline.geometry import dense, features, sfm
from service.pipeline.geometry.sfm import PinholeCamera, SparsePoses
from service.pipeline.transforms import fov_to_focal
from service.pipeline.types import Geometry, GeometryError, Video
from service.settings import Settings

ALGORITHM_VERSION = "3"  # bump when a change alters the geometry for the same input

MAX_FEATURES = 1500
MATCH_RATIO = 0.85
EXHAUSTIVE_UP_TO = 8  # frames: match every pair up to this many (28 pairs)
TEMPORAL_WINDOW = 2
RETRIEVAL_PARTNERS = 3
DEPTH_PARTNERS = 2
MIN_KEYPOINTS = 40  # fewer on most frames: "too little texture"
PARTNER_MIN_BASELINE_DEG = 2.0  # baseline angle at the scene's median depth for full credit
CONFIDENT = 0.5
PLAUSIBLE_FOV_DEG = (10.0, 150.0)  # horizontal field of view of real and generated cameras
# The focal is trusted when bundle adjustment reaches it from different starting focals: runs
# from the prior and from the prior scaled by each FOCAL_STARTS factor (about 40 and 73 degrees
# around a 55 degree prior); two of them must end within FOCAL_AGREES of each other. Where the
# data determine the focal, every run ends within ~3 % of the others; where low parallax, a
# narrow field of view or weak texture leave it free, each run stays near where it started
# (bench/RESULTS.md, "Focal"), and a single run cannot tell the two apart.
FOCAL_STARTS = (0.7, 1.4)
FOCAL_AGREES = 0.05  # relative difference between two runs' focals


def is_available(settings=None) -> tuple[bool, str]:  # settings: the interface's, unused here
    try:
        import pycolmap  # noqa: F401
    except ImportError as exc:
        return False, f"pycolmap is not installed ({exc}): install the 'pipeline' extra"
    return True, "CPU, no weights: SIFT + incremental SfM (pycolmap) + DIS flow triangulation"


class ClassicalGeometry:
    name = "classical"

    def __init__(self, *, settings: Settings, intrinsics: np.ndarray | None = None) -> None:
        """``intrinsics`` [3,3] (pixels at the working resolution) fixes the camera instead of
        estimating its focal length."""
        self.settings = settings
        self.fov_deg = settings.classical_fov_deg
        self.known_intrinsics = None if intrinsics is None else np.asarray(intrinsics, np.float64)
        if self.known_intrinsics is not None and self.known_intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be [3,3], got {self.known_intrinsics.shape}")
        # OpenCV parallelises SIFT and DIS over all cores by default; on shared machines that
        # is slower, and one thread keeps timings predictable.
        cv2.setNumThreads(settings.num_threads)
        _quiet_colmap()

    def versions(self) -> dict[str, str]:
        import pycolmap

        return {
            "geometry": f"classical-{ALGORITHM_VERSION}",
            "opencv": cv2.__version__,
            "pycolmap": str(pycolmap.__version__),
        }

    def predict(self, video: Video) -> Geometry:
        try:
            return self._predict(video)
        except Exception as exc:  # an internal failure, not a property of the video
            raise GeometryError(f"classical geometry failed: {type(exc).__name__}: {exc}") from exc

    # -- the steps ---------------------------------------------------------------------------
    def _predict(self, video: Video) -> Geometry:
        timings: dict[str, float] = {}
        num_frames, height, width = video.num_frames, video.height, video.width
        rgb = (video.frames.numpy() * 255.0).round().astype(np.uint8)
        grays = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb]
        camera = self._initial_camera(width, height)

        # 1-4. Keypoints, matches, motion class and poses.
        sparse = self._sparse_pass(grays, camera, _distinct_frames(rgb))
        timings.update(sparse.timings)
        poses, motion = sparse.poses, sparse.motion

        # 5. Dense depth.
        clock = time.perf_counter()
        depth = np.zeros((num_frames, height, width), dtype=np.float32)
        confidence = np.zeros_like(depth)
        parallax_medians: list[float] = []
        depth_observable = motion == "translation"
        if depth_observable:
            self._dense_depth(grays, poses, depth, confidence, parallax_medians)
        else:
            depth[poses.registered] = 1.0  # unobservable: a constant, flagged in diagnostics
            confidence[poses.registered] = 1.0
        timings["depth_ms"] = _elapsed_ms(clock)

        # 6. Scale: median confident depth = 1.
        world_to_camera = poses.world_to_camera.copy()
        confident = (confidence > CONFIDENT) & (depth > 0)
        if depth_observable and confident.any():
            scale = float(np.median(depth[confident]))
            if scale > 0 and math.isfinite(scale):
                depth /= scale
                world_to_camera[:, :3, 3] /= scale

        diagnostics = self._diagnostics(video, sparse, confidence, confident, parallax_medians,
                                        timings)  # fmt: skip
        intrinsics = np.repeat(poses.camera.matrix[None], num_frames, axis=0)
        return Geometry(
            depth=torch.from_numpy(depth),
            confidence=torch.from_numpy(confidence.clip(0.0, 1.0)),
            world_to_camera=torch.from_numpy(world_to_camera).to(torch.float64),
            intrinsics=torch.from_numpy(intrinsics).to(torch.float64),
            registered=torch.from_numpy(poses.registered.copy()),
            backend=self.name,
            diagnostics=diagnostics,
        )

    def _sparse_pass(self, grays, camera, distinct) -> "_SparsePass":
        """Keypoints, matches, two-view geometry, motion class and poses (steps 1-4)."""
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        keypoints = [features.detect_features(g, max_features=MAX_FEATURES) for g in grays]
        timings["features_ms"] = _elapsed_ms(clock)

        clock = time.perf_counter()
        pairs = features.candidate_pairs(
            keypoints, exhaustive_up_to=EXHAUSTIVE_UP_TO, temporal_window=TEMPORAL_WINDOW,
            retrieval_partners=RETRIEVAL_PARTNERS, ratio=MATCH_RATIO,
        )  # fmt: skip
        putative = {
            (i, j): features.match_descriptors(
                keypoints[i].descriptors, keypoints[j].descriptors, ratio=MATCH_RATIO
            )
            for i, j in pairs
        }
        two_views = sfm.verify_pairs(keypoints, putative, camera,
                                     known_intrinsics=self.known_intrinsics is not None)  # fmt: skip
        two_views = sfm.filter_inconsistent_pairs(two_views)
        timings["matching_ms"] = _elapsed_ms(clock)

        clock = time.perf_counter()
        motion = sfm.classify_motion(two_views, distinct, camera)
        poses, motion = self._poses(keypoints, two_views, camera, motion)
        timings["poses_ms"] = _elapsed_ms(clock)
        return _SparsePass(keypoints, [f.count for f in keypoints], pairs, two_views, poses,
                           motion, timings)  # fmt: skip

    def _initial_camera(self, width: int, height: int) -> PinholeCamera:
        if self.known_intrinsics is not None:
            k = self.known_intrinsics
            return PinholeCamera(width, height, float(0.5 * (k[0, 0] + k[1, 1])),
                                 float(k[0, 2]), float(k[1, 2]))  # fmt: skip
        return PinholeCamera(width, height, fov_to_focal(self.fov_deg, width), width / 2, height / 2)

    def _poses(self, keypoints, two_views, camera, motion) -> tuple[SparsePoses, str]:
        num_frames = len(keypoints)
        if motion == "static":
            return sfm.static_poses(num_frames, camera), motion
        if motion == "rotation":
            # The widest pairs say the camera turns in place: COLMAP can still register such
            # frames (its triangulations are noise), and calling that a translation would pay
            # a moving object's flow as depth. The turn model is used when it links most frames.
            rotation = sfm.rotation_only_poses(two_views, num_frames, camera)
            if rotation.registered.sum() >= 0.5 * num_frames:
                return rotation, motion
        refine_focal = self.known_intrinsics is None
        poses = sfm.incremental_poses(keypoints, two_views, camera, refine_focal=refine_focal)
        if refine_focal:
            poses = _trusted_focal(poses, keypoints, two_views, camera)
        if num_frames == 2 and motion == "translation" and not poses.registered.any():
            # COLMAP re-estimates a pair's pose from scratch and fails on planar scenes (a
            # degenerate fundamental matrix); the verified two-view pose is the reconstruction.
            poses = sfm.two_view_poses(two_views, camera)
            return poses, "translation" if poses.registered.any() else "unknown"
        registered = int(poses.registered.sum())
        # `rotation` was built above; it linked fewer than half the frames, the mapper fewer.
        if motion == "rotation" and registered < 0.5 * num_frames:
            if rotation.registered.sum() >= registered:
                return rotation, motion
        if registered == 0:
            return poses, "unknown"
        return poses, "translation"

    def _dense_depth(self, grays, poses: SparsePoses, depth, confidence, parallax_medians) -> None:
        """Fill depth/confidence [T,H,W] in place for every registered frame."""
        registered = np.nonzero(poses.registered)[0]
        intrinsics = poses.camera.matrix
        flows: dict[tuple[int, int], np.ndarray] = {}

        def flow(a: int, b: int) -> np.ndarray:
            if (a, b) not in flows:
                a_to_b = poses.world_to_camera[b] @ np.linalg.inv(poses.world_to_camera[a])
                plane_depth = poses.frame_depth[a] or _median_point_depth(
                    poses.points_world, poses.world_to_camera[a])
                homography = dense.plane_homography(intrinsics, intrinsics, a_to_b, plane_depth)
                flows[(a, b)] = dense.optical_flow(grays[a], grays[b], homography)
            return flows[(a, b)]

        for t in registered:
            partners = self._depth_partners(int(t), registered, poses)
            if not partners:
                continue
            results = []
            for s in partners:
                a_to_b = poses.world_to_camera[s] @ np.linalg.inv(poses.world_to_camera[t])
                results.append(dense.pair_depth(flow(t, s), flow(s, t), intrinsics, intrinsics, a_to_b))
            depth[t], confidence[t] = dense.fuse_depths([r[0] for r in results],
                                                        [r[1] for r in results])  # fmt: skip
            parallax = np.concatenate([r[2][r[1] > CONFIDENT] for r in results])
            if parallax.size:
                parallax_medians.append(float(np.median(parallax)))

    def _depth_partners(self, t: int, registered: np.ndarray, poses: SparsePoses) -> list[int]:
        """The frames that share the most 3D points with frame t, discounted when their baseline
        is too short to triangulate (angle at the median scene depth < 2 degrees)."""
        centres = -np.einsum("tji,tj->ti", poses.world_to_camera[:, :3, :3],
                             poses.world_to_camera[:, :3, 3])  # fmt: skip
        scene_depth = _median_point_depth(poses.points_world, poses.world_to_camera[t])
        scored = []
        for s in registered:
            s = int(s)
            if s == t:
                continue
            baseline_deg = math.degrees(np.linalg.norm(centres[s] - centres[t]) / scene_depth)
            shared = float(poses.covisibility[t, s])
            weight = min(1.0, baseline_deg / PARTNER_MIN_BASELINE_DEG)
            # Frames sharing no points still beat nothing (ranked by proximity in time).
            scored.append((-(shared * weight), -weight, abs(s - t), s))
        scored.sort()
        return [s for *_, s in scored[:DEPTH_PARTNERS]]

    def _diagnostics(self, video, sparse: "_SparsePass", confidence, confident, parallax_medians,
                     timings) -> dict:  # fmt: skip
        poses, motion, counts, two_views = sparse.poses, sparse.motion, sparse.counts, sparse.two_views
        num_frames = video.num_frames
        registered = int(poses.registered.sum())
        camera = poses.camera
        focal_source = (
            "given" if self.known_intrinsics is not None
            else "estimated" if poses.diagnostics.get("focal_refined")
            else "default"
        )  # fmt: skip
        neighbour_pairs = [two_views.get((t, t + 1)) for t in range(num_frames - 1)]
        displacement = [v.displacement for v in neighbour_pairs if v is not None]
        reason = _reason(motion, registered, num_frames, counts, poses)
        for key, label in (("focal_not_trusted", "not trusted"), ("focal_uncertain", "uncertain")):
            if poses.diagnostics.get(key):
                note = f"focal length {label}: {poses.diagnostics[key]}"
                reason = f"{reason}; {note}" if reason else note
        fov = math.degrees(2 * math.atan(camera.width / (2 * camera.focal)))
        # Corrupted clips can break calibration (elastic warps: focal lengths far off); the
        # reward then drops through the renders, and the diagnostics say why.
        focal_plausible = PLAUSIBLE_FOV_DEG[0] <= fov <= PLAUSIBLE_FOV_DEG[1]
        if not focal_plausible:
            note = f"implausible focal length ({camera.focal:.0f} px, {fov:.0f} degree field of view)"
            reason = f"{reason}; {note}" if reason else note
        mask = poses.registered
        return {
            "camera_motion": motion,
            "depth_observable": motion == "translation",
            "registered_frames": registered,
            "registration_ratio": registered / num_frames,
            "focal_px": camera.focal,
            "fov_deg": fov,
            "focal_plausible": focal_plausible,
            "focal_source": focal_source,
            "median_keypoints": float(np.median(counts)) if counts else 0.0,
            "candidate_pairs": len(sparse.pairs),
            "verified_pairs": len(two_views),
            "neighbour_displacement": float(np.median(displacement)) if displacement else None,
            "median_parallax_px": float(np.median(parallax_medians)) if parallax_medians else 0.0,
            # Where depth is unobservable the constant depth is not coverage.
            "dense_coverage": float(confident[mask].mean()) if mask.any() and motion == "translation"
            else 0.0,
            **poses.diagnostics,
            **{k: round(v, 1) for k, v in timings.items()},
            "reason": reason,
        }


@dataclass
class _SparsePass:
    keypoints: list
    counts: list[int]
    pairs: list[tuple[int, int]]
    two_views: dict
    poses: SparsePoses
    motion: str
    timings: dict[str, float]


def _trusted_focal(poses: SparsePoses, keypoints, two_views, prior: PinholeCamera) -> SparsePoses:
    """Keep bundle adjustment's focal only when the data determine it.

    ``poses`` were refined from the prior. The mapper is run again, refining, from the prior's
    focal times each of FOCAL_STARTS. The focal is trusted when two runs that register at least
    half as many frames as the best one end within FOCAL_AGREES of each other, in
    PLAUSIBLE_FOV_DEG; the first of them is used (the run from the prior when it agrees).
    Otherwise the mapper runs with the prior held fixed, that reconstruction is used, and
    ``diagnostics['focal_not_trusted']`` says why (the reason reaches the result)."""
    runs = [poses] + [
        sfm.incremental_poses(keypoints, two_views, PinholeCamera(
            prior.width, prior.height, prior.focal * factor, prior.cx, prior.cy), refine_focal=True)
        for factor in FOCAL_STARTS
    ]  # fmt: skip
    counts = [int(run.registered.sum()) for run in runs]
    best = runs[int(np.argmax(counts))] if counts[0] == 0 else poses
    if max(counts) == 0:
        return poses
    ends = [run.camera.focal if n >= 0.5 * max(counts) else float("nan")
            for run, n in zip(runs, counts)]  # fmt: skip
    agreeing = [(i, j) for i in range(len(ends)) for j in range(i + 1, len(ends))
                if abs(ends[i] - ends[j]) <= FOCAL_AGREES * 0.5 * (ends[i] + ends[j])]  # fmt: skip
    converged = bool(agreeing)
    if converged:  # the run from the prior when it is one of an agreeing pair
        chosen = min(i for pair in agreeing for i in pair)
        best = runs[chosen]
    fov = math.degrees(2 * math.atan(prior.width / (2 * best.camera.focal)))
    reached = ", ".join("-" if not math.isfinite(f) else f"{f:.0f}" for f in ends)
    best.diagnostics["focal_from_starts_px"] = reached
    if converged and PLAUSIBLE_FOV_DEG[0] <= fov <= PLAUSIBLE_FOV_DEG[1]:
        return best
    fixed = sfm.incremental_poses(keypoints, two_views, prior, refine_focal=False)
    starts = ", ".join(f"{prior.focal * f:.0f}" for f in (1.0, *FOCAL_STARTS))
    why = "implausible" if converged else "not determined by the data"
    if not fixed.registered.any():  # only a refined focal reconstructs anything: keep it, say so
        best.diagnostics["focal_uncertain"] = (
            f"bundle adjustment's focal is {why} (from {starts} px it reached {reached} px), "
            f"and the prior {prior.focal:.0f} px reconstructs nothing: {best.camera.focal:.0f} px "
            "is used"
        )
        return best
    fixed.diagnostics["focal_not_trusted"] = (
        f"bundle adjustment's focal is {why} (from {starts} px it reached {reached} px): "
        f"the prior {prior.focal:.0f} px is used"
    )
    fixed.diagnostics["focal_from_starts_px"] = reached
    fixed.diagnostics["focal_rejected_px"] = float(best.camera.focal)
    return fixed


def _reason(motion, registered, num_frames, counts, poses) -> str | None:
    if counts and sum(c < MIN_KEYPOINTS for c in counts) > 0.5 * len(counts):
        texture = f"too little texture (median {int(np.median(counts))} keypoints per frame)"
        return texture if registered == 0 else f"{texture}; {registered}/{num_frames} registered"
    if motion == "static":
        return "the camera does not move: depth is unobservable"
    if motion == "rotation":
        return (f"the camera turns in place ({registered}/{num_frames} frames registered by "
                "rotation): depth is unobservable")  # fmt: skip
    if registered == 0:
        failure = poses.diagnostics.get("sfm_failure", "no frames registered")
        return f"reconstruction failed: {failure} (tracking lost, too little overlap or parallax)"
    if registered < num_frames:
        return f"{num_frames - registered} of {num_frames} frames could not be registered"
    return None


def _distinct_frames(rgb: np.ndarray) -> list[int]:  # rgb [T,H,W,3] uint8
    """Indices of the frames that are not (near-)exact copies of the previous distinct frame
    (the same rule as the reconstruction term's frozen-frame check)."""
    from service.pipeline.render.held_out import DUPLICATE_THRESHOLD

    step = max(1, rgb[0].size // 20_000)
    kept = [0]
    for t in range(1, len(rgb)):
        previous = rgb[kept[-1]].reshape(-1)[::step].astype(np.float32)
        current = rgb[t].reshape(-1)[::step].astype(np.float32)
        if np.abs(current - previous).mean() / 255.0 >= DUPLICATE_THRESHOLD:
            kept.append(t)
    return kept


def _median_point_depth(points_world: np.ndarray, world_to_camera: np.ndarray) -> float:
    if len(points_world) == 0:
        return 1.0
    z = points_world @ world_to_camera[:3, :3].T[:, 2] + world_to_camera[2, 3]
    z = z[z > 0]
    return float(np.median(z)) if len(z) else 1.0


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _quiet_colmap() -> None:
    """COLMAP logs every mapper step to stderr; what matters reaches ``diagnostics``."""
    try:
        import pycolmap

        pycolmap.logging.minloglevel = 3  # FATAL only
    except (ImportError, AttributeError):
        pass
