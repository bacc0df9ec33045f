"""The 3-D U-Net that regularises a cost volume into per-hypothesis logits."""

import keras
import tensorflow as tf

from keras_mvs.layers import conv_blocks


@keras.saving.register_keras_serializable(package="keras_mvs")
class CostRegularization(keras.layers.Layer):
    """CasMVSNet "CostRegNet" 3-D U-Net (ALGORITHMS.md 2.4).

    With base b (8 in every reference network), all 3-D convolutions k3 and
    Conv+BN+ReLU blocks without bias:

    * encoder: conv0 in -> b; conv1 b -> 2b stride 2; conv2 2b -> 2b;
      conv3 2b -> 4b stride 2; conv4 4b -> 4b; conv5 4b -> 8b stride 2;
      conv6 8b -> 8b (stride-2 blocks padded symmetrically by 1, as PyTorch);
    * decoder: x = conv4 + conv7(x); x = conv2 + conv9(x); x = conv0 +
      conv11(x), where conv7/9/11 are transposed k3 s2 p1 output_padding 1
      blocks (8b -> 4b -> 2b -> b);
    * prob: Conv3D b -> 1, k3 p1, no bias, no BN, no ReLU.

    Sublayer names are the reference's (`conv0` ... `conv6`, `conv7`,
    `conv9`, `conv11`, `prob`). The logit volume is returned in float32: the
    `prob` convolution runs in float32 even under a mixed-precision policy,
    since the heads' softmax/sigmoid and the unity offset need its precision.

    Args:
        base_channels: b.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: `[B, D, H, W, C]` cost volume; D, H and W must be multiples
            of 8 (three stride-2 levels).
        training: BatchNorm mode.

    Returns:
        `[B, D, H, W]` float32 logits.

    Example:
        >>> reg = CostRegularization(base_channels=8)
        >>> reg(tf.zeros([1, 8, 16, 24, 32])).shape  # (1, 8, 16, 24)

    Reference:
        Gu et al., CasMVSNet, CVPR 2020, Sec. 3; Yao et al., MVSNet, ECCV
        2018, Sec. 3.3 (cost volume regularisation).
    """

    def __init__(self, base_channels: int = 8, **kwargs):
        super().__init__(**kwargs)
        conv_blocks.check_positive_int(base_channels, "base_channels")
        self.base_channels = base_channels
        b = base_channels

        # === Layers ===
        def block(name, filters, strides=1):
            return conv_blocks.ConvBnReLU(
                filters, kernel_size=3, strides=strides, padding=1, rank=3,
                dtype=self.dtype_policy, name=name)

        def up(name, filters):
            return conv_blocks.DeconvBnReLU3D(
                filters, dtype=self.dtype_policy, name=name)

        self.conv0 = block("conv0", b)
        self.conv1 = block("conv1", 2 * b, strides=2)
        self.conv2 = block("conv2", 2 * b)
        self.conv3 = block("conv3", 4 * b, strides=2)
        self.conv4 = block("conv4", 4 * b)
        self.conv5 = block("conv5", 8 * b, strides=2)
        self.conv6 = block("conv6", 8 * b)
        self.conv7 = up("conv7", 4 * b)
        self.conv9 = up("conv9", 2 * b)
        self.conv11 = up("conv11", b)
        self.prob = keras.layers.Conv3D(
            1, 3, padding="same", use_bias=False, dtype="float32", name="prob")

    def build(self, input_shape):
        b = self.base_channels
        volume = (None, None, None, None)
        self.conv0.build(volume + (input_shape[-1],))
        for layer, channels in ((self.conv1, b), (self.conv2, 2 * b),
                                (self.conv3, 2 * b), (self.conv4, 4 * b),
                                (self.conv5, 4 * b), (self.conv6, 8 * b),
                                (self.conv7, 8 * b), (self.conv9, 4 * b),
                                (self.conv11, 2 * b), (self.prob, b)):
            layer.build(volume + (channels,))

    def call(self, inputs, training=None):
        return self.call_from_conv0(self.conv0(inputs, training=training),
                                    training=training)

    def conv0_plane(self, previous, current, following):
        """Inference: conv0 at one depth plane, from three cost planes.

        conv0 is a k3 convolution padded by one plane along D, so its output
        at plane d needs the cost planes d - 1, d and d + 1 only: the three
        stacked on the channel axis meet the kernel's three depth taps
        folded into its input channels, one 2-D convolution (the same
        products as the 3-D one, summed in another order). A caller that
        builds the cost volume plane by plane
        (`CostVolume.aggregate_planes(stem=...)`) so never holds the
        C-channel volume, only conv0's b-channel output. BatchNorm in
        inference mode.

        Args:
            previous, current, following: `[B, H, W, C]` cost planes d - 1,
                d and d + 1; zeros for a plane beyond the volume (conv0's
                zero padding).

        Returns:
            `[B, H, W, b]`, plane d of `conv0(volume)`.
        """
        planes = tf.concat([previous, current, following], axis=-1)
        x = tf.nn.conv2d(planes, _depth_folded(self.conv0.conv.kernel,
                                               planes.dtype), 1, "SAME")
        # The BatchNorm was built for volumes: a unit D axis, no copy.
        x = self.conv0.bn(x[:, tf.newaxis], training=False)
        return keras.activations.relu(x[:, 0])  # [B, H, W, b]

    def call_from_conv0_planes(self, conv0_planes, num_depths):
        """Inference: the U-Net after conv0, reading conv0's planes.

        The full-resolution level runs plane by plane: conv1 (k3, stride 2)
        from a window of three conv0 planes, conv11 (the transposed k3,
        stride 2) as 2-D transposed convolutions of the half-resolution
        planes each output plane draws on, and the skip addition and `prob`
        (k3) from a window of three summed planes sliding along D. So
        conv0's output is never stacked into one tensor, nor copied (padded
        for conv1, summed with conv11's cropped output): of the
        full-resolution activations only conv0's planes and a few planes
        of the rest are alive. The coarser levels run on stacked tensors as
        in `call`. BatchNorm in inference mode.

        Args:
            conv0_planes: `tf.TensorArray` of D `[B, H, W, b]` planes, the
                output of conv0 (`CostVolume.aggregate_planes(stem=
                self.conv0_plane, stacked=False)`); D, H and W multiples
                of 8; created with `clear_after_read=False`, since planes
                are read more than once.
            num_depths: D, a Python int or an int32 scalar.

        Returns:
            `[B, D, H, W]` float32 logits: `call_from_conv0` of the stacked
            planes, up to float round-off.
        """
        first = conv0_planes.read(0)  # [B, H, W, b]
        dtype = first.dtype
        zeros = tf.zeros_like(first)
        plane_shape = tf.TensorShape([None, None, None, self.base_channels])

        def conv0_plane(index):
            """Plane `index` of conv0's output, zeros beyond the volume."""
            return tf.cond(
                (index >= 0) & (index < num_depths),
                lambda: conv0_planes.read(
                    tf.clip_by_value(index, 0, num_depths - 1)),
                lambda: zeros)

        def bn_relu(block, x):
            # The BatchNorm was built for volumes: a unit D axis, no copy.
            return keras.activations.relu(
                block.bn(x[:, tf.newaxis], training=False))[:, 0]

        # conv1 (k3, stride 2, padding 1), its depth taps folded into the
        # input channels as in `conv0_plane`.
        kernel_1 = _depth_folded(self.conv1.conv.kernel, dtype)

        def conv1_plane(index):
            window = tf.concat([conv0_plane(2 * index - 1),
                                conv0_plane(2 * index),
                                conv0_plane(2 * index + 1)], axis=-1)
            return bn_relu(self.conv1, tf.nn.conv2d(
                window, kernel_1, 2, [[0, 0], [1, 1], [1, 1], [0, 0]]))

        conv1 = _stacked_planes(conv1_plane, num_depths // 2, dtype,
                                2 * self.base_channels)
        conv2 = self.conv2(conv1, training=False)  # [B, D/2, H/2, W/2, 2b]
        conv4 = self.conv4(self.conv3(conv2, training=False),
                           training=False)  # [B, D/4, H/4, W/4, 4b]
        x = self.conv6(self.conv5(conv4, training=False), training=False)
        x = conv4 + self.conv7(x, training=False)
        half = conv2 + self.conv9(x, training=False)  # [B, D/2, H/2, W/2, 2b]

        # conv11: PyTorch's output plane o takes input plane i through
        # depth tap k where o = 2 i + k - 1; in H and W the same stride-2
        # transposed convolution, which `conv2d_transpose` computes with
        # padding 1 before and 0 after.
        kernel_11 = tf.cast(self.conv11.conv.kernel, dtype)  # [3,3,3,b,2b]
        output_shape = tf.shape(first)

        def conv11_plane(index):
            total = zeros
            for tap in range(3):
                doubled = index + 1 - tap  # 2 i
                total += tf.cond(
                    (doubled % 2 == 0) & (doubled >= 0)
                    & (doubled < 2 * (num_depths // 2)),
                    lambda tap=tap, doubled=doubled: tf.nn.conv2d_transpose(
                        half[:, doubled // 2], kernel_11[tap], output_shape,
                        2, [[0, 0], [1, 0], [1, 0], [0, 0]]),
                    lambda: zeros)
            return bn_relu(self.conv11, total)

        def summed_plane(index):  # conv0 + conv11 at plane `index`
            return conv0_plane(index) + conv11_plane(index)

        kernel_prob = _depth_folded(self.prob.kernel, tf.float32)

        def body(index, previous, current, logits):
            following = tf.cond(index + 1 < num_depths,
                                lambda: summed_plane(index + 1),
                                lambda: zeros)
            window = tf.cast(tf.concat([previous, current, following], -1),
                             tf.float32)
            logits = logits.write(index, tf.nn.conv2d(
                window, kernel_prob, 1, "SAME")[..., 0])  # [B, H, W]
            return index + 1, current, following, logits

        logits = tf.TensorArray(tf.float32, size=num_depths,
                                element_shape=tf.TensorShape([None] * 3))
        _, _, _, logits = tf.while_loop(
            lambda index, *_: index < num_depths, body,
            (tf.constant(0), zeros, summed_plane(tf.constant(0)), logits),
            shape_invariants=(tf.TensorShape([]), plane_shape, plane_shape,
                              tf.TensorShape(None)),
            parallel_iterations=1)
        return tf.transpose(logits.stack(), [1, 0, 2, 3])  # [B, D, H, W]

    def call_from_conv0(self, conv0, training=None):
        """The U-Net after conv0: `call(inputs) ==
        call_from_conv0(conv0(inputs))`.

        Args:
            conv0: `[B, D, H, W, b]` conv0's output.
            training: BatchNorm mode.

        Returns:
            `[B, D, H, W]` float32 logits.
        """
        conv2 = self.conv2(self.conv1(conv0, training=training),
                           training=training)  # [B, D/2, H/2, W/2, 2b]
        conv4 = self.conv4(self.conv3(conv2, training=training),
                           training=training)  # [B, D/4, H/4, W/4, 4b]
        x = self.conv6(self.conv5(conv4, training=training),
                       training=training)  # [B, D/8, H/8, W/8, 8b]
        x = conv4 + self.conv7(x, training=training)
        x = conv2 + self.conv9(x, training=training)
        x = conv0 + self.conv11(x, training=training)
        logits = self.prob(x)  # [B, D, H, W, 1] float32
        return tf.squeeze(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update({"base_channels": self.base_channels})
        return config


def _depth_folded(kernel, dtype) -> tf.Tensor:
    """A k3 Conv3D kernel `[3, 3, 3, C, F]` (D, H, W, in, out) as a Conv2D
    kernel `[3, 3, 3 C, F]` over three planes stacked on the channel axis,
    previous plane first."""
    channels, filters = kernel.shape[3], kernel.shape[4]
    return tf.cast(tf.reshape(tf.transpose(kernel, [1, 2, 0, 3, 4]),
                              [3, 3, 3 * channels, filters]), dtype)


def _stacked_planes(plane, num_planes, dtype, channels) -> tf.Tensor:
    """`[B, num_planes, H, W, channels]` from `plane(index) -> [B, H, W,
    channels]`, computed one plane after the other."""
    planes = tf.TensorArray(dtype, size=num_planes, element_shape=(
        tf.TensorShape([None, None, None, channels])))
    _, planes = tf.while_loop(
        lambda index, _: index < num_planes,
        lambda index, planes: (index + 1, planes.write(index, plane(index))),
        (tf.constant(0), planes), parallel_iterations=1)
    # [D, B, H, W, C] -> [B, D, H, W, C]: no copy for B = 1.
    return tf.transpose(planes.stack(), [1, 0, 2, 3, 4])
