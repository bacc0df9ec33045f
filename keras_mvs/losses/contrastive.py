"""CL-MVSNet's contrastive consistency losses and the masks of its ICC branch.

What this module owns (ALGORITHMS.md 4.1 and 4.3):

* `icc_consistency_loss`: the image-level branch pulled towards the regular
  branch's depth outside the masked reference rectangle;
* `scc_consistency_loss`: the scene-level branch pulled towards it where the
  regular branch is confident;
* `pseudo_unity_loss`: the `unsupervised_unity` objective's version of both
  (DESIGN.md 1): UFL against unity labels built from the pseudo depth;
* the random masks of the ICC branch, drawn with stateless RNG from a seed
  tensor of shape `[2]` (so runs reproduce and XLA keeps the seeds):
  `reference_rectangle_mask`, `apply_source_masking`,
  `apply_reference_mask`.

Pseudo-labels are the regular branch's final-stage depth and confidence
`[B, H, W]` at full resolution. Every loss here stops their gradient and
downsamples them to each stage by taking the top-left pixel of each block
(`F.interpolate` nearest in the reference). The returned totals are not
multiplied by the branch weights: the trainer applies `icc_weight(epoch)`
(`keras_mvs.schedules`) and `SCC_WEIGHT`.
"""

from typing import Mapping
from typing import Sequence

import tensorflow as tf

from keras_mvs.losses.depth import STAGE_WEIGHTS
from keras_mvs.losses.depth import UFL_ALPHAS
from keras_mvs.losses.depth import UFL_GAMMAS
from keras_mvs.losses.depth import TensorLike
from keras_mvs.losses.depth import _check_stage_lengths
from keras_mvs.losses.depth import _spatial_size
from keras_mvs.losses.depth import downsample_to
from keras_mvs.losses.depth import masked_smooth_l1
from keras_mvs.losses.depth import supervised_cascade_loss
from keras_mvs.models.cas_mvsnet import IMAGENET_MEAN

# Weight of the scene-level consistency loss (`CL:main.py --w_scc`).
SCC_WEIGHT = 0.01
# The regular branch's confidence above which SCC supervises a pixel
# (`CL:main.py --mask_conf`).
SCC_CONFIDENCE_THRESHOLD = 0.95
# A masked element becomes the ImageNet mean colour (IMAGENET_MEAN), which is
# 0 in the network's ImageNet-normalised input space, as in the reference.


def _consistency_loss(
    stages: Sequence[Mapping[str, tf.Tensor]],
    pseudo_depth: TensorLike,
    mask: TensorLike,
    stage_weights: Sequence[float],
    prefix: str,
) -> dict:
    """Stage-weighted masked smooth-L1 between branch and pseudo depth."""
    if not stages:
        raise ValueError("stages is empty: expected one dict per stage.")
    _check_stage_lengths(stages, stage_weights=stage_weights)
    pseudo_depth = tf.stop_gradient(tf.cast(pseudo_depth, tf.float32))
    mask = tf.cast(mask, tf.float32)
    tf.debugging.assert_shapes([(pseudo_depth, ("B", "H", "W")),
                                (mask, ("B", "H", "W"))])
    terms = {}
    total = tf.zeros([], tf.float32)
    for index, stage in enumerate(stages):
        height, width = _spatial_size(stage["depth"])
        term = masked_smooth_l1(
            tf.cast(stage["depth"], tf.float32),
            downsample_to(pseudo_depth, height, width),
            downsample_to(mask, height, width))
        terms[f"{prefix}/stage{index + 1}"] = term
        total += stage_weights[index] * term
    terms["total"] = total
    return terms


def icc_consistency_loss(
    stages: Sequence[Mapping[str, tf.Tensor]],
    pseudo_depth: TensorLike,
    filter_mask: TensorLike,
    stage_weights: Sequence[float] = STAGE_WEIGHTS,
) -> dict:
    """Image-level contrastive consistency (`CL:loss.py::ICCLossMultiStage`).

    Per stage: smooth-L1 (beta 1, mean) between the image-level branch's
    depth and the pseudo depth, over pixels where the downsampled
    `filter_mask` is > 0.5, i.e. outside the masked reference rectangle
    (ALGORITHMS.md 4.3, flagged there); 0 when no pixel qualifies.

    Args:
        stages: the image-level branch's per-stage dicts, coarse to fine, each
            with `depth [B, h, w]`.
        pseudo_depth: `[B, H, W]` the regular branch's final depth (its
            gradient is stopped here).
        filter_mask: `[B, H, W]` from `reference_rectangle_mask`: 1 outside
            the rectangle, 0 inside.
        stage_weights: lambda_s, one per stage.

    Returns:
        Dict with `"icc/stage{s}"` (s = 1 coarsest) and `"total"` =
        `sum_s lambda_s icc_s`, not yet multiplied by `icc_weight(epoch)`.
    """
    return _consistency_loss(stages, pseudo_depth, filter_mask,
                             stage_weights, "icc")


def scc_consistency_loss(
    stages: Sequence[Mapping[str, tf.Tensor]],
    pseudo_depth: TensorLike,
    pseudo_confidence: TensorLike,
    threshold: float = SCC_CONFIDENCE_THRESHOLD,
    stage_weights: Sequence[float] = STAGE_WEIGHTS,
) -> dict:
    """Scene-level contrastive consistency (`CL:loss.py::SCCLossMultiStage`).

    Per stage: smooth-L1 (beta 1, mean) between the scene-level branch's
    depth and the pseudo depth where the downsampled pseudo confidence is
    > `threshold`; 0 when no pixel qualifies.

    Args:
        stages: the scene-level branch's per-stage dicts, each with
            `depth [B, h, w]`.
        pseudo_depth: `[B, H, W]` the regular branch's final depth.
        pseudo_confidence: `[B, H, W]` its final photometric confidence
            (4-neighbour probability sum) in [0, 1].
        threshold: confidence threshold (0.95 in CL-MVSNet).
        stage_weights: lambda_s, one per stage.

    Returns:
        Dict with `"scc/stage{s}"` and `"total"` = `sum_s lambda_s scc_s`,
        not yet multiplied by `SCC_WEIGHT`.
    """
    confident = tf.cast(
        tf.stop_gradient(tf.cast(pseudo_confidence, tf.float32)) > threshold,
        tf.float32)
    return _consistency_loss(stages, pseudo_depth, confident, stage_weights,
                             "scc")


def pseudo_unity_loss(
    stages: Sequence[Mapping[str, tf.Tensor]],
    pseudo_depth: TensorLike,
    mask: TensorLike,
    stage_weights: Sequence[float] = STAGE_WEIGHTS,
    alphas: Sequence[float] = UFL_ALPHAS,
    gammas: Sequence[float] = UFL_GAMMAS,
) -> dict:
    """UFL of a contrastive branch against pseudo-unity labels (DESIGN.md 1).

    The `unsupervised_unity` objective's consistency term: at each stage the
    detached pseudo depth, downsampled to the stage, is turned into unity
    labels at that branch's own hypotheses and interval
    (`unity_labels`), and the branch's unity volume is trained with the
    Unified Focal Loss on the downsampled `mask`. It is
    `supervised_cascade_loss` with the pseudo depth as ground truth.

    Args:
        stages: the branch's per-stage dicts, coarse to fine, with `depth`,
            `volume`, `logits`, `hypotheses` and `interval` (as for
            `supervised_cascade_loss`).
        pseudo_depth: `[B, H, W]` the regular branch's final depth.
        mask: `[B, H, W]` where the labels are trusted (> 0.5): the ICC
            `filter_mask`, or the regular branch's confidence > 0.95 for SCC.
        stage_weights: lambda_s, one per stage.
        alphas, gammas: UFL constants, one per stage.

    Returns:
        Dict with `"pseudo_ufl/stage{s}"` and `"total"` (weighted sum).
    """
    terms = supervised_cascade_loss(
        stages, tf.stop_gradient(tf.cast(pseudo_depth, tf.float32)), mask,
        head="unity", stage_weights=stage_weights, alphas=alphas,
        gammas=gammas)
    return {name.replace("ufl/", "pseudo_ufl/"): value
            for name, value in terms.items()}


def _check_seed(seed: TensorLike) -> tf.Tensor:
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    if seed.shape.rank is not None and seed.shape != (2,):
        raise ValueError(f"seed must have shape [2]. Received: shape "
                         f"{seed.shape}")
    return seed


def reference_rectangle_mask(seed: TensorLike, batch, height,
                             width) -> tf.Tensor:
    """The ICC branch's reference rectangle (`CL:tools.py::random_image_mask`).

    One `floor(H/3) x floor(W/3)` rectangle whose top-left corner is uniform
    in `[0, W - floor(W/3)) x [0, H - floor(H/3))`, at the same position for
    every batch element, as the reference draws it once per batch.

    Args:
        seed: `[2]` int32/int64 stateless seed.
        batch: B.
        height, width: H, W of the reference image (>= 3 for a non-empty
            rectangle).

    Returns:
        `filter_mask [B, H, W]` float32: 0 inside the rectangle, 1 outside.
    """
    seed = _check_seed(seed)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    rect_height, rect_width = height // 3, width // 3
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    top = tf.random.stateless_uniform([], seeds[0], minval=0,
                                      maxval=height - rect_height,
                                      dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[1], minval=0,
                                       maxval=width - rect_width,
                                       dtype=tf.int32)
    rows = tf.range(height)[:, tf.newaxis]
    cols = tf.range(width)[tf.newaxis, :]
    inside = ((rows >= top) & (rows < top + rect_height) & (cols >= left)
              & (cols < left + rect_width))  # [H, W]
    filter_mask = 1.0 - tf.cast(inside, tf.float32)
    return tf.broadcast_to(filter_mask, tf.stack([batch, height, width]))


def apply_source_masking(
    images: TensorLike,
    seed: TensorLike,
    rate: TensorLike,
    fill: Sequence[float] = IMAGENET_MEAN,
) -> tf.Tensor:
    """Bernoulli masking of the source views of the ICC branch.

    Each element of every source view (1..V-1), per pixel and per channel,
    is replaced with probability `rate` by the fill value of its channel
    (by default the ImageNet mean, i.e. 0 in normalised space: the
    reference zeroes elements after normalisation). The reference view is
    never touched.

    Args:
        images: `[B, V, H, W, 3]` float images in [0, 1].
        seed: `[2]` int32/int64 stateless seed.
        rate: masking probability in [0, 1] (scalar, may be a tensor from
            `source_mask_rate`).
        fill: per-channel fill value, length 3.

    Returns:
        `[B, V, H, W, 3]`, same dtype as `images`.
    """
    seed = _check_seed(seed)
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        images = tf.cast(images, tf.float32)
    tf.debugging.assert_shapes([(images, ("B", "V", "H", "W", 3))])
    sources = images[:, 1:]
    draws = tf.random.stateless_uniform(tf.shape(sources), seed,
                                        dtype=tf.float32)
    dropped = draws < tf.cast(rate, tf.float32)
    fill = tf.broadcast_to(tf.constant(fill, images.dtype), tf.shape(sources))
    sources = tf.where(dropped, fill, sources)
    return tf.concat([images[:, :1], sources], axis=1)


def apply_reference_mask(
    images: TensorLike,
    filter_mask: TensorLike,
    fill: Sequence[float] = IMAGENET_MEAN,
) -> tf.Tensor:
    """Fills the reference view where `filter_mask` is 0 (all channels).

    Args:
        images: `[B, V, H, W, 3]` float images in [0, 1].
        filter_mask: `[B, H, W]` from `reference_rectangle_mask`.
        fill: per-channel fill value (ImageNet mean = 0 once normalised).

    Returns:
        `[B, V, H, W, 3]` with the rectangle of view 0 filled; the sources
        are unchanged.
    """
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        images = tf.cast(images, tf.float32)
    tf.debugging.assert_shapes([(images, ("B", "V", "H", "W", 3)),
                                (filter_mask, ("B", "H", "W"))])
    reference = images[:, 0]
    keep = tf.convert_to_tensor(filter_mask)[..., tf.newaxis] > 0.5
    fill = tf.broadcast_to(tf.constant(fill, images.dtype),
                           tf.shape(reference))
    reference = tf.where(keep, reference, fill)
    return tf.concat([reference[:, tf.newaxis], images[:, 1:]], axis=1)
