"""Padding and transposed-convolution parity of the conv blocks with PyTorch.

The reference functions below implement PyTorch's `Conv{2,3}d` and
`ConvTranspose3d` semantics with direct loops over kernel taps / input
voxels, on PyTorch-layout weights, channels-last activations. Other layer
tests import them (same directory).
"""

import itertools

import numpy as np
import pytest

from keras_mvs.layers import conv_blocks
from keras_mvs.testing.layers import run_layer_test

BN_EPSILON = 1e-5


def reference_conv(x, weight, stride=1, padding=0, bias=None):
    """PyTorch ConvNd: `x [N, *S, Cin]`, `weight (out, in, *k)`.

    `y[o] = sum_k x_padded[o * stride + k] . weight[:, :, k]`, zero padding
    `padding` on both sides of every spatial axis.
    """
    rank = weight.ndim - 2
    pad = [(0, 0)] + [(padding, padding)] * rank + [(0, 0)]
    x = np.pad(x.astype(np.float64), pad)
    kernel = weight.shape[2:]
    out_size = [(x.shape[1 + a] - kernel[a]) // stride + 1 for a in range(rank)]
    y = np.zeros([x.shape[0]] + out_size + [weight.shape[0]])
    for taps in itertools.product(*[range(k) for k in kernel]):
        window = tuple(slice(t, t + stride * (n - 1) + 1, stride)
                       for t, n in zip(taps, out_size))
        patch = x[(slice(None),) + window]  # [N, *out, Cin]
        y += patch @ weight[(slice(None), slice(None)) + taps].T
    if bias is not None:
        y += bias
    return y


def reference_conv_transpose(x, weight, stride=2, padding=1,
                             output_padding=1):
    """PyTorch ConvTransposeNd: `x [N, *S, Cin]`, `weight (in, out, *k)`.

    Input voxel i through tap k adds to output `i * stride + k - padding`;
    the output has `(n - 1) * stride - 2 * padding + k + output_padding`
    voxels per axis.
    """
    kernel = weight.shape[2:]
    spatial = x.shape[1:-1]
    out_size = [(n - 1) * stride - 2 * padding + k + output_padding
                for n, k in zip(spatial, kernel)]
    y = np.zeros([x.shape[0]] + out_size + [weight.shape[1]])
    for index in itertools.product(*[range(n) for n in spatial]):
        value = x[(slice(None),) + index].astype(np.float64)  # [N, Cin]
        for taps in itertools.product(*[range(k) for k in kernel]):
            target = [i * stride + t - padding for i, t in zip(index, taps)]
            if all(0 <= o < n for o, n in zip(target, out_size)):
                y[(slice(None),) + tuple(target)] += (
                    value @ weight[(slice(None), slice(None)) + taps])
    return y


def reference_bn_relu(x, gamma, beta, mean, var, relu=True):
    """Inference-mode BatchNorm (PyTorch eps 1e-5), then optionally ReLU."""
    y = (x - mean) / np.sqrt(var + BN_EPSILON) * gamma + beta
    return np.maximum(y, 0.0) if relu else y


def keras_kernel(weight):
    """PyTorch conv weight -> Keras kernel, as docs/weight_layout.md says.

    Conv (out, in, *k) and ConvTranspose (in, out, *k) both move the two
    channel axes last in reverse order, no spatial flip.
    """
    rank = weight.ndim - 2
    return np.transpose(weight, tuple(range(2, 2 + rank)) + (1, 0))


def random_bn(rng, channels):
    """Random BN parameters (gamma, beta, running mean, running var)."""
    return (rng.uniform(0.5, 1.5, channels), rng.normal(size=channels),
            rng.normal(size=channels), rng.uniform(0.5, 2.0, channels))


def set_block(block, weight, bn):
    """Loads PyTorch-layout conv weight + BN stats into a Keras block."""
    block.conv.kernel.assign(keras_kernel(weight))
    gamma, beta, mean, var = bn
    block.bn.gamma.assign(gamma)
    block.bn.beta.assign(beta)
    block.bn.moving_mean.assign(mean)
    block.bn.moving_variance.assign(var)


@pytest.mark.parametrize("rank,kernel_size,strides,padding,spatial", [
    (2, 5, 2, 2, (7, 9)),      # FPN downsampling, odd sizes
    (2, 5, 2, 2, (8, 10)),     # even sizes: Keras "same" would pad (1, 2)
    (2, 3, 1, 1, (6, 7)),      # stride 1 uses Keras "same"
    (3, 3, 2, 1, (5, 7, 9)),   # 3-D U-Net downsampling, odd
    (3, 3, 2, 1, (4, 6, 8)),   # even: Keras "same" would pad (0, 1)
    (3, 3, 1, 1, (3, 4, 5)),
    (3, 1, 1, 0, (2, 3, 4)),   # adaptive weight net
])
def test_conv_block_matches_pytorch_semantics(rank, kernel_size, strides,
                                              padding, spatial):
    rng = np.random.default_rng(rank * 100 + kernel_size + sum(spatial))
    x = rng.normal(size=(2,) + spatial + (3,)).astype(np.float32)
    weight = rng.normal(size=(4, 3) + (kernel_size,) * rank)
    bn = random_bn(rng, 4)
    block = conv_blocks.ConvBnReLU(4, kernel_size, strides, padding, rank=rank)
    block.build(x.shape)
    set_block(block, weight, bn)
    expected = reference_bn_relu(
        reference_conv(x, weight, strides, padding), *bn)
    actual = np.asarray(block(x, training=False))
    assert actual.shape == expected.shape
    assert block.compute_output_shape(x.shape) == expected.shape
    np.testing.assert_allclose(actual, expected, atol=2e-5)


@pytest.mark.parametrize("spatial", [(8, 10), (7, 9)])
def test_stride_two_block_pads_symmetrically(spatial):
    # An impulse at input index i must reach exactly the outputs o whose
    # PyTorch window 2 o - 2 .. 2 o + 2 (k5, s2, p2) contains it, on even
    # sizes too (where Keras "same" would pad (1, 2) and shift the window).
    block = conv_blocks.ConvBnReLU(1, 5, 2, 2, rank=2)
    block.build((1,) + spatial + (1,))
    block.conv.kernel.assign(np.ones((5, 5, 1, 1), np.float32))
    block.bn.moving_variance.assign([1.0 - BN_EPSILON])
    for axis, size in enumerate(spatial):
        outputs = (size + 2 * 2 - 5) // 2 + 1
        for i in range(size):
            x = np.zeros((1,) + spatial + (1,), np.float32)
            x[(0,) + (i if axis == 0 else 0, i if axis == 1 else 0)] = 1.0
            y = np.asarray(block(x, training=False))[0, ..., 0]
            reached = np.flatnonzero(
                (y[:, 0] if axis == 0 else y[0, :]) > 0.5)
            expected = [o for o in range(outputs)
                        if 2 * o - 2 <= i <= 2 * o + 2]
            assert reached.tolist() == expected, (axis, i)


@pytest.mark.parametrize("spatial", [(2, 3, 4), (3, 5, 7)])
def test_deconv_block_matches_pytorch_conv_transpose(spatial):
    rng = np.random.default_rng(sum(spatial))
    x = rng.normal(size=(2,) + spatial + (5,)).astype(np.float32)
    weight = rng.normal(size=(5, 4, 3, 3, 3))  # PyTorch (in, out, k, k, k)
    bn = random_bn(rng, 4)
    block = conv_blocks.DeconvBnReLU3D(4)
    block.build(x.shape)
    assert tuple(block.conv.kernel.shape) == (3, 3, 3, 4, 5)
    set_block(block, weight, bn)
    expected = reference_bn_relu(reference_conv_transpose(x, weight), *bn)
    actual = np.asarray(block(x, training=False))
    assert actual.shape == (2,) + tuple(2 * n for n in spatial) + (4,)
    np.testing.assert_allclose(actual, expected, atol=2e-5)


def test_deconv_with_flipped_kernel_does_not_match():
    # Pins "no spatial flip": the flipped kernel gives a different result.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 2, 2, 2, 2)).astype(np.float32)
    weight = rng.normal(size=(2, 3, 3, 3, 3))
    block = conv_blocks.DeconvBnReLU3D(3)
    block.build(x.shape)
    block.conv.kernel.assign(keras_kernel(weight[:, :, ::-1, ::-1, ::-1]))
    actual = np.asarray(block.conv(x))[:, 1:, 1:, 1:, :]
    assert np.abs(actual - reference_conv_transpose(x, weight)).max() > 0.1


def test_batch_norm_settings_and_no_conv_bias():
    block = conv_blocks.ConvBnReLU(4, 3, 1, 1, rank=3)
    deconv = conv_blocks.DeconvBnReLU3D(4)
    for layer in (block, deconv):
        assert layer.bn.epsilon == 1e-5
        assert layer.bn.momentum == 0.9
        assert layer.conv.use_bias is False


def test_config_round_trip():
    block = conv_blocks.ConvBnReLU(6, 5, 2, 2, rank=2, name="conv1_0")
    clone = conv_blocks.ConvBnReLU.from_config(block.get_config())
    assert (clone.filters, clone.kernel_size, clone.strides, clone.padding,
            clone.rank, clone.name) == (6, 5, 2, 2, 2, "conv1_0")
    deconv = conv_blocks.DeconvBnReLU3D.from_config(
        conv_blocks.DeconvBnReLU3D(7).get_config())
    assert deconv.filters == 7


@pytest.mark.parametrize("kwargs,match", [
    ({"filters": 0}, "filters"),
    ({"filters": 4, "padding": 3, "kernel_size": 3}, "padding"),
    ({"filters": 4, "rank": 1}, "rank"),
    ({"filters": 4, "strides": 0}, "strides"),
])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"{match}.*Received"):
        conv_blocks.ConvBnReLU(**kwargs)


@pytest.mark.parametrize("init_kwargs,shape,expected", [
    ({"filters": 3, "kernel_size": 5, "strides": 2, "padding": 2, "rank": 2},
     (2, 8, 10, 4), (2, 4, 5, 3)),
    ({"filters": 3, "kernel_size": 3, "strides": 1, "padding": 1, "rank": 3},
     (2, 3, 4, 5, 2), (2, 3, 4, 5, 3)),
])
def test_conv_block_layer_contract(tmp_path, init_kwargs, shape, expected):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    run_layer_test(conv_blocks.ConvBnReLU, init_kwargs, x, expected,
                   tmp_path, call_kwargs={"groups": 2})


def test_deconv_block_layer_contract(tmp_path):
    x = np.random.default_rng(0).normal(size=(1, 2, 3, 4, 5))
    run_layer_test(conv_blocks.DeconvBnReLU3D, {"filters": 3},
                   x.astype(np.float32), (1, 4, 6, 8, 3), tmp_path)
