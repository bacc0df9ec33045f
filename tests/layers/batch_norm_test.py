"""BatchNorm: the shared layer contract, and per-group statistics."""

import numpy as np

from keras_mvs.layers import batch_norm
from keras_mvs.testing.layers import run_layer_test


def test_batch_norm_layer_contract(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 6)).astype(np.float32)
    run_layer_test(batch_norm.BatchNorm, {"momentum": 0.8, "epsilon": 1e-3},
                   x, (4, 3, 5, 6), tmp_path, call_kwargs={"groups": 2})


def test_batch_norm_defaults_are_pytorch_s():
    layer = batch_norm.BatchNorm.from_config(
        batch_norm.BatchNorm().get_config())
    assert (layer.epsilon, layer.momentum) == (1e-5, 0.9)


def test_groups_are_normalised_apart():
    # Batch index b * G + g: group 0 holds samples 0 and 2, group 1 samples
    # 1 and 3; each group is normalised with its own mean and variance.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 2, 3, 5)).astype(np.float32)
    x[1::2] = 10.0 + 3.0 * x[1::2]
    layer = batch_norm.BatchNorm(center=False, scale=False)
    y = np.asarray(layer(x, training=True, groups=2))
    for group in (0, 1):
        members = x[group::2]
        expected = (members - members.mean(axis=(0, 1, 2))) / np.sqrt(
            members.var(axis=(0, 1, 2)) + 1e-5)
        np.testing.assert_allclose(y[group::2], expected, atol=1e-4)


def test_deferred_updates_cover_their_own_thread_only():
    # MirroredStrategy traces each replica in its own thread, switching
    # between them inside a step (SyncBN's all-reduce): a replica outside
    # `deferred_updates` must update its moving averages while another
    # replica's thread is inside the block.
    import threading

    x = np.random.default_rng(2).normal(3.0, 1.0, (4, 2, 2, 3)).astype(
        np.float32)
    deferring, outside = batch_norm.BatchNorm(), batch_norm.BatchNorm()
    for layer in (deferring, outside):
        layer.build(x.shape)
    inside, done = threading.Event(), threading.Event()
    collected = []

    def replica():
        with batch_norm.deferred_updates() as updates:
            deferring(x, training=True)
            inside.set()
            done.wait(10)
        collected.extend(entry[0] for entry in updates)

    thread = threading.Thread(target=replica)
    thread.start()
    assert inside.wait(10)
    outside(x, training=True)  # while the other thread defers
    done.set()
    thread.join()
    assert collected == [deferring]
    np.testing.assert_allclose(np.asarray(outside.moving_mean),
                               0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(deferring.moving_mean), 0.0)


def _ops(function, *args):
    graph = function.get_concrete_function(*args).graph
    types = {op.type for op in graph.get_operations()}
    for fn in graph._functions.values():  # the gradient's, when traced
        types |= {node.op for node in fn.definition.node_def}
    return types


def test_one_group_takes_the_fused_kernel_with_pytorchs_statistics():
    # 5-D as the 3-D U-Nets call it: normalised with the biased variance,
    # the moving variance updated with the unbiased one (PyTorch), and the
    # gradient of the elementwise formulation (which a tensor `groups`
    # still takes).
    import tensorflow as tf

    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (2, 4, 5, 6, 3)).astype(np.float32)
    weights = tf.constant(rng.normal(size=x.shape).astype(np.float32))
    layer = batch_norm.BatchNorm()
    layer.build(x.shape)
    layer.gamma.assign([0.5, 1.0, 2.0])
    layer.beta.assign([0.1, -0.2, 0.3])

    def loss_and_grads(inputs, groups):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y, means, variances = layer.normalize_training(inputs, groups)
            loss = tf.reduce_sum(tf.nn.relu(y) * weights)
        return (y, means, variances,
                *tape.gradient(loss, [inputs, layer.gamma, layer.beta]))

    fused = tf.function(lambda v: loss_and_grads(v, None))
    elementwise = tf.function(lambda v: loss_and_grads(v, tf.constant(1)))
    assert "FusedBatchNormV3" in _ops(fused, x)
    assert "FusedBatchNormV3" not in _ops(elementwise, x)
    # A SyncBN layer keeps the two-pass formulation on one device too.
    synced = batch_norm.BatchNorm(synchronized=True)
    synced.build(x.shape)
    assert "FusedBatchNormV3" not in _ops(
        tf.function(lambda v: synced.normalize_training(v)), x)

    y, means, variances, *grads = fused(x)
    mean, var = x.mean(axis=(0, 1, 2, 3)), x.var(axis=(0, 1, 2, 3))
    expected = ((x - mean) / np.sqrt(var + 1e-5) * [0.5, 1.0, 2.0]
                + [0.1, -0.2, 0.3])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    n = x.size // 3
    np.testing.assert_allclose(means, [mean], rtol=1e-5)
    np.testing.assert_allclose(variances, [var * n / (n - 1)], rtol=1e-5)
    for fused_value, plain in zip(grads, elementwise(x)[3:]):
        np.testing.assert_allclose(fused_value, plain, rtol=1e-5,
                                   atol=1e-5)
    layer(x, training=True)  # the moving averages: 0.9 old + 0.1 batch
    np.testing.assert_allclose(layer.moving_variance,
                               0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
