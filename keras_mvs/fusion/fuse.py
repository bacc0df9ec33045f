"""Filtering and fusion of a scene's depth maps into one point cloud.

ALGORITHMS.md 6.3-6.4: the filter settings (`FilterConfig` and the
reference presets), the per-view inputs (`FusionView`), the filter of one
reference view against its sources (`filter_view`, built on
`consistency`) and the loop over the pair list that unprojects the
surviving pixels into a coloured world-frame cloud (`fuse_views`). Point
coordinates are in the units of the camera files (mm for DTU).
"""

import dataclasses
from typing import Callable
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Union

import numpy as np

from keras_mvs import geometry
from keras_mvs.fusion.consistency import ReprojectionErrors
from keras_mvs.fusion.consistency import check_camera
from keras_mvs.fusion.consistency import clean_depth
from keras_mvs.fusion.consistency import dynamic_consistency
from keras_mvs.fusion.consistency import pcd_consistency
from keras_mvs.fusion.consistency import photometric_mask
from keras_mvs.fusion.consistency import reprojection_errors

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
    # Uni's published DTU settings, "conf 0.3, 3 views": its unity
    # confidence is the peak of one classification, lower than the
    # regression heads' 4-neighbour sum (ALGORITHMS.md 3.4, 6.3).
    "unimvsnet_dtu": dict(method="pcd", confidence_thresholds=(0.3,),
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
    check_camera(view.intrinsics, view.cam_from_world, f"view {view_id}",
                  batch=False)


def _source_ids(entry) -> list:
    """Source ids of a pair entry: ints or `(id, score)` tuples."""
    return [int(s[0]) if isinstance(s, (tuple, list)) else int(s)
            for s in entry]



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

    depth_ref = clean_depth(ref.depth)
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
