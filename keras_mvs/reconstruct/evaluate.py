"""A fused cloud against what is known of the scene: ground-truth points
(`evaluate_against`, through `keras_mvs.evaluation`) and object masks
(`mask_agreement`, through `keras_mvs.geometry`'s projection)."""

from typing import Optional
from typing import Sequence

import numpy as np

from keras_mvs import evaluation
from keras_mvs import files
from keras_mvs import geometry
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib

PathLike = formats.PathLike


def read_ground_truth_points(gt_path: PathLike) -> np.ndarray:
    """Ground-truth points `[N, 3]` float32 from a PLY, or from an `.npz`
    with an `xyz [N, 3]` array (e.g. `dtu_scan24/sparse_points_dtu_frame.npz`).

    Raises:
        FileNotFoundError, ValueError: unreadable ground truth.
    """
    if str(gt_path).endswith(".npz"):
        with np.load(gt_path) as data:
            if "xyz" not in data:
                raise ValueError(
                    f"{gt_path}: expected an array 'xyz' [N, 3]; found "
                    f"{sorted(data.files)}")
            return np.asarray(data["xyz"], np.float32)
    points, _, _ = files.read_ply(str(gt_path))
    return points


def evaluate_against(points: np.ndarray, gt_path: PathLike,
                     threshold: float,
                     max_distance: Optional[float] = 20.0) -> dict:
    """Accuracy, completeness, overall and precision/recall/F-score of a
    fused cloud against ground-truth points (generic mode of ALGORITHMS.md
    7.1 and 7.2, `keras_mvs.evaluation`; distances in depth units).

    Args:
        points: `[N, 3]` fused points.
        gt_path: a PLY or an `.npz` (`read_ground_truth_points`).
        threshold: the precision / recall distance.
        max_distance: the accuracy / completeness cut-off.

    Raises:
        FileNotFoundError, ValueError: unreadable ground truth.
    """
    gt_points = read_ground_truth_points(gt_path)
    metrics = evaluation.accuracy_completeness(points, gt_points,
                                               max_distance=max_distance)
    metrics.update(evaluation.precision_recall_fscore(points, gt_points,
                                                      threshold=threshold))
    return metrics


def mask_agreement(points: np.ndarray, scene: scene_lib.MVSScene,
                   view_ids: Sequence[int]) -> Optional[dict]:
    """How well a cloud agrees with the scene's object masks (`masks/`).

    Every point is projected (`geometry.transform_points`,
    `geometry.project`, in float64) into every view that has a mask, with
    the view's full-resolution camera, and rounded to the nearest pixel
    (pixel (i, j) has its centre at x = j, y = i); projections behind the
    camera or outside the image are ignored.

    Args:
        points: `[N, 3]` world points.
        scene: the scene.
        view_ids: the views to test.

    Returns:
        None when no view has a mask, else `{"masked_views",
        "projection_fraction"` (share of in-image projections that land in
        the mask), `"hull_fraction"` (share of points inside the mask in
        every masked view they project into: inside the masks' visual
        hull), `"projected_points"` (points seen by some masked view)}.
    """
    points = np.asarray(points, np.float64)
    inside_all = np.ones(points.shape[0], bool)
    seen = np.zeros(points.shape[0], bool)
    hits = projections = masked_views = 0
    for view_id in view_ids:
        mask = scene.mask(view_id)
        if mask is None:
            continue
        masked_views += 1
        camera = scene.camera(view_id)
        points_cam = geometry.transform_points(
            np.asarray(camera.cam_from_world, np.float64)[np.newaxis],
            points[np.newaxis])  # [1, N, 3]
        pixels, _ = geometry.project(
            points_cam, np.asarray(camera.intrinsics, np.float64)[np.newaxis])
        # Behind the camera the pixels are NaN, and NaN fails every bound.
        cols, rows = np.round(pixels.numpy()[0]).T  # [N] each
        with np.errstate(invalid="ignore"):
            in_image = ((cols >= 0) & (cols < mask.shape[1])
                        & (rows >= 0) & (rows < mask.shape[0]))
        in_mask = np.zeros(points.shape[0], bool)
        in_mask[in_image] = mask[rows[in_image].astype(int),
                                 cols[in_image].astype(int)]
        hits += int(in_mask.sum())
        projections += int(in_image.sum())
        seen |= in_image
        inside_all &= in_mask | ~in_image
    if not masked_views:
        return None
    return {
        "masked_views": masked_views,
        "projection_fraction": hits / projections if projections else
        float("nan"),
        "hull_fraction": float(np.mean(inside_all[seen])) if seen.any()
        else float("nan"),
        "projected_points": int(seen.sum()),
    }
