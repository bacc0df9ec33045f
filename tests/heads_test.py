"""Tests for keras_mvs.heads on hand-worked volumes."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mvs import heads


def _column(values):
    """A `[1, D, 1, 1]` volume from a list of D values."""
    return np.asarray(values, np.float32)[np.newaxis, :, np.newaxis, np.newaxis]


def _logits_for(probabilities):
    """Logits whose softmax over D is exactly `probabilities` (no zeros)."""
    return np.log(_column(probabilities))


class TestUnityRegression:
    def test_picks_argmax_and_adds_offset(self):
        # argmax is k = 1 (u = 0.75): 12 + (1 - 0.75) * 2 = 12.5.
        depth = heads.unity_regression(
            _column([0.1, 0.75, 0.3]), _column([10.0, 12.0, 14.0]), 2.0)
        assert depth.shape == (1, 1, 1)
        np.testing.assert_allclose(depth.numpy().ravel(), [12.5], rtol=1e-6)

    def test_per_pixel_and_per_batch_interval(self):
        # Two batch elements, two pixels each, intervals [2, 4].
        unity = np.zeros((2, 3, 1, 2), np.float32)
        unity[0, :, 0, 0] = [0.9, 0.2, 0.1]   # k = 0, u = 0.9
        unity[0, :, 0, 1] = [0.1, 0.2, 0.5]   # k = 2, u = 0.5
        unity[1, :, 0, 0] = [0.3, 1.0, 0.2]   # k = 1, u = 1.0 (on the plane)
        unity[1, :, 0, 1] = [0.1, 0.6, 0.2]   # k = 1, u = 0.6
        hypotheses = np.zeros((2, 3, 1, 2), np.float32)
        hypotheses[0] = np.array([1.0, 3.0, 5.0])[:, None, None]
        hypotheses[1] = np.array([[10.0, 20.0], [14.0, 24.0],
                                  [18.0, 28.0]])[:, None, :]
        depth = heads.unity_regression(unity, hypotheses, [2.0, 4.0])
        expected = [[[1.0 + 0.1 * 2.0, 5.0 + 0.5 * 2.0]],
                    [[14.0, 24.0 + 0.4 * 4.0]]]
        np.testing.assert_allclose(depth.numpy(), expected, rtol=1e-6)

    def test_ties_pick_first_hypothesis(self):
        depth = heads.unity_regression(
            _column([0.5, 0.5, 0.2]), _column([1.0, 2.0, 3.0]), 1.0)
        np.testing.assert_allclose(depth.numpy().ravel(), [1.5])

    def test_bfloat16_input_gives_float32(self):
        depth = heads.unity_regression(
            tf.cast(_column([0.25, 0.5]), tf.bfloat16),
            _column([100.0, 101.0]), 1.0)
        assert depth.dtype == tf.float32
        np.testing.assert_allclose(depth.numpy().ravel(), [101.5])

    def test_rejects_wrong_rank(self):
        with pytest.raises(ValueError, match="unity.*Received"):
            heads.unity_regression(np.zeros((2, 3)), np.zeros((2, 3)), 1.0)


class TestUnityConfidence:
    def test_is_max_softmax_of_logits(self):
        # softmax(log [1, 2, 5]) = [1/8, 2/8, 5/8]; sigmoid is not involved.
        confidence = heads.unity_confidence(np.log(_column([1.0, 2.0, 5.0])))
        np.testing.assert_allclose(confidence.numpy().ravel(), [0.625],
                                   rtol=1e-6)


class TestSoftArgmin:
    def test_expectation_and_upper_border(self):
        # e = 0.2 + 0.6 + 1.2 = 2.0, k* = 2; window 1..4, index 4 missing.
        depth, confidence = heads.soft_argmin(
            _logits_for([0.1, 0.2, 0.3, 0.4]), _column([1.0, 2.0, 3.0, 4.0]))
        np.testing.assert_allclose(depth.numpy().ravel(), [3.0], rtol=1e-6)
        np.testing.assert_allclose(confidence.numpy().ravel(), [0.9],
                                   rtol=1e-6)

    def test_lower_border(self):
        # e = 0.1 + 0.2 + 0.15 + 0.2 = 0.65 -> k* = 0; window -1..2, so
        # p0 + p1 + p2 = 0.9 (p3 = 0.05 is outside the window).
        probabilities = [0.7, 0.1, 0.1, 0.05, 0.04, 0.01]
        _, confidence = heads.soft_argmin(
            _logits_for(probabilities), _column(np.arange(6.0)))
        np.testing.assert_allclose(confidence.numpy().ravel(), [0.9],
                                   rtol=1e-6)

    def test_truncates_expected_index(self):
        # e = 3.5 exactly: truncation gives k* = 3 and p2+p3+p4+p5 = 0.8;
        # rounding would give k* = 4 and 0.75.
        probabilities = [0.05, 0.05, 0.1, 0.3, 0.3, 0.1, 0.05, 0.05]
        np.testing.assert_allclose(
            np.dot(probabilities, np.arange(8)), 3.5, rtol=1e-12)
        depth, confidence = heads.soft_argmin(
            _logits_for(probabilities), np.arange(8.0)[None] * 2.0 + 1.0)
        np.testing.assert_allclose(confidence.numpy().ravel(), [0.8],
                                   rtol=1e-5)
        np.testing.assert_allclose(depth.numpy().ravel(), [8.0], rtol=1e-6)

    def test_depth_has_gradient_confidence_has_none(self):
        logits = tf.Variable(_logits_for([0.1, 0.2, 0.3, 0.4]))
        hypotheses = _column([1.0, 2.0, 3.0, 4.0])
        with tf.GradientTape(persistent=True) as tape:
            depth, confidence = heads.soft_argmin(logits, hypotheses)
        # d depth / d logit_k = p_k (h_k - depth).
        np.testing.assert_allclose(
            tape.gradient(depth, logits).numpy().ravel(),
            [0.1 * -2.0, 0.2 * -1.0, 0.0, 0.4 * 1.0], atol=1e-6)
        assert tape.gradient(confidence, logits) is None

    def test_rejects_bad_hypotheses(self):
        with pytest.raises(ValueError, match="depth_hypotheses.*Received"):
            heads.soft_argmin(np.zeros((1, 4, 2, 2)), np.zeros((4,)))
