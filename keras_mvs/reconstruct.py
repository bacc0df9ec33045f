"""Whole-scene reconstruction: per-view inference, filtering and fusion.

The driver behind `python -m experiments.reconstruct` (DESIGN.md 8 and 11).
For every reference view of an `MVSScene` it runs the network on the
reference and its best `num_views - 1` sources (pair.txt order), resized by
the test-time rule of ALGORITHMS.md 1.8 (`fit_to_max_size`, K rescaled per
axis, sources forced to the reference size), and writes

    depth/{id:08d}.pfm                 final depth (depth units)
    confidence/{id:08d}.pfm            final confidence in [0, 1]
    confidence/{id:08d}_stage{s}.pfm   stage s = 1, 2 confidence,
                                       nearest-upsampled (Keras models)
    previews/{id:08d}_depth.png        coloured depth
    previews/{id:08d}_confidence.png   coloured confidence
    cams/{id:08d}_cam.txt              K at the depth-map resolution, the
                                       pose, the swept range as `min max`
    images/{id:08d}.png                the reference image as the network saw
                                       it (the colours of the fused points)

then filters and fuses the maps (`keras_mvs.fusion`, ALGORITHMS.md 6) into
`fused.ply` and writes `summary.json` last: a folder with `summary.json` is
a complete run. Every file is written under a temporary name and renamed.

Memory: the largest tensor of a stage is the warped source feature volume,
`B * (V - 1) * D * H_s * W_s * C_s * 4` bytes; `estimate_cost_volume_bytes`
computes it per stage and `reconstruct` refuses to start when the largest
stage exceeds the memory budget, naming the knobs that shrink it.

Example:
    >>> predictor = inference.load_model("runs/unimvs")
    >>> summary = reconstruct(MVSScene("scan24"), predictor, "out/scan24",
    ...                       max_height=864, max_width=1152)
    >>> summary["totals"]["num_points"]
"""

import collections
import dataclasses
import json
import math
import os
import pathlib
import time
import warnings
from typing import Callable
from typing import Dict
from typing import List
from typing import Mapping
from typing import Optional
from typing import Sequence
from typing import Tuple
from typing import Union

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from keras_mvs import evaluation
from keras_mvs import files
from keras_mvs import fusion
from keras_mvs import inference
from keras_mvs import visualize
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib

PathLike = formats.PathLike

# Test-time defaults of UniMVSNet / CasMVSNet on DTU (ALGORITHMS.md 6.1).
DEFAULT_NUM_VIEWS = 5
DEFAULT_MAX_HEIGHT = 864
DEFAULT_MAX_WIDTH = 1152
# N0 and the interval scale of the test loaders (ALGORITHMS.md 1.9, 1.1).
DEFAULT_NUM_DEPTHS_BASE = 192
DEFAULT_INTERVAL_SCALE = 1.06
# Cascade stage resolutions and the network's size multiple (DESIGN.md 5).
STAGE_SCALES = (0.25, 0.5, 1.0)
SIZE_MULTIPLE = 32
# What a SavedModel without a stored network config is assumed to hold: its
# signature does not expose the network's settings, so the memory estimate
# uses the reference defaults.
_DEFAULT_NUM_DEPTHS = (48, 32, 8)
_DEFAULT_BASE_CHANNELS = 8
# A rejection rate above this share of the pixels is named in the diagnosis.
_DIAGNOSIS_RATE = 0.9
# Decoded views kept by the view caches of inference and fusion: one
# reference and its sources at a time, plus reuse between neighbouring
# references.
_CACHED_VIEWS = 16


class ReconstructionError(RuntimeError):
    """A reconstruction that cannot run as asked; the message says why and
    what to change."""


class InsufficientMemoryError(ReconstructionError):
    """The cost volume does not fit (estimated, or TF ran out of memory)."""


@dataclasses.dataclass(frozen=True)
class NetworkShape:
    """What the memory estimate needs to know about a network.

    Attributes:
        num_depths: hypotheses per stage, coarse to fine.
        feature_channels: feature channels per stage, coarse to fine.
        num_depths_base: N0, the base interval's divisor.
        known: False when the values are assumed defaults (SavedModels).
    """

    num_depths: Tuple[int, ...]
    feature_channels: Tuple[int, ...]
    num_depths_base: int
    known: bool


def network_shape(predictor: inference.Predictor) -> NetworkShape:
    """Per-stage hypotheses and feature channels of a loaded model.

    A Keras `CascadeMVSNet` states them (FPN channels 4c, 2c, c for base
    width c), and so does a SavedModel written by `keras_mvs.export` (its
    stored network config); for any other SavedModel the reference defaults
    (48, 32, 8) and c = 8 are assumed, with `known=False`.
    """
    network = predictor.network
    if network is not None and hasattr(network, "num_depths"):
        config = {"num_depths": network.num_depths,
                  "base_channels": getattr(network, "base_channels",
                                           _DEFAULT_BASE_CHANNELS),
                  "num_depths_base": getattr(network, "num_depths_base",
                                             DEFAULT_NUM_DEPTHS_BASE)}
    else:
        stored = getattr(predictor, "network_config", None) or {}
        config = stored.get("config", {})
    if "num_depths" in config:
        base = int(config.get("base_channels", _DEFAULT_BASE_CHANNELS))
        return NetworkShape(
            num_depths=tuple(int(d) for d in config["num_depths"]),
            feature_channels=(4 * base, 2 * base, base),
            num_depths_base=int(config.get("num_depths_base",
                                           DEFAULT_NUM_DEPTHS_BASE)),
            known=True)
    base = _DEFAULT_BASE_CHANNELS
    return NetworkShape(num_depths=_DEFAULT_NUM_DEPTHS,
                        feature_channels=(4 * base, 2 * base, base),
                        num_depths_base=DEFAULT_NUM_DEPTHS_BASE, known=False)


def estimate_cost_volume_bytes(
    height: int, width: int, num_views: int, num_depths: Sequence[int],
    feature_channels: Sequence[int], batch_size: int = 1,
) -> List[int]:
    """Bytes of each stage's warped source volume, the largest tensor.

    Stage s holds `B * (V - 1)` warped source feature volumes of shape
    `[D_s, H_s, W_s, C_s]` in float32 before aggregation, so its size is
    `B * (V - 1) * D_s * H_s * W_s * C_s * 4` bytes, with `H_s, W_s` the
    stage resolution (1/4, 1/2, 1 of the input).

    Args:
        height, width: the network input size, pixels.
        num_views: V, reference included.
        num_depths: D_s per stage, coarse to fine.
        feature_channels: C_s per stage, coarse to fine.
        batch_size: B.

    Returns:
        One byte count per stage.
    """
    if len(num_depths) != len(feature_channels):
        raise ValueError(
            f"estimate_cost_volume_bytes: {len(num_depths)} num_depths but "
            f"{len(feature_channels)} feature_channels; expected one each "
            "per stage")
    sizes = []
    for depths, channels, scale in zip(num_depths, feature_channels,
                                       STAGE_SCALES):
        stage_pixels = int(height * scale) * int(width * scale)
        sizes.append(batch_size * (num_views - 1) * depths * stage_pixels
                     * channels * 4)
    return sizes


def available_memory_bytes() -> Optional[int]:
    """Memory the cost volume may use by default, or None when unknown.

    On a machine without a GPU this is the host's `MemAvailable`
    (/proc/meminfo). With a GPU the network runs in device memory, which TF
    does not report before allocating it, so None is returned and only an
    actual `ResourceExhaustedError` is caught.
    """
    if tf.config.list_physical_devices("GPU"):
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _suggestion() -> str:
    return ("lower --max-height/--max-width, --views or --num-depths (e.g. "
            "--num-depths 32,16,8; only for .keras files and work "
            "directories)")


def check_memory(
    height: int, width: int, num_views: int, shape: NetworkShape,
    budget_bytes: Optional[int],
) -> List[int]:
    """Refuses a configuration whose largest stage exceeds the budget.

    Args:
        height, width: the largest network input size of the scene.
        num_views: V.
        shape: the network's per-stage sizes.
        budget_bytes: the memory allowed for the cost volume; None skips
            the check.

    Returns:
        The per-stage estimate (`estimate_cost_volume_bytes`).

    Raises:
        InsufficientMemoryError: the largest stage is over the budget.
    """
    stages = estimate_cost_volume_bytes(height, width, num_views,
                                        shape.num_depths,
                                        shape.feature_channels)
    if budget_bytes is not None and max(stages) > budget_bytes:
        stage = int(np.argmax(stages))
        assumed = ("" if shape.known else " (a SavedModel without a stored "
                   f"config: num_depths {shape.num_depths} and "
                   f"base_channels {_DEFAULT_BASE_CHANNELS} assumed)")
        raise InsufficientMemoryError(
            f"the stage-{stage + 1} cost volume at {height}x{width} with "
            f"{num_views} views and num_depths {shape.num_depths} needs about "
            f"{stages[stage] / 2**30:.2f} GiB{assumed}, more than the "
            f"{budget_bytes / 2**30:.2f} GiB available: {_suggestion()}")
    return stages


def with_num_depths(
    predictor: inference.Predictor, num_depths: Sequence[int],
) -> inference.Predictor:
    """The same network and weights with other hypotheses per stage.

    The layers' weights do not depend on the number of hypotheses (3-D
    convolutions slide over D), so the network is rebuilt from its config
    with `num_depths` replaced and the weights copied over. Only possible
    for Keras models (a `.keras` file or a work directory): a SavedModel's
    graph fixes D.

    Raises:
        ReconstructionError: the model is a SavedModel.
        ValueError: invalid `num_depths` (from the network constructor).
    """
    network = predictor.network
    if network is None or not hasattr(network, "num_depths"):
        raise ReconstructionError(
            f"--num-depths needs a Keras model (.keras file or training work "
            f"directory); {predictor.path} is a SavedModel, whose graph "
            "fixes the hypotheses per stage")
    config = network.get_config()
    config["num_depths"] = tuple(int(d) for d in num_depths)
    rebuilt = type(network).from_config(config)
    rebuilt.build()
    rebuilt.set_weights(network.get_weights())
    return inference.Predictor(predictor.path, predictor.kind,
                               network=rebuilt)


def plan_sizes(
    scene: scene_lib.MVSScene, view_ids: Sequence[int], max_height: int,
    max_width: int,
) -> Dict[int, Tuple[int, int]]:
    """Network input size of each reference view (ALGORITHMS.md 1.8.1).

    Raises:
        ReconstructionError: an image is smaller than 32 pixels along an
            axis.
    """
    sizes = {}
    for view_id in view_ids:
        height, width = scene.image_size(view_id)
        try:
            sizes[view_id] = scene_lib.fit_to_max_size(
                height, width, max_height, max_width, SIZE_MULTIPLE)
        except ValueError as error:
            raise ReconstructionError(
                f"scene {scene.name}, view {view_id}: {error}; the network "
                f"needs images of at least {SIZE_MULTIPLE}x{SIZE_MULTIPLE} "
                "pixels") from None
    return sizes


def _nearest_upsample(values: np.ndarray, height: int,
                      width: int) -> np.ndarray:
    """Nearest-neighbour resize of `[h, w]` to `[height, width]` (what
    UniMVSNet does to stage confidences before its stage thresholds)."""
    rows = np.minimum((np.arange(height) * values.shape[0]) // height,
                      values.shape[0] - 1)
    cols = np.minimum((np.arange(width) * values.shape[1]) // width,
                      values.shape[1] - 1)
    return values[rows[:, None], cols[None, :]]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _paths(out_dir: pathlib.Path, view_id: int) -> Dict[str, pathlib.Path]:
    name = f"{view_id:08d}"
    return {
        "depth": out_dir / "depth" / f"{name}.pfm",
        "confidence": out_dir / "confidence" / f"{name}.pfm",
        "stage1": out_dir / "confidence" / f"{name}_stage1.pfm",
        "stage2": out_dir / "confidence" / f"{name}_stage2.pfm",
        "depth_png": out_dir / "previews" / f"{name}_depth.png",
        "confidence_png": out_dir / "previews" / f"{name}_confidence.png",
        "cam": out_dir / "cams" / f"{name}_cam.txt",
        "image": out_dir / "images" / f"{name}.png",
    }


class ViewLoader:
    """`MVSScene.load_view` with a small cache of decoded, resized views.

    Each view serves as a source of several neighbouring references;
    decoding a 1600x1200 JPEG and resizing it costs about as much as the
    network at low resolution, so recent views are kept.

    Args:
        scene: the scene.
        capacity: views kept.
    """

    def __init__(self, scene: scene_lib.MVSScene,
                 capacity: int = _CACHED_VIEWS):
        self.scene = scene
        self._capacity = capacity
        self._cache: "collections.OrderedDict[tuple, tuple]" = (
            collections.OrderedDict())

    def __call__(self, view_id: int, height: int,
                 width: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(image, intrinsics, cam_from_world)` as `MVSScene.load_view`."""
        key = (view_id, height, width)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = self.scene.load_view(view_id, height, width)
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return self._cache[key]


def infer_view(
    scene: scene_lib.MVSScene, predictor: inference.Predictor, ref_id: int,
    source_ids: Sequence[int], size: Tuple[int, int], out_dir: pathlib.Path,
    num_depths_base: int = DEFAULT_NUM_DEPTHS_BASE,
    interval_scale: float = DEFAULT_INTERVAL_SCALE,
    loader: Optional[ViewLoader] = None,
) -> Dict[str, object]:
    """Runs the network on one reference view and writes its outputs.

    Args:
        scene: the scene.
        predictor: the loaded model.
        ref_id: the reference view.
        source_ids: its V - 1 source views.
        size: `(height, width)` network input size.
        out_dir: the output folder (its subfolders must exist).
        num_depths_base: N for `Camera.depth_range`.
        interval_scale: interval multiplier for `Camera.depth_range`.
        loader: a ViewLoader to share decoded views between calls.

    Returns:
        `{"view_id", "height", "width", "depth_range", "seconds",
        "valid_depth_fraction", "stage_confidences"}` (the last is the number
        of stage confidence maps written).

    Raises:
        InsufficientMemoryError: TF ran out of memory.
    """
    height, width = size
    load = loader if loader is not None else scene.load_view
    images, intrinsics, poses = [], [], []
    for view_id in [ref_id, *source_ids]:
        image, k, pose = load(view_id, height, width)
        images.append(image)
        intrinsics.append(k)
        poses.append(pose)
    camera = scene.camera(ref_id)
    first, last = camera.depth_range(num_depths_base, interval_scale)
    inputs = {
        "images": np.stack(images)[np.newaxis].astype(np.float32),
        "intrinsics": np.stack(intrinsics)[np.newaxis].astype(np.float32),
        "cam_from_world": np.stack(poses)[np.newaxis].astype(np.float32),
        "depth_range": np.array([[first, last]], np.float32),
    }
    start = time.perf_counter()
    try:
        outputs = predictor(inputs)
        depth = np.asarray(outputs["depth"])[0].astype(np.float32)
        confidence = np.asarray(outputs["confidence"])[0].astype(np.float32)
    except tf.errors.ResourceExhaustedError as error:
        raise InsufficientMemoryError(
            f"out of memory on view {ref_id} at {height}x{width} with "
            f"{len(images)} views: {_suggestion()} (TensorFlow: "
            f"{str(error).splitlines()[0][:200]})") from None
    seconds = time.perf_counter() - start

    paths = _paths(out_dir, ref_id)
    formats.write_pfm(paths["depth"], depth)
    formats.write_pfm(paths["confidence"], confidence)
    stages = outputs.get("stages") if isinstance(outputs, dict) else None
    stage_maps = []
    for index, stage in enumerate(list(stages or [])[:-1]):
        upsampled = _nearest_upsample(
            np.asarray(stage["confidence"])[0].astype(np.float32), height,
            width)
        formats.write_pfm(paths[f"stage{index + 1}"], upsampled)
        stage_maps.append(upsampled)
    valid = np.isfinite(depth) & (depth > 0)
    visualize.save_png(str(paths["image"]), _to_uint8(images[0]))
    # Previews with a colour bar; the cams' depth unit is not recorded
    # in MVSNet folders (mm for DTU), so the bar names it generically.
    visualize.save_png(str(paths["depth_png"]), visualize.depth_preview(
        depth, vmin=first, vmax=last, unit="cam units"))
    visualize.save_png(str(paths["confidence_png"]),
                       visualize.confidence_preview(confidence))
    formats.write_cam_file(paths["cam"], formats.Camera(
        intrinsics=intrinsics[0], cam_from_world=poses[0],
        depth_min=first, depth_interval=(last - first) / num_depths_base,
        depth_max=last, depth_line="min_max"))
    return {
        "view_id": int(ref_id),
        "height": int(height),
        "width": int(width),
        "depth_range": [float(first), float(last)],
        "seconds": float(seconds),
        "valid_depth_fraction": float(valid.mean()),
        "stage_confidences": len(stage_maps),
    }


class OutputViews(Mapping):
    """Fusion views read back lazily from a reconstruction's output folder.

    `views[view_id]` is a `fusion.FusionView` built from `depth/`,
    `confidence/` (with the stage maps when present), the K of `cams/` and
    the network-resolution image of `images/`; a small cache keeps the
    views of the current reference and its sources decoded.

    Args:
        out_dir: the output folder.
        view_ids: the views with outputs.
    """

    def __init__(self, out_dir: PathLike, view_ids: Sequence[int]):
        self._out_dir = pathlib.Path(out_dir)
        self._view_ids = list(view_ids)
        self._cache: "collections.OrderedDict[int, fusion.FusionView]" = (
            collections.OrderedDict())

    def __getitem__(self, view_id: int) -> fusion.FusionView:
        if view_id not in self._view_ids:
            raise KeyError(view_id)
        if view_id in self._cache:
            self._cache.move_to_end(view_id)
            return self._cache[view_id]
        paths = _paths(self._out_dir, view_id)
        depth = formats.read_pfm(paths["depth"])
        camera = formats.read_cam_file(paths["cam"])
        with Image.open(paths["image"]) as image:
            colours = np.asarray(image.convert("RGB"))
        stages = [formats.read_pfm(paths[key]) for key in ("stage1", "stage2")
                  if paths[key].is_file()]
        confidence = formats.read_pfm(paths["confidence"])
        view = fusion.FusionView(
            depth=depth, confidence=confidence,
            intrinsics=camera.intrinsics, cam_from_world=camera.cam_from_world,
            image=colours,
            stage_confidences=[*stages, confidence] if stages else ())
        self._cache[view_id] = view
        if len(self._cache) > _CACHED_VIEWS:
            self._cache.popitem(last=False)
        return view

    def __iter__(self):
        return iter(self._view_ids)

    def __len__(self) -> int:
        return len(self._view_ids)


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


def _json_ready(value):
    """Replaces NaN and infinities (invalid JSON) by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def write_json(path: PathLike, data: dict) -> None:
    """Writes JSON through a temporary name and a rename."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(_json_ready(data), indent=2) + "\n")
    os.replace(temporary, path)


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


def check_filter(config: fusion.FilterConfig, shape: NetworkShape,
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
        records: `infer_view` records by view id.

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
    num_views: int = DEFAULT_NUM_VIEWS,
    max_height: int = DEFAULT_MAX_HEIGHT,
    max_width: int = DEFAULT_MAX_WIDTH,
    filter_config: Optional[fusion.FilterConfig] = None,
    interval_scale: float = DEFAULT_INTERVAL_SCALE,
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
        memory_budget_bytes: bytes the largest cost volume may take;
            "auto" uses `available_memory_bytes()`, None skips the check.
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
            inference); InsufficientMemoryError when the cost volume does
            not fit.
    """
    if num_views < 2:
        raise ReconstructionError(
            f"--views must be at least 2 (a reference and a source); "
            f"received {num_views}")
    if min(max_height, max_width) < SIZE_MULTIPLE:
        raise ReconstructionError(
            f"--max-height/--max-width must be at least {SIZE_MULTIPLE}; "
            f"received {max_height}x{max_width}")
    config = filter_config or fusion.FilterConfig.preset("casmvsnet")
    shape = network_shape(predictor)
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
    sizes = plan_sizes(scene, [ref for ref, _ in refs], max_height,
                       max_width)
    largest = max(sizes.values(), key=lambda hw: hw[0] * hw[1])
    budget = (available_memory_bytes() if memory_budget_bytes == "auto"
              else memory_budget_bytes)
    estimate = check_memory(*largest, num_views, shape, budget)

    for sub in ("depth", "confidence", "previews", "cams", "images"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    # summary.json marks a complete run: drop a stale one before starting.
    (out_dir / "summary.json").unlink(missing_ok=True)

    records = {}
    bar = keras.utils.Progbar(len(refs), unit_name="view",
                              verbose=verbose) if verbose else None
    inference_start = time.perf_counter()
    loader = ViewLoader(scene)
    for index, (ref_id, sources) in enumerate(refs):
        record = infer_view(scene, predictor, ref_id, sources,
                            sizes[ref_id], out_dir, shape.num_depths_base,
                            interval_scale, loader)
        records[ref_id] = record
        if on_view is not None:
            on_view(record)
        if bar is not None:
            bar.update(index + 1, [("valid", record["valid_depth_fraction"])])
    inference_seconds = time.perf_counter() - inference_start

    fusion_start = time.perf_counter()
    views = OutputViews(out_dir, list(records))
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

    cloud = fusion.fuse_views(views, fusion_pairs, config, on_view=fused)
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
        },
        "timing": {
            "inference_seconds": inference_seconds,
            "inference_seconds_per_view": inference_seconds / len(refs),
            "fusion_seconds": fusion_seconds,
            "total_seconds": time.perf_counter() - total_start,
        },
        "diagnosis": diagnose(per_view, totals["num_points"], config),
    }
    masks = mask_agreement(cloud.points, scene, list(records))
    if masks is not None:
        summary["masks"] = masks
    write_json(out_dir / "summary.json", summary)
    return summary


def evaluate_against(points: np.ndarray, gt_path: PathLike,
                     threshold: float,
                     max_distance: Optional[float] = 20.0) -> dict:
    """Accuracy, completeness, overall and precision/recall/F-score of a
    fused cloud against ground-truth points (generic mode of ALGORITHMS.md
    7.1 and 7.2; distances in depth units): a PLY, or an `.npz` with an
    `xyz [N, 3]` array (e.g. `dtu_scan24/sparse_points_dtu_frame.npz`).

    Raises:
        FileNotFoundError, ValueError: unreadable ground truth.
    """
    if str(gt_path).endswith(".npz"):
        with np.load(gt_path) as data:
            if "xyz" not in data:
                raise ValueError(
                    f"{gt_path}: expected an array 'xyz' [N, 3]; found "
                    f"{sorted(data.files)}")
            gt_points = np.asarray(data["xyz"], np.float32)
    else:
        gt_points, _, _ = files.read_ply(str(gt_path))
    metrics = evaluation.accuracy_completeness(points, gt_points,
                                               max_distance=max_distance)
    metrics.update(evaluation.precision_recall_fscore(points, gt_points,
                                                      threshold=threshold))
    return metrics


def mask_agreement(points: np.ndarray, scene: scene_lib.MVSScene,
                   view_ids: Sequence[int]) -> Optional[dict]:
    """How well a cloud agrees with the scene's object masks (`masks/`).

    Every point is projected into every view that has a mask, with the
    view's full-resolution camera; projections behind the camera or outside
    the image are ignored.

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
        local = points @ camera.cam_from_world[:3, :3].T + (
            camera.cam_from_world[:3, 3])
        with np.errstate(divide="ignore", invalid="ignore"):
            pixels = local @ camera.intrinsics.T
            cols = np.round(pixels[:, 0] / pixels[:, 2])
            rows = np.round(pixels[:, 1] / pixels[:, 2])
        in_image = ((local[:, 2] > 0) & (cols >= 0) & (cols < mask.shape[1])
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


def render_views_direction(
    scene: scene_lib.MVSScene, view_ids: Sequence[int],
) -> Tuple[np.ndarray, np.ndarray]:
    """The mean viewing direction and image-up direction of the cameras,
    world frame, for a render that looks at the cloud as the photos do."""
    forward, down = np.zeros(3), np.zeros(3)
    for view_id in view_ids:
        rotation = scene.camera(view_id).cam_from_world[:3, :3]
        forward += rotation[2]
        down += rotation[1]
    return forward, -down


def write_render(
    path: PathLike, points: np.ndarray, colors: Optional[np.ndarray],
    view_direction: Sequence[float], up: Sequence[float],
    width: int = 640, height: int = 480, max_bytes: int = 300_000,
    cam_from_world: Optional[np.ndarray] = None,
    intrinsics: Optional[np.ndarray] = None,
) -> int:
    """Renders the cloud (`visualize.render_point_cloud`) to a PNG.

    A full-colour PNG of a noisy splat image can exceed `max_bytes`; it is
    then written again with a 256-colour palette, which keeps the render
    recognisable at a third of the size.

    Args:
        path: destination `.png`.
        points: `[N, 3]` world coordinates.
        colors: `[N, 3]` uint8 or None.
        view_direction, up: world directions of the virtual camera.
        width, height: image size, pixels.
        max_bytes: size above which the palette form is written.
        cam_from_world, intrinsics: a camera to render from instead (`[4,
            4]` and `[3, 3]` for a `width x height` image).

    Returns:
        The size of the written file in bytes.
    """
    path = pathlib.Path(path)
    rgb = visualize.render_point_cloud(
        points, colors, width, height, view_direction=view_direction, up=up,
        cam_from_world=cam_from_world, intrinsics=intrinsics,
        point_size=2 if points.shape[0] < width * height // 4 else 1)
    visualize.save_png(str(path), rgb)
    if path.stat().st_size > max_bytes:
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        Image.fromarray(rgb).quantize(256).save(temporary, format="PNG",
                                                optimize=True)
        os.replace(temporary, path)
    return path.stat().st_size
