"""Memory and size planning of a reconstruction, before any inference.

Memory: `estimate_working_bytes` is a measured model of one view's working
memory (bench/model_bench.py): the FPN features of the whole images plus
the cascade (cost volumes, 3-D U-Nets) over the reference, or over one
window of it. `plan_tiles` keeps a view in one call when that fits the
budget, else splits the reference into the fewest windows
(`CascadeMVSNet.predict_tiled`, TILE_MARGIN pixels of context each, so the
outputs are the untiled ones up to round-off) that fit, and refuses only
when none does or the model cannot be tiled (a SavedModel), naming the
knobs that shrink it. `estimate_cost_volume_bytes` (one warped source
volume per stage and source, the former refusal criterion) and
`check_memory` remain for the summary and for callers.
Sizes: `plan_sizes` gives each reference view's network input size by the
test-time rule of ALGORITHMS.md 1.8.1.
"""

import dataclasses
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import tensorflow as tf

from keras_mvs import inference
from keras_mvs.data import scene as scene_lib
from keras_mvs.models.cas_mvsnet import SIZE_MULTIPLE
from keras_mvs.models.cas_mvsnet import STAGE_SCALES
from keras_mvs.models.cas_mvsnet import TILE_MARGIN
from keras_mvs.reconstruct.errors import InsufficientMemoryError
from keras_mvs.reconstruct.errors import ReconstructionError

# Test-time defaults of UniMVSNet / CasMVSNet on DTU (ALGORITHMS.md 6.1).
DEFAULT_NUM_VIEWS = 5
DEFAULT_MAX_HEIGHT = 864
DEFAULT_MAX_WIDTH = 1152
# N0 and the interval scale of the test loaders (ALGORITHMS.md 1.9, 1.1).
DEFAULT_NUM_DEPTHS_BASE = 192
DEFAULT_INTERVAL_SCALE = 1.06
# What a SavedModel without a stored network config is assumed to hold: its
# signature does not expose the network's settings, so the memory estimate
# uses the reference defaults.
_DEFAULT_NUM_DEPTHS = (48, 32, 8)
_DEFAULT_BASE_CHANNELS = 8


@dataclasses.dataclass(frozen=True)
class NetworkShape:
    """What the memory estimate needs to know about a network.

    Attributes:
        num_depths: hypotheses per stage, coarse to fine.
        feature_channels: feature channels per stage, coarse to fine.
        num_depths_base: N0, the base interval's divisor.
        known: False when the values are assumed defaults (SavedModels).
        xla_warp: the network compiles its warp with XLA (a Keras network's
            `xla_warp`), which adds XLA_WARP_OVERHEAD_BYTES.
    """

    num_depths: Tuple[int, ...]
    feature_channels: Tuple[int, ...]
    num_depths_base: int
    known: bool
    xla_warp: bool = False


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
            known=True,
            xla_warp=bool(getattr(network, "xla_warp", False)))
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


# The measured working-memory model (peak resident memory during a network
# call minus the resident memory before the first call; Keras network
# through `inference.Predictor`, graph mode, inference):
#   features: the FPN maps of the V whole images, exactly
#       4 B V H W sum_s(C_s scale_s^2) bytes (14 floats per pixel and view
#       for base width 8);
#   cascade: WORKING_OVERHEAD_BYTES + 4 B h w VOLUME_FACTOR
#       max_s(D_s C_s scale_s^2) bytes over the h x w reference (or window):
#       the largest stage's cost volume (a size the network no longer
#       materialises: `CostVolume.aggregate_planes` runs the 3-D U-Net's
#       conv0 in its plane loop and `CostRegularization.
#       call_from_conv0_planes` reads conv0's planes one by one) times what
#       conv0's planes, one plane's intermediates, the U-Net's coarser
#       levels and the allocator's slack make of it.
# VOLUME_FACTOR and WORKING_OVERHEAD_BYTES are a least-squares line through
# `python -m bench.model_bench --sizes 128x160,256x320,512x640,1152x1600
#  --modes graph --repeats 2 --budget 30` (5 views, D = 48/32/8, base
# width 8, adaptive aggregation, unity head: the shipped preset's network,
# which `reconstruct` runs; 2 threads, oneDNN on; working MB over the timed
# calls): FIT_POINTS. The least-squares line is raised by its largest
# residual (0.3 MB) and rounded up, so it bounds the three points, within
# 2 % (tests/reconstruct_test.py checks the bound). The same run measured
# 2313 MB at 1152x1600, where the model gives 2480 MB: an upper bound there
# too, 7 % over (not fitted). Before the in-loop conv0 (main at 4ab33d0):
# FIT_POINTS 143, 298 and 939 MB, VOLUME_FACTOR 4.77, 90 MB overhead, 4038
# MB at 1152x1600.
# Not measured: other D, C and V (they enter only through the volume and
# feature terms) and the other aggregations. `xla_warp=True` (reconstruct's
# default) runs the same plane-by-plane path with each plane's warp
# compiled. The same bench run (1-min load ~4) measured with
# `--modes graph,graph_xla_warp`: XLA_CHECK_POINTS; the compiled warps
# add 34-72 MB up to 512x640, so the XLA estimate adds
# XLA_WARP_OVERHEAD_BYTES to the plain one, which bounds each point
# (tests/reconstruct_test.py); the plain path measured 184, 240, 541 and
# 2307 MB in that run, under FIT_POINTS.
FIT_POINTS = {(128, 160): 195, (256, 320): 271, (512, 640): 579}
VOLUME_FACTOR = 2.02
WORKING_OVERHEAD_BYTES = 170 * 2**20
XLA_CHECK_POINTS = {(128, 160): 229, (256, 320): 296, (512, 640): 613,
                    (1152, 1600): 2450}
XLA_WARP_OVERHEAD_BYTES = 60 * 2**20
# Tiled, the same terms fall short: `python -m bench.model_bench --sizes
# 1152x1600 --modes graph --repeats 1 --budget 1 --memory-budget-gb 2
# --torch-python none` ran 4 windows of 800x1024 in 1879 MB working where
# they give 1470 MB (the whole-image FPN pass, the stitched maps, one
# window's outputs on the host). The 409 MB are added to every tiled
# estimate: one measurement, not a fit (416 MB before the in-loop conv0,
# with 4 windows of 800x1024 under a 3 GB budget).
TILING_OVERHEAD_BYTES = 409 * 2**20


def _largest_volume_floats(shape: NetworkShape) -> float:
    """max_s D_s C_s scale_s^2: floats per input pixel of the largest
    stage volume."""
    return max(d * c * scale * scale for d, c, scale in zip(
        shape.num_depths, shape.feature_channels, STAGE_SCALES))


def estimate_working_bytes(
    height: int, width: int, num_views: int, shape: NetworkShape,
    window: Optional[Tuple[int, int]] = None, batch_size: int = 1,
) -> int:
    """Working memory of one view's inference, bytes (a measured model).

    Args:
        height, width: the network input size, pixels.
        num_views: V, reference included.
        shape: the network's per-stage sizes.
        window: `(h, w)` of the largest window when the view is tiled;
            None for one call over the whole view.
        batch_size: B.

    Returns:
        The FPN features of the whole images plus the cascade over the
        window, plus TILING_OVERHEAD_BYTES when tiled and
        XLA_WARP_OVERHEAD_BYTES with the compiled warp (see the module
        constants).
    """
    features = 4 * batch_size * num_views * height * width * sum(
        c * scale * scale for c, scale in zip(shape.feature_channels,
                                              STAGE_SCALES))
    h, w = window if window is not None else (height, width)
    cascade = WORKING_OVERHEAD_BYTES + 4 * batch_size * h * w * (
        VOLUME_FACTOR * _largest_volume_floats(shape))
    tiling = 0 if window is None else TILING_OVERHEAD_BYTES
    compiled = XLA_WARP_OVERHEAD_BYTES if shape.xla_warp else 0
    return int(features + cascade + tiling + compiled)


@dataclasses.dataclass(frozen=True)
class Tile:
    """One window of a tiled view, in network input pixels.

    Attributes:
        window: `(y0, y1, x0, x1)` the reference window the cascade runs on.
        core: `(y0, y1, x0, x1)` the part of it kept.
    """

    window: Tuple[int, int, int, int]
    core: Tuple[int, int, int, int]


def _splits(size: int, parts: int, margin: int) -> List[tuple]:
    """`parts` cores of whole SIZE_MULTIPLE blocks and their windows."""
    blocks = size // SIZE_MULTIPLE
    edges = [SIZE_MULTIPLE * round(i * blocks / parts)
             for i in range(parts + 1)]
    return [((max(0, a - margin), min(size, b + margin)), (a, b))
            for a, b in zip(edges[:-1], edges[1:])]


def plan_tiles(
    height: int, width: int, num_views: int, shape: NetworkShape,
    budget_bytes: Optional[int], tileable: bool = True,
    margin: int = TILE_MARGIN,
) -> List[Tile]:
    """How to infer a view within the memory budget.

    One tile (the whole view, the untiled call) when its estimate fits or
    there is no budget; else the R x C grid with the fewest tiles (then the
    squarest) whose largest window fits, each core widened by `margin`
    pixels of context inside the image.

    Args:
        height, width: the network input size (multiples of 32).
        num_views: V.
        shape: the network's per-stage sizes.
        budget_bytes: the working memory allowed; None: no limit.
        tileable: whether the model can run windows (a Keras
            CascadeMVSNet); otherwise only one tile is possible.
        margin: context around each core, pixels (TILE_MARGIN: the
            untiled outputs).

    Returns:
        The tiles, cores covering the view once.

    Raises:
        InsufficientMemoryError: no tiling fits.
    """
    whole = (0, height, 0, width)
    estimate = estimate_working_bytes(height, width, num_views, shape)
    if budget_bytes is None or estimate <= budget_bytes:
        return [Tile(whole, whole)]
    assumed = ("" if shape.known else " (a SavedModel without a stored "
               f"config: num_depths {shape.num_depths} and base_channels "
               f"{_DEFAULT_BASE_CHANNELS} assumed)")
    if tileable:
        grids = sorted(
            ((rows, cols) for rows in range(1, height // SIZE_MULTIPLE + 1)
             for cols in range(1, width // SIZE_MULTIPLE + 1)),
            key=lambda grid: (grid[0] * grid[1], abs(grid[0] - grid[1])))
        for rows, cols in grids:
            row_splits = _splits(height, rows, margin)
            col_splits = _splits(width, cols, margin)
            largest = (max(w[1] - w[0] for w, _ in row_splits),
                       max(w[1] - w[0] for w, _ in col_splits))
            if estimate_working_bytes(height, width, num_views, shape,
                                      largest) <= budget_bytes:
                return [Tile((wy[0], wy[1], wx[0], wx[1]),
                             (cy[0], cy[1], cx[0], cx[1]))
                        for wy, cy in row_splits for wx, cx in col_splits]
        smallest = estimate_working_bytes(
            height, width, num_views, shape,
            (min(height, SIZE_MULTIPLE + 2 * margin),
             min(width, SIZE_MULTIPLE + 2 * margin)))
        raise InsufficientMemoryError(
            f"{height}x{width} with {num_views} views and num_depths "
            f"{shape.num_depths} needs about {estimate / 2**30:.2f} GiB in "
            f"one call and {smallest / 2**30:.2f} GiB in the smallest tiles"
            f"{assumed}, more than the {budget_bytes / 2**30:.2f} GiB "
            f"available: {memory_suggestion()}")
    raise InsufficientMemoryError(
        f"{height}x{width} with {num_views} views and num_depths "
        f"{shape.num_depths} needs about {estimate / 2**30:.2f} GiB{assumed}"
        f", more than the {budget_bytes / 2**30:.2f} GiB available, and a "
        f"SavedModel cannot be run in tiles: {memory_suggestion()}")


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


def memory_suggestion() -> str:
    """What to change when the cost volume does not fit."""
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
            f"{budget_bytes / 2**30:.2f} GiB available: "
            f"{memory_suggestion()}")
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

