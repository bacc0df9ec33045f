"""Depth-map filtering and fusion into a coloured point cloud, and PLY I/O.

This module owns the post-processing of ALGORITHMS.md 6: the photometric
(confidence) mask, the geometric consistency test between a reference depth
map and its source views, the CasMVSNet / UniMVSNet "pcd" filter, the
CL-MVSNet variant of it, UniMVSNet's dynamic check ("dypcd"), and the fusion
of the surviving pixels into one world-frame point cloud.

Conventions are those of `keras_mvs.geometry`, which does all the projective
work (pixel (row i, column j) has its centre at x = j, y = i; bilinear
sampling with zero padding; `cam_from_world` maps world to camera with OpenCV
axes; depth is the camera-frame z). Inputs and outputs are numpy arrays; the
per-pixel work runs in TensorFlow with every source of a reference view in one
batch. Depths, point coordinates and the relative thresholds are in the units
of the camera files (mm for DTU); pixel thresholds are in pixels of the depth
map.

Example:
    >>> config = FilterConfig.preset("casmvsnet")
    >>> cloud = fuse_views(views, pairs, config)
    >>> write_ply("fused.ply", cloud.points, cloud.colors)
"""

import dataclasses
from typing import Callable
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Union

import numpy as np
import tensorflow as tf

from keras_mvs import geometry

# Most reference-by-source pixels handled in one TensorFlow batch; bounds the
# peak memory of `reprojection_errors` to a few hundred MB.
_MAX_PIXELS_PER_BATCH = 8_000_000
# From this many reference-by-source pixels on, the reprojection runs as one
# XLA cluster: 4.4x faster than eager at 10 x 800 x 600 on a 2-core CPU
# (0.83 s vs 3.7 s), but each new shape costs a compilation of several
# seconds, which only pays off on full-size maps (one shape for a scene).
_XLA_MIN_PIXELS = 1_000_000


@dataclasses.dataclass(frozen=True)
class ReprojectionErrors:
    """Forward-backward reprojection results per pixel (ALGORITHMS.md 6.2).

    Attributes:
        pixel_error: `[S, H, W]` float32, distance in reference pixels between
            each reference pixel and its round trip through the source depth.
            `inf` where the round trip is undefined (no reference depth, the
            point lands outside the source image or behind it, the sampled
            source depth is not positive).
        relative_depth_error: `[S, H, W]` float32, `|d' - d_ref| / d_ref`,
            `inf` where undefined.
        depth_reprojected: `[S, H, W]` float32, d', the depth of the source's
            point in the reference camera (depth units); 0 where undefined.
    """

    pixel_error: np.ndarray
    relative_depth_error: np.ndarray
    depth_reprojected: np.ndarray


def _as_float_array(value, name: str, shape_rank: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != shape_rank:
        raise ValueError(
            f"`{name}` must have rank {shape_rank}; received shape "
            f"{array.shape}.")
    return array


def _check_camera(
    intrinsics, cam_from_world, name: str, batch: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Float32 camera arrays, checked to be `[3, 3]` / `[4, 4]` (or `[S, ...]`
    when `batch`)."""
    rank = 3 if batch else 2
    batch_prefix = "S, " if batch else ""
    intrinsics = np.asarray(intrinsics, dtype=np.float32)
    cam_from_world = np.asarray(cam_from_world, dtype=np.float32)
    if intrinsics.shape[-2:] != (3, 3) or intrinsics.ndim != rank:
        raise ValueError(
            f"`{name}` intrinsics must be [{batch_prefix}3, 3]; received "
            f"shape {intrinsics.shape}.")
    if cam_from_world.shape[-2:] != (4, 4) or cam_from_world.ndim != rank:
        raise ValueError(
            f"`{name}` cam_from_world must be [{batch_prefix}4, 4]; received "
            f"shape {cam_from_world.shape}.")
    return intrinsics, cam_from_world


def _reprojection_batch(
    depth_ref: tf.Tensor,
    intrinsics_ref: tf.Tensor,
    cam_from_world_ref: tf.Tensor,
    depth_src: tf.Tensor,
    intrinsics_src: tf.Tensor,
    cam_from_world_src: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """TF core of `reprojection_errors` for one batch of S sources."""
    num_sources = tf.shape(depth_src)[0]
    depth_ref = tf.broadcast_to(
        depth_ref[tf.newaxis],
        tf.concat([[num_sources], tf.shape(depth_ref)], 0))  # [S, H, W]
    intrinsics_ref = tf.broadcast_to(intrinsics_ref, [num_sources, 3, 3])
    cam_from_world_ref = tf.broadcast_to(
        cam_from_world_ref, [num_sources, 4, 4])

    # Steps 1-2: reference pixel at its depth -> source pixel.
    pixels_src, _ = geometry.reproject(
        depth_ref, intrinsics_ref, cam_from_world_ref,
        intrinsics_src, cam_from_world_src)  # [S, H, W, 2]
    # Step 3: bilinear sample of the source depth, zero outside.
    sampled = geometry.bilinear_sample(
        depth_src[..., tf.newaxis], pixels_src)[..., 0]  # [S, H, W]

    # Step 4: lift the sampled depth at the (non-integer) source pixel and
    # project it back into the reference. The homogeneous pixel scaled by
    # depth, [d x, d y, d], goes through inv(K_src) and then ref_from_src as a
    # single 4x4 transform.
    lifted = tf.concat(
        [pixels_src * sampled[..., tf.newaxis], sampled[..., tf.newaxis]],
        axis=-1)  # [S, H, W, 3]
    inverse_intrinsics = tf.linalg.inv(intrinsics_src)
    lift = tf.concat([
        tf.concat([inverse_intrinsics, tf.zeros([num_sources, 3, 1])], -1),
        tf.broadcast_to(tf.constant([[[0.0, 0.0, 0.0, 1.0]]]),
                        [num_sources, 1, 4]),
    ], axis=1)  # [S, 4, 4]
    ref_from_src = geometry.relative_transform(
        cam_from_world_ref, cam_from_world_src)
    points_ref = geometry.transform_points(
        tf.linalg.matmul(ref_from_src, lift), lifted)  # [S, H, W, 3]
    pixels_back, depth_back = geometry.project(points_ref, intrinsics_ref)

    # Step 5: errors against the original pixel and depth.
    shape = tf.shape(depth_ref)
    grid = geometry.pixel_grid(shape[1], shape[2])  # [H, W, 2]
    pixel_error = tf.norm(pixels_back - grid, axis=-1)  # [S, H, W]
    relative_error = tf.abs(depth_back - depth_ref) / tf.where(
        depth_ref > 0, depth_ref, tf.ones_like(depth_ref))

    defined = ((depth_ref > 0) & (sampled > 0)
               & tf.math.is_finite(pixel_error)
               & tf.math.is_finite(relative_error))
    inf = tf.fill(tf.shape(pixel_error), np.inf)
    return (tf.where(defined, pixel_error, inf),
            tf.where(defined, relative_error, inf),
            tf.where(defined, depth_back, tf.zeros_like(depth_back)))


_reprojection_batch_xla = tf.function(
    _reprojection_batch, jit_compile=True, reduce_retracing=True)


def reprojection_errors(
    depth_ref: np.ndarray,
    intrinsics_ref: np.ndarray,
    cam_from_world_ref: np.ndarray,
    depth_src: np.ndarray,
    intrinsics_src: np.ndarray,
    cam_from_world_src: np.ndarray,
) -> ReprojectionErrors:
    """Forward-backward reprojection of a reference depth map through sources.

    ALGORITHMS.md 6.2, for S source views at once: each reference pixel
    (x, y) with depth d_ref is lifted to 3-D, projected into the source,
    the source depth is sampled there bilinearly (zero outside the image),
    and that source point is projected back into the reference, giving
    (x', y') and d'. This is computed once per (reference, source) pair;
    the pcd and dynamic filters only threshold its result.

    Args:
        depth_ref: `[H, W]` reference depth (depth units; <= 0 or
            non-finite means none).
        intrinsics_ref: `[3, 3]` for the reference depth map's resolution.
        cam_from_world_ref: `[4, 4]` world-to-camera.
        depth_src: `[S, H', W']` source depths, all of one size (<= 0 or
            non-finite means none).
        intrinsics_src: `[S, 3, 3]` for the source depth maps' resolution.
        cam_from_world_src: `[S, 4, 4]`.

    Returns:
        A `ReprojectionErrors` with `[S, H, W]` float32 arrays.

    Raises:
        ValueError: if a shape is not as above.
    """
    # Non-finite depths become 0 ("no depth"): a NaN would leak into the
    # bilinear samples of its neighbours even with a zero weight.
    depth_ref = _clean_depth(_as_float_array(depth_ref, "depth_ref", 2))
    depth_src = _clean_depth(_as_float_array(depth_src, "depth_src", 3))
    intrinsics_ref, cam_from_world_ref = _check_camera(
        intrinsics_ref, cam_from_world_ref, "reference", batch=False)
    intrinsics_src, cam_from_world_src = _check_camera(
        intrinsics_src, cam_from_world_src, "source", batch=True)
    num_sources = depth_src.shape[0]
    if not (intrinsics_src.shape[0] == cam_from_world_src.shape[0]
            == num_sources):
        raise ValueError(
            "`depth_src`, `intrinsics_src` and `cam_from_world_src` must "
            f"have the same leading size S; received {depth_src.shape}, "
            f"{intrinsics_src.shape}, {cam_from_world_src.shape}.")

    chunk = max(1, _MAX_PIXELS_PER_BATCH // max(depth_ref.size, 1))
    outputs = []
    for start in range(0, num_sources, chunk):
        part = slice(start, start + chunk)
        batch_pixels = depth_ref.size * depth_src[part].shape[0]
        function = (_reprojection_batch_xla if batch_pixels >= _XLA_MIN_PIXELS
                    else _reprojection_batch)
        outputs.append([
            t.numpy() for t in function(
                tf.constant(depth_ref), tf.constant(intrinsics_ref),
                tf.constant(cam_from_world_ref), tf.constant(depth_src[part]),
                tf.constant(intrinsics_src[part]),
                tf.constant(cam_from_world_src[part]))
        ])
    if not outputs:
        empty = np.zeros((0,) + depth_ref.shape, np.float32)
        return ReprojectionErrors(empty, empty.copy(), empty.copy())
    if len(outputs) == 1:
        return ReprojectionErrors(*outputs[0])
    return ReprojectionErrors(
        *(np.concatenate(arrays, axis=0) for arrays in zip(*outputs)))


def check_geometric_consistency(
    depth_ref: np.ndarray,
    intrinsics_ref: np.ndarray,
    cam_from_world_ref: np.ndarray,
    depth_src: np.ndarray,
    intrinsics_src: np.ndarray,
    cam_from_world_src: np.ndarray,
    max_pixel_error: float = 1.0,
    max_relative_depth_error: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """The "pcd" pair test between a reference and one source depth map.

    ALGORITHMS.md 6.2-6.3: a reference pixel is consistent with the source
    when its forward-backward reprojection lands within `max_pixel_error`
    pixels of itself and the reprojected depth d' is within
    `max_relative_depth_error` of d_ref (both strict).

    Args:
        depth_ref: `[H, W]` reference depth (depth units, e.g. mm).
        intrinsics_ref: `[3, 3]` for the reference depth map's resolution.
        cam_from_world_ref: `[4, 4]` world-to-camera.
        depth_src: `[H', W']` source depth.
        intrinsics_src: `[3, 3]` for the source depth map's resolution.
        cam_from_world_src: `[4, 4]`.
        max_pixel_error: threshold on the round-trip distance, pixels.
        max_relative_depth_error: threshold on `|d' - d_ref| / d_ref`.

    Returns:
        `(mask [H, W] bool, depth_reprojected [H, W] float32)`; the
        reprojected depth is 0 where the mask is false.
    """
    intrinsics_src, cam_from_world_src = _check_camera(
        intrinsics_src, cam_from_world_src, "source", batch=False)
    errors = reprojection_errors(
        depth_ref, intrinsics_ref, cam_from_world_ref,
        _as_float_array(depth_src, "depth_src", 2)[np.newaxis],
        intrinsics_src[np.newaxis], cam_from_world_src[np.newaxis])
    mask = ((errors.pixel_error[0] < max_pixel_error)
            & (errors.relative_depth_error[0] < max_relative_depth_error))
    return mask, np.where(mask, errors.depth_reprojected[0], 0.0).astype(
        np.float32)


def photometric_mask(
    confidences: Sequence[np.ndarray], thresholds: Sequence[float]
) -> np.ndarray:
    """Confidence mask: every confidence map above its threshold (strict).

    Args:
        confidences: maps `[H, W]` in [0, 1], one per threshold: either the
            final confidence alone, or the stage confidences coarse to fine
            (nearest-upsampled to the depth resolution).
        thresholds: as many thresholds, same order (e.g. UniMVSNet's
            `(0.1, 0.15, 0.9)` for stages 1, 2, 3).

    Returns:
        `[H, W]` bool, the AND of `confidence > threshold` over the maps.

    Raises:
        ValueError: if the counts or the map shapes disagree.
    """
    if len(confidences) != len(thresholds) or not thresholds:
        raise ValueError(
            f"Expected one confidence map per threshold; received "
            f"{len(confidences)} maps and thresholds {tuple(thresholds)}.")
    maps = [np.asarray(c, dtype=np.float32) for c in confidences]
    if any(m.ndim != 2 or m.shape != maps[0].shape for m in maps):
        raise ValueError(
            "Confidence maps must all be [H, W] of one size; received "
            f"shapes {[m.shape for m in maps]}.")
    mask = np.ones(maps[0].shape, bool)
    for confidence, threshold in zip(maps, thresholds):
        mask &= confidence > threshold
    return mask


def pcd_consistency(
    errors: ReprojectionErrors,
    depth_ref: np.ndarray,
    max_pixel_error: float = 1.0,
    max_relative_depth_error: float = 0.01,
    min_consistent_views: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """CasMVSNet / UniMVSNet "pcd" geometric mask and averaged depth.

    ALGORITHMS.md 6.3: a source is consistent at a pixel when
    `pixel_error < max_pixel_error` and
    `relative_depth_error < max_relative_depth_error`; the pixel passes when
    at least `min_consistent_views` sources are consistent. The output depth
    is `(d_ref + sum of consistent d') / (n + 1)`. The CL-MVSNet filter is
    this function with (0.75, 0.001, 3).

    Args:
        errors: `reprojection_errors` of the S sources, `[S, H, W]` each.
        depth_ref: `[H, W]` reference depth (depth units).
        max_pixel_error: pixels.
        max_relative_depth_error: fraction of d_ref.
        min_consistent_views: `thres_view`.

    Returns:
        `(geo_mask [H, W] bool, depth_averaged [H, W] float32)`.
    """
    depth_ref = _as_float_array(depth_ref, "depth_ref", 2)
    consistent = ((errors.pixel_error < max_pixel_error)
                  & (errors.relative_depth_error < max_relative_depth_error))
    return (np.sum(consistent, axis=0) >= min_consistent_views,
            _averaged_depth(depth_ref, errors.depth_reprojected, consistent))


def dynamic_consistency(
    errors: ReprojectionErrors,
    depth_ref: np.ndarray,
    pixel_error_base: float = 0.25,
    relative_error_base: float = 1.0 / 1300.0,
    max_level: int = 10,
    num_source_views: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """UniMVSNet's dynamic consistency check ("dypcd", ALGORITHMS.md 6.3).

    At level i (2 <= i <= max_level) a source is consistent when
    `pixel_error < i * pixel_error_base` and
    `relative_depth_error < i * relative_error_base`; n_i counts those
    sources. A pixel passes when n_i >= i for some i in 2..N_src (levels
    beyond `max_level` do not exist). The depth is averaged with the sources
    consistent at the loosest level, `max_level`. The reference code also
    ORs in `n_max_level >= N_src + 1`, which no pixel can satisfy (there are
    only N_src sources); that dead term is omitted.

    Args:
        errors: `reprojection_errors` of the S sources, `[S, H, W]` each.
        depth_ref: `[H, W]` reference depth (depth units).
        pixel_error_base: `dist_base`, pixels per level.
        relative_error_base: `rel_diff_base` per level.
        max_level: the loosest level (10 in UniMVSNet).
        num_source_views: N_src, the pair-file source count; defaults to S.

    Returns:
        `(geo_mask [H, W] bool, depth_averaged [H, W] float32)`.
    """
    if max_level < 2:
        raise ValueError(f"`max_level` must be >= 2; received {max_level}.")
    depth_ref = _as_float_array(depth_ref, "depth_ref", 2)
    if num_source_views is None:
        num_source_views = errors.pixel_error.shape[0]
    geo_mask = np.zeros(depth_ref.shape, bool)
    for level in range(2, max_level + 1):
        consistent = ((errors.pixel_error < level * pixel_error_base)
                      & (errors.relative_depth_error
                         < level * relative_error_base))  # [S, H, W]
        if level <= num_source_views:
            geo_mask |= np.sum(consistent, axis=0) >= level
    # `consistent` now holds the loosest level, max_level.
    return geo_mask, _averaged_depth(
        depth_ref, errors.depth_reprojected, consistent)


def _averaged_depth(
    depth_ref: np.ndarray,
    depth_reprojected: np.ndarray,
    consistent: np.ndarray,
) -> np.ndarray:
    """(d_ref + sum of consistent d') / (n + 1), `[H, W]` float32."""
    total = depth_ref + np.sum(
        np.where(consistent, depth_reprojected, 0.0), axis=0)
    return (total / (np.sum(consistent, axis=0) + 1)).astype(np.float32)


# Per-scene confidence thresholds (stages 1, 2, 3) of UniMVSNet's dypcd on
# Tanks and Temples (`Uni:filter/tank_test_config.py`); other scenes use
# (0.1, 0.15, 0.9).
UNIMVSNET_TANKS_CONFIDENCE_THRESHOLDS = {
    "Family": (0.4, 0.6, 0.9),
    "Francis": (0.4, 0.6, 0.95),
    "Horse": (0.05, 0.1, 0.6),
    "Lighthouse": (0.5, 0.6, 0.9),
    "M60": (0.4, 0.7, 0.9),
    "Panther": (0.1, 0.15, 0.9),
    "Playground": (0.5, 0.7, 0.9),
    "Train": (0.3, 0.6, 0.95),
    "Auditorium": (0.0, 0.0, 0.4),
    "Courtroom": (0.0, 0.0, 0.4),
    "Temple": (0.0, 0.0, 0.4),
    "Ballroom": (0.0, 0.0, 0.5),
    "Museum": (0.0, 0.0, 0.7),
    "Palace": (0.0, 0.0, 0.7),
}

# CL-MVSNet's per-scan pixel threshold on the DTU test set (`img_dist_thres`,
# default 0.75). This is fusion tuned on the test set (flagged in
# ALGORITHMS.md 6.3); it is here only to reproduce the published numbers.
CLMVSNET_DTU_PIXEL_ERROR = {
    75: 0.15, 77: 0.2,
    10: 0.25, 12: 0.25, 15: 0.25, 23: 0.25, 34: 0.25, 49: 0.25, 110: 0.25,
    1: 0.5, 9: 0.5, 24: 0.5, 29: 0.5, 32: 0.5, 62: 0.5, 114: 0.5,
    4: 0.75, 11: 0.75, 13: 0.75, 33: 0.75, 48: 0.75, 118: 0.75,
}

_PRESETS = {
    # Cas "normal" filter: final confidence > 0.9, 1 px, 1 %, 5 views.
    "casmvsnet": dict(method="pcd", confidence_thresholds=(0.9,)),
    # Uni pcd: the three stage confidences ANDed.
    "unimvsnet_pcd": dict(method="pcd",
                          confidence_thresholds=(0.1, 0.15, 0.9)),
    # CL pcd: final confidence > 0.8, 0.75 px, 0.1 %, 3 views.
    "clmvsnet": dict(method="pcd", confidence_thresholds=(0.8,),
                     max_pixel_error=0.75, max_relative_depth_error=0.001,
                     min_consistent_views=3),
    # Uni dypcd: stage confidences ANDed, levels 2..10 of 1/4 px, 1/1300.
    "unimvsnet_dypcd": dict(method="dypcd",
                            confidence_thresholds=(0.1, 0.15, 0.9)),
}


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Photometric + geometric filter settings (ALGORITHMS.md 6.3).

    Attributes:
        method: "pcd" (fixed thresholds) or "dypcd" (dynamic levels).
        confidence_thresholds: one threshold for the final confidence, or
            one per stage (coarse to fine) applied to the stage confidences.
        max_pixel_error: pcd round-trip threshold, pixels.
        max_relative_depth_error: pcd threshold on `|d' - d_ref| / d_ref`.
        min_consistent_views: pcd `thres_view`.
        dynamic_pixel_error_base: dypcd `dist_base`, pixels per level.
        dynamic_relative_error_base: dypcd `rel_diff_base` per level.
        dynamic_max_level: dypcd loosest level.
        max_source_views: use at most this many sources of each pair-file
            entry (in pair-file order); None uses them all, as the
            reference filters do.
    """

    method: str = "pcd"
    confidence_thresholds: tuple = (0.9,)
    max_pixel_error: float = 1.0
    max_relative_depth_error: float = 0.01
    min_consistent_views: int = 5
    dynamic_pixel_error_base: float = 0.25
    dynamic_relative_error_base: float = 1.0 / 1300.0
    dynamic_max_level: int = 10
    max_source_views: Optional[int] = None

    def __post_init__(self) -> None:
        if self.method not in ("pcd", "dypcd"):
            raise ValueError(
                f"FilterConfig.method must be 'pcd' or 'dypcd'; received "
                f"{self.method!r}.")
        object.__setattr__(self, "confidence_thresholds",
                           tuple(float(t) for t in self.confidence_thresholds))
        if not self.confidence_thresholds:
            raise ValueError(
                "FilterConfig.confidence_thresholds must hold at least one "
                "threshold.")
        if self.min_consistent_views < 1:
            raise ValueError(
                "FilterConfig.min_consistent_views must be >= 1; received "
                f"{self.min_consistent_views}.")
        if self.dynamic_max_level < 2:
            raise ValueError(
                "FilterConfig.dynamic_max_level must be >= 2; received "
                f"{self.dynamic_max_level}.")
        if self.max_source_views is not None and self.max_source_views < 1:
            raise ValueError(
                "FilterConfig.max_source_views must be None or >= 1; "
                f"received {self.max_source_views}.")

    @classmethod
    def preset(cls, name: str, **overrides) -> "FilterConfig":
        """A named reference setting, optionally with fields overridden.

        Args:
            name: "casmvsnet", "unimvsnet_pcd", "clmvsnet" or
                "unimvsnet_dypcd".
            **overrides: FilterConfig fields to change, e.g.
                `max_pixel_error=CLMVSNET_DTU_PIXEL_ERROR[24]`.

        Returns:
            The FilterConfig.
        """
        if name not in _PRESETS:
            raise ValueError(
                f"Unknown filter preset {name!r}; expected one of "
                f"{sorted(_PRESETS)}.")
        return cls(**{**_PRESETS[name], **overrides})


@dataclasses.dataclass
class FusionView:
    """One view's network output, as `fuse_views` needs it.

    Attributes:
        depth: `[H, W]` float depth (depth units of the cameras, e.g. mm);
            <= 0 or non-finite means no depth.
        confidence: `[H, W]` final confidence in [0, 1].
        intrinsics: `[3, 3]` for the depth map's resolution (the stage-3 K).
        cam_from_world: `[4, 4]` world-to-camera, OpenCV axes.
        image: `[H, W, 3]` uint8 colours at the depth resolution.
        stage_confidences: per-stage confidences `[H, W]` coarse to fine,
            upsampled to the depth resolution; needed when the filter has one
            threshold per stage.
    """

    depth: np.ndarray
    confidence: np.ndarray
    intrinsics: np.ndarray
    cam_from_world: np.ndarray
    image: np.ndarray
    stage_confidences: Sequence[np.ndarray] = ()


@dataclasses.dataclass(frozen=True)
class ViewStats:
    """Per-reference-view filter counts, to diagnose an empty cloud.

    Attributes:
        view_id: the reference view.
        pixels: pixels of its depth map.
        photometric_kept: pixels passing the confidence mask.
        geometric_kept: pixels passing the geometric mask.
        points_kept: pixels passing both (the fused points of this view).
        num_sources: source views used.
    """

    view_id: int
    pixels: int
    photometric_kept: int
    geometric_kept: int
    points_kept: int
    num_sources: int


@dataclasses.dataclass
class FusedCloud:
    """The fused point cloud.

    Attributes:
        points: `[N, 3]` float32 world coordinates (depth units).
        colors: `[N, 3]` uint8 RGB from the reference images.
        view_stats: one `ViewStats` per reference view, in pair order.
    """

    points: np.ndarray
    colors: np.ndarray
    view_stats: list

    def summary(self) -> dict:
        """JSON-ready totals and per-view counts."""
        return {
            "num_points": int(self.points.shape[0]),
            "views": [dataclasses.asdict(s) for s in self.view_stats],
        }


def _check_view(view_id, view: FusionView) -> None:
    depth = np.asarray(view.depth)
    if depth.ndim != 2:
        raise ValueError(
            f"View {view_id}: depth must be [H, W]; received shape "
            f"{depth.shape}.")
    if np.shape(view.confidence) != depth.shape:
        raise ValueError(
            f"View {view_id}: confidence must be {depth.shape} like the "
            f"depth; received {np.shape(view.confidence)}.")
    for index, stage in enumerate(view.stage_confidences):
        if np.shape(stage) != depth.shape:
            raise ValueError(
                f"View {view_id}: stage_confidences[{index}] must be "
                f"{depth.shape} (upsampled to the depth resolution); "
                f"received {np.shape(stage)}.")
    image = np.asarray(view.image)
    if image.shape != depth.shape + (3,) or image.dtype != np.uint8:
        raise ValueError(
            f"View {view_id}: image must be uint8 {depth.shape + (3,)} (the "
            f"depth resolution); received {image.dtype} {image.shape}.")
    _check_camera(view.intrinsics, view.cam_from_world, f"view {view_id}",
                  batch=False)


def _source_ids(entry) -> list:
    """Source ids of a pair entry: ints or `(id, score)` tuples."""
    return [int(s[0]) if isinstance(s, (tuple, list)) else int(s)
            for s in entry]


def _clean_depth(depth) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(
        np.float32)


def _source_errors(depth_ref, ref, sources) -> ReprojectionErrors:
    """`reprojection_errors` of all sources, one TF batch per source size."""
    shapes = sorted({np.shape(s.depth) for s in sources})
    per_shape = {}
    for shape in shapes:
        members = [s for s in sources if np.shape(s.depth) == shape]
        per_shape[shape] = reprojection_errors(
            depth_ref, ref.intrinsics, ref.cam_from_world,
            np.stack([s.depth for s in members]),
            np.stack([s.intrinsics for s in members]),
            np.stack([s.cam_from_world for s in members]))
    if len(shapes) == 1:  # the usual case: no concatenation copy
        return per_shape[shapes[0]]
    if not shapes:
        empty = np.zeros((0,) + depth_ref.shape, np.float32)
        return ReprojectionErrors(empty, empty, empty)
    # The filters only count and sum over sources, so their order is free.
    return ReprojectionErrors(*(
        np.concatenate([getattr(per_shape[shape], field) for shape in shapes])
        for field in ("pixel_error", "relative_depth_error",
                      "depth_reprojected")))


def filter_view(
    ref: FusionView,
    sources: Sequence[FusionView],
    config: FilterConfig,
    num_source_views: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photometric and geometric masks and the averaged depth of one view.

    Args:
        ref: the reference view.
        sources: its source views (validated FusionViews).
        config: the filter.
        num_source_views: N_src for dypcd; defaults to `len(sources)`.

    Returns:
        `(photo_mask [H, W] bool, geo_mask [H, W] bool,
        depth_averaged [H, W] float32)`.
    """
    thresholds = config.confidence_thresholds
    if len(thresholds) == 1:
        confidences = [ref.confidence]
    elif len(ref.stage_confidences) == len(thresholds):
        confidences = list(ref.stage_confidences)
    else:
        raise ValueError(
            f"The filter has {len(thresholds)} stage thresholds "
            f"{thresholds} but the view has {len(ref.stage_confidences)} "
            "stage confidences.")
    photo = photometric_mask(confidences, thresholds)

    depth_ref = _clean_depth(ref.depth)
    errors = _source_errors(depth_ref, ref, sources)
    if config.method == "pcd":
        geo, depth = pcd_consistency(
            errors, depth_ref, config.max_pixel_error,
            config.max_relative_depth_error, config.min_consistent_views)
    else:
        geo, depth = dynamic_consistency(
            errors, depth_ref, config.dynamic_pixel_error_base,
            config.dynamic_relative_error_base, config.dynamic_max_level,
            len(sources) if num_source_views is None else num_source_views)
    return photo, geo, depth


def fuse_views(
    views: Union[Mapping[int, FusionView], Sequence[FusionView]],
    pairs: Sequence,
    config: FilterConfig,
    on_view: Optional[Callable[["ViewStats"], None]] = None,
) -> FusedCloud:
    """Filters every reference view and fuses the survivors into one cloud.

    ALGORITHMS.md 6.3-6.4: for each pair entry, the reference view's pixels
    passing the photometric mask and the geometric mask against its sources
    are unprojected with the averaged depth, `inv(K_ref)` and
    `inv(cam_from_world_ref)`, and coloured from the reference image.

    Args:
        views: FusionViews keyed (or indexed) by view id. Only
            `views[view_id]` is used, so a Mapping that loads views lazily
            (with a cache) keeps large scenes out of memory.
        pairs: `[(ref_id, sources), ...]` where `sources` lists source ids or
            `(source_id, score)` tuples (`keras_mvs.data.read_pair_file`
            output works as is). Reference views missing from `views` are an
            error; so are sources.
        config: the filter.
        on_view: called with each reference view's ViewStats as soon as it
            is done (progress bars, logging).

    Returns:
        A FusedCloud: points in world coordinates (depth units), uint8
        colours and per-view statistics.

    Raises:
        ValueError: for a view id not in `views` or a malformed view.
    """
    def lookup(view_id: int, role: str) -> FusionView:
        try:
            return views[view_id]
        except (KeyError, IndexError):
            raise ValueError(
                f"Pair list names {role} view {view_id}, which is not among "
                "the views given.") from None

    all_points, all_colors, stats = [], [], []
    for entry in pairs:
        ref_id, source_entry = entry
        ref_id = int(ref_id)
        ref = lookup(ref_id, "reference")
        _check_view(ref_id, ref)
        source_ids = _source_ids(source_entry)
        if config.max_source_views is not None:
            source_ids = source_ids[:config.max_source_views]
        sources = []
        for source_id in source_ids:
            source = lookup(source_id, "source")
            _check_view(source_id, source)
            sources.append(source)

        photo, geo, depth = filter_view(ref, sources, config)
        keep = photo & geo
        points_cam = geometry.unproject(
            np.where(keep, depth, 0.0)[np.newaxis].astype(np.float32),
            np.asarray(ref.intrinsics, np.float32)[np.newaxis])
        world_from_cam = np.linalg.inv(
            np.asarray(ref.cam_from_world, np.float64)).astype(np.float32)
        points_world = geometry.transform_points(
            world_from_cam[np.newaxis], points_cam).numpy()[0]  # [H, W, 3]
        all_points.append(points_world[keep])
        all_colors.append(np.asarray(ref.image)[keep])
        stats.append(ViewStats(
            view_id=ref_id, pixels=int(keep.size),
            photometric_kept=int(photo.sum()), geometric_kept=int(geo.sum()),
            points_kept=int(keep.sum()), num_sources=len(sources)))
        if on_view is not None:
            on_view(stats[-1])

    points = (np.concatenate(all_points).astype(np.float32) if all_points
              else np.zeros((0, 3), np.float32))
    colors = (np.concatenate(all_colors).astype(np.uint8) if all_colors
              else np.zeros((0, 3), np.uint8))
    return FusedCloud(points=points, colors=colors, view_stats=stats)
