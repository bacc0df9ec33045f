"""Memory and size planning of a reconstruction, before any inference.

Memory: the largest tensor of a stage is the warped source feature volume,
`B * (V - 1) * D * H_s * W_s * C_s * 4` bytes; `estimate_cost_volume_bytes`
computes it per stage and `check_memory` refuses a configuration whose
largest stage exceeds the memory budget, naming the knobs that shrink it.
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

