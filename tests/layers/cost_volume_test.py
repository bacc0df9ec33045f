"""Aggregation formulas of CostVolume on hand-made volumes."""

import numpy as np
import pytest

from keras_mvs.layers import cost_volume
from keras_mvs.testing.layers import run_layer_test


def _volumes(channels, num_sources=2, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(2, 3, 4, channels)).astype(np.float32)
    warped = rng.normal(
        size=(2, num_sources, 5, 3, 4, channels)).astype(np.float32)
    return ref, warped


def test_variance_includes_reference():
    # One source: the variance of two values a, b is ((a - b) / 2)^2.
    ref = np.full((1, 1, 1, 2), 3.0, np.float32)
    warped = np.array([1.0, 3.0], np.float32).reshape(1, 1, 1, 1, 1, 2)
    cost = cost_volume.CostVolume("variance")(ref, warped)
    np.testing.assert_allclose(np.asarray(cost).ravel(), [1.0, 0.0])

    ref, warped = _volumes(8, num_sources=3)
    views = np.concatenate(
        [np.broadcast_to(ref[:, None, None], (2, 1, 5, 3, 4, 8)), warped],
        axis=1)
    expected = views.var(axis=1)  # population variance over all 4 views
    cost = cost_volume.CostVolume("variance")(ref, warped)
    np.testing.assert_allclose(np.asarray(cost), expected, atol=1e-5)


def test_adaptive_is_mean_of_weighted_errors():
    ref, warped = _volumes(4)
    layer = cost_volume.CostVolume("adaptive")
    layer.build((None, None, None, 4), (None,) * 5 + (4,))
    # Weight net w = relu(a * relu(E . v)) with BN at identity (inference,
    # mean 0, var 1 - eps), so the expected weights are easy to restate.
    v = np.array([0.5, -0.25, 1.0, 0.75])
    layer.w_net_0.conv.kernel.assign(v.reshape(1, 1, 1, 4, 1))
    layer.w_net_1.conv.kernel.assign(np.full((1, 1, 1, 1, 1), 2.0))
    for block in (layer.w_net_0, layer.w_net_1):
        block.bn.moving_variance.assign([1.0 - 1e-5])
    errors = np.square(ref[:, None, None].astype(np.float64) - warped)
    weights = 2.0 * np.maximum(errors @ v, 0.0)[..., None]
    expected = ((1.0 + weights) * errors).mean(axis=1)
    cost = layer(ref, warped, training=False)
    assert cost.shape == (2, 5, 3, 4, 4)
    np.testing.assert_allclose(np.asarray(cost), expected, rtol=1e-4,
                               atol=1e-5)


def test_groupwise_averages_sources_and_group_channels():
    ref, warped = _volumes(16)
    products = ref[:, None, None] * warped  # [B, N, D, H, W, 16]
    expected = products.reshape(2, 2, 5, 3, 4, 4, 4).mean(axis=(1, 6))
    cost = cost_volume.CostVolume("groupwise", groups=4)(ref, warped)
    assert cost.shape == (2, 5, 3, 4, 4)
    np.testing.assert_allclose(np.asarray(cost), expected, atol=1e-5)
    # A hand case: one source, 2 groups of 2 channels.
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 1, 4)
    warped = np.array([1.0, 1.0, 2.0, 0.5],
                      np.float32).reshape(1, 1, 1, 1, 1, 4)
    cost = cost_volume.CostVolume("groupwise", groups=2)(ref, warped)
    np.testing.assert_allclose(np.asarray(cost).ravel(), [1.5, 4.0])


def test_number_of_sources_is_dynamic():
    layer = cost_volume.CostVolume("adaptive")
    for num_sources in (1, 4):
        ref, warped = _volumes(8, num_sources)
        assert layer(ref, warped).shape == (2, 5, 3, 4, 8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="aggregation.*Received"):
        cost_volume.CostVolume("mean")
    with pytest.raises(ValueError, match="groups.*Received"):
        cost_volume.CostVolume("groupwise", groups=0)
    with pytest.raises(ValueError, match="multiple of `groups`"):
        cost_volume.CostVolume("groupwise", groups=3)(*_volumes(8))


def test_config_round_trip():
    layer = cost_volume.CostVolume("groupwise", groups=4)
    clone = cost_volume.CostVolume.from_config(layer.get_config())
    assert (clone.aggregation, clone.groups) == ("groupwise", 4)


@pytest.mark.parametrize("aggregation,expected_channels", [
    ("variance", 8), ("adaptive", 8), ("groupwise", 4)])
def test_layer_contract(tmp_path, aggregation, expected_channels):
    ref, warped = _volumes(8, num_sources=3)
    run_layer_test(cost_volume.CostVolume,
                   {"aggregation": aggregation, "groups": 4}, (ref, warped),
                   (2, 5, 3, 4, expected_channels), tmp_path)


def _sweep_inputs(channels, num_sources=3, seed=1):
    """Features, projections and planes of a small sideways rig."""
    rng = np.random.default_rng(seed)
    batch, height, width = 2, 6, 8
    ref = rng.normal(size=(batch, height, width, channels)).astype(
        np.float32)
    src = rng.normal(size=(batch, num_sources, height, width,
                           channels)).astype(np.float32)
    k = np.array([[6.0, 0.0, 4.0], [0.0, 6.0, 3.0], [0.0, 0.0, 1.0]])
    projections = np.tile(np.eye(4), (batch, num_sources + 1, 1, 1))
    projections[..., :3, :3] = k
    projections[..., 0, 3] = -0.7 * np.arange(num_sources + 1) * 6.0
    projections = projections.astype(np.float32)
    planes = np.tile(np.linspace(2.0, 5.0, 8, dtype=np.float32), (batch, 1))
    return ref, src, projections, planes


def _randomise(layer, seed=2):
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.uniform(0.2, 1.0, variable.shape).astype(
            np.float32))


@pytest.mark.parametrize("aggregation", cost_volume.AGGREGATIONS)
@pytest.mark.parametrize("training,recompute", [
    (False, False), (True, False), (True, True)])
def test_accumulate_equals_call_forward_gradients_and_bn(
        aggregation, training, recompute):
    import tensorflow as tf

    from keras_mvs import geometry

    channels = 8
    ref, src, projections, planes = _sweep_inputs(channels)
    layers = []
    for _ in range(2):
        layer = cost_volume.CostVolume(aggregation, groups=4)
        layer.build((None, None, None, channels),
                    (None,) * 5 + (channels,))
        _randomise(layer)
        layers.append(layer)
    stacked_layer, looped_layer = layers

    def warp(features, projection):
        return geometry.homography_warp(features, projection,
                                        projections[:, 0], planes)

    def stacked(ref, src):
        warped = tf.stack([warp(src[:, v], projections[:, v + 1])
                           for v in range(src.shape[1])], axis=1)
        return stacked_layer(ref, warped, training=training)

    @tf.function
    def looped(ref, src):
        return looped_layer.accumulate(ref, src, projections[:, 1:], warp,
                                       planes.shape[1], training=training,
                                       recompute=recompute)

    upstream = np.random.default_rng(3).normal(
        size=(2, 8, 6, 8, 4 if aggregation == "groupwise" else channels))
    results = []
    for function, layer in ((stacked, stacked_layer),
                            (looped, looped_layer)):
        ref_t, src_t = tf.constant(ref), tf.constant(src)
        with tf.GradientTape() as tape:
            tape.watch([ref_t, src_t])
            cost = function(ref_t, src_t)
            loss = tf.reduce_sum(cost * upstream)
        grads = tape.gradient(
            loss, [ref_t, src_t] + layer.trainable_weights)
        results.append((cost, grads, [w.numpy() for w in
                                       layer.non_trainable_weights]))
    (cost_a, grads_a, stats_a), (cost_b, grads_b, stats_b) = results
    np.testing.assert_allclose(cost_b, cost_a, rtol=1e-5, atol=1e-5)
    assert len(grads_a) == len(grads_b)
    # Some weight-net gradients (a BN gamma after a one-channel conv) are
    # sums of terms that nearly cancel: compare at the scale of the largest.
    scale = max(float(np.max(np.abs(grad))) for grad in grads_a)
    for grad_a, grad_b in zip(grads_a, grads_b):
        np.testing.assert_allclose(grad_b, grad_a, rtol=1e-4,
                                   atol=1e-5 * scale)
    for stat_a, stat_b in zip(stats_a, stats_b):
        np.testing.assert_allclose(stat_b, stat_a, rtol=1e-5, atol=1e-6)
    if training and aggregation == "adaptive":
        assert not np.allclose(stats_b[0], 0.0)  # the update happened


@pytest.mark.parametrize("aggregation", cost_volume.AGGREGATIONS)
def test_aggregate_planes_equals_accumulate(aggregation):
    import tensorflow as tf

    from keras_mvs import geometry

    channels = 8
    ref, src, projections, planes = _sweep_inputs(channels)
    layer = cost_volume.CostVolume(aggregation, groups=4)
    layer.build((None, None, None, channels), (None,) * 5 + (channels,))
    _randomise(layer)

    def warp(features, projection):
        return geometry.homography_warp(features, projection,
                                        projections[:, 0], planes)

    looped = tf.function(lambda: layer.accumulate(
        ref, src, projections[:, 1:], warp, planes.shape[1]))()
    by_plane = tf.function(lambda: layer.aggregate_planes(
        ref, _plane_sampler(src, projections, planes), src.shape[1],
        planes.shape[1]))()
    assert by_plane.shape == looped.shape
    # The same operations on every element, in the same order.
    np.testing.assert_allclose(by_plane, looped, rtol=1e-6, atol=1e-7)


def _plane_sampler(src, projections, planes):
    """`aggregate_planes`'s `sample_plane` by `homography_warp`."""
    import tensorflow as tf

    from keras_mvs import geometry

    src = tf.constant(src)
    projections = tf.constant(projections)
    planes = tf.constant(planes)

    def sample_plane(index, source):
        return geometry.homography_warp(
            tf.gather(src, source, axis=1),
            tf.gather(projections, source + 1, axis=1), projections[:, 0],
            planes[:, index:index + 1])[:, 0]  # [B, H, W, C]

    return sample_plane


@pytest.mark.parametrize("num_depths", [1, 2, 8])
@pytest.mark.parametrize("aggregation", cost_volume.AGGREGATIONS)
def test_aggregate_planes_stem_equals_conv0_of_volume(aggregation,
                                                      num_depths):
    # conv0 run inside the plane loop on a sliding window of three cost
    # planes (zeros beyond the volume) against conv0 on the stacked volume;
    # D = 1 and 2 have no interior plane.
    import tensorflow as tf

    from keras_mvs.layers import cost_regularization

    channels, base = 8, 4
    ref, src, projections, planes = _sweep_inputs(channels)
    planes = planes[:, :num_depths]
    layer = cost_volume.CostVolume(aggregation, groups=4)
    layer.build((None, None, None, channels), (None,) * 5 + (channels,))
    _randomise(layer)
    cost_channels = 4 if aggregation == "groupwise" else channels
    regularization = cost_regularization.CostRegularization(base)
    regularization.build((None, None, None, None, cost_channels))
    rng = np.random.default_rng(3)
    for variable in regularization.conv0.weights:
        variable.assign(rng.uniform(-0.5, 1.0, variable.shape).astype(
            np.float32))
    regularization.conv0.bn.moving_variance.assign(
        rng.uniform(0.5, 2.0, base).astype(np.float32))
    sample_plane = _plane_sampler(src, projections, planes)

    volume = tf.function(lambda: layer.aggregate_planes(
        ref, sample_plane, src.shape[1], num_depths))()
    expected = regularization.conv0(volume, training=False)
    stem = tf.function(lambda: layer.aggregate_planes(
        ref, sample_plane, src.shape[1], num_depths,
        stem=regularization.conv0_plane, stem_channels=base))()
    assert stem.shape == (2, num_depths, 6, 8, base)
    assert expected.shape == stem.shape
    # Not vacuous: both ReLU sides are hit.
    assert 0.2 < np.mean(np.asarray(expected) > 0) < 0.95
    np.testing.assert_allclose(stem, expected, rtol=1e-5, atol=1e-5)
    planes = tf.function(lambda: tf.transpose(layer.aggregate_planes(
        ref, sample_plane, src.shape[1], num_depths,
        stem=regularization.conv0_plane, stem_channels=base,
        stacked=False).stack(), [1, 0, 2, 3, 4]))()
    np.testing.assert_array_equal(planes, stem)


def test_aggregate_planes_stem_arguments():
    from keras_mvs.layers import cost_regularization

    ref, src, projections, planes = _sweep_inputs(8)
    layer = cost_volume.CostVolume("variance")
    regularization = cost_regularization.CostRegularization(4)
    regularization.build((None, None, None, None, 8))
    with pytest.raises(ValueError, match="stem_channels"):
        layer.aggregate_planes(ref, _plane_sampler(src, projections, planes),
                               src.shape[1], 8,
                               stem=regularization.conv0_plane)
    with pytest.raises(ValueError, match="stacked=False"):
        layer.aggregate_planes(ref, _plane_sampler(src, projections, planes),
                               src.shape[1], 8, stacked=False)
