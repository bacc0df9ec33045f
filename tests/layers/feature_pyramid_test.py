"""Tests for the FPN feature extractor against a numpy re-statement."""

import numpy as np
import pytest
from conv_blocks_test import random_bn
from conv_blocks_test import reference_bn_relu
from conv_blocks_test import reference_conv
from conv_blocks_test import set_block

from keras_mvs.layers import feature_pyramid
from keras_mvs.testing.layers import run_layer_test

# (block, in, out, kernel, stride, padding) of ALGORITHMS.md 2.1, c = 8.
BLOCKS = (
    ("conv0_0", 3, 8, 3, 1, 1), ("conv0_1", 8, 8, 3, 1, 1),
    ("conv1_0", 8, 16, 5, 2, 2), ("conv1_1", 16, 16, 3, 1, 1),
    ("conv1_2", 16, 16, 3, 1, 1),
    ("conv2_0", 16, 32, 5, 2, 2), ("conv2_1", 32, 32, 3, 1, 1),
    ("conv2_2", 32, 32, 3, 1, 1),
)


def _upsample(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def test_output_shapes():
    fpn = feature_pyramid.FeaturePyramid(base_channels=8)
    shapes = [tuple(f.shape) for f in fpn(np.zeros((2, 64, 96, 3), "float32"))]
    assert shapes == [(2, 16, 24, 32), (2, 32, 48, 16), (2, 64, 96, 8)]
    assert fpn.compute_output_shape((2, 64, 96, 3)) == shapes


def test_matches_reference_fpn():
    # Random weights in PyTorch layout, loaded through the documented name
    # mapping; inference-mode BN. Pins the wiring: which map each 1x1 conv
    # reads, nearest upsampling, the order of the two top-down additions.
    rng = np.random.default_rng(0)
    fpn = feature_pyramid.FeaturePyramid(base_channels=8)
    fpn.build((None, None, None, 3))
    x = rng.uniform(size=(1, 16, 24, 3)).astype(np.float32)

    skips = {}
    h = x.astype(np.float64)
    for name, cin, cout, k, s, p in BLOCKS:
        weight = rng.normal(scale=0.1, size=(cout, cin, k, k))
        bn = random_bn(rng, cout)
        set_block(getattr(fpn, name[:5])[int(name[-1])], weight, bn)
        h = reference_bn_relu(reference_conv(h, weight, s, p), *bn)
        skips[name[:5]] = h

    def plain(name, cin, cout, k, bias):
        weight = rng.normal(scale=0.3, size=(cout, cin, k, k))
        layer = getattr(fpn, name)
        layer.kernel.assign(np.transpose(weight, (2, 3, 1, 0)))
        b = rng.normal(size=cout) if bias else None
        if bias:
            layer.bias.assign(b)
        return lambda t: reference_conv(t, weight, 1, k // 2, b)

    out1 = plain("out1", 32, 32, 1, False)
    inner1 = plain("inner1", 16, 32, 1, True)
    inner2 = plain("inner2", 8, 32, 1, True)
    out2 = plain("out2", 32, 16, 3, False)
    out3 = plain("out3", 32, 8, 3, False)

    top_down = _upsample(skips["conv2"]) + inner1(skips["conv1"])
    expected = [out1(skips["conv2"]), out2(top_down),
                out3(_upsample(top_down) + inner2(skips["conv0"]))]
    actual = fpn(x, training=False)
    for a, e in zip(actual, expected):
        # float32 accumulation against float64: tolerance relative to scale.
        np.testing.assert_allclose(np.asarray(a), e, rtol=1e-4,
                                   atol=1e-5 * np.abs(e).max())


def test_weight_count_and_config():
    fpn = feature_pyramid.FeaturePyramid(base_channels=8)
    fpn.build((None, None, None, 3))
    # 8 blocks x (kernel, gamma, beta, mean, var) + 5 convs + 2 biases.
    assert len(fpn.weights) == 47
    clone = feature_pyramid.FeaturePyramid.from_config(fpn.get_config())
    assert clone.base_channels == 8


def test_rejects_bad_base_channels():
    with pytest.raises(ValueError, match="base_channels.*Received"):
        feature_pyramid.FeaturePyramid(base_channels=0)


def test_layer_contract(tmp_path):
    x = np.random.default_rng(0).uniform(size=(4, 16, 24, 3))
    run_layer_test(feature_pyramid.FeaturePyramid, {"base_channels": 2},
                   x.astype(np.float32),
                   [(4, 4, 6, 8), (4, 8, 12, 4), (4, 16, 24, 2)], tmp_path,
                   call_kwargs={"views": 2})
