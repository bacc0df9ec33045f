"""The 2-D feature pyramid (FPN) shared by every view of the cascade."""

import keras

from keras_mvs.layers import conv_blocks


@keras.saving.register_keras_serializable(package="keras_mvs")
class FeaturePyramid(keras.layers.Layer):
    """CasMVSNet FPN feature extractor (ALGORITHMS.md 2.1).

    A bottom-up path of Conv+BN+ReLU blocks at 1, 1/2 and 1/4 resolution
    (the stride-2 blocks are k5 s2 p2, padded symmetrically as in PyTorch),
    then a top-down path that adds nearest-upsampled coarse maps to 1x1
    projections of the finer ones. With base channels c the three outputs
    have 4c, 2c and c channels (32, 16, 8 for c = 8). Weights are shared by
    all views: the caller folds views into the batch and says how many
    (`views`).

    Sublayer names follow the reference state dict (`feature.conv1.0` ->
    `conv1_0`, `feature.out1` -> `out1`, ...; docs/weight_layout.md).

    Args:
        base_channels: c, channels of the full-resolution block.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: `[B, H, W, 3]` images (H, W multiples of 4; the cascade needs
            multiples of 32).
        training: BatchNorm mode.
        views: V when the batch folds V views (index `b * V + v`): in
            training each view's BatchNorm statistics are then computed
            apart, as the reference runs its FPN once per view; None treats
            the batch as one.

    Returns:
        A list coarse to fine: `[B, H/4, W/4, 4c]`, `[B, H/2, W/2, 2c]`,
        `[B, H, W, c]`, in the layer's compute dtype.

    Example:
        >>> fpn = FeaturePyramid(base_channels=8)
        >>> [f.shape for f in fpn(tf.zeros([2, 64, 80, 3]))]
        >>> # [(2, 16, 20, 32), (2, 32, 40, 16), (2, 64, 80, 8)]

    Reference:
        Lin et al., "Feature Pyramid Networks for Object Detection", CVPR
        2017; Gu et al., CasMVSNet, CVPR 2020, Sec. 3.2.
    """

    def __init__(self, base_channels: int = 8, **kwargs):
        super().__init__(**kwargs)
        conv_blocks.check_positive_int(base_channels, "base_channels")
        self.base_channels = base_channels
        c = base_channels

        # === Layers ===
        def block(name, filters, kernel_size=3, strides=1, padding=1):
            return conv_blocks.ConvBnReLU(
                filters, kernel_size, strides, padding, rank=2,
                dtype=self.dtype_policy, name=name)

        def conv(name, filters, kernel_size, use_bias):
            return keras.layers.Conv2D(
                filters, kernel_size, padding="same", use_bias=use_bias,
                dtype=self.dtype_policy, name=name)

        self.conv0 = [block("conv0_0", c), block("conv0_1", c)]
        self.conv1 = [block("conv1_0", 2 * c, 5, 2, 2),
                      block("conv1_1", 2 * c), block("conv1_2", 2 * c)]
        self.conv2 = [block("conv2_0", 4 * c, 5, 2, 2),
                      block("conv2_1", 4 * c), block("conv2_2", 4 * c)]
        self.out1 = conv("out1", 4 * c, 1, use_bias=False)
        self.inner1 = conv("inner1", 4 * c, 1, use_bias=True)
        self.inner2 = conv("inner2", 4 * c, 1, use_bias=True)
        self.out2 = conv("out2", 2 * c, 3, use_bias=False)
        self.out3 = conv("out3", c, 3, use_bias=False)
        self.upsample = keras.layers.UpSampling2D(
            2, interpolation="nearest", dtype=self.dtype_policy,
            name="upsample")

    def build(self, input_shape):
        batch = input_shape[0]
        c = self.base_channels
        shape = tuple(input_shape)
        for blocks in (self.conv0, self.conv1, self.conv2):
            for layer in blocks:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.out1.build((batch, None, None, 4 * c))
        self.inner1.build((batch, None, None, 2 * c))
        self.inner2.build((batch, None, None, c))
        self.out2.build((batch, None, None, 4 * c))
        self.out3.build((batch, None, None, 4 * c))

    def call(self, inputs, training=None, views=None):
        x = inputs
        skips = []
        for blocks in (self.conv0, self.conv1, self.conv2):
            for layer in blocks:
                x = layer(x, training=training, groups=views)
            skips.append(x)
        conv0, conv1, conv2 = skips  # 1x c, 1/2 2c, 1/4 4c channels
        coarse = self.out1(conv2)  # [B, H/4, W/4, 4c]
        top_down = self.upsample(conv2) + self.inner1(conv1)
        middle = self.out2(top_down)  # [B, H/2, W/2, 2c]
        top_down = self.upsample(top_down) + self.inner2(conv0)
        fine = self.out3(top_down)  # [B, H, W, c]
        return [coarse, middle, fine]

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]
        c = self.base_channels

        def scaled(n, factor):
            return None if n is None else n // factor

        return [
            (batch, scaled(height, 4), scaled(width, 4), 4 * c),
            (batch, scaled(height, 2), scaled(width, 2), 2 * c),
            (batch, height, width, c),
        ]

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update({"base_channels": self.base_channels})
        return config
