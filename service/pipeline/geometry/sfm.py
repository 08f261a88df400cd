"""Camera poses for the classical backend: two-view verification and incremental SfM (pycolmap).

    verify_pairs(features, matches, camera)      -> {(i, j): TwoView}   (E / F / H with RANSAC)
    filter_inconsistent_pairs(two_views)         -> two_views without contradicted pairs
    classify_motion(two_views, order)            -> "static" | "rotation" | "translation"
    incremental_poses(features, two_views, ...)  -> SparsePoses   (COLMAP's incremental mapper)
    two_view_poses / rotation_only_poses / static_poses -> SparsePoses (a pair, a turning or a
                                                   still camera)

Conventions (docs/conventions.md): OpenCV axes, ``world_to_camera`` 4x4, intrinsics in pixels,
pixel centres at +0.5 (COLMAP's convention too). Determinism: every RANSAC and the mapper get
``random_seed = 0`` and one thread, so the same matches always give the same poses.

Why COLMAP's incremental mapper: on the fox photos it was the most accurate of the options we
tried (its global mapper failed there; an OpenCV essential-matrix chain was 2-3x less accurate).
The configuration is lighter than COLMAP's defaults (a smaller initial triangulation angle,
capped bundle adjustment, at most 150 inliers per pair, a runtime cap): ~0.3-0.5 s for 16 frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.pipeline.geometry.features import Features

# RANSAC threshold in pixels at our working resolutions (COLMAP's 4 px default is for ~1-3 Mpx).
RANSAC_MAX_ERROR_PX = 2.5
MIN_PAIR_INLIERS = 15
# A camera is "static" when matched keypoints move less than this fraction of the image diagonal
# between most neighbouring frames (~2 px at 448x252).
STATIC_DISPLACEMENT = 0.004
STATIC_MIN_SPREAD = 0.25  # the still matches must cover a quarter of the frame
# Pairs whose inliers a homography explains (COLMAP: H inliers > 0.8 x E inliers) with a small
# triangulation angle look like a camera turning in place.
ROTATION_MAX_TRI_ANGLE_DEG = 2.0  # keypoint noise alone gives ~0.5-1.2 degrees at 224 px
ROTATION_TRI_ANGLE_SHARE = 0.4  # ... or under this share of the image's angular motion
MIN_POINTS = 20  # fewer 3D points: the mapper's "success" is degenerate
STATIC_OVERLAY_MOTION_PX = 8.0  # the pair moves: median match displacement above this
STATIC_OVERLAY_MAX_PX = 1.0  # ... and these matches do not: an overlay
CYCLE_TOLERANCE_DEG = 10.0  # rotation error around a triangle of frames (see below)
MAPPER_MAX_RUNTIME_S = 20  # seconds (an int for pycolmap)
# Inliers per pair handed to the mapper: the strongest keypoints' (they recur across pairs and
# form long tracks); more only slow bundle adjustment down.
MAPPER_MAX_PAIR_INLIERS = 150


@dataclass(frozen=True)
class PinholeCamera:
    width: int
    height: int
    focal: float  # pixels
    cx: float
    cy: float

    @property
    def matrix(self) -> np.ndarray:  # [3,3]
        return np.array([[self.focal, 0, self.cx], [0, self.focal, self.cy], [0, 0, 1.0]])


@dataclass(frozen=True)
class TwoView:
    """A verified frame pair."""

    inliers: np.ndarray  # [M,2] keypoint indices (frame i, frame j)
    config: str  # COLMAP's label: CALIBRATED, UNCALIBRATED, PLANAR, PANORAMIC, ...
    tri_angle_deg: float  # median triangulation angle of the inliers (0 when unknown)
    displacement: float  # median keypoint displacement of the inliers / image diagonal
    homography: np.ndarray  # [3,3] maps frame i pixels to frame j pixels (zeros if none)
    num_matches: int
    spread: float = 1.0  # area of the inliers' 5-95 % box in frame i / the frame's area
    # cam_j_from_cam_i: rotation [3,3] and unit translation [3] (None when not estimated)
    rotation: np.ndarray | None = None
    translation: np.ndarray | None = None


@dataclass
class SparsePoses:
    world_to_camera: np.ndarray  # [T,4,4] float64 (placeholders where not registered)
    registered: np.ndarray  # [T] bool
    camera: PinholeCamera
    covisibility: np.ndarray  # [T,T] int: 3D points seen by both frames
    points_world: np.ndarray  # [P,3] sparse 3D points (empty for rotation-only)
    frame_depth: np.ndarray  # [T] median z-depth of the 3D points each frame sees (0: none)
    diagnostics: dict[str, float | int | str | bool | None] = field(default_factory=dict)


def make_colmap_camera(camera: PinholeCamera):
    import pycolmap

    colmap_camera = pycolmap.Camera(
        model="SIMPLE_PINHOLE", width=camera.width, height=camera.height,
        params=[camera.focal, camera.cx, camera.cy], camera_id=1,
    )  # fmt: skip
    colmap_camera.has_prior_focal_length = True  # calibrated two-view geometry (E), not only F
    return colmap_camera


def verify_pairs(
    features: list[Features],
    matches: dict[tuple[int, int], np.ndarray],  # (i, j) -> [M,2] putative matches
    camera: PinholeCamera,
    *,
    known_intrinsics: bool = False,
) -> dict[tuple[int, int], TwoView]:
    """Robust two-view geometry (essential, fundamental and homography) for each pair; keeps
    pairs with at least MIN_PAIR_INLIERS inliers.

    With an assumed focal length, COLMAP's rule stands: the essential matrix must explain 95 %
    of the fundamental matrix's inliers, else the pair is UNCALIBRATED. With known intrinsics
    the essential matrix is trusted down to half of them: on a planar scene the fundamental
    matrix is degenerate and otherwise wins with a few extra outliers, and its pose is wrong."""
    import pycolmap

    options = pycolmap.TwoViewGeometryOptions()
    options.min_num_inliers = MIN_PAIR_INLIERS
    if known_intrinsics:
        options.min_E_F_inlier_ratio = 0.5
    options.compute_relative_pose = True  # gives the triangulation angle
    options.ransac.max_error = RANSAC_MAX_ERROR_PX
    options.ransac.random_seed = 0
    options.ransac.max_num_trials = 2000  # hopeless pairs give up early
    options.ransac.num_threads = 1
    colmap_camera = make_colmap_camera(camera)
    diagonal = math.hypot(camera.width, camera.height)
    verified = {}
    for (i, j), putative in sorted(matches.items()):
        putative = drop_static_overlay(putative, features[i].keypoints_uv, features[j].keypoints_uv)
        if len(putative) < MIN_PAIR_INLIERS:
            continue
        geometry = pycolmap.estimate_two_view_geometry(
            colmap_camera, features[i].keypoints_uv, colmap_camera, features[j].keypoints_uv,
            putative.astype(np.uint32), options,
        )  # fmt: skip
        inliers = np.asarray(geometry.inlier_matches, dtype=np.int64).reshape(-1, 2)
        if len(inliers) < MIN_PAIR_INLIERS:
            continue
        moved = features[j].keypoints_uv[inliers[:, 1]] - features[i].keypoints_uv[inliers[:, 0]]
        low, high = np.percentile(features[i].keypoints_uv[inliers[:, 0]], [5, 95], axis=0)
        spread = float(np.prod(high - low)) / (camera.width * camera.height)
        homography = np.asarray(geometry.H, dtype=np.float64)
        relative = geometry.cam2_from_cam1
        rotation = translation = None
        if relative is not None:
            rotation = np.asarray(relative.rotation.matrix(), dtype=np.float64)
            translation = np.asarray(relative.translation, dtype=np.float64)
            norm = np.linalg.norm(translation)
            translation = translation / norm if norm > 1e-12 else translation
        verified[(i, j)] = TwoView(
            inliers=inliers,
            config=pycolmap.TwoViewGeometryConfiguration(int(geometry.config)).name,
            tri_angle_deg=math.degrees(float(geometry.tri_angle)) if geometry.tri_angle > 0 else 0.0,
            displacement=float(np.median(np.linalg.norm(moved, axis=1))) / diagonal,
            homography=homography if np.isfinite(homography).all() else np.zeros((3, 3)),
            num_matches=len(putative),
            spread=spread,
            rotation=rotation,
            translation=translation,
        )
    return verified


def drop_static_overlay(
    matches: np.ndarray,  # [M,2] keypoint indices
    keypoints_a: np.ndarray,  # [Na,2] pixels
    keypoints_b: np.ndarray,  # [Nb,2] pixels
) -> np.ndarray:
    """Matches that stay put while the scene moves belong to an overlay, not to the scene.

    A logo, a watermark, subtitles or a pasted patch sit at the same pixels in every frame; when
    the camera moves (the median match moves more than STATIC_OVERLAY_MOTION_PX) their matches
    (moving less than STATIC_OVERLAY_MAX_PX) would tie the frames to a "scene" glued to the
    camera, so they are dropped before verification. A still camera keeps all its matches.
    """
    if len(matches) == 0:
        return matches
    moved = np.linalg.norm(keypoints_b[matches[:, 1]] - keypoints_a[matches[:, 0]], axis=1)
    if np.median(moved) <= STATIC_OVERLAY_MOTION_PX:
        return matches
    return matches[moved >= STATIC_OVERLAY_MAX_PX]


def filter_inconsistent_pairs(
    two_views: dict[tuple[int, int], TwoView], tolerance_deg: float = CYCLE_TOLERANCE_DEG
) -> dict[tuple[int, int], TwoView]:
    """Drop verified pairs whose relative rotation stronger pairs contradict.

    Repetitive texture (tiles, windows, a chessboard) produces pairs that pass RANSAC with a
    wrong pose: the matches are consistently shifted or flipped. Around a triangle of frames
    (i, k, j) the relative rotations must compose: R_kj R_ik = R_ij. A pair is removed when it
    agrees with none of its triangles and at least two of them carry comparable evidence (both
    other pairs have at least half its inliers): a few weak pairs never overrule a strong one,
    and pairs without triangles (a chain of frames) are kept. One pass, deterministic.
    """
    rotations, inliers = {}, {}
    for (i, j), view in two_views.items():
        if view.rotation is not None:
            rotations[(i, j)], rotations[(j, i)] = view.rotation, view.rotation.T
            inliers[(i, j)] = inliers[(j, i)] = len(view.inliers)
    frames = sorted({f for pair in rotations for f in pair})
    kept = {}
    for (i, j), view in two_views.items():
        if (i, j) not in rotations:
            kept[(i, j)] = view
            continue
        stronger = consistent = 0
        for k in frames:
            if k in (i, j) or (i, k) not in rotations or (k, j) not in rotations:
                continue
            predicted = rotations[(k, j)] @ rotations[(i, k)]
            cosine = (np.trace(predicted.T @ rotations[(i, j)]) - 1.0) / 2.0
            if math.degrees(math.acos(min(1.0, max(-1.0, cosine)))) < tolerance_deg:
                consistent += 1
            elif min(inliers[(i, k)], inliers[(k, j)]) >= 0.5 * inliers[(i, j)]:
                stronger += 1
        if consistent > 0 or stronger < 2:
            kept[(i, j)] = view
    return kept


def classify_motion(
    two_views: dict[tuple[int, int], TwoView], order: list[int], camera: PinholeCamera | None = None
) -> str:
    """How the camera moves, judged from the *widest* verified pairs among the frames in
    ``order`` (those that are not exact copies of their predecessor: a frozen stretch says
    nothing about how the camera moves). Widest: the pairs whose span in ``order`` is at least
    half the largest verified span. A slow camera barely moves between adjacent frames, but
    over the clip it does: adjacent frames alone would call a slow orbit static.

    - ``static``: keypoints barely move across most of the widest pairs, all over the frame
      (a locked-off camera, possibly filming moving content: the moving object's matches are a
      minority, and a pair's displacement is its inliers' median);
    - ``rotation``: most widest pairs are explained by a homography with a triangulation angle
      that is small next to how far the image turned (a camera turning in place: depth is
      unobservable; COLMAP's angle for such pairs is noise that grows with the turn, ~25 % of
      it, while a translating camera's is about the image's angular motion);
    - ``translation``: anything else (the camera moves: structure from motion applies).
    """
    position = {frame: index for index, frame in enumerate(order)}
    spans = {pair: abs(position[pair[1]] - position[pair[0]]) for pair in two_views
             if pair[0] in position and pair[1] in position}  # fmt: skip
    if not spans:
        return "translation"  # nothing to judge by; let the mapper try and report
    widest = max(spans.values())
    found = [two_views[pair] for pair, span in spans.items() if span >= max(1, widest / 2)]
    # Still *and* spread over the frame: a pasted patch or a logo also stays put, in one corner.
    still = sum(v.displacement < STATIC_DISPLACEMENT and v.spread > STATIC_MIN_SPREAD for v in found)
    if still >= 0.5 * len(found):
        return "static"

    def small_angle(view: TwoView) -> float:
        if camera is None:
            return ROTATION_MAX_TRI_ANGLE_DEG
        turned_deg = math.degrees(view.displacement * math.hypot(camera.width, camera.height)
                                  / camera.focal)  # fmt: skip
        return max(ROTATION_MAX_TRI_ANGLE_DEG, ROTATION_TRI_ANGLE_SHARE * turned_deg)

    turning = sum(
        v.config in ("PANORAMIC", "PLANAR_OR_PANORAMIC") or (
            v.config == "PLANAR" and v.tri_angle_deg < small_angle(v)
        )
        for v in found
    )  # fmt: skip
    if turning >= 0.75 * len(found):
        return "rotation"
    return "translation"


def incremental_poses(
    features: list[Features],
    two_views: dict[tuple[int, int], TwoView],
    camera: PinholeCamera,
    *,
    refine_focal: bool,
) -> SparsePoses:
    """COLMAP's incremental mapper on our keypoints and verified matches (in memory).

    Several models can come out (e.g. a clip spliced from two scenes); the one with the most
    registered frames is kept, the others' frames count as unregistered.
    """
    import pycolmap

    num_frames = len(features)
    database = pycolmap.Database.open(":memory:")
    try:
        _fill_database(database, features, two_views, camera)
        options = _mapper_options(refine_focal)
        manager = pycolmap.ReconstructionManager()
        pycolmap.IncrementalPipeline(options, database, manager).run()
    finally:
        database.close()

    best = None
    for index in range(manager.size()):
        reconstruction = manager.get(index)
        if best is None or reconstruction.num_reg_images() > best.num_reg_images():
            best = reconstruction
    if best is None or best.num_reg_images() < 2:
        return _unregistered(num_frames, camera, reason="no initial frame pair with enough "
                             "parallax and matches")  # fmt: skip
    if best.num_points3D() < MIN_POINTS:
        return _unregistered(num_frames, camera, reason=f"only {best.num_points3D()} 3D points "
                             "survived (a degenerate reconstruction)")  # fmt: skip

    world_to_camera = np.tile(np.eye(4), (num_frames, 1, 1))
    registered = np.zeros(num_frames, dtype=bool)
    observed: list[set[int]] = [set() for _ in range(num_frames)]
    frame_depth = np.zeros(num_frames)
    for image_id, image in best.images.items():
        if not image.has_pose:
            continue
        t = image_id - 1
        world_to_camera[t, :3, :] = image.cam_from_world().matrix()
        registered[t] = True
        observed[t] = {p.point3D_id for p in image.points2D if p.has_point3D()}
        if observed[t]:
            xyz = np.array([best.points3D[i].xyz for i in observed[t]])
            z = xyz @ world_to_camera[t, 2, :3] + world_to_camera[t, 2, 3]
            frame_depth[t] = float(np.median(z[z > 0])) if (z > 0).any() else 0.0
    colmap_camera = best.cameras[1]
    focal, cx, cy = (float(x) for x in colmap_camera.params)
    covisibility = np.zeros((num_frames, num_frames), dtype=np.int64)
    for a in range(num_frames):
        for b in range(a + 1, num_frames):
            covisibility[a, b] = covisibility[b, a] = len(observed[a] & observed[b])
    points = np.array([p.xyz for p in best.points3D.values()], dtype=np.float64).reshape(-1, 3)
    diagnostics = {
        "focal_refined": refine_focal,
        "sfm_models": int(manager.size()),
        "sfm_points": int(best.num_points3D()),
        "reprojection_error_px": float(best.compute_mean_reprojection_error()),
        "mean_track_length": float(best.compute_mean_track_length()) if best.num_points3D() else 0.0,
    }
    return SparsePoses(
        world_to_camera=_fill_placeholders(world_to_camera, registered),
        registered=registered,
        camera=PinholeCamera(camera.width, camera.height, focal, cx, cy),
        covisibility=covisibility,
        points_world=points,
        frame_depth=frame_depth,
        diagnostics=diagnostics,
    )


def rotation_only_poses(
    two_views: dict[tuple[int, int], TwoView], num_frames: int, camera: PinholeCamera
) -> SparsePoses:
    """A camera turning in place: relative rotations from neighbouring frames' homographies,
    ``R = K^-1 H K`` projected onto SO(3), chained from the first frame. The longest run of
    frames linked this way is registered; camera centres all sit at the origin."""
    k = camera.matrix
    k_inv = np.linalg.inv(k)
    runs, current = [], [0]
    rotations = {0: np.eye(3)}
    for t in range(num_frames - 1):
        view = two_views.get((t, t + 1))
        usable = view is not None and abs(np.linalg.det(view.homography)) > 1e-12
        if usable:
            # x_{t+1} ~ K R_{t+1} R_t^T K^-1 x_t for a camera turning in place.
            relative = _nearest_rotation(k_inv @ view.homography @ k)
            rotations[t + 1] = relative @ rotations[t]
            current.append(t + 1)
        else:
            runs.append(current)
            current = [t + 1]
            rotations[t + 1] = np.eye(3)
    runs.append(current)
    longest = max(runs, key=len)
    registered = np.zeros(num_frames, dtype=bool)
    world_to_camera = np.tile(np.eye(4), (num_frames, 1, 1))
    if len(longest) >= 2:
        base = rotations[longest[0]]
        for t in longest:
            registered[t] = True
            world_to_camera[t, :3, :3] = rotations[t] @ base.T  # the run's first frame = world
    return SparsePoses(
        world_to_camera=_fill_placeholders(world_to_camera, registered),
        registered=registered,
        camera=camera,
        covisibility=np.zeros((num_frames, num_frames), dtype=np.int64),
        points_world=np.zeros((0, 3)),
        frame_depth=np.zeros(num_frames),
        diagnostics={"sfm_models": 0, "sfm_points": 0},
    )


def two_view_poses(two_views: dict[tuple[int, int], TwoView], camera: PinholeCamera) -> SparsePoses:
    """Two frames the incremental mapper could not initialise (it re-estimates the pair's pose
    and fails on planar scenes): the verified pair's relative pose is the reconstruction. The
    focal length stays as given or assumed; translation has unit length (the dense step fixes
    the scale)."""
    view = two_views.get((0, 1))
    if view is None or view.rotation is None or not (view.tri_angle_deg > 0):
        return _unregistered(2, camera, reason="the two frames share no verified geometry")
    world_to_camera = np.tile(np.eye(4), (2, 1, 1))
    world_to_camera[1, :3, :3] = view.rotation
    world_to_camera[1, :3, 3] = view.translation
    # Scene depth for the dense step: median depth of the inliers, triangulated.
    depth = _two_view_median_depth(view, camera)
    return SparsePoses(
        world_to_camera=world_to_camera,
        registered=np.ones(2, dtype=bool),
        camera=camera,
        covisibility=np.array([[0, len(view.inliers)], [len(view.inliers), 0]]),
        points_world=np.zeros((0, 3)),
        frame_depth=np.array([depth, depth]),
        diagnostics={"sfm_models": 1, "sfm_points": 0, "two_view_inliers": len(view.inliers),
                     "two_view_config": view.config},  # fmt: skip
    )


def _two_view_median_depth(view: TwoView, camera: PinholeCamera) -> float:
    """Rough median depth (unit baseline) from the triangulation angle: depth ~ 1 / angle."""
    angle = math.radians(max(view.tri_angle_deg, 1e-3))
    return 1.0 / angle


def static_poses(num_frames: int, camera: PinholeCamera) -> SparsePoses:
    """A locked-off camera: every frame at the identity pose (an estimate, not a placeholder)."""
    return SparsePoses(
        world_to_camera=np.tile(np.eye(4), (num_frames, 1, 1)),
        registered=np.ones(num_frames, dtype=bool),
        camera=camera,
        covisibility=np.zeros((num_frames, num_frames), dtype=np.int64),
        points_world=np.zeros((0, 3)),
        frame_depth=np.zeros(num_frames),
        diagnostics={"sfm_models": 0, "sfm_points": 0},
    )


def _nearest_rotation(matrix: np.ndarray) -> np.ndarray:  # [3,3] -> [3,3] in SO(3)
    u, _, vh = np.linalg.svd(matrix / np.cbrt(np.linalg.det(matrix)))
    rotation = u @ vh
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vh
    return rotation


def _unregistered(num_frames: int, camera: PinholeCamera, reason: str) -> SparsePoses:
    return SparsePoses(
        world_to_camera=np.tile(np.eye(4), (num_frames, 1, 1)),
        registered=np.zeros(num_frames, dtype=bool),
        camera=camera,
        covisibility=np.zeros((num_frames, num_frames), dtype=np.int64),
        points_world=np.zeros((0, 3)),
        frame_depth=np.zeros(num_frames),
        diagnostics={"sfm_models": 0, "sfm_points": 0, "sfm_failure": reason},
    )


def _fill_placeholders(world_to_camera: np.ndarray, registered: np.ndarray) -> np.ndarray:
    """Unregistered frames take the pose of the nearest registered frame (earlier on ties), so
    plots stay readable; the terms ignore them."""
    out = world_to_camera.copy()
    known = np.nonzero(registered)[0]
    if len(known) == 0:
        return out
    for t in np.nonzero(~registered)[0]:
        out[t] = world_to_camera[known[np.argmin(np.abs(known - t))]]
    return out


def _fill_database(database, features, two_views, camera: PinholeCamera) -> None:
    import pycolmap

    colmap_camera = make_colmap_camera(camera)
    database.write_camera(colmap_camera, use_camera_id=True)
    rig = pycolmap.Rig(rig_id=1)
    rig.add_ref_sensor(colmap_camera.sensor_id)
    database.write_rig(rig, use_rig_id=True)
    for t, feature in enumerate(features):
        image = pycolmap.Image(name=f"frame{t:05d}", camera_id=1, image_id=t + 1)
        database.write_image(image, use_image_id=True)
        frame = pycolmap.Frame()
        frame.rig_id = 1
        frame.frame_id = t + 1
        frame.add_data_id(pycolmap.data_t(sensor_id=colmap_camera.sensor_id, id=t + 1))
        database.write_frame(frame, use_frame_id=True)
        image.frame_id = t + 1
        database.update_image(image)
        database.write_keypoints(t + 1, feature.keypoints_uv.astype(np.float32))
    for (i, j), view in two_views.items():
        # Keypoints are sorted strongest first: the smallest indices are the strongest.
        strength = np.maximum(view.inliers[:, 0], view.inliers[:, 1])
        inliers = view.inliers[np.sort(np.argsort(strength, kind="stable")[:MAPPER_MAX_PAIR_INLIERS])]
        geometry = pycolmap.TwoViewGeometry()
        geometry.config = getattr(pycolmap.TwoViewGeometryConfiguration, view.config)
        geometry.inlier_matches = inliers.astype(np.uint32)
        database.write_matches(i + 1, j + 1, inliers.astype(np.uint32))
        database.write_two_view_geometry(i + 1, j + 1, geometry)


def _mapper_options(refine_focal: bool):
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 1
    options.random_seed = 0
    options.extract_colors = False
    options.multiple_models = True
    options.max_num_models = 5
    options.min_model_size = 2
    options.min_num_matches = MIN_PAIR_INLIERS
    options.init_num_trials = 50
    options.ba_refine_focal_length = refine_focal
    options.ba_refine_principal_point = False
    options.ba_refine_extra_params = False
    # Lighter bundle adjustment than COLMAP's defaults: on the fox photos these settings cut the
    # mapper from ~1.0 to ~0.4 s with the same accuracy (bench/RESULTS.md).
    options.ba_local_max_num_iterations = 10
    options.ba_global_max_num_iterations = 20
    options.ba_local_max_refinements = 1
    options.ba_global_max_refinements = 2
    options.ba_global_frames_ratio = 1.4
    options.ba_global_points_ratio = 1.4
    options.max_runtime_seconds = MAPPER_MAX_RUNTIME_S
    mapper = options.mapper
    mapper.num_threads = 1
    mapper.random_seed = 0
    mapper.init_min_num_inliers = 30
    mapper.init_min_tri_angle = 4.0  # COLMAP: 16; video neighbours rarely see that much
    mapper.abs_pose_min_num_inliers = 15
    mapper.abs_pose_refine_focal_length = refine_focal
    mapper.abs_pose_refine_extra_params = False
    mapper.filter_max_reproj_error = 4.0
    triangulation = options.triangulation
    triangulation.random_seed = 0
    # COLMAP skips points seen by two frames only; short clips (a stereo pair, 8 photos of an
    # object) have little else, and filtering by reprojection error and angle remains.
    triangulation.ignore_two_view_tracks = False
    return options
