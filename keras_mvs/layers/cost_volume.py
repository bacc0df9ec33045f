"""Cost aggregation: reference + warped source features -> cost volume."""

import keras
import tensorflow as tf

from keras_mvs.layers import conv_blocks

AGGREGATIONS = ("variance", "adaptive", "groupwise")


@keras.saving.register_keras_serializable(package="keras_mvs")
class CostVolume(keras.layers.Layer):
    """Aggregates plane-swept source features into one cost volume.

    Three variants (ALGORITHMS.md 2.3), with R the reference feature
    repeated over D and W_v the source v warped onto the reference, N = V - 1
    sources:

    * `"variance"` (CasMVSNet): `mean_i F_i^2 - (mean_i F_i)^2` over all V
      views, the reference included. C output channels.
    * `"adaptive"` (UniMVSNet): `E_v = (R - W_v)^2`,
      `w_v = WNet(E_v) >= 0` (two 1x1x1 Conv3D+BN+ReLU blocks, C -> 1 -> 1),
      cost `= mean_v (1 + w_v) * E_v` with w broadcast over channels.
      C output channels.
    * `"groupwise"` (CL-MVSNet, G groups): the C channels split into G
      groups of C/G; cost_g `= mean_v mean_{c in g} R_c * W_{v,c}`. G output
      channels.

    Sources arrive stacked on one axis, so the number of views is dynamic and
    no Python loop over views is traced. The adaptive weight net runs on all
    sources folded into the batch, with BatchNorm statistics kept per source
    in training (the reference calls it once per source).

    Args:
        aggregation: "variance", "adaptive" or "groupwise".
        groups: G for "groupwise" (must divide the channel count).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        ref_features: `[B, H, W, C]` reference features.
        warped_features: `[B, N, D, H, W, C]` source features warped to the
            reference at each hypothesis (N >= 1).
        training: BatchNorm mode of the adaptive weight net.

    Returns:
        `[B, D, H, W, C]` ("variance", "adaptive") or `[B, D, H, W, G]`
        ("groupwise") cost volume in the compute dtype.

    Example:
        >>> agg = CostVolume("groupwise", groups=8)
        >>> agg(tf.ones([1, 4, 5, 16]), tf.ones([1, 2, 3, 4, 5, 16])).shape
        >>> # (1, 3, 4, 5, 8)

    Reference:
        Peng et al., "Rethinking Depth Estimation for Multi-View Stereo: A
        Unified Representation", CVPR 2022 (adaptive aggregation, after
        Vis-MVSNet); Xu and Tao, "Learning Inverse Depth Regression for
        Multi-View Stereo with Correlation Cost Volume", AAAI 2020
        (group-wise correlation); Yao et al., MVSNet, ECCV 2018, Eq. 2
        (variance).
    """

    def __init__(self, aggregation: str = "adaptive", groups: int = 8,
                 **kwargs):
        super().__init__(**kwargs)
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"`aggregation` must be one of {AGGREGATIONS}. "
                f"Received: aggregation={aggregation!r}")
        conv_blocks.check_positive_int(groups, "groups")
        self.aggregation = aggregation
        self.groups = groups

        # === Layers ===
        if aggregation == "adaptive":
            self.w_net_0 = conv_blocks.ConvBnReLU(
                1, kernel_size=1, strides=1, padding=0, rank=3,
                dtype=self.dtype_policy, name="w_net_0")
            self.w_net_1 = conv_blocks.ConvBnReLU(
                1, kernel_size=1, strides=1, padding=0, rank=3,
                dtype=self.dtype_policy, name="w_net_1")

    def build(self, ref_features_shape, warped_features_shape=None):
        channels = ref_features_shape[-1]
        if self.aggregation == "groupwise" and channels is not None and (
                channels % self.groups):
            raise ValueError(
                "Group-wise aggregation needs the channel count to be a "
                f"multiple of `groups`. Received: channels={channels}, "
                f"groups={self.groups}")
        if self.aggregation == "adaptive":
            self.w_net_0.build((None, None, None, None, channels))
            self.w_net_1.build((None, None, None, None, 1))

    def call(self, ref_features, warped_features, training=None):
        ref = ref_features[:, tf.newaxis, tf.newaxis]  # [B, 1, 1, H, W, C]
        if self.aggregation == "variance":
            num_views = tf.cast(tf.shape(warped_features)[1] + 1,
                                warped_features.dtype)
            total = ref + tf.reduce_sum(warped_features, axis=1,
                                        keepdims=True)
            total_sq = tf.square(ref) + tf.reduce_sum(
                tf.square(warped_features), axis=1, keepdims=True)
            mean = total / num_views
            return tf.squeeze(total_sq / num_views - tf.square(mean), axis=1)

        if self.aggregation == "adaptive":
            errors = tf.square(ref - warped_features)  # [B, N, D, H, W, C]
            shape = tf.shape(errors)
            folded = tf.reshape(
                errors, tf.concat([[-1], shape[2:]], axis=0))  # [BN,D,H,W,C]
            # The reference runs the weight net once per source, so its
            # BatchNorm statistics are per source in training.
            num_sources = shape[1]
            weights = self.w_net_1(
                self.w_net_0(folded, training=training, groups=num_sources),
                training=training, groups=num_sources)  # [B*N, D, H, W, 1]
            weights = tf.reshape(
                weights, tf.concat([shape[:-1], [1]], axis=0))
            return tf.reduce_mean((1.0 + weights) * errors, axis=1)

        correlation = tf.reduce_mean(ref * warped_features, axis=1)
        shape = tf.shape(correlation)  # [B, D, H, W, C]
        channels = correlation.shape[-1]
        grouped = tf.reshape(
            correlation,
            tf.concat([shape[:-1], [self.groups, channels // self.groups]],
                      axis=0))  # [B, D, H, W, G, C/G]
        return tf.reduce_mean(grouped, axis=-1)

    def accumulate(self, ref_features, src_features, src_projections, warp,
                   num_depths, training=None, recompute=False):
        """The cost volume of `call`, built one source at a time.

        `call` needs every source's warped volume at once, `[B, N, D, H, W,
        C]`; this method warps source v, adds its term to running sums and
        drops it before warping source v + 1 (a `tf.while_loop`, so N may be
        dynamic in graph mode): variance keeps the sum and the sum of
        squares over the views, group-wise correlation the sum of the
        group-averaged products, adaptive the sum of `(1 + w_v) * E_v`. The
        result equals `call` up to float rounding (the sums run in another
        order), gradients included. In training, the adaptive weight net's
        BatchNorm normalises each source with its own statistics, as the
        reference's one call per source does, and the moving averages take
        one momentum update per source in source order (what `call` does
        with `groups=N`), carried through the loop and assigned after it.

        Args:
            ref_features: `[B, H, W, C]` reference features.
            src_features: `[B, N, H, W, C]` source features (N >= 1).
            src_projections: `[B, N, 4, 4]` the sources' projection
                matrices, handed to `warp` one at a time.
            warp: callable `(features [B, H, W, C], projection [B, 4, 4]) ->
                [B, D, H, W, C]` (the plane-sweep warp onto the reference).
            num_depths: D, a Python int.
            training: BatchNorm mode of the adaptive weight net.
            recompute: keep no per-source activation for the backward pass
                and recompute each source's term (warp included) when the
                gradient is taken (`tf.recompute_grad`): one more warp per
                source in the backward pass, for the memory of N warped
                volumes and their sampler intermediates. For "adaptive"
                only the warp is recomputed (the warped volume is kept):
                `tf.recompute_grad` cannot differentiate the weight net's
                variables inside the loop.

        Returns:
            The `call` output: `[B, D, H, W, C]` or `[B, D, H, W, G]` in the
            compute dtype.
        """
        ref = tf.convert_to_tensor(ref_features)  # [B, H, W, C]
        src_features = tf.convert_to_tensor(src_features)
        src_projections = tf.convert_to_tensor(src_projections)
        channels = ref.shape[-1]
        num_sources = tf.shape(src_features)[1]
        dtype = ref.dtype
        deferred = bool(training) and self.aggregation == "adaptive" and (
            self.w_net_0.bn.trainable and self.w_net_1.bn.trainable)

        context = tf.distribute.get_replica_context()
        if (deferred and self.w_net_0.bn.synchronized and context is not None
                and context.num_replicas_in_sync > 1):
            # SyncBN's all-reduce is a synchronisation point, which a
            # distribution strategy cannot run inside a while loop: stack
            # the warped sources and aggregate them in one call (the same
            # volume and statistics, for the memory of N warped volumes).
            if src_features.shape[1] is None:
                raise ValueError(
                    "CostVolume.accumulate with a synchronized BatchNorm "
                    "under a distribution strategy needs a static number "
                    "of source views; received src_features of shape "
                    f"{src_features.shape}.")
            warped = tf.stack(
                [warp(src_features[:, v], src_projections[:, v])
                 for v in range(src_features.shape[1])], axis=1)
            return self(ref, tf.cast(warped, dtype), training=training)

        sample = warp
        if recompute and self.aggregation == "adaptive":
            # tf.recompute_grad cannot take the weight net's variables
            # inside a while loop; recompute the warp alone.
            sample = tf.recompute_grad(warp)

        def term(ref, src, projection):
            warped = tf.cast(sample(src, projection), dtype)  # [B,D,H,W,C]
            if self.aggregation == "variance":
                return warped, tf.square(warped)
            volume_ref = ref[:, tf.newaxis]
            if self.aggregation == "groupwise":
                products = volume_ref * warped
                shape = tf.shape(products)
                grouped = tf.reshape(products, tf.concat(
                    [shape[:-1], [self.groups, channels // self.groups]], 0))
                return (tf.reduce_mean(grouped, axis=-1),)
            errors = tf.square(volume_ref - warped)  # [B, D, H, W, C]
            if not deferred:
                weights = self.w_net_1(
                    self.w_net_0(errors, training=training),
                    training=training)
                return ((1.0 + weights) * errors,)
            hidden, mean_0, var_0 = self.w_net_0.call_training_deferred(
                errors)
            weights, mean_1, var_1 = self.w_net_1.call_training_deferred(
                hidden)
            return (1.0 + weights) * errors, mean_0, var_0, mean_1, var_1

        if recompute and self.aggregation != "adaptive":
            term = tf.recompute_grad(term)

        out_channels = self.groups if self.aggregation == "groupwise" else (
            channels)
        shape = tf.shape(ref)
        volume_shape = tf.stack(
            [shape[0], num_depths, shape[1], shape[2], out_channels])
        if self.aggregation == "variance":
            ref_volume = tf.broadcast_to(ref[:, tf.newaxis], volume_shape)
            sums = [ref_volume, tf.square(ref_volume)]
        else:
            sums = [tf.zeros(volume_shape, dtype)]
        # The moving averages, carried through the loop and updated once per
        # source (PyTorch's sequential momentum updates), assigned after it.
        norms = [self.w_net_0.bn, self.w_net_1.bn] if deferred else []
        moving = []
        for norm in norms:
            moving += [tf.convert_to_tensor(norm.moving_mean),
                       tf.convert_to_tensor(norm.moving_variance)]
        # The loop keeps the channels static; the sizes the shape inference
        # knows before it (oneDNN's Conv3DTranspose needs them) are restored
        # after it.
        static_shape = sums[0].shape
        invariant = tf.TensorShape([None, None, None, None, out_channels])

        def body(index, sums, moving):
            outputs = term(ref, src_features[:, index],
                           src_projections[:, index])
            sums = [total + value
                    for total, value in zip(sums, outputs[:len(sums)])]
            moving = [
                momentum * value + (1.0 - momentum) * statistic[0]
                for value, statistic, momentum in zip(
                    moving, outputs[len(sums):],
                    [norm.momentum for norm in norms for _ in range(2)])]
            return index + 1, sums, moving

        _, sums, moving = tf.while_loop(
            lambda index, sums, moving: index < num_sources, body,
            (tf.constant(0), sums, moving),
            shape_invariants=(tf.TensorShape([]), [invariant] * len(sums),
                              [value.shape for value in moving]),
            parallel_iterations=1,
            # XLA sizes the loop's gradient accumulators with it.
            maximum_iterations=num_sources)
        for i, norm in enumerate(norms):
            norm.moving_mean.assign(moving[2 * i])
            norm.moving_variance.assign(moving[2 * i + 1])

        if self.aggregation == "variance":
            num_views = tf.cast(num_sources + 1, dtype)
            mean = sums[0] / num_views
            cost = sums[1] / num_views - tf.square(mean)
        else:
            cost = sums[0] / tf.cast(num_sources, dtype)
        cost.set_shape(static_shape)
        return cost

    def aggregate_planes(self, ref_features, sample_plane, num_sources,
                         num_depths, stem=None, stem_channels=None,
                         stacked=True):
        """Inference: the cost volume of `accumulate`, one plane at a time.

        For each depth plane in turn, `sample_plane` warps one source after
        the other at that plane only, each source's term is added to the
        plane's sums before the next source is sampled (in source order, as
        `accumulate` sums them) and the plane's cost is kept; the volume is
        stacked from its planes at the end. So no warped volume, error
        volume or running-sum volume exists: the working memory is the cost
        volume plus one source's plane intermediates (the sampler's four
        taps at full resolution are the largest), where `accumulate` holds
        about five volumes at once. Same values as `accumulate` (every
        element is computed by the same operations in the same order, up to
        the convolution kernels' blocking over other sizes). BatchNorm in
        inference mode only: no gradients or statistics flow through here.

        With `stem`, the first layer of the regulariser runs inside the
        loop too: a window of three cost planes slides along D, plane d of
        the stem's output is computed from cost planes d - 1, d and d + 1 as
        soon as plane d + 1 exists, and only the stem's planes are stacked.
        So not even the cost volume exists, only the stem's output (b = 8
        channels against the cost's C = 32, 16, 8 in the cascade) and three
        cost planes.

        Args:
            ref_features: `[B, H, W, C]` reference features.
            sample_plane: callable `(index, source) -> [B, H, W, C]`,
                source `source` warped onto the reference at depth plane
                `index` (int32 scalar tensors).
            num_sources: N >= 1, a Python int or an int32 scalar.
            num_depths: D, a Python int or an int32 scalar.
            stem: None, or a callable `(previous, current, following) ->
                [B, H, W, stem_channels]` taking three consecutive `[B, H,
                W, C]` cost planes, zeros beyond the volume (e.g.
                `CostRegularization.conv0_plane`: a k3 convolution along D
                with zero padding 1).
            stem_channels: the channels of the stem's output (with `stem`).
            stacked: False (with `stem`): return the stem's planes
                unstacked, so that a consumer reading them plane by plane
                (`CostRegularization.call_from_conv0_planes`) never needs
                the stacked copy.

        Returns:
            `[B, D, H, W, C]` ("variance", "adaptive") or `[B, D, H, W, G]`
            ("groupwise") cost volume in the compute dtype; with `stem`,
            `[B, D, H, W, stem_channels]`, the stem applied to that volume;
            unstacked, a `tf.TensorArray` of its D `[B, H, W,
            stem_channels]` planes.
        """
        ref = tf.convert_to_tensor(ref_features)  # [B, H, W, C]
        channels = ref.shape[-1]
        dtype = ref.dtype
        out_channels = self.groups if self.aggregation == "groupwise" else (
            channels)

        def source_terms(warped):
            """One source's terms of the plane's sums: `[B, H, W, C']`."""
            if self.aggregation == "variance":
                return [warped, tf.square(warped)]
            if self.aggregation == "groupwise":
                products = ref * warped
                shape = tf.shape(products)
                return [tf.reduce_mean(tf.reshape(products, tf.concat(
                    [shape[:-1], [self.groups, channels // self.groups]],
                    0)), axis=-1)]  # [B, H, W, G]
            errors = tf.square(ref - warped)
            # The weight net's 1x1x1 convolutions see the source's plane
            # as a one-plane volume.
            weights = self.w_net_1(
                self.w_net_0(errors[:, tf.newaxis], training=False),
                training=False)[:, 0]  # [B, H, W, 1]
            return [(1.0 + weights) * errors]

        def plane_cost(index):
            if self.aggregation == "variance":
                sums = [ref, tf.square(ref)]
            else:
                shape = tf.shape(ref)
                sums = [tf.zeros(tf.stack(
                    [shape[0], shape[1], shape[2], out_channels]), dtype)]

            def add_source(source, sums):
                warped = tf.cast(sample_plane(index, source),
                                 dtype)  # [B, H, W, C]
                return source + 1, [total + term for total, term in zip(
                    sums, source_terms(warped))]

            # Source by source, in order (the rounding of `accumulate`),
            # each sampled only when its turn comes: one source's sampler
            # intermediates are alive at a time.
            plane_shape = tf.TensorShape([None, None, None, out_channels])
            _, sums = tf.while_loop(
                lambda source, _: source < num_sources, add_source,
                (tf.constant(0), sums), parallel_iterations=1,
                shape_invariants=(tf.TensorShape([]),
                                  [plane_shape] * len(sums)))
            if self.aggregation == "variance":
                num_views = tf.cast(num_sources + 1, dtype)
                mean = sums[0] / num_views
                return sums[1] / num_views - tf.square(mean)
            return sums[0] / tf.cast(num_sources, dtype)

        if stem is not None and stem_channels is None:
            raise ValueError("aggregate_planes: `stem` needs `stem_channels`")
        if stem is None and not stacked:
            raise ValueError("aggregate_planes: `stacked=False` needs a "
                             "`stem`")
        plane_shape = tf.TensorShape([None, None, None, out_channels])
        if stem is None:
            planes = tf.TensorArray(dtype, size=num_depths,
                                    element_shape=plane_shape)

            def body(index, planes):
                return index + 1, planes.write(index, plane_cost(index))

            _, planes = tf.while_loop(
                lambda index, _: index < num_depths, body,
                (tf.constant(0), planes), parallel_iterations=1)
        else:
            # Read more than once by `call_from_conv0_planes` (eagerly, a
            # TensorArray drops an element after its first read).
            planes = tf.TensorArray(dtype, size=num_depths, element_shape=(
                tf.TensorShape([None, None, None, stem_channels])),
                clear_after_read=False)
            first = plane_cost(tf.constant(0))

            def body(index, previous, current, planes):
                following = tf.cond(
                    index + 1 < num_depths,
                    lambda: plane_cost(index + 1),
                    lambda: tf.zeros_like(current))
                planes = planes.write(index, stem(previous, current,
                                                  following))
                return index + 1, current, following, planes

            # Plane d - 1, d and d + 1 are carried; each cost plane is
            # computed once.
            _, _, _, planes = tf.while_loop(
                lambda index, *_: index < num_depths, body,
                (tf.constant(0), tf.zeros_like(first), first, planes),
                shape_invariants=(tf.TensorShape([]), plane_shape,
                                  plane_shape, tf.TensorShape(None)),
                parallel_iterations=1)
            if not stacked:
                return planes
        # [D, B, H, W, C] -> [B, D, H, W, C]: no copy for B = 1 (TF's
        # transpose only moves a unit axis).
        cost = tf.transpose(planes.stack(), [1, 0, 2, 3, 4])
        # The sizes shape inference knew before the loop (oneDNN's
        # Conv3DTranspose needs them).
        cost.set_shape(tf.TensorShape([
            ref.shape[0], num_depths if isinstance(num_depths, int) else None,
            ref.shape[1], ref.shape[2],
            out_channels if stem is None else stem_channels]))
        return cost

    def compute_output_shape(self, ref_features_shape,
                             warped_features_shape):
        channels = (self.groups if self.aggregation == "groupwise"
                    else ref_features_shape[-1])
        return tuple(warped_features_shape[:1]) + tuple(
            warped_features_shape[2:-1]) + (channels,)

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update({"aggregation": self.aggregation, "groups": self.groups})
        return config
