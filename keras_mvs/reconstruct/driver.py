"""The reconstruction run: per-view inference, then fusion with the summary.

`reconstruct` checks every setting first (views, sizes, filter against the
pair lists and the model, memory), runs `views.infer_view` on every
reference view that has sources, fuses the maps read back from the output
folder (`layout.OutputViews`, `keras_mvs.fusion`, ALGORITHMS.md 6) into
`fused.ply` and writes `summary.json` last, with per-view filter statistics
and a plain-language diagnosis when the filters removed most pixels.
"""

import dataclasses
import pathlib
import time
import warnings
from typing import Callable
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras

from keras_mvs import files
from keras_mvs import fusion
from keras_mvs import inference
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib
from keras_mvs.reconstruct import evaluate
from keras_mvs.reconstruct import layout
from keras_mvs.reconstruct import planning
from keras_mvs.reconstruct import views
from keras_mvs.reconstruct.errors import ReconstructionError

PathLike = formats.PathLike

# A rejection rate above this share of the pixels is named in the diagnosis.
_DIAGNOSIS_RATE = 0.9
# --filter shorthands for the FilterConfig presets.
FILTER_ALIASES = {"pcd": "casmvsnet", "dypcd": "unimvsnet_dypcd"}
# `--filter auto` (the default): the pcd filter with the settings of the
# head's own paper, as the confidences of the two heads differ in scale.
AUTO_FILTERS = {"unity": "unimvsnet_dtu", "regression": "casmvsnet"}


def model_head(predictor) -> Optional[str]:
    """The depth head of a loaded model ("unity", "regression", ...), or
    None when the model does not say (a SavedModel from elsewhere)."""
    if predictor.network is not None:
        return predictor.network.get_config().get("head")
    if predictor.network_config is not None:
        return predictor.network_config.get("config", {}).get("head")
    return None


def auto_filter(predictor) -> str:
    """The FilterConfig preset `--filter auto` stands for with this model:
    `AUTO_FILTERS` by its head, "casmvsnet" when the head is unknown."""
    return AUTO_FILTERS.get(model_head(predictor), "casmvsnet")


def filter_from_flags(
    name: str, conf: Optional[Sequence[float]] = None,
    min_views: Optional[int] = None,
) -> fusion.FilterConfig:
    """The FilterConfig of `--filter` (an alias of `FILTER_ALIASES` or a
    preset name; "auto" checks the other flags against "casmvsnet", the
    command resolves it once the model is loaded), `--conf` (confidence
    thresholds) and `--min-consistent-views`.

    Raises:
        ValueError: an unknown preset or an invalid field.
    """
    overrides = {}
    if conf is not None:
        overrides["confidence_thresholds"] = tuple(conf)
    if min_views is not None:
        overrides["min_consistent_views"] = min_views
    name = "casmvsnet" if name == "auto" else name
    return fusion.FilterConfig.preset(FILTER_ALIASES.get(name, name),
                                      **overrides)


def fit_filter_to_pairs(
    config: fusion.FilterConfig, pairs: Sequence,
) -> Tuple[fusion.FilterConfig, dict]:
    """Lowers the pcd filter's consistent-source count to the most sources
    any pair list holds (few registered views give short lists).

    Args:
        config: the filter.
        pairs: the scene's `[(ref, [(src, score), ...]), ...]`.

    Returns:
        `(config, adapted)`: `adapted` maps each changed field to
        `{"requested", "used", "reason"}` (empty when nothing changed).
    """
    available = max((len(sources) for _, sources in pairs), default=0)
    if config.max_source_views is not None:
        available = min(available, config.max_source_views)
    if (config.method != "pcd" or available < 1
            or config.min_consistent_views <= available):
        return config, {}
    adapted = {"min_consistent_views": {
        "requested": config.min_consistent_views, "used": available,
        "reason": f"{len(pairs)} registered views: the pair lists hold at "
                  f"most {available} source views"}}
    return dataclasses.replace(config, min_consistent_views=available), adapted


def diagnose(view_stats: Sequence[dict], num_points: int,
             config: fusion.FilterConfig) -> List[str]:
    """Plain-language hints when the filters removed most pixels.

    Args:
        view_stats: the per-view entries of the summary.
        num_points: points in the fused cloud.
        config: the filter used.

    Returns:
        Hints, one sentence each (empty when nothing stands out).
    """
    pixels = sum(v["pixels"] for v in view_stats)
    if not pixels:
        return ["no view was fused"]
    photo_removed = 1.0 - sum(v["photometric_kept"] for v in view_stats) / (
        pixels)
    geo_removed = 1.0 - sum(v["geometric_kept"] for v in view_stats) / pixels
    hints = []
    if photo_removed > _DIAGNOSIS_RATE:
        hints.append(
            f"photometric filter removed {100 * photo_removed:.0f} % of "
            f"pixels (confidence thresholds {config.confidence_thresholds}): "
            "lower --conf, or the model is untrained / the depth range "
            "misses the scene")
    if geo_removed > _DIAGNOSIS_RATE:
        needed = (f"{config.min_consistent_views} consistent sources"
                  if config.method == "pcd" else "dynamic levels")
        hints.append(
            f"geometric filter removed {100 * geo_removed:.0f} % of pixels "
            f"(needs {needed}): the depth maps disagree between views; "
            "check the cameras and depth range, lower "
            "--min-consistent-views or try --filter dypcd")
    if num_points == 0 and not hints:
        hints.append("no pixel passed both filters although each alone "
                     "keeps some: the confident pixels are not the "
                     "consistent ones; lower --conf")
    return hints



def _reference_views(
    scene: scene_lib.MVSScene, num_sources: int,
) -> List[Tuple[int, List[int]]]:
    """`(ref, network sources)` of the references that have sources."""
    refs, skipped = [], []
    for ref_id, sources in scene.pairs:
        if sources:
            refs.append((ref_id, scene.source_views(ref_id, num_sources)))
        else:
            skipped.append(ref_id)
    if skipped:
        warnings.warn(
            f"scene {scene.name}: views without source views in pair.txt "
            f"are not reconstructed: {skipped}", scene_lib.SceneWarning,
            stacklevel=3)
    return refs


def check_filter(config: fusion.FilterConfig, shape: planning.NetworkShape,
                 has_stages: bool, max_sources: int) -> None:
    """Rejects a filter the model or the pair lists cannot satisfy.

    Raises:
        ReconstructionError: stage thresholds for a model without stage
            confidences, or more consistent sources required than any pair
            list holds.
    """
    thresholds = config.confidence_thresholds
    if len(thresholds) > 1 and not has_stages:
        raise ReconstructionError(
            f"the filter thresholds {thresholds} need one confidence per "
            "stage, which a SavedModel does not return: pass a single "
            "--conf value (the final confidence)")
    if len(thresholds) > 1 and len(thresholds) != len(shape.num_depths):
        raise ReconstructionError(
            f"--conf gives {len(thresholds)} thresholds; expected 1 (final "
            f"confidence) or {len(shape.num_depths)} (one per stage)")
    if config.method == "pcd" and config.min_consistent_views > max_sources:
        raise ReconstructionError(
            f"the pcd filter needs {config.min_consistent_views} consistent "
            f"source views but the pair lists hold at most {max_sources}: "
            "no pixel could pass; lower --min-consistent-views")


def view_statistics(
    cloud: fusion.FusedCloud, records: Mapping[int, dict],
) -> Tuple[List[dict], dict]:
    """Per-view and total filter statistics of a fused scene.

    Args:
        cloud: the fused cloud with its `view_stats`.
        records: `views.infer_view` records by view id.

    Returns:
        `(per_view, totals)`: per view the `fusion.ViewStats` fields, the
        network size, depth range, valid-depth fraction, inference time
        and the photometric / geometric rejection rates (share of the
        pixels failing each filter on its own); totals pool the pixels.
    """
    per_view = []
    for stats in cloud.view_stats:
        entry = dataclasses.asdict(stats)
        record = records[stats.view_id]
        entry.update({
            "height": record["height"], "width": record["width"],
            "depth_range": record["depth_range"],
            "valid_depth_fraction": record["valid_depth_fraction"],
            "photometric_rejection": 1.0 - stats.photometric_kept
            / stats.pixels,
            "geometric_rejection": 1.0 - stats.geometric_kept / stats.pixels,
            "inference_seconds": record["seconds"],
        })
        per_view.append(entry)
    pixels = sum(v["pixels"] for v in per_view)
    totals = {
        "num_points": int(cloud.points.shape[0]),
        "num_views": len(per_view),
        "pixels": pixels,
        "photometric_rejection": 1.0 - sum(
            v["photometric_kept"] for v in per_view) / pixels,
        "geometric_rejection": 1.0 - sum(
            v["geometric_kept"] for v in per_view) / pixels,
        "kept_fraction": cloud.points.shape[0] / pixels,
    }
    return per_view, totals


def reconstruct(
    scene: scene_lib.MVSScene,
    predictor: inference.Predictor,
    out_dir: PathLike,
    *,
    num_views: int = planning.DEFAULT_NUM_VIEWS,
    max_height: int = planning.DEFAULT_MAX_HEIGHT,
    max_width: int = planning.DEFAULT_MAX_WIDTH,
    filter_config: Optional[fusion.FilterConfig] = None,
    interval_scale: float = planning.DEFAULT_INTERVAL_SCALE,
    memory_budget_bytes: Union[int, str, None] = "auto",
    verbose: int = 1,
    settings: Optional[dict] = None,
    on_view: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Reconstructs a scene: depth maps, filtering, fused cloud, summary.

    Args:
        scene: the scene folder (MVSNet layout).
        predictor: the model (`inference.load_model`, possibly
            `with_num_depths`).
        out_dir: output folder, created if needed; earlier outputs of the
            same views are overwritten.
        num_views: V, reference included (>= 2).
        max_height, max_width: the largest network input (ALGORITHMS.md
            1.8.1); smaller images are only floored to multiples of 32.
        filter_config: the filter (default: `FilterConfig.preset(
            "casmvsnet")`, final confidence > 0.9, 1 px, 1 %, 5 sources).
        interval_scale: the depth line's interval multiplier (1.06).
        memory_budget_bytes: bytes a view's inference may take
            (`planning.estimate_working_bytes`); a view over it is inferred
            in tiles (`planning.plan_tiles`). "auto" uses
            `planning.available_memory_bytes()`, None skips the check.
        verbose: 1 shows progress bars over views, 0 is silent.
        settings: extra entries for the summary's `settings` (the command
            line).
        on_view: called with each view's inference record.

    Returns:
        The summary written to `summary.json`: `views` (per view: size,
        depth range, points kept, photometric and geometric rejection
        rates), `totals`, `settings`, `timing` (seconds) and `diagnosis`.

    Raises:
        ReconstructionError: invalid settings (checked before any
            inference); InsufficientMemoryError when a view does not fit
            even in tiles (or in one call, for a SavedModel).
    """
    if num_views < 2:
        raise ReconstructionError(
            f"--views must be at least 2 (a reference and a source); "
            f"received {num_views}")
    if min(max_height, max_width) < planning.SIZE_MULTIPLE:
        raise ReconstructionError(
            f"--max-height/--max-width must be at least "
            f"{planning.SIZE_MULTIPLE}; received {max_height}x{max_width}")
    config = filter_config or fusion.FilterConfig.preset("casmvsnet")
    shape = planning.network_shape(predictor)
    out_dir = pathlib.Path(out_dir)
    total_start = time.perf_counter()

    refs = _reference_views(scene, num_views - 1)
    if not refs:
        raise ReconstructionError(
            f"scene {scene.name}: no view has a source view in pair.txt")
    done = {ref for ref, _ in refs}
    fusion_pairs = [(ref, [s for s, _ in sources if s in done])
                    for ref, sources in scene.pairs if ref in done]
    if config.max_source_views is not None:
        max_sources = min(config.max_source_views,
                          max(len(s) for _, s in fusion_pairs))
    else:
        max_sources = max(len(s) for _, s in fusion_pairs)
    check_filter(config, shape, predictor.network is not None, max_sources)
    sizes = planning.plan_sizes(scene, [ref for ref, _ in refs], max_height,
                                max_width)
    largest = max(sizes.values(), key=lambda hw: hw[0] * hw[1])
    budget = (planning.available_memory_bytes()
              if memory_budget_bytes == "auto" else memory_budget_bytes)
    # A view that does not fit in one call is inferred in tiles; refuse
    # here, before writing anything, when not even tiles fit.
    tileable = hasattr(predictor.network, "predict_tiled")
    plans = {size: planning.plan_tiles(*size, num_views, shape, budget,
                                       tileable)
             for size in set(sizes.values())}
    estimate = planning.estimate_cost_volume_bytes(
        *largest, num_views, shape.num_depths, shape.feature_channels)

    layout.prepare_output_dir(out_dir)

    records = {}
    bar = keras.utils.Progbar(len(refs), unit_name="view",
                              verbose=verbose) if verbose else None
    inference_start = time.perf_counter()
    loader = views.ViewLoader(scene)
    for index, (ref_id, sources) in enumerate(refs):
        record = views.infer_view(scene, predictor, ref_id, sources,
                                  sizes[ref_id], out_dir,
                                  shape.num_depths_base, interval_scale,
                                  loader, plans[sizes[ref_id]])
        records[ref_id] = record
        if on_view is not None:
            on_view(record)
        if bar is not None:
            bar.update(index + 1, [("valid", record["valid_depth_fraction"])])
    inference_seconds = time.perf_counter() - inference_start

    fusion_start = time.perf_counter()
    outputs = layout.OutputViews(out_dir, list(records))
    # "points" is the running total, not Progbar's default running mean.
    bar = keras.utils.Progbar(len(fusion_pairs), unit_name="view",
                              verbose=verbose, stateful_metrics=["points"]
                              ) if verbose else None
    progress = {"count": 0, "points": 0}

    def fused(stats: fusion.ViewStats) -> None:
        progress["count"] += 1
        progress["points"] += stats.points_kept
        if bar is not None:
            bar.update(progress["count"], [("points", progress["points"])])

    cloud = fusion.fuse_views(outputs, fusion_pairs, config, on_view=fused)
    files.write_ply(str(out_dir / "fused.ply"), cloud.points, cloud.colors)
    fusion_seconds = time.perf_counter() - fusion_start

    per_view, totals = view_statistics(cloud, records)
    summary = {
        "scene": str(scene.root),
        "views": per_view,
        "totals": totals,
        "settings": {
            **(settings or {}),
            "model": str(predictor.path),
            "model_kind": predictor.kind,
            "num_views": num_views,
            "max_height": max_height,
            "max_width": max_width,
            "num_depths": list(shape.num_depths),
            "num_depths_known": shape.known,
            "interval_scale": interval_scale,
            "filter": dataclasses.asdict(config),
            "memory_budget_bytes": budget,
            "cost_volume_bytes_per_stage": estimate,
            "working_bytes_estimate": planning.estimate_working_bytes(
                *largest, num_views, shape),
            "max_tiles_per_view": max(len(tiles) for tiles in plans.values()),
        },
        "timing": {
            "inference_seconds": inference_seconds,
            "inference_seconds_per_view": inference_seconds / len(refs),
            "fusion_seconds": fusion_seconds,
            "total_seconds": time.perf_counter() - total_start,
        },
        "diagnosis": diagnose(per_view, totals["num_points"], config),
    }
    masks = evaluate.mask_agreement(cloud.points, scene, list(records))
    if masks is not None:
        summary["masks"] = masks
    files.write_json(out_dir / "summary.json", summary)
    return summary
