"""Point-cloud metrics (ALGORITHMS.md 7): accuracy / completeness /
overall, the DTU protocol (7.1) and precision / recall / F-score (7.2).

Nearest neighbours come from `scipy.spatial.cKDTree`. Distances are in the
units of the points (mm for DTU, whose protocol constants 0.2 mm and 20 mm
are the defaults of `dtu_evaluate`).
"""

import dataclasses
import os
from typing import Optional
from typing import Union

import numpy as np
import plyfile
import scipy.io
import scipy.spatial

from keras_mvs import files

PathLike = Union[str, os.PathLike]


def _points(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(
            f"`{name}` must be [N, 3] points; received shape {array.shape}.")
    return array


def reduce_points(
    points: np.ndarray,
    min_spacing: float,
    seed: int = 0,
    return_indices: bool = False,
    workers: int = 1,
) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Greedy radius thinning in random order (ALGORITHMS.md 7.1 step 1).

    The points are visited in a random order; each point not yet removed is
    kept and removes all other points within `min_spacing` of it (inclusive),
    as `reducePts_haa.m` and the Python DTU port do. Afterwards no two kept
    points are within `min_spacing`, and every removed point is within
    `min_spacing` of a kept one.

    Args:
        points: `[N, 3]` (depth units).
        min_spacing: the spacing, same units (DTU: 0.2 mm).
        seed: seed of the visiting order.
        return_indices: also return the indices of the kept points.
        workers: threads for the KD-tree queries (-1: all cores).

    Returns:
        The kept points `[M, 3]` (input dtype, in ascending index order) and,
        with `return_indices`, their `[M]` int64 indices into `points`.
    """
    source = np.asarray(points)
    points = _points(points, "points")
    if not min_spacing > 0:
        raise ValueError(
            f"`min_spacing` must be positive; received {min_spacing}.")
    count = points.shape[0]
    tree = scipy.spatial.cKDTree(points)
    order = np.random.default_rng(seed).permutation(count)
    removed = np.zeros(count, bool)
    kept = np.zeros(count, bool)
    # The neighbour lists are queried a block of the visiting order at a
    # time, for the points still standing, to bound memory.
    block = 65536
    for start in range(0, count, block):
        candidates = order[start:start + block]
        candidates = candidates[~removed[candidates]]
        neighbours = tree.query_ball_point(
            points[candidates], min_spacing, workers=workers)
        for index, near in zip(candidates, neighbours):
            if removed[index]:
                continue
            kept[index] = True
            removed[near] = True
    indices = np.flatnonzero(kept)
    if return_indices:
        return source[indices], indices
    return source[indices]


def _nearest_distances(
    query: np.ndarray,
    reference: np.ndarray,
    bound: Optional[float],
    workers: int,
) -> np.ndarray:
    """Distance from each query point to its nearest reference point.

    Distances beyond `bound` come back as inf (the KD-tree stops there).
    """
    if reference.shape[0] == 0:
        return np.full(query.shape[0], np.inf)
    tree = scipy.spatial.cKDTree(reference)
    upper = np.inf if bound is None else np.nextafter(bound, np.inf)
    distances, _ = tree.query(query, distance_upper_bound=upper,
                              workers=workers)
    return distances


def _cut_statistics(
    distances: np.ndarray, max_distance: Optional[float], prefix: str
) -> dict:
    """Mean, median and fraction cut of the distances below the cut-off."""
    inside = (distances < max_distance if max_distance is not None
              else np.isfinite(distances))
    kept = distances[inside]
    return {
        prefix: float(kept.mean()) if kept.size else float("nan"),
        f"{prefix}_median": float(np.median(kept)) if kept.size
        else float("nan"),
        f"{prefix}_fraction_cut": float(1.0 - inside.mean()) if inside.size
        else float("nan"),
        f"{prefix}_num_points": int(distances.size),
    }


def accuracy_completeness(
    pred: np.ndarray,
    gt: np.ndarray,
    max_distance: Optional[float] = 20.0,
    workers: int = 1,
) -> dict:
    """Accuracy, completeness and overall between two point clouds.

    Accuracy is the mean nearest-neighbour distance from the predicted points
    to the ground truth, completeness from the ground truth to the
    prediction, both over the distances below `max_distance` (ALGORITHMS.md
    7.1 steps 2-4 without the DTU masks); overall is their mean.

    Args:
        pred: `[N, 3]` reconstruction (depth units).
        gt: `[M, 3]` ground truth, same units.
        max_distance: distances >= this are discarded (DTU: 20 mm); None
            keeps all.
        workers: threads for the KD-tree queries (-1: all cores).

    Returns:
        A dict with `accuracy`, `completeness`, `overall`, the `_median`,
        `_fraction_cut` (share of points whose distance was discarded) and
        `_num_points` of accuracy and completeness. Means are NaN when no
        distance is kept.
    """
    pred = _points(pred, "pred")
    gt = _points(gt, "gt")
    result = {}
    result.update(_cut_statistics(
        _nearest_distances(pred, gt, max_distance, workers), max_distance,
        "accuracy"))
    result.update(_cut_statistics(
        _nearest_distances(gt, pred, max_distance, workers), max_distance,
        "completeness"))
    result["overall"] = (result["accuracy"] + result["completeness"]) / 2.0
    return result


def precision_recall_fscore(
    pred: np.ndarray,
    gt: np.ndarray,
    threshold: float,
    workers: int = 1,
) -> dict:
    """Precision, recall and F-score at a distance (ALGORITHMS.md 7.2 step 3).

    Precision is the fraction of predicted points within `threshold`
    (strictly less) of the ground truth, recall the fraction of ground-truth
    points within `threshold` of the prediction, F = 2PR / (P + R) (0 when
    both are 0). Registration, cropping and downsampling (7.2 steps 1-2) are
    the caller's job.

    Args:
        pred: `[N, 3]` reconstruction (depth units).
        gt: `[M, 3]` ground truth, same units.
        threshold: tau, same units.
        workers: threads for the KD-tree queries (-1: all cores).

    Returns:
        A dict with `precision`, `recall`, `fscore` in [0, 1] (NaN
        precision / recall for an empty cloud) and `threshold`.
    """
    pred = _points(pred, "pred")
    gt = _points(gt, "gt")
    if not threshold > 0:
        raise ValueError(f"`threshold` must be positive; received {threshold}.")
    to_gt = _nearest_distances(pred, gt, threshold, workers)
    to_pred = _nearest_distances(gt, pred, threshold, workers)
    precision = float(np.mean(to_gt < threshold)) if to_gt.size else float(
        "nan")
    recall = float(np.mean(to_pred < threshold)) if to_pred.size else float(
        "nan")
    total = precision + recall
    fscore = 2.0 * precision * recall / total if total > 0 else 0.0
    return {"precision": precision, "recall": recall, "fscore": float(fscore),
            "threshold": float(threshold)}


def _matlab_round(values: np.ndarray) -> np.ndarray:
    """MATLAB `round`: halves go away from zero (numpy rounds them to even)."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


@dataclasses.dataclass
class DTUGroundTruth:
    """The official DTU evaluation data of one scan (field names match the
    arguments of `dtu_evaluate`).

    Attributes:
        stl_points: `[M, 3]` float32 structured-light points (mm).
        obs_mask: `[X, Y, Z]` bool observation mask.
        bb: `[2, 3]` float64 bounding box, rows min and max (mm).
        res: voxel size of `obs_mask` (mm).
        plane: `[4]` float64 ground plane P; above means `[X, 1] . P > 0`.
    """

    stl_points: np.ndarray
    obs_mask: np.ndarray
    bb: np.ndarray
    res: float
    plane: np.ndarray


def load_dtu_ground_truth(root: str, scan: int) -> DTUGroundTruth:
    """Reads the official DTU point-cloud ground truth of one scan.

    Args:
        root: the folder holding `Points/stl/` and `ObsMask/` (the DTU
            "SampleSet/MVS Data" layout).
        scan: the scan number, e.g. 24.

    Returns:
        A DTUGroundTruth from `Points/stl/stl{scan:03d}_total.ply`,
        `ObsMask/ObsMask{scan}_10.mat` (ObsMask, BB, Res) and
        `ObsMask/Plane{scan}.mat` (P).

    Raises:
        FileNotFoundError: naming the first missing file.
        ValueError: naming the file and the missing or malformed field.
    """
    stl_path = os.path.join(root, "Points", "stl", f"stl{scan:03d}_total.ply")
    mask_path = os.path.join(root, "ObsMask", f"ObsMask{scan}_10.mat")
    plane_path = os.path.join(root, "ObsMask", f"Plane{scan}.mat")
    for path in (stl_path, mask_path, plane_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"DTU ground truth for scan {scan}: missing {path}")

    try:
        vertex = plyfile.PlyData.read(stl_path)["vertex"]
        stl_points = np.stack(
            [np.asarray(vertex[k]) for k in ("x", "y", "z")], axis=-1)
    except (KeyError, ValueError, plyfile.PlyParseError) as error:
        raise ValueError(
            f"{stl_path}: expected a PLY with vertex x, y, z ({error}).") from (
                error)

    def field(contents: dict, path: str, name: str) -> np.ndarray:
        if name not in contents:
            raise ValueError(
                f"{path}: no variable {name!r}; found "
                f"{sorted(k for k in contents if not k.startswith('__'))}.")
        return np.asarray(contents[name])

    mask_contents = scipy.io.loadmat(mask_path)
    obs_mask = field(mask_contents, mask_path, "ObsMask").astype(bool)
    bb = field(mask_contents, mask_path, "BB").astype(np.float64)
    res = field(mask_contents, mask_path, "Res").astype(np.float64)
    plane = field(scipy.io.loadmat(plane_path), plane_path, "P").astype(
        np.float64).reshape(-1)
    if obs_mask.ndim != 3:
        raise ValueError(
            f"{mask_path}: ObsMask must be a 3-D grid; received shape "
            f"{obs_mask.shape}.")
    if bb.shape != (2, 3):
        raise ValueError(
            f"{mask_path}: BB must be 2x3 (min; max); received {bb.shape}.")
    if res.size != 1:
        raise ValueError(
            f"{mask_path}: Res must be a scalar; received shape {res.shape}.")
    if plane.size != 4:
        raise ValueError(
            f"{plane_path}: P must hold 4 values; received {plane.size}.")
    return DTUGroundTruth(stl_points=stl_points.astype(np.float32),
                          obs_mask=obs_mask, bb=bb, res=float(res.item()),
                          plane=plane)


def dtu_evaluate(
    points: np.ndarray,
    stl_points: np.ndarray,
    obs_mask: np.ndarray,
    bb: np.ndarray,
    res: float,
    plane: np.ndarray,
    min_spacing: float = 0.2,
    max_distance: float = 20.0,
    seed: int = 0,
    workers: int = 1,
) -> dict:
    """The DTU point-cloud protocol for one scan (ALGORITHMS.md 7.1).

    1. The reconstruction is thinned to `min_spacing` (`reduce_points`).
    2. Accuracy: the thinned points whose voxel round((X - BB_min) / Res)
       (MATLAB rounding, 0-based) lies in the grid and is set in `obs_mask`;
       nearest distance to the STL points; distances >= `max_distance`
       discarded; mean.
    3. Completeness: the STL points above the ground plane
       (`[X, 1] . plane > 0`); nearest distance to the thinned
       reconstruction; same cut-off; mean.
    4. Overall = (accuracy + completeness) / 2.

    The MATLAB code's 60 mm search cap and the Python port's bounding-box
    crop of the completeness search only affect distances the 20 mm cut-off
    discards anyway, so they are not reproduced.

    Args:
        points: `[N, 3]` reconstruction in the DTU frame (mm).
        stl_points: `[M, 3]` STL ground truth (mm).
        obs_mask: `[X, Y, Z]` bool observation mask.
        bb: `[2, 3]` bounding box (min row, max row), mm.
        res: voxel size of `obs_mask`, mm.
        plane: 4 values P of the ground plane.
        min_spacing: thinning distance, mm.
        max_distance: cut-off, mm.
        seed: seed of the thinning order.
        workers: threads for the KD-tree queries (-1: all cores).

    Returns:
        A dict: `accuracy`, `completeness`, `overall` (mm), their medians and
        fractions cut as in `accuracy_completeness`, plus `num_points`,
        `num_reduced`, `num_in_mask` and `num_stl_above_plane`.
    """
    points = _points(points, "points")
    stl_points = _points(stl_points, "stl_points")
    obs_mask = np.asarray(obs_mask, dtype=bool)
    bb = np.asarray(bb, dtype=np.float64)
    plane = np.asarray(plane, dtype=np.float64).reshape(-1)
    if obs_mask.ndim != 3 or bb.shape != (2, 3) or plane.size != 4:
        raise ValueError(
            "dtu_evaluate expects obs_mask [X, Y, Z], bb [2, 3] and 4 plane "
            f"values; received {obs_mask.shape}, {bb.shape}, {plane.size}.")

    reduced = reduce_points(points, min_spacing, seed, workers=workers)
    voxels = _matlab_round((reduced - bb[0]) / res).astype(np.int64)
    in_grid = np.all((voxels >= 0) & (voxels < obs_mask.shape), axis=1)
    in_mask = np.zeros(reduced.shape[0], bool)
    grid_voxels = voxels[in_grid]
    in_mask[in_grid] = obs_mask[
        grid_voxels[:, 0], grid_voxels[:, 1], grid_voxels[:, 2]]

    homogeneous = np.concatenate(
        [stl_points, np.ones((stl_points.shape[0], 1))], axis=1)
    above = homogeneous @ plane > 0

    result = {}
    result.update(_cut_statistics(
        _nearest_distances(reduced[in_mask], stl_points, max_distance,
                           workers), max_distance, "accuracy"))
    result.update(_cut_statistics(
        _nearest_distances(stl_points[above], reduced, max_distance, workers),
        max_distance, "completeness"))
    result["overall"] = (result["accuracy"] + result["completeness"]) / 2.0
    result.update(num_points=int(points.shape[0]),
                  num_reduced=int(reduced.shape[0]),
                  num_in_mask=int(in_mask.sum()),
                  num_stl_above_plane=int(above.sum()))
    return result


def evaluate_point_cloud_files(pred: PathLike, *,
                               gt: Optional[PathLike] = None,
                               dtu_root: Optional[PathLike] = None,
                               scan: Optional[int] = None,
                               max_distance: float = 20.0,
                               threshold: float = 1.0) -> dict:
    """Point-cloud metrics of the PLY file `pred`.

    With `dtu_root` and `scan`, the DTU protocol (`dtu_evaluate` against
    the official STL points and observation mask); with `gt`, accuracy /
    completeness (cut at `max_distance`) and precision / recall / F-score
    at `threshold` against that PLY. Distances in the points' units.

    Raises:
        ValueError: neither `gt` nor `dtu_root` with `scan` is given, or a
            file is not a readable PLY.
        FileNotFoundError: a file is missing.
    """
    points, _, _ = files.read_ply(pred)
    if dtu_root:
        truth = load_dtu_ground_truth(dtu_root, scan)
        return dtu_evaluate(points, truth.stl_points, truth.obs_mask,
                            truth.bb, truth.res, truth.plane)
    if not gt:
        raise ValueError("give --gt GT.ply, or --dtu-root DIR and --scan N")
    gt_points, _, _ = files.read_ply(gt)
    metrics = accuracy_completeness(points, gt_points,
                                    max_distance=max_distance)
    metrics.update(precision_recall_fscore(points, gt_points,
                                           threshold=threshold))
    return metrics
