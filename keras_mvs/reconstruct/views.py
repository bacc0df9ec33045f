"""Per-view inference: the network on one reference view and its sources.

For a reference view, `infer_view` loads it and its best `num_views - 1`
sources (pair.txt order) at the planned network size (K rescaled per axis,
sources forced to the reference size, ALGORITHMS.md 1.8), runs the model on
the depth range of the reference camera and writes the view's files of the
output layout (`layout.output_paths`).
"""

import collections
import pathlib
import time
from typing import Dict
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import tensorflow as tf

from keras_mvs import inference
from keras_mvs import visualize
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib
from keras_mvs.reconstruct import layout
from keras_mvs.reconstruct import planning
from keras_mvs.reconstruct.errors import InsufficientMemoryError


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
                 capacity: int = layout.CACHED_VIEWS):
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
    num_depths_base: int = planning.DEFAULT_NUM_DEPTHS_BASE,
    interval_scale: float = planning.DEFAULT_INTERVAL_SCALE,
    loader: Optional[ViewLoader] = None,
    tiles: Optional[Sequence[planning.Tile]] = None,
) -> Dict[str, object]:
    """Runs the network on one reference view and writes its outputs.

    With more than one tile (`planning.plan_tiles`), the view is inferred
    window by window (`CascadeMVSNet.predict_tiled`, the predictor's Keras
    network); otherwise in one call.

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
        tiles: the view's tiles; None or one tile: one call.

    Returns:
        `{"view_id", "height", "width", "depth_range", "seconds",
        "valid_depth_fraction", "stage_confidences", "tiles"}`
        (`stage_confidences` is the number of stage confidence maps
        written, `tiles` the number of windows inferred).

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
    tiles = list(tiles or [])
    try:
        if len(tiles) > 1:
            outputs = predictor.network.predict_tiled(
                inputs, [(tile.window, tile.core) for tile in tiles])
        else:
            outputs = predictor(inputs)
        depth = np.asarray(outputs["depth"])[0].astype(np.float32)
        confidence = np.asarray(outputs["confidence"])[0].astype(np.float32)
    except tf.errors.ResourceExhaustedError as error:
        raise InsufficientMemoryError(
            f"out of memory on view {ref_id} at {height}x{width} with "
            f"{len(images)} views: {planning.memory_suggestion()} "
            f"(TensorFlow: {str(error).splitlines()[0][:200]})") from None
    seconds = time.perf_counter() - start

    paths = layout.output_paths(out_dir, ref_id)
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
        "tiles": max(1, len(tiles)),
    }

