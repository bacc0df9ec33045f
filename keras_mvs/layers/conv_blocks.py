"""Convolution + BatchNorm + ReLU blocks with PyTorch padding semantics.

The reference networks (CasMVSNet, UniMVSNet, CL-MVSNet) are built from
`Conv{2,3}d(bias=False) -> BatchNorm -> ReLU` blocks with explicit symmetric
padding. Keras `padding="same"` pads asymmetrically for stride 2 on even
sizes (ALGORITHMS.md 9 item 21), so these blocks pad explicitly and run a
`valid` convolution wherever `same` would differ. A stride-1 convolution
with an odd kernel and padding `(k - 1) / 2` is already symmetric under
`same`, which keeps the common case free of a padding copy.

The transposed block reproduces PyTorch
`ConvTranspose3d(k=3, stride=2, padding=1, output_padding=1)`: PyTorch writes
input voxel i through tap k to output index `2 i + k - 1` and keeps outputs
`0 .. 2n - 1`. A Keras `Conv3DTranspose(padding="valid")` writes the same
product to index `2 i + k` of a `2n + 1` long output, so dropping its first
voxel on each spatial axis gives PyTorch's output exactly, with the kernel
used as is (no spatial flip; tests/layers/conv_blocks_test.py proves it on a
direct-loop reference).

BatchNorm is `keras_mvs.layers.batch_norm.BatchNorm`: PyTorch's defaults
(epsilon 1e-5, momentum 0.1, i.e. 0.9 in Keras terms, ALGORITHMS.md 9 item
20) and PyTorch's training statistics, optionally per group of the folded
batch (`groups`, the views of the FPN and the sources of the weight net).

Sublayers are named `conv` and `bn`, so a block's weights read
`<block>/conv/kernel`, `<block>/bn/gamma`, ... (docs/weight_layout.md).
"""

import keras

from keras_mvs.layers import batch_norm


def check_positive_int(value: int, name: str) -> None:
    """Raises a ValueError naming `name` unless `value` is an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}")


def _check_padding(padding: int, kernel_size: int) -> None:
    if (not isinstance(padding, int) or isinstance(padding, bool)
            or padding < 0 or padding >= kernel_size):
        raise ValueError(
            "`padding` must be an int in [0, kernel_size). "
            f"Received: padding={padding!r}, kernel_size={kernel_size!r}")


def _conv_padding(kernel_size: int, strides: int, padding: int) -> str:
    """Returns the Keras padding mode that matches a symmetric PyTorch pad.

    "same" when Keras would pad symmetrically by exactly `padding` (stride 1,
    odd kernel, padding (k - 1) / 2), otherwise "valid" (after an explicit
    ZeroPadding layer).
    """
    if strides == 1 and kernel_size % 2 == 1 and padding == kernel_size // 2:
        return "same"
    return "valid"


@keras.saving.register_keras_serializable(package="keras_mvs")
class ConvBnReLU(keras.layers.Layer):
    """Convolution (no bias) + BatchNorm + ReLU, padded like PyTorch.

    Equivalent to PyTorch `Conv{2,3}d(in, filters, kernel_size, strides,
    padding, bias=False)` followed by `BatchNorm{2,3}d` and `ReLU`; the
    reference's `Conv2d` / `Conv3d` helper blocks (ALGORITHMS.md 2.1, 2.4).

    Args:
        filters: output channels.
        kernel_size: cubic/square kernel size k.
        strides: stride s along every spatial axis.
        padding: PyTorch zero padding p on both sides of every spatial axis.
        rank: 2 (images `[B, H, W, C]`) or 3 (volumes `[B, D, H, W, C]`).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: `[B, H, W, C]` (rank 2) or `[B, D, H, W, C]` (rank 3).
        training: BatchNorm mode.
        groups: number of groups the batch folds (batch index
            `b * groups + g`) whose BatchNorm statistics are kept apart in
            training (`batch_norm.BatchNorm`); None for one.

    Returns:
        `[B, H', W', filters]` or `[B, D', H', W', filters]` with
        `n' = floor((n + 2 p - k) / s) + 1`, values >= 0.

    Example:
        >>> block = ConvBnReLU(16, kernel_size=5, strides=2, padding=2)
        >>> block(tf.zeros([1, 64, 80, 8])).shape  # (1, 32, 40, 16)

    Reference:
        Gu et al., "Cascade Cost Volume for High-Resolution Multi-View Stereo
        and Stereo Matching", CVPR 2020 (CasMVSNet), Sec. 3.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        strides: int = 1,
        padding: int = 1,
        rank: int = 2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(filters, "filters")
        check_positive_int(kernel_size, "kernel_size")
        check_positive_int(strides, "strides")
        _check_padding(padding, kernel_size)
        if rank not in (2, 3):
            raise ValueError(f"`rank` must be 2 or 3. Received: rank={rank!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.rank = rank

        # === Layers ===
        mode = _conv_padding(kernel_size, strides, padding)
        pad_layer = (keras.layers.ZeroPadding2D if rank == 2
                     else keras.layers.ZeroPadding3D)
        conv_layer = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
        self.pad = (pad_layer(padding, dtype=self.dtype_policy, name="pad")
                    if mode == "valid" and padding > 0 else None)
        self.conv = conv_layer(
            filters, kernel_size, strides=strides, padding=mode,
            use_bias=False, dtype=self.dtype_policy, name="conv")
        self.bn = batch_norm.BatchNorm(dtype=self.dtype_policy, name="bn")

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.pad is not None:
            self.pad.build(input_shape)
        self.conv.build(input_shape)
        self.bn.build(input_shape[:-1] + (self.filters,))

    def call(self, inputs, training=None, groups=None):
        x = inputs if self.pad is None else self.pad(inputs)
        x = self.conv(x)
        return keras.activations.relu(
            self.bn(x, training=training, groups=groups))

    def call_training_deferred(self, inputs, groups=None):
        """Training-mode call that returns, not applies, the BN update.

        Args:
            inputs: as `call`.
            groups: as `call`.

        Returns:
            `(outputs, means, variances)`: what `call(training=True)`
            returns, and the `[G, C]` statistics to pass to
            `self.bn.update_moving_statistics` afterwards.
        """
        x = inputs if self.pad is None else self.pad(inputs)
        x, means, variances = self.bn.normalize_training(
            self.conv(x), groups)
        return keras.activations.relu(x), means, variances

    def compute_output_shape(self, input_shape):
        def out(n):
            if n is None:
                return None
            return (n + 2 * self.padding - self.kernel_size) // self.strides + 1
        spatial = tuple(out(n) for n in input_shape[1:-1])
        return (input_shape[0],) + spatial + (self.filters,)

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "rank": self.rank,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_mvs")
class DeconvBnReLU3D(keras.layers.Layer):
    """Transposed 3-D convolution (k3, s2, p1, output_padding 1) + BN + ReLU.

    Equivalent to PyTorch `ConvTranspose3d(in, filters, 3, stride=2,
    padding=1, output_padding=1, bias=False)` + `BatchNorm3d` + `ReLU`, the
    decoder block of the 3-D U-Net (ALGORITHMS.md 2.4). Every spatial size
    doubles. The Keras kernel `(3, 3, 3, filters, in)` is PyTorch's
    `(in, filters, 3, 3, 3)` weight transposed with axes (2, 3, 4, 1, 0),
    unflipped (see the module docstring).

    Args:
        filters: output channels.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        inputs: `[B, D, H, W, C]`.
        training: BatchNorm mode.

    Returns:
        `[B, 2 D, 2 H, 2 W, filters]`, values >= 0.

    Example:
        >>> DeconvBnReLU3D(8)(tf.zeros([1, 2, 4, 5, 16])).shape
        >>> # (1, 4, 8, 10, 8)

    Reference:
        Gu et al., CasMVSNet, CVPR 2020; the `Deconv3d` block of its code.
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int(filters, "filters")
        self.filters = filters

        # === Layers ===
        self.conv = keras.layers.Conv3DTranspose(
            filters, 3, strides=2, padding="valid", use_bias=False,
            dtype=self.dtype_policy, name="conv")
        self.bn = batch_norm.BatchNorm(dtype=self.dtype_policy, name="bn")

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.conv.build(input_shape)
        self.bn.build(input_shape[:-1] + (self.filters,))

    def call(self, inputs, training=None):
        # Drops output index 0 on each spatial axis: PyTorch's padding=1
        # removes one voxel at the start, output_padding=1 keeps the end.
        x = self.conv(inputs)[:, 1:, 1:, 1:, :]
        return keras.activations.relu(self.bn(x, training=training))

    def compute_output_shape(self, input_shape):
        spatial = tuple(None if n is None else 2 * n
                        for n in input_shape[1:-1])
        return (input_shape[0],) + spatial + (self.filters,)

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config
