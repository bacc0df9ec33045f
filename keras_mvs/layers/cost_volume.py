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
