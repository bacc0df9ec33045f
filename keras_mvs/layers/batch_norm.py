"""BatchNorm with PyTorch's training semantics and per-view statistics."""

import contextlib
import threading

import keras
import tensorflow as tf

# PyTorch's BatchNorm defaults in Keras terms (ALGORITHMS.md 9 item 20):
# epsilon 1e-5, momentum 0.9 (PyTorch's momentum 0.1).
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_mvs")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` as PyTorch trains it, per group.

    Two things differ from Keras's layer in training mode; inference is the
    same.

    * **Groups.** The reference networks run their FPN on one view at a
      time and the adaptive weight net on one source at a time
      (`Uni:networks/mvsnet.py`), so every BatchNorm there normalises with
      the statistics of one view's batch. Our network folds the views into
      the batch axis; called with `groups=G` on a batch ordered
      `b * G + g`, this layer normalises each group g with the moments of
      its own B members, and updates the moving statistics once per group,
      in group order, as G successive PyTorch calls would.
    * **Moving variance.** PyTorch updates `running_var` with the unbiased
      batch variance `n / (n - 1)` (n = values per channel), Keras with the
      biased one; this layer follows PyTorch. Normalisation itself uses the
      biased variance in both.

    With `synchronized=True` under a distribution strategy the moments are
    all-reduced over the replicas (SyncBN) in two passes, as on one device:
    the sum of x, then the sum of squared deviations from the global mean.
    One all-reduce of the sums of x and x^2 (Keras's synchronized layer)
    costs one collective less but cancels digits in E[x^2] - E[x]^2, in the
    forward pass and in the gradient: measured on the tiny cascade, two
    replicas then took an update 2.2e-2 (regression head) or 7.6e-3 (unity)
    away from one device's on the same batch, against 1.1e-4 and 7.5e-4
    with two passes (tests/models/trainer_test.py).

    Args:
        **kwargs: forwarded to `keras.layers.BatchNormalization`; `epsilon`
            and `momentum` default to PyTorch's.

    Call arguments:
        inputs: `[N, ..., C]` with N = B * G (groups innermost).
        training: BatchNorm mode.
        groups: G (int or scalar int tensor), or None for one group.

    Returns:
        The normalised tensor, shape and compute dtype of `inputs`.

    Example:
        >>> bn = BatchNorm()
        >>> y = bn(tf.zeros([6, 4, 5, 8]), training=True, groups=3)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("epsilon", BATCH_NORM_EPSILON)
        kwargs.setdefault("momentum", BATCH_NORM_MOMENTUM)
        super().__init__(**kwargs)

    def call(self, inputs, training=None, groups=None):
        if not (training and self.trainable):
            return super().call(inputs, training=False)
        outputs, means, variances = self.normalize_training(inputs, groups)
        deferred = getattr(_deferred, "updates", None)
        if deferred is None:
            self.update_moving_statistics(means, variances)
        else:
            deferred.append((self, means, variances))
        return outputs

    def normalize_training(self, inputs, groups=None):
        """Training-mode normalisation without the moving-average update.

        `call(training=True)` is this followed by
        `update_moving_statistics`; the split lets a loop (the per-source
        cost aggregation) normalise inside its body and apply the updates,
        in order, once the loop is done.

        Args:
            inputs: `[B * G, ..., C]`, groups innermost.
            groups: G (int or scalar int tensor), or None for one group.

        Returns:
            `(outputs, means, variances)`: the normalised tensor (shape and
            compute dtype of `inputs`) and the `[G, C]` float32 batch means
            and unbiased batch variances that the moving averages take.
        """
        x = tf.cast(inputs, tf.float32)
        if self._fused_applies(x, groups):
            return self._normalize_fused(x)
        shape = tf.shape(x)
        num_groups = 1 if groups is None else groups
        grouped = tf.reshape(
            x, tf.concat([[-1, num_groups], shape[1:]], 0))  # [B, G, ..., C]
        rank = len(inputs.shape) + 1
        axes = [0] + list(range(2, rank - 1))
        # Two passes (mean, then squared deviations), as PyTorch computes
        # them: E[x^2] - E[x]^2 loses digits in float32. The first pass
        # carries the values per group and channel as an extra channel, so
        # synchronized replicas add sums and counts in one collective.
        local_count = tf.cast(tf.reduce_prod(tf.shape(grouped)) // (
            tf.shape(grouped)[1] * tf.shape(grouped)[-1]), tf.float32)
        totals = self._sum(tf.concat(
            [tf.reduce_sum(grouped, axis=axes),
             tf.fill(tf.stack([tf.shape(grouped)[1], 1]), local_count)],
            -1))  # [G, C + 1]
        count = totals[0, -1]  # over all replicas when synchronized
        mean = totals[:, :-1] / count  # [G, C]
        stats_shape = tf.concat(
            [[1, num_groups], tf.ones([rank - 3], tf.int32), [-1]], 0)
        centred = grouped - tf.reshape(mean, stats_shape)
        variance = self._sum(tf.square(centred), axes) / count

        gamma = self.gamma if self.scale else 1.0
        beta = self.beta if self.center else 0.0
        scale = gamma * tf.math.rsqrt(variance + self.epsilon)  # [G, C]
        outputs = (centred * tf.reshape(scale, stats_shape)
                   + tf.reshape(beta * tf.ones_like(scale), stats_shape))
        unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
        return (tf.cast(tf.reshape(outputs, shape), self.compute_dtype),
                tf.stop_gradient(mean), tf.stop_gradient(unbiased))

    def _fused_applies(self, x, groups) -> bool:
        """Whether TensorFlow's fused kernel computes this call's moments:
        one group, a 4-D or 5-D input, and a layer that is not
        synchronized. A synchronized layer keeps the two-pass formulation
        on one device too, so one device and N replicas of a SyncBN
        network round alike (the kernel's moments are as accurate, but
        its rounding differs: tests/models/trainer_test.py)."""
        if groups is not None and not (isinstance(groups, int)
                                       and groups == 1):
            return False  # a tensor G (the views) may exceed 1
        return len(x.shape) in (4, 5) and not self.synchronized

    def _normalize_fused(self, x):
        """`normalize_training` with one group, by `FusedBatchNormV3`.

        The kernel computes the same two-pass moments and returns the
        unbiased variance as the moving average takes it; its gradient
        is one kernel that keeps only the input and the moments, where the
        elementwise formulation keeps the centred input and several
        volume-sized temporaries in the backward pass (at 512x640 the
        3-D U-Nets' largest levels are 84 MB a tensor).
        """
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels])
        beta = self.beta if self.center else tf.zeros([channels])
        outputs, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(gamma, tf.float32),
            offset=tf.cast(beta, tf.float32),
            mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=self.epsilon, exponential_avg_factor=1.0,
            data_format="NHWC" if len(x.shape) == 4 else "NDHWC",
            is_training=True)
        return (tf.cast(outputs, self.compute_dtype),
                tf.stop_gradient(mean[tf.newaxis]),
                tf.stop_gradient(unbiased[tf.newaxis]))

    def _sum(self, x, axes=None):
        """Sum over `axes`, then over the replicas when synchronized."""
        if axes is not None:
            x = tf.reduce_sum(x, axis=axes)
        if self.synchronized:
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                x = context.all_reduce(tf.distribute.ReduceOp.SUM, x)
        return x

    def update_moving_statistics(self, means, variances) -> None:
        """G successive momentum updates with `[G, C]` batch statistics.

        After G updates `m <- a m + (1 - a) s_g` the moving value is
        `a^G m + (1 - a) sum_g a^(G-1-g) s_g`.
        """
        momentum = tf.constant(self.momentum, tf.float32)
        num_groups = tf.shape(means)[0]
        powers = tf.cast(num_groups - 1 - tf.range(num_groups), tf.float32)
        weights = (1.0 - momentum) * tf.pow(momentum, powers)[:, tf.newaxis]
        decay = tf.pow(momentum, tf.cast(num_groups, tf.float32))
        self.moving_mean.assign(
            decay * self.moving_mean + tf.reduce_sum(weights * means, 0))
        self.moving_variance.assign(
            decay * self.moving_variance
            + tf.reduce_sum(weights * variances, 0))


# Per thread: MirroredStrategy traces each replica's step in its own thread.
_deferred = threading.local()


@contextlib.contextmanager
def deferred_updates():
    """Collects the moving-average updates instead of applying them.

    Training-mode `BatchNorm` calls made (or traced) inside this block
    normalise with batch statistics as usual and append `(layer, means,
    variances)` to the list this yields instead of updating their moving
    averages; `apply_updates` applies them. The block covers the calls of
    its own thread only. For a forward pass that is
    computed again to take its gradient (`tf.recompute_grad`): the
    statistics leave the recomputed function as outputs, and the updates
    are applied once, after the first pass.
    """
    previous = getattr(_deferred, "updates", None)
    _deferred.updates = []
    try:
        yield _deferred.updates
    finally:
        _deferred.updates = previous


def apply_updates(updates) -> None:
    """Applies `(layer, means, variances)` updates of `deferred_updates`,
    in order."""
    for layer, means, variances in updates:
        layer.update_moving_statistics(means, variances)
