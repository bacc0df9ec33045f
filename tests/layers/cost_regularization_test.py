"""Tests for the 3-D U-Net against a numpy re-statement of CostRegNet."""

import keras
import numpy as np
import pytest
from conv_blocks_test import random_bn
from conv_blocks_test import reference_bn_relu
from conv_blocks_test import reference_conv
from conv_blocks_test import reference_conv_transpose
from conv_blocks_test import set_block

from keras_mvs.layers import cost_regularization
from keras_mvs.testing.layers import run_layer_test

# (name, in, out, stride) for b = 4, input 6 channels; conv7/9/11 are the
# transposed blocks (PyTorch weight layout (in, out, k, k, k)).
ENCODER = (("conv0", 6, 4, 1), ("conv1", 4, 8, 2), ("conv2", 8, 8, 1),
           ("conv3", 8, 16, 2), ("conv4", 16, 16, 1), ("conv5", 16, 32, 2),
           ("conv6", 32, 32, 1))
DECODER = (("conv7", 32, 16), ("conv9", 16, 8), ("conv11", 8, 4))


def test_matches_reference_unet():
    rng = np.random.default_rng(0)
    layer = cost_regularization.CostRegularization(base_channels=4)
    layer.build((None, None, None, None, 6))
    x = rng.normal(size=(1, 8, 8, 16, 6)).astype(np.float32)

    outputs = {}
    h = x.astype(np.float64)
    for name, cin, cout, stride in ENCODER:
        weight = rng.normal(scale=0.2, size=(cout, cin, 3, 3, 3))
        bn = random_bn(rng, cout)
        set_block(getattr(layer, name), weight, bn)
        h = reference_bn_relu(reference_conv(h, weight, stride, 1), *bn)
        outputs[name] = h
    for (name, cin, cout), skip in zip(DECODER, ("conv4", "conv2", "conv0")):
        weight = rng.normal(scale=0.2, size=(cin, cout, 3, 3, 3))
        bn = random_bn(rng, cout)
        set_block(getattr(layer, name), weight, bn)
        h = outputs[skip] + reference_bn_relu(
            reference_conv_transpose(h, weight), *bn)
    prob = rng.normal(scale=0.2, size=(1, 4, 3, 3, 3))
    layer.prob.kernel.assign(np.transpose(prob, (2, 3, 4, 1, 0)))
    expected = reference_conv(h, prob, 1, 1)[..., 0]

    logits = layer(x, training=False)
    assert logits.shape == (1, 8, 8, 16)
    assert logits.dtype == "float32"
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4,
                               atol=1e-4)


def test_weights_and_logits_dtype_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = cost_regularization.CostRegularization(base_channels=8)
        logits = layer(np.zeros((1, 8, 8, 8, 8), np.float32))
    finally:
        keras.config.set_dtype_policy(previous)
    assert logits.dtype == "float32"
    assert layer.conv0.compute_dtype == "bfloat16"
    # 10 blocks x 5 tensors + prob kernel.
    assert len(layer.weights) == 51


def test_config_and_bad_arguments():
    clone = cost_regularization.CostRegularization.from_config(
        cost_regularization.CostRegularization(base_channels=4).get_config())
    assert clone.base_channels == 4
    with pytest.raises(ValueError, match="base_channels.*Received"):
        cost_regularization.CostRegularization(base_channels=-1)


def test_layer_contract(tmp_path):
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 16, 4))
    run_layer_test(cost_regularization.CostRegularization,
                   {"base_channels": 2}, x.astype(np.float32), (1, 8, 8, 16),
                   tmp_path)


@pytest.mark.parametrize("num_depths", [1, 2, 5])
def test_conv0_plane_is_conv0_at_one_plane(num_depths):
    # Plane d of conv0 from cost planes d - 1, d, d + 1 (zeros beyond the
    # volume), against the numpy conv0 of the whole volume.
    rng = np.random.default_rng(4)
    layer = cost_regularization.CostRegularization(base_channels=4)
    layer.build((None, None, None, None, 6))
    weight = rng.normal(scale=0.3, size=(4, 6, 3, 3, 3))
    bn = random_bn(rng, 4)
    set_block(layer.conv0, weight, bn)
    volume = rng.normal(size=(2, num_depths, 5, 7, 6)).astype(np.float32)
    expected = reference_bn_relu(
        reference_conv(volume.astype(np.float64), weight, 1, 1), *bn)

    padded = np.pad(volume, [(0, 0), (1, 1), (0, 0), (0, 0), (0, 0)])
    for d in range(num_depths):
        plane = layer.conv0_plane(padded[:, d], padded[:, d + 1],
                                  padded[:, d + 2])
        assert plane.shape == (2, 5, 7, 4)
        np.testing.assert_allclose(np.asarray(plane), expected[:, d],
                                   rtol=1e-4, atol=1e-5)
    assert 0.2 < np.mean(expected > 0) < 0.9  # both ReLU sides


def test_call_from_conv0_completes_call():
    rng = np.random.default_rng(5)
    layer = cost_regularization.CostRegularization(base_channels=4)
    x = rng.normal(size=(1, 8, 8, 16, 6)).astype(np.float32)
    logits = np.asarray(layer(x, training=False))
    split = np.asarray(layer.call_from_conv0(layer.conv0(x, training=False),
                                             training=False))
    assert np.abs(logits).max() > 0
    np.testing.assert_array_equal(split, logits)


@pytest.mark.parametrize("shape", [(1, 8, 8, 16), (2, 16, 16, 8)])
def test_call_from_conv0_planes_equals_call(shape):
    # The full-resolution level plane by plane (conv1 from three conv0
    # planes, conv11 as 2-D transposed convolutions, prob over a sliding
    # window) against the whole-volume U-Net, all BatchNorms away from
    # identity.
    import tensorflow as tf

    rng = np.random.default_rng(6)
    layer = cost_regularization.CostRegularization(base_channels=4)
    layer.build((None, None, None, None, 6))
    for name, cin, cout, _ in ENCODER:
        set_block(getattr(layer, name),
                  rng.normal(scale=0.1, size=(cout, cin, 3, 3, 3)),
                  random_bn(rng, cout))
    for name, cin, cout in DECODER:
        set_block(getattr(layer, name),
                  rng.normal(scale=0.1, size=(cin, cout, 3, 3, 3)),
                  random_bn(rng, cout))
    layer.prob.kernel.assign(rng.normal(scale=0.1, size=(3, 3, 3, 4, 1)))
    x = rng.normal(size=shape + (6,)).astype(np.float32)
    expected = np.asarray(layer(x, training=False))

    def by_planes(x):
        conv0 = layer.conv0(x, training=False)  # [B, D, H, W, b]
        planes = tf.TensorArray(tf.float32, size=shape[1],
                                clear_after_read=False).unstack(
            tf.transpose(conv0, [1, 0, 2, 3, 4]))
        return layer.call_from_conv0_planes(planes, shape[1])

    assert 0.1 < np.std(expected) < 100.0  # well conditioned, not flat
    for run in (by_planes, tf.function(by_planes)):  # eager and traced
        logits = np.asarray(run(x))
        assert logits.shape == shape
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
