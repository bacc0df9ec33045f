"""Depth heads: turn a per-hypothesis logit volume into depth and confidence.

Pure TensorFlow functions (no Keras state), shared by the cascade model, the
losses and the trainers. They always compute in float32, whatever dtype the
logits arrive in, because argmax ties, softmax normalisation and the
sub-interval offset of the unity head are where bfloat16 loses depth
precision.

Shapes: B batch, D hypotheses, H, W the stage resolution. Depth is in the
units of the hypotheses (those of the camera files, mm for DTU).
"""

from typing import Tuple
from typing import Union

import numpy as np
import tensorflow as tf

TensorLike = Union[tf.Tensor, np.ndarray, float]


def _volume(x: TensorLike, name: str) -> tf.Tensor:
    """Converts a `[B, D, H, W]` argument to float32, checking its rank."""
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(
            f"`{name}` must be a [B, D, H, W] volume. "
            f"Received: shape={x.shape}"
        )
    return x


def _hypotheses(depth_hypotheses: TensorLike, like: tf.Tensor) -> tf.Tensor:
    """Returns `[B, D, H, W]` float32 hypotheses from `[B, D]` or 4-D ones."""
    depth_hypotheses = tf.cast(
        tf.convert_to_tensor(depth_hypotheses), tf.float32)
    rank = depth_hypotheses.shape.rank
    if rank == 2:
        depth_hypotheses = depth_hypotheses[:, :, tf.newaxis, tf.newaxis]
    elif rank is not None and rank != 4:
        raise ValueError(
            "`depth_hypotheses` must be [B, D] or [B, D, H, W]. "
            f"Received: shape={depth_hypotheses.shape}"
        )
    return tf.broadcast_to(depth_hypotheses, tf.shape(like))


def unity_regression(
    unity: TensorLike,
    depth_hypotheses: TensorLike,
    interval: TensorLike,
) -> tf.Tensor:
    """UniMVSNet unity regression (Algorithm 2, ALGORITHMS.md 3.2).

    At every pixel the hypothesis with the largest unity wins, and the depth
    is moved forward from it by the part of an interval that the unity leaves
    unexplained: `h[k] + (1 - u[k]) * interval` with `k = argmax_k u[k]`
    (ties pick the first hypothesis). Not differentiable through the argmax;
    the training loss acts on the unity volume instead.

    Args:
        unity: `[B, D, H, W]` unity volume `sigmoid(logits)`, values in
            (0, 1), any float dtype.
        depth_hypotheses: `[B, D, H, W]` (or `[B, D]`) hypotheses in depth
            units, increasing along D.
        interval: the stage's unity interval in depth units, a scalar or
            `[B]`.

    Returns:
        `[B, H, W]` float32 depth.

    Example:
        >>> u = tf.constant([0.1, 0.75, 0.3])[None, :, None, None]
        >>> h = tf.constant([10.0, 12.0, 14.0])[None, :, None, None]
        >>> unity_regression(u, h, 2.0)  # 12 + 0.25 * 2 = 12.5
    """
    unity = _volume(unity, "unity")
    depth_hypotheses = _hypotheses(depth_hypotheses, unity)
    interval = tf.reshape(tf.cast(interval, tf.float32), [-1, 1, 1])
    num_depths = tf.shape(unity)[1]
    winner = tf.one_hot(tf.argmax(unity, axis=1, output_type=tf.int32),
                        num_depths, axis=1, dtype=tf.float32)  # [B, D, H, W]
    best_unity = tf.reduce_sum(unity * winner, axis=1)  # [B, H, W]
    best_depth = tf.reduce_sum(depth_hypotheses * winner, axis=1)
    return best_depth + (1.0 - best_unity) * interval


def unity_confidence(logits: TensorLike) -> tf.Tensor:
    """UniMVSNet confidence: the largest softmax probability over D.

    The softmax is taken over the pre-sigmoid logits (ALGORITHMS.md 2.6 and
    3.4), not over the unity values.

    Args:
        logits: `[B, D, H, W]` logit volume, any float dtype.

    Returns:
        `[B, H, W]` float32 confidence in (1/D, 1].
    """
    logits = _volume(logits, "logits")
    return tf.reduce_max(tf.nn.softmax(logits, axis=1), axis=1)


def soft_argmin(
    logits: TensorLike, depth_hypotheses: TensorLike
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Soft-argmin depth regression with the MVSNet 4-neighbour confidence.

    `p = softmax_D(logits)`; depth is the expectation `sum_k p[k] h[k]`. The
    confidence (ALGORITHMS.md 2.6) takes the expected index
    `e = sum_k p[k] k`, truncates it to `k* = floor(e)` (e >= 0, so
    truncation is the floor), clamps it to [0, D - 1], and sums
    `p[k*-1] + p[k*] + p[k*+1] + p[k*+2]`, where terms outside [0, D - 1]
    count 0. The confidence carries no gradient, as in the reference.

    Args:
        logits: `[B, D, H, W]` logit volume, any float dtype.
        depth_hypotheses: `[B, D, H, W]` (or `[B, D]`) hypotheses in depth
            units.

    Returns:
        `(depth [B, H, W], confidence [B, H, W])`, both float32; depth in
        the units of the hypotheses, confidence in [0, 1].

    Example:
        >>> logits = tf.math.log([0.1, 0.2, 0.3, 0.4])[None, :, None, None]
        >>> depth, conf = soft_argmin(logits, tf.constant([[1., 2., 3., 4.]]))
        >>> # depth 3.0; e = 2.0 so k* = 2: conf = 0.2 + 0.3 + 0.4 = 0.9
    """
    logits = _volume(logits, "logits")
    depth_hypotheses = _hypotheses(depth_hypotheses, logits)
    probability = tf.nn.softmax(logits, axis=1)  # [B, D, H, W]
    depth = tf.reduce_sum(probability * depth_hypotheses, axis=1)

    num_depths = tf.shape(logits)[1]
    index = tf.cast(tf.range(num_depths), tf.float32)[
        tf.newaxis, :, tf.newaxis, tf.newaxis]  # [1, D, 1, 1]
    probability = tf.stop_gradient(probability)
    expected_index = tf.reduce_sum(probability * index, axis=1, keepdims=True)
    center = tf.clip_by_value(
        tf.floor(expected_index), 0.0, tf.cast(num_depths - 1, tf.float32))
    # The window [k* - 1, k* + 2] only ever covers existing hypotheses, so
    # out-of-range terms contribute 0 without padding.
    window = (index >= center - 1.0) & (index <= center + 2.0)
    confidence = tf.reduce_sum(
        tf.where(window, probability, 0.0), axis=1)  # [B, H, W]
    return depth, confidence
