"""Tests for keras_mvs.losses.depth: unity labels, UFL, smooth-L1, cascade."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_mvs.losses import depth as depth_losses

# A 2x2 case with D = 2 hypotheses 1 and 2 at every pixel and interval 1:
#   (0, 0): g = 1.0, exactly on h_0          -> q = [1, 0]
#   (0, 1): g = 1.25, inside bin 0           -> q = [0.75, 0]
#   (1, 0): g = 3.5, above h_1 + interval    -> q = [0, 0]   (outside the span)
#   (1, 1): g = 2.5, inside bin 1, but masked -> q = [0, 0.5]
GT = np.array([[[1.0, 1.25], [3.5, 2.5]]], np.float32)
MASK = np.array([[[1.0, 1.0], [1.0, 0.0]]], np.float32)
HYPOTHESES = np.broadcast_to(
    np.array([1.0, 2.0], np.float32)[None, :, None, None], (1, 2, 2, 2))
UNITY = np.array([[[[0.9, 0.6], [0.3, 0.5]],
                   [[0.1, 0.2], [0.4, 0.7]]]], np.float32)


def _base5(x):
    return 1.0 / (1.0 + 5.0 ** -x)


def _element(u, q, q_star, alpha, gamma):
    """One voxel's weighted BCE, straight from ALGORITHMS.md 3.3."""
    bce = -(q * math.log(u) + (1 - q) * math.log(1 - u))
    if q > 0:
        weight = (1 + 4 * (_base5(abs(q_star - u) / q_star) - 0.5)) ** gamma
    else:
        weight = alpha * (2 * (_base5(u / q_star) - 0.5)) ** gamma
    return weight * bce


def test_unity_labels_hand_values():
    labels = depth_losses.unity_labels(GT, HYPOTHESES, 1.0).numpy()
    expected = np.array([[[[1.0, 0.75], [0.0, 0.0]],
                          [[0.0, 0.0], [0.0, 0.5]]]], np.float32)
    np.testing.assert_allclose(labels, expected, atol=1e-7)


def test_unity_labels_bins_are_half_open_and_interval_per_batch():
    # g = h_1 + interval exactly is outside; g just below h_0 is outside.
    gt = np.array([[[3.0, 0.999]]], np.float32).repeat(2, axis=0)
    hypotheses = np.broadcast_to(
        np.array([1.0, 2.0], np.float32)[None, :, None, None], (2, 2, 1, 2))
    labels = depth_losses.unity_labels(gt, hypotheses, [1.0, 2.0]).numpy()
    # Batch 0, interval 1: both pixels outside the span.
    np.testing.assert_array_equal(labels[0], np.zeros((2, 1, 2)))
    # Batch 1, interval 2: g = 3 lies in bin 1 [2, 4): q = 1 - 1/2.
    np.testing.assert_allclose(labels[1, :, 0, 0], [0.0, 0.5])
    np.testing.assert_array_equal(labels[1, :, 0, 1], [0.0, 0.0])


def test_ufl_one_element_by_hand():
    # Pixel (0, 1) alone: q = [0.75, 0], q* = 0.75, u = [0.6, 0.2], stage 1
    # constants alpha = 0.75, gamma = 2.
    #   positive: S5(|0.75 - 0.6| / 0.75) = S5(0.2) = 0.579784,
    #             S+ = 1 + 4 (0.579784 - 0.5) = 1.319137, w = S+^2 = 1.740122,
    #             BCE = -(0.75 ln 0.6 + 0.25 ln 0.4) = 0.612192, loss 1.065289
    #   negative: S5(0.2 / 0.75) = 0.605679, S- = 0.211357,
    #             w = 0.75 S-^2 = 0.033504, BCE = -ln 0.8 = 0.223144,
    #             loss 0.007476
    # Mean over the 2 voxels of the single valid pixel.
    unity = np.array([0.6, 0.2], np.float32).reshape(1, 2, 1, 1)
    labels = np.array([0.75, 0.0], np.float32).reshape(1, 2, 1, 1)
    loss = depth_losses.unified_focal_loss(
        unity, labels, np.ones((1, 1, 1), np.float32), alpha=0.75, gamma=2.0)
    assert float(loss) == pytest.approx((1.065289 + 0.007476) / 2, abs=2e-6)


def test_ufl_two_by_two_case_outside_span_on_hypothesis_and_masked():
    labels = depth_losses.unity_labels(GT, HYPOTHESES, 1.0)
    loss = depth_losses.unified_focal_loss(UNITY, labels, MASK, 0.5, 1.0)
    # Valid pixels: (0, 0) with q* = 1, (0, 1) with q* = 0.75 and (1, 0)
    # with no positive (q* = 1): 3 pixels x D = 6 voxels.
    expected = (
        _element(0.9, 1.0, 1.0, 0.5, 1.0) + _element(0.1, 0.0, 1.0, 0.5, 1.0)
        + _element(0.6, 0.75, 0.75, 0.5, 1.0)
        + _element(0.2, 0.0, 0.75, 0.5, 1.0)
        + _element(0.3, 0.0, 1.0, 0.5, 1.0)
        + _element(0.4, 0.0, 1.0, 0.5, 1.0)) / 6
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # The pixel exactly on h_0 with u = 0.9: S+ = 1 + 4 (S5(0.1) - 0.5).
    assert _element(0.9, 1.0, 1.0, 0.5, 1.0) == pytest.approx(
        (1 + 4 * (_base5(0.1) - 0.5)) * -math.log(0.9))

    # The masked pixel does not contribute, whatever its prediction.
    changed = UNITY.copy()
    changed[0, :, 1, 1] = [0.999, 0.001]
    loss_changed = depth_losses.unified_focal_loss(changed, labels, MASK, 0.5,
                                                   1.0)
    assert float(loss_changed) == pytest.approx(float(loss), rel=1e-7)


def test_ufl_all_masked_is_zero_with_finite_gradient():
    unity = tf.Variable(UNITY)
    labels = depth_losses.unity_labels(GT, HYPOTHESES, 1.0)
    with tf.GradientTape() as tape:
        loss = depth_losses.unified_focal_loss(unity, labels,
                                               np.zeros_like(MASK), 0.25, 0.0)
    gradient = tape.gradient(loss, unity)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(gradient.numpy(), np.zeros_like(UNITY))


def test_ufl_gamma_zero_is_alpha_weighted_bce_with_finite_gradient_at_zero():
    # Stage 3 (gamma = 0): plain BCE with negatives weighted by alpha. u = 0
    # on a negative makes S- = 0, where a naive pow(0, 0) gradient is NaN.
    unity = tf.Variable(np.array([0.7, 0.0], np.float32).reshape(1, 2, 1, 1))
    labels = np.array([1.0, 0.0], np.float32).reshape(1, 2, 1, 1)
    with tf.GradientTape() as tape:
        loss = depth_losses.unified_focal_loss(
            unity, labels, np.ones((1, 1, 1), np.float32), 0.25, 0.0)
    gradient = tape.gradient(loss, unity).numpy()
    assert float(loss) == pytest.approx(-math.log(0.7) / 2, rel=1e-6)
    assert np.all(np.isfinite(gradient))
    assert gradient[0, 0, 0, 0] == pytest.approx(-1 / 0.7 / 2, rel=1e-5)


def test_ufl_gradient_flows_through_focal_weights():
    # One voxel, q = 1, u = 0.6, gamma = 2: loss = S+(u)^2 * (-ln u) with
    # S+ = 1 + 4 (S5(1 - u) - 0.5), dS+/du = -4 ln5 S5 (1 - S5).
    u = 0.6
    s5 = _base5(1 - u)
    scale = 1 + 4 * (s5 - 0.5)
    dscale = -4 * math.log(5) * s5 * (1 - s5)
    full = 2 * scale * dscale * -math.log(u) + scale**2 * (-1 / u)
    detached = scale**2 * (-1 / u)
    unity = tf.Variable(np.full((1, 1, 1, 1), u, np.float32))
    with tf.GradientTape() as tape:
        loss = depth_losses.unified_focal_loss(
            unity, np.ones((1, 1, 1, 1), np.float32),
            np.ones((1, 1, 1), np.float32), 0.75, 2.0)
    gradient = float(tape.gradient(loss, unity)[0, 0, 0, 0])
    assert gradient == pytest.approx(full, rel=1e-5)
    assert abs(gradient - detached) > 0.5


def test_ufl_from_logits_matches_clamped_bce_on_normal_values():
    rng = np.random.default_rng(0)
    logits = rng.uniform(-6, 6, size=(2, 4, 3, 3)).astype(np.float32)
    hypotheses = np.broadcast_to(
        np.arange(4, dtype=np.float32)[None, :, None, None], (2, 4, 3, 3))
    gt = rng.uniform(-0.5, 4.5, size=(2, 3, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, 3, 3)) > 0.3).astype(np.float32)
    labels = depth_losses.unity_labels(gt, hypotheses, 1.0)
    unity = tf.sigmoid(logits)
    for alpha, gamma in zip(depth_losses.UFL_ALPHAS, depth_losses.UFL_GAMMAS):
        reference = depth_losses.unified_focal_loss(unity, labels, mask,
                                                    alpha, gamma)
        stable = depth_losses.unified_focal_loss(unity, labels, mask, alpha,
                                                 gamma, logits=logits)
        assert float(stable) == pytest.approx(float(reference), rel=1e-5)


def test_ufl_clamps_logs_at_minus_100_like_pytorch():
    # u = 0 on a positive: BCE = 100 (clamped), S+ = 1 + 4 (S5(1) - 0.5).
    loss = depth_losses.unified_focal_loss(
        np.zeros((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32),
        np.ones((1, 1, 1), np.float32), 0.75, 1.0)
    assert float(loss) == pytest.approx(100 * (1 + 4 * (_base5(1.0) - 0.5)),
                                        rel=1e-6)


def test_masked_smooth_l1_hand_values():
    pred = np.array([[[1.0, 2.0], [3.0, 10.0]]], np.float32)
    true = np.array([[[1.5, 4.0], [3.0, 0.0]]], np.float32)
    # Diffs -0.5, -2, 0 on valid pixels: 0.125 + 1.5 + 0 over 3 pixels.
    loss = depth_losses.masked_smooth_l1(pred, true, MASK)
    assert float(loss) == pytest.approx(1.625 / 3, rel=1e-6)
    assert float(depth_losses.masked_smooth_l1(
        pred, true, np.zeros_like(MASK))) == 0.0
    # beta = 4: every diff is quadratic, 0.5 * 4 / 4 = 0.5 for diff -2.
    loss = depth_losses.masked_smooth_l1(pred, true, MASK, beta=4.0)
    assert float(loss) == pytest.approx((0.03125 + 0.5) / 3, rel=1e-6)


def test_downsample_to_takes_top_left_pixel_static_and_dynamic():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    expected = [[[0.0, 2.0], [8.0, 10.0]]]
    np.testing.assert_array_equal(depth_losses.downsample_to(x, 2, 2),
                                  expected)
    np.testing.assert_array_equal(depth_losses.downsample_to(x, 4, 4), x)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None])])
    def dynamic(t):
        return depth_losses.downsample_to(t, tf.shape(t)[1] // 2,
                                          tf.shape(t)[2] // 2)

    np.testing.assert_array_equal(dynamic(x), expected)
    with pytest.raises(ValueError, match="multiple"):
        depth_losses.downsample_to(x, 3, 2)


def _stage(gt, num_depths, interval, logits_seed):
    """A fake unity stage with hypotheses around the stage's ground truth."""
    height, width = gt.shape[1:]
    offsets = (np.arange(num_depths) - num_depths / 2) * interval
    hypotheses = (np.round(gt.mean()) + offsets)[None, :, None, None]
    hypotheses = np.broadcast_to(hypotheses, (1, num_depths, height, width))
    logits = np.random.default_rng(logits_seed).normal(
        size=(1, num_depths, height, width)).astype(np.float32)
    return {
        "depth": tf.constant(gt[:, :height, :width] + 0.1),
        "volume": tf.sigmoid(logits),
        "logits": tf.constant(logits),
        "hypotheses": tf.constant(hypotheses.astype(np.float32)),
        "interval": tf.constant([interval], tf.float32),
    }


def test_supervised_cascade_loss_unity_and_regression():
    gt = np.arange(16, dtype=np.float32).reshape(1, 4, 4) / 4 + 5
    mask = np.ones((1, 4, 4), np.float32)
    mask[0, 0, 0] = 0.0
    coarse_gt = gt[:, ::2, ::2]
    stages = [_stage(coarse_gt, 4, 1.0, 1), _stage(gt, 4, 0.5, 2)]
    terms = depth_losses.supervised_cascade_loss(
        stages, gt, mask, stage_weights=(0.5, 1.0), alphas=(0.75, 0.5),
        gammas=(2.0, 1.0))
    assert set(terms) == {"ufl/stage1", "ufl/stage2", "total"}
    stage1 = depth_losses.unified_focal_loss(
        stages[0]["volume"],
        depth_losses.unity_labels(coarse_gt, stages[0]["hypotheses"], 1.0),
        mask[:, ::2, ::2], 0.75, 2.0)
    assert float(terms["ufl/stage1"]) == pytest.approx(float(stage1),
                                                       rel=1e-5)
    assert float(terms["total"]) == pytest.approx(
        0.5 * float(terms["ufl/stage1"]) + float(terms["ufl/stage2"]),
        rel=1e-6)

    terms = depth_losses.supervised_cascade_loss(
        stages, gt, mask, head="regression", stage_weights=(0.5, 1.0))
    # Every prediction is off by 0.1: smooth-L1 = 0.5 * 0.01.
    assert float(terms["smooth_l1/stage1"]) == pytest.approx(0.005, rel=1e-4)
    assert float(terms["total"]) == pytest.approx(1.5 * 0.005, rel=1e-4)


def test_supervised_cascade_loss_rejects_bad_arguments():
    gt = np.ones((1, 4, 4), np.float32)
    stages = [_stage(gt, 4, 1.0, 0)]
    with pytest.raises(ValueError, match="head"):
        depth_losses.supervised_cascade_loss(stages, gt, gt, head="softmax")
    with pytest.raises(ValueError, match="one entry per stage"):
        depth_losses.supervised_cascade_loss(stages, gt, gt)
