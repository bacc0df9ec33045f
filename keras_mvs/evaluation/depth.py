"""Depth-map metrics: per view, pooled over views, and a network's over
the reference views of scenes with ground truth.

Depths are in the units of the camera files (mm for DTU and the synthetic
scenes); a depth interval is the view's depth range / 192 unless stated.
"""

import os
import pathlib
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Union

import numpy as np

PathLike = Union[str, os.PathLike]


def _depth_map(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be an [H, W] depth map; received shape "
            f"{array.shape}.")
    return array


def depth_metrics(
    depth_pred: np.ndarray,
    depth_gt: np.ndarray,
    mask: Optional[np.ndarray],
    interval: float,
    interval_thresholds: Sequence[float] = (1, 2, 4),
    abs_thresholds: Sequence[float] = (),
) -> dict:
    """Depth-map errors over the valid pixels of one view.

    A pixel is valid where `mask` is true, the ground truth is finite and
    positive, and the prediction is finite.

    Args:
        depth_pred: `[H, W]` predicted depth (depth units, e.g. mm).
        depth_gt: `[H, W]` ground-truth depth, same units; <= 0 means none.
        mask: `[H, W]` bool evaluation mask, or None for all pixels.
        interval: the depth interval (depth units) that the interval
            thresholds are multiples of (DTU: 2.5 mm times interval_scale).
        interval_thresholds: k values for "error <= k * interval".
        abs_thresholds: absolute thresholds in depth units (e.g. 2, 4 mm).

    Returns:
        A dict with `num_pixels` (int, valid pixels), `mean_abs_error`
        (depth units), `within_{k}_intervals` for each k and
        `within_abs_{t}` for each absolute threshold (fractions of the
        valid pixels, thresholds inclusive; k and t printed with `:g`).
        With no valid pixel the metrics are NaN and `num_pixels` is 0.
    """
    depth_pred = _depth_map(depth_pred, "depth_pred")
    depth_gt = _depth_map(depth_gt, "depth_gt")
    if depth_pred.shape != depth_gt.shape:
        raise ValueError(
            f"`depth_pred` {depth_pred.shape} and `depth_gt` "
            f"{depth_gt.shape} must have the same shape.")
    valid = np.isfinite(depth_gt) & (depth_gt > 0) & np.isfinite(depth_pred)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth_gt.shape:
            raise ValueError(
                f"`mask` {mask.shape} must match the depth maps "
                f"{depth_gt.shape}.")
        valid &= mask
    if not interval > 0:
        raise ValueError(f"`interval` must be positive; received {interval}.")
    errors = np.abs(depth_pred[valid] - depth_gt[valid])
    count = errors.size

    def fraction(threshold: float) -> float:
        return float(np.mean(errors <= threshold)) if count else float("nan")

    metrics = {
        "num_pixels": int(count),
        "mean_abs_error": float(errors.mean()) if count else float("nan"),
    }
    for k in interval_thresholds:
        metrics[f"within_{k:g}_intervals"] = fraction(k * interval)
    for t in abs_thresholds:
        metrics[f"within_abs_{t:g}"] = fraction(t)
    return metrics


def aggregate_depth_metrics(per_view: Sequence[dict]) -> dict:
    """Combines `depth_metrics` of many views, weighted by valid pixels.

    Each metric is the mean over all valid pixels of all views pooled (not
    the mean of per-view means), so a view with few valid pixels counts
    little. Views without valid pixels contribute nothing.

    Args:
        per_view: dicts returned by `depth_metrics`, all with the same keys.

    Returns:
        A dict with the same keys; `num_pixels` is the total.
    """
    if not per_view:
        raise ValueError("aggregate_depth_metrics needs at least one view.")
    keys = set(per_view[0])
    for index, metrics in enumerate(per_view):
        if set(metrics) != keys:
            raise ValueError(
                f"View {index} has metrics {sorted(metrics)}; expected "
                f"{sorted(keys)} like view 0.")
    weights = np.array([m["num_pixels"] for m in per_view], np.float64)
    total = weights.sum()
    result = {"num_pixels": int(total)}
    for key in sorted(keys - {"num_pixels"}):
        if total == 0:
            result[key] = float("nan")
            continue
        values = np.array([m[key] for m in per_view], np.float64)
        used = weights > 0
        result[key] = float(np.sum(values[used] * weights[used]) / total)
    return result


def cascade_reachable_depth(
    depth_gt: np.ndarray,
    depth_range: Sequence[float],
    num_depths: Sequence[int] = (48, 32, 8),
    depth_interval_ratios: Sequence[float] = (4, 2, 1),
    num_depths_base: int = 192,
    head: str = "unity",
) -> np.ndarray:
    """The best depth map a cascade can output: each stage exactly right.

    A cascade stage can only answer inside its hypothesis span, and the
    span of stage s+1 is centred on stage s's depth upsampled bilinearly
    (`geometry.refined_depth_hypotheses`). Across a depth edge that
    upsampling blends the two sides, so pixels next to the edge can fall
    outside the next span even when every stage predicts the ground truth
    at its own resolution. This function runs that ideal cascade: each
    stage outputs the ground truth (nearest-downsampled as for the losses)
    clipped to what it can express, `[h_0, h_{D-1} + interval]` for the
    unity head (bins, ALGORITHMS.md 3.1) or `[h_0, h_{D-1}]` for
    soft-argmin; where the ground truth is missing it keeps the span's
    centre. The depth metrics of the result are the ceiling of any network
    with this cascade configuration on the data (`bench/cascade_ceiling.py`).

    Args:
        depth_gt: `[H, W]` ground-truth depth, <= 0 or non-finite = none; H
            and W divisible by 4.
        depth_range: (depth_min, depth_max) of the view.
        num_depths: hypotheses per stage (coarse to fine).
        depth_interval_ratios: interval of each refinement stage in base
            intervals (the first entry is unused, as in the network).
        num_depths_base: base interval = range / this.
        head: "unity" or "regression".

    Returns:
        `[H, W]` float64 depth.
    """
    from keras_mvs import geometry
    from keras_mvs.losses import depth as depth_losses

    if head not in ("unity", "regression"):
        raise ValueError(f"head must be 'unity' or 'regression'. Received: "
                         f"head={head!r}")
    gt = _depth_map(depth_gt, "depth_gt")
    height, width = gt.shape
    num_stages = len(num_depths)
    factor = 2 ** (num_stages - 1)
    if height % factor or width % factor:
        raise ValueError(f"depth_gt {gt.shape} must be divisible by {factor}"
                         f" for {num_stages} stages.")
    depth_min, depth_max = (float(v) for v in depth_range)
    base = (depth_max - depth_min) / num_depths_base

    depth = None
    for stage, count in enumerate(num_depths):
        scale = 2 ** (num_stages - 1 - stage)
        stage_gt = depth_losses.downsample_to(
            gt[np.newaxis], height // scale, width // scale).numpy()[0]
        if stage == 0:
            interval = (depth_max - depth_min) / (count - 1)
            hypotheses = np.linspace(depth_min, depth_max, count)[
                :, np.newaxis, np.newaxis] * np.ones_like(stage_gt)
        else:
            nominal = depth_interval_ratios[stage] * base
            hypotheses = geometry.refined_depth_hypotheses(
                depth[np.newaxis], count, nominal, height // scale,
                width // scale).numpy()[0].astype(np.float64)
            interval = nominal * count / (count - 1)
        low = hypotheses[0]
        high = hypotheses[-1] + (interval if head == "unity" else 0.0)
        known = np.isfinite(stage_gt) & (stage_gt > 0)
        depth = np.where(known, np.clip(np.where(known, stage_gt, 0.0),
                                        low, high), 0.5 * (low + high))
    return depth


def count_reference_views(dirs: Sequence[PathLike],
                          max_views_per_scene: int = 0) -> int:
    """How many reference views `evaluate_depth` scores in `dirs`."""
    total = 0
    for folder in dirs:
        views = len(list((pathlib.Path(folder) / "cams").glob("*_cam.txt")))
        total += min(views, max_views_per_scene) if max_views_per_scene else (
            views)
    return total


def evaluate_depth(model: Callable, dirs: Sequence[PathLike], *,
                   num_views: int, height: Optional[int],
                   width: Optional[int], max_views_per_scene: int = 0,
                   num_depths_base: int = 192,
                   on_view: Optional[Callable[[int], None]] = None) -> dict:
    """Depth metrics of `model` over every reference view of `dirs`.

    Args:
        model: a Keras network or `keras_mvs.inference.Predictor`, called on
            the network's input dict.
        dirs: scene folders with ground-truth `depths/` and `masks/`.
        num_views: V, reference included.
        height, width: evaluation resolution (None: the scenes' own).
        max_views_per_scene: evaluate only the first N references of each
            scene (0: all).
        num_depths_base: the base interval is depth range / this.
        on_view: called with the number of views scored so far.

    Returns:
        Pixel-pooled metrics (`aggregate_depth_metrics`) plus
        `num_views_evaluated`.

    Raises:
        ValueError: a scene has no ground-truth depth, or no view was
            scored.
    """
    # TensorFlow only here: the metrics above are numpy and serve
    # reconstruction without it.
    from keras_mvs.data import pipeline
    from keras_mvs.models import trainer

    scenes = pipeline.scene_dicts_from_folders(dirs, height=height,
                                               width=width)
    dataset = pipeline.make_eval_dataset(scenes, num_views)
    per_view = []
    seen = {}
    for batch in dataset:
        index = int(batch["scene_index"][0])
        seen[index] = seen.get(index, 0) + 1
        if max_views_per_scene and seen[index] > max_views_per_scene:
            continue
        if "depth" not in batch:
            raise ValueError(
                f"scene {batch['scene_name'][0].numpy().decode()} has no "
                "ground-truth depths/ to evaluate against")
        outputs = model(trainer.network_inputs(batch))
        depth_range = batch["depth_range"].numpy()
        depth = np.asarray(outputs["depth"])
        for b in range(depth.shape[0]):
            base = (depth_range[b, 1] - depth_range[b, 0]) / num_depths_base
            per_view.append(depth_metrics(
                depth[b], batch["depth"][b].numpy(),
                batch["mask"][b].numpy() > 0.5, interval=float(base)))
            if on_view is not None:
                on_view(len(per_view))
    if not per_view:
        raise ValueError("no view was evaluated")
    metrics = aggregate_depth_metrics(per_view)
    metrics["num_views_evaluated"] = len(per_view)
    return metrics
