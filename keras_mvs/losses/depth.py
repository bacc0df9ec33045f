"""Supervised depth losses: UniMVSNet's unity labels and Unified Focal Loss.

What this module owns (ALGORITHMS.md 3 and 5):

* `unity_labels`: the unity volume a ground-truth depth implies (UniMVSNet
  "Algorithm 1").
* `unified_focal_loss`: the Unified Focal Loss (UFL) on a sigmoid unity
  volume, exactly as `UniMVSNet:loss.py::unified_focal_loss`.
* `masked_smooth_l1`: the smooth-L1 loss of the regression head (CasMVSNet).
* `downsample_to`: the nearest "top-left pixel of each block" downsampling the
  reference code uses for per-stage ground truth (ALGORITHMS.md 9 item 24).
* `supervised_cascade_loss`: the stage-weighted sum over the cascade.

Conventions: volumes are `[B, D, H, W]`, depth maps `[B, H, W]` in the units
of the camera files (mm for DTU), masks `[B, H, W]` with "valid" meaning
`mask > 0.5`. Every reduction is a mean over valid elements that returns 0
(not NaN) when nothing is valid. Losses compute in float32 (float64 inputs
stay float64, for gradient checks), so they are safe under mixed precision.
"""

from typing import Mapping
from typing import Sequence
from typing import Union

import numpy as np
import tensorflow as tf

TensorLike = Union[tf.Tensor, np.ndarray, float, int]

# Per-stage constants of `UniMVSNet:loss.py::mvs_loss` (coarse to fine).
UFL_ALPHAS = (0.75, 0.5, 0.25)
UFL_GAMMAS = (2.0, 1.0, 0.0)
STAGE_WEIGHTS = (0.5, 1.0, 2.0)

# PyTorch `F.binary_cross_entropy` clamps each log term at -100, so a
# saturated prediction costs at most 100 instead of infinity.
_BCE_LOG_FLOOR = -100.0


def _as_float(x: TensorLike) -> tf.Tensor:
    """Float32 tensor, unless `x` is already float64 (kept for grad checks)."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.float64:
        return x
    return tf.cast(x, tf.float32)


def _per_batch(value: TensorLike, dtype: tf.DType) -> tf.Tensor:
    """Reshapes a scalar or `[B]` value to `[B or 1, 1, 1, 1]`."""
    return tf.reshape(tf.cast(value, dtype), [-1, 1, 1, 1])


def downsample_to(x: TensorLike, height, width) -> tf.Tensor:
    """Nearest downsampling that keeps the top-left pixel of each block.

    This is what `F.interpolate(scale_factor=1/k)` and `cv2.INTER_NEAREST`
    do in the reference code (source index `floor(i * k)`), done by strided
    slicing because `tf.image.resize(method="nearest")` uses half-pixel
    centres and would pick a different pixel (ALGORITHMS.md 9 item 24).

    Args:
        x: `[B, H, W, ...]` map (depth, mask, image, ...).
        height: target height h; H must be a multiple of h.
        width: target width w; W must be a multiple of w.

    Returns:
        `[B, h, w, ...]` with `out[:, i, j] = x[:, i * H / h, j * W / w]`.

    Raises:
        ValueError: if H or W is not a multiple of the target size (checked
            when the sizes are static; a runtime assertion otherwise).
    """
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank < 3:
        raise ValueError(
            f"downsample_to expects a [B, H, W, ...] tensor. Received: shape "
            f"{x.shape}")
    static = (isinstance(height, (int, np.integer))
              and isinstance(width, (int, np.integer))
              and x.shape[1] is not None and x.shape[2] is not None)
    if static:
        in_height, in_width = int(x.shape[1]), int(x.shape[2])
        if height <= 0 or width <= 0 or in_height % height or (
                in_width % width):
            raise ValueError(
                f"downsample_to needs the input size to be a multiple of the "
                f"target size. Received: input {in_height}x{in_width}, "
                f"target {height}x{width}")
        return x[:, ::in_height // height, ::in_width // width]
    shape = tf.shape(x)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    checks = [
        tf.debugging.assert_equal(
            shape[1] % height, 0,
            message="downsample_to: input height is not a multiple of the "
                    "target height"),
        tf.debugging.assert_equal(
            shape[2] % width, 0,
            message="downsample_to: input width is not a multiple of the "
                    "target width"),
    ]
    with tf.control_dependencies(checks):
        stride_y = shape[1] // height
        stride_x = shape[2] // width
    return x[:, ::stride_y, ::stride_x]


def unity_labels(
    depth_gt: TensorLike,
    depth_hypotheses: TensorLike,
    interval: TensorLike,
) -> tf.Tensor:
    """Unity labels of a ground-truth depth (UniMVSNet Algorithm 1).

    Hypothesis k owns the half-open bin `[h_k, h_k + interval)`. The bin
    that contains the ground truth g gets the target `1 - (g - h_k) /
    interval` in (0, 1] (1 when g sits exactly on h_k); every other entry is
    0. A depth outside `[h_0, h_{D-1} + interval)` gets all zeros: such a
    pixel still counts in the loss, with all-negative targets (ALGORITHMS.md
    3.1, flagged there).

    Args:
        depth_gt: `[B, H, W]` ground-truth depth.
        depth_hypotheses: `[B, D, H, W]` per-pixel hypotheses, increasing
            along D, same units.
        interval: the stage's unity interval (ALGORITHMS.md 2.5), a scalar or
            `[B]`, same units.

    Returns:
        `[B, D, H, W]` targets in [0, 1], float32 (float64 if the depth is).
        They carry no gradient.
    """
    depth_gt = _as_float(depth_gt)
    depth_hypotheses = tf.cast(depth_hypotheses, depth_gt.dtype)
    tf.debugging.assert_shapes(
        [(depth_gt, ("B", "H", "W")),
         (depth_hypotheses, ("B", "D", "H", "W"))])
    interval = _per_batch(interval, depth_gt.dtype)
    gt = depth_gt[:, tf.newaxis]  # [B, 1, H, W]
    # The bin test is written as the reference writes it, `h <= g < h +
    # interval`: `g - h < interval` rounds differently in float32 where g
    # lies within an ulp of the next hypothesis.
    in_bin = (depth_hypotheses <= gt) & (depth_hypotheses + interval > gt)
    labels = tf.where(in_bin, 1.0 - (gt - depth_hypotheses) / interval,
                      tf.zeros_like(depth_hypotheses))
    return tf.stop_gradient(labels)


def _base_sigmoid(x: tf.Tensor, base: float) -> tf.Tensor:
    """`1 / (1 + base ** -x)`, UniMVSNet's bounded "sigmoid with base b"."""
    return tf.sigmoid(x * tf.math.log(tf.cast(base, x.dtype)))


def _focal_power(x: tf.Tensor, gamma: TensorLike) -> tf.Tensor:
    """`x ** gamma` for x >= 0, with a finite gradient at x = 0.

    `tf.pow`'s gradient at 0 is `gamma * 0 ** (gamma - 1)`, NaN for gamma = 0
    (stage 3) and infinite for gamma < 1. The value at 0 is kept (1 for
    gamma = 0, else 0); the gradient there is set to 0.
    """
    gamma = tf.cast(gamma, x.dtype)
    positive = x > 0.0
    safe_x = tf.where(positive, x, tf.ones_like(x))
    at_zero = tf.pow(tf.zeros_like(x), gamma)
    return tf.where(positive, tf.pow(safe_x, gamma), at_zero)


@tf.custom_gradient
def _binary_cross_entropy(unity: tf.Tensor, labels: tf.Tensor):
    """Element-wise BCE with PyTorch's `F.binary_cross_entropy` semantics.

    The value clamps each log at -100. The gradient is PyTorch's
    `(u - q) / max(u (1 - u), 1e-12)`, finite at u = 0 and u = 1, where
    differentiating the clamped logs would give 0 * inf = NaN.
    """
    log_u = tf.maximum(tf.math.log(unity), _BCE_LOG_FLOOR)
    log_not_u = tf.maximum(tf.math.log(1.0 - unity), _BCE_LOG_FLOOR)
    value = -(labels * log_u + (1.0 - labels) * log_not_u)

    def gradient(upstream):
        denominator = tf.maximum(unity * (1.0 - unity), 1e-12)
        return upstream * (unity - labels) / denominator, None

    return value, gradient


def unified_focal_loss(
    unity: TensorLike,
    labels: TensorLike,
    mask: TensorLike,
    alpha: TensorLike,
    gamma: TensorLike,
    base: float = 5.0,
    logits: TensorLike = None,
) -> tf.Tensor:
    """Unified Focal Loss of one stage (ALGORITHMS.md 3.3).

    For a valid pixel with targets q_k and positive target q* (`max_k q_k`,
    or 1 when the pixel has no positive), with `S(x) = 1 / (1 + base ** -x)`:

    * positive (q_k > 0): weight `(1 + 4 (S(|q* - u_k| / q*) - 0.5)) **
      gamma`, the bounded scale lying in [1, 3);
    * negative (q_k = 0): weight `alpha * (2 (S(u_k / q*) - 0.5)) ** gamma`,
      the scale lying in [0, 1).

    The element loss is `weight * BCE(u_k, q_k)`. The weights are not
    detached: gradients flow through them, as in the reference and the
    original focal loss. The loss is the sum over valid voxels divided by
    their number, valid pixels x D.

    BCE: by default it is computed from `unity` with each log clamped at
    -100 and PyTorch's gradient, exactly `F.binary_cross_entropy` (the
    reference). When
    `logits` is given, BCE is computed from the logits instead
    (`tf.nn.sigmoid_cross_entropy_with_logits`), which agrees with the
    clamped form wherever `sigmoid(logit)` is not saturated in float32 and
    stays exact (with a nonzero gradient) where it is; the focal weights
    still use `unity`, which must then be `sigmoid(logits)`.

    Args:
        unity: `[B, D, H, W]` predicted unity volume (sigmoid outputs) in
            [0, 1].
        labels: `[B, D, H, W]` targets from `unity_labels`.
        mask: `[B, H, W]`, valid where > 0.5.
        alpha: negative-sample factor (0.75, 0.5, 0.25 for stages 1 to 3).
        gamma: focusing exponent (2, 1, 0 for stages 1 to 3), >= 0.
        base: base of the bounded sigmoid (5 in UniMVSNet).
        logits: optional `[B, D, H, W]` pre-sigmoid logits of `unity`.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs); 0, not NaN, when
        no pixel is valid.
    """
    unity = _as_float(unity)
    dtype = unity.dtype
    labels = tf.stop_gradient(tf.cast(labels, dtype))
    mask = tf.cast(mask, dtype)
    tf.debugging.assert_shapes(
        [(unity, ("B", "D", "H", "W")), (labels, ("B", "D", "H", "W")),
         (mask, ("B", "H", "W"))])

    positive = labels > 0.0
    best_target = tf.reduce_max(labels, axis=1, keepdims=True)
    best_target = tf.where(best_target > 0.0, best_target,
                           tf.ones_like(best_target))  # [B, 1, H, W]
    positive_scale = 1.0 + 4.0 * (_base_sigmoid(
        tf.abs(best_target - unity) / best_target, base) - 0.5)
    negative_scale = 2.0 * (_base_sigmoid(unity / best_target, base) - 0.5)
    weights = tf.where(
        positive,
        _focal_power(positive_scale, gamma),
        tf.cast(alpha, dtype) * _focal_power(negative_scale, gamma),
    )  # [B, D, H, W]

    if logits is None:
        bce = _binary_cross_entropy(unity, labels)
    else:
        logits = tf.cast(logits, dtype)
        tf.debugging.assert_shapes([(logits, ("B", "D", "H", "W")),
                                    (unity, ("B", "D", "H", "W"))])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels,
                                                      logits=logits)

    valid = tf.broadcast_to(mask[:, tf.newaxis] > 0.5, tf.shape(unity))
    # tf.where rather than a product: invalid voxels must not leak NaN or
    # inf (e.g. undefined ground truth) into the sum or its gradient.
    element_loss = tf.where(valid, weights * bce, tf.zeros_like(bce))
    num_valid = tf.reduce_sum(tf.cast(valid, dtype))
    return tf.math.divide_no_nan(tf.reduce_sum(element_loss), num_valid)


def smooth_l1(x: tf.Tensor, beta: float = 1.0) -> tf.Tensor:
    """Element-wise smooth-L1 (Huber/beta form of PyTorch's `smooth_l1_loss`).

    `0.5 x^2 / beta` where `|x| < beta`, else `|x| - 0.5 beta`.
    """
    abs_x = tf.abs(x)
    return tf.where(abs_x < beta, 0.5 * tf.square(x) / beta,
                    abs_x - 0.5 * beta)


def masked_smooth_l1(
    depth_pred: TensorLike,
    depth_true: TensorLike,
    mask: TensorLike,
    beta: float = 1.0,
) -> tf.Tensor:
    """Smooth-L1 between two depth maps, mean over valid pixels.

    The regression-head loss of CasMVSNet (`cas_mvsnet_loss`, beta = 1) and
    the term of CL-MVSNet's consistency losses.

    Args:
        depth_pred: `[B, H, W]` predicted depth.
        depth_true: `[B, H, W]` target depth, same units.
        mask: `[B, H, W]`, valid where > 0.5.
        beta: the quadratic-to-linear transition, in depth units.

    Returns:
        Scalar mean over valid pixels; 0, not NaN, when none is valid.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive. Received: beta={beta}")
    depth_pred = _as_float(depth_pred)
    depth_true = tf.cast(depth_true, depth_pred.dtype)
    mask = tf.cast(mask, depth_pred.dtype)
    tf.debugging.assert_shapes(
        [(depth_pred, ("B", "H", "W")), (depth_true, ("B", "H", "W")),
         (mask, ("B", "H", "W"))])
    valid = mask > 0.5
    difference = tf.where(valid, depth_pred - depth_true,
                          tf.zeros_like(depth_pred))
    num_valid = tf.reduce_sum(tf.cast(valid, depth_pred.dtype))
    return tf.math.divide_no_nan(
        tf.reduce_sum(smooth_l1(difference, beta)), num_valid)


def _spatial_size(depth: tf.Tensor):
    """(h, w) of a `[B, h, w]` map: Python ints when static, else tensors."""
    shape = depth.shape
    if shape.rank == 3 and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    dynamic = tf.shape(depth)
    return dynamic[1], dynamic[2]


def _check_stage_lengths(stages: Sequence, **per_stage: Sequence) -> None:
    """Raises ValueError unless every per-stage tuple matches `stages`."""
    for name, values in per_stage.items():
        if len(values) != len(stages):
            raise ValueError(
                f"{name} needs one entry per stage. Received: {len(values)} "
                f"entries for {len(stages)} stages ({name}={tuple(values)})")


def supervised_cascade_loss(
    stages: Sequence[Mapping[str, tf.Tensor]],
    depth_gt: TensorLike,
    mask: TensorLike,
    head: str = "unity",
    stage_weights: Sequence[float] = STAGE_WEIGHTS,
    alphas: Sequence[float] = UFL_ALPHAS,
    gammas: Sequence[float] = UFL_GAMMAS,
) -> dict:
    """Supervised loss of the whole cascade, `sum_s lambda_s * loss_s`.

    Each stage is compared with the full-resolution ground truth downsampled
    to its size by taking the top-left pixel of each block (ALGORITHMS.md
    1.4 step 4).

    * `head="unity"`: UFL (with `alphas[s]`, `gammas[s]`) of the stage's
      unity volume against `unity_labels(gt_s, hypotheses, interval)`. BCE is
      computed from the stage's float32 `logits` (see `unified_focal_loss`):
      the same value as the reference's clamped BCE on normal values, but
      exact and with a gradient where the sigmoid saturates.
    * `head="regression"`: `masked_smooth_l1(depth, gt_s, mask_s)`.

    Args:
        stages: per-stage dicts, coarse to fine, with `depth [B, h, w]`,
            `volume [B, D, h, w]` (sigmoid unity volume), `logits [B, D, h,
            w]`, `hypotheses [B, D, h, w]` and `interval [B]`. The regression
            head needs only `depth`.
        depth_gt: `[B, H, W]` full-resolution ground truth; H and W are
            multiples of every stage's size.
        mask: `[B, H, W]` ground-truth validity, valid where > 0.5.
        head: `"unity"` or `"regression"`.
        stage_weights: lambda_s, one per stage.
        alphas, gammas: UFL constants, one per stage (unity head only).

    Returns:
        A dict with the unweighted per-stage terms `"ufl/stage{s}"` (or
        `"smooth_l1/stage{s}"`), s = 1 for the coarsest stage, and
        `"total"` = the weighted sum. Use `"total"`: summing every value of
        the dict would count the terms twice.
    """
    if head not in ("unity", "regression"):
        raise ValueError(
            f'head must be "unity" or "regression". Received: head={head!r}')
    if not stages:
        raise ValueError("stages is empty: expected one dict per stage.")
    if head == "unity":
        _check_stage_lengths(stages, stage_weights=stage_weights,
                            alphas=alphas, gammas=gammas)
    else:
        _check_stage_lengths(stages, stage_weights=stage_weights)
    depth_gt = _as_float(depth_gt)
    mask = tf.cast(mask, depth_gt.dtype)
    tf.debugging.assert_shapes(
        [(depth_gt, ("B", "H", "W")), (mask, ("B", "H", "W"))])

    terms = {}
    total = tf.zeros([], depth_gt.dtype)
    for index, stage in enumerate(stages):
        depth = stage["depth"]
        height, width = _spatial_size(depth)
        gt_stage = downsample_to(depth_gt, height, width)
        mask_stage = downsample_to(mask, height, width)
        if head == "unity":
            labels = unity_labels(gt_stage, stage["hypotheses"],
                                  stage["interval"])
            name = f"ufl/stage{index + 1}"
            term = unified_focal_loss(
                tf.cast(stage["volume"], depth_gt.dtype), labels, mask_stage,
                alphas[index], gammas[index], logits=stage["logits"])
        else:
            name = f"smooth_l1/stage{index + 1}"
            term = masked_smooth_l1(tf.cast(depth, depth_gt.dtype), gt_stage,
                                    mask_stage)
        terms[name] = term
        total += stage_weights[index] * term
    terms["total"] = total
    return terms
