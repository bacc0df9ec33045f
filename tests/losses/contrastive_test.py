"""Tests for keras_mvs.losses.contrastive: consistency losses and masks."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mvs.losses import contrastive
from keras_mvs.losses import depth as depth_losses

PSEUDO = np.arange(16, dtype=np.float32).reshape(1, 4, 4)


def _branch(coarse_offsets, fine_offset):
    """Two stages (2x2, 4x4) whose depth is the pseudo depth plus offsets."""
    coarse = PSEUDO[:, ::2, ::2] + np.asarray(coarse_offsets, np.float32)
    return [{"depth": tf.Variable(coarse)},
            {"depth": tf.Variable(PSEUDO + fine_offset)}]


def test_icc_hand_values_outside_rectangle_only_and_no_pseudo_gradient():
    # Coarse offsets [[0.5, 2], [0, 0]]; the rectangle covers the top-left
    # 2x2 block, whose top-left pixel is the coarse pixel (0, 0): that pixel
    # is dropped, leaving smooth-L1 (2 -> 1.5, 0, 0) / 3 = 0.5. Fine: 12
    # unmasked pixels off by 0.5 -> 0.125 each.
    stages = _branch([[[0.5, 2.0], [0.0, 0.0]]], 0.5)
    filter_mask = np.ones((1, 4, 4), np.float32)
    filter_mask[0, :2, :2] = 0.0
    pseudo = tf.Variable(PSEUDO)
    with tf.GradientTape() as tape:
        terms = contrastive.icc_consistency_loss(stages, pseudo, filter_mask,
                                                 stage_weights=(0.5, 1.0))
    assert float(terms["icc/stage1"]) == pytest.approx(0.5)
    assert float(terms["icc/stage2"]) == pytest.approx(0.125)
    assert float(terms["total"]) == pytest.approx(0.5 * 0.5 + 0.125)
    gradients = tape.gradient(terms["total"],
                              [pseudo, stages[0]["depth"]])
    assert gradients[0] is None
    # d/dx of smooth-L1 mean: clip(diff, -1, 1) / 3 per valid pixel, x 0.5.
    np.testing.assert_allclose(gradients[1].numpy(),
                               [[[0.0, 0.5 / 3], [0.0, 0.0]]], atol=1e-7)


def test_scc_confidence_threshold_and_empty_mask():
    stages = _branch([[[3.0, 1.0], [0.0, 0.0]]], 0.0)
    confidence = np.full((1, 4, 4), 0.99, np.float32)
    confidence[0, 0, 2] = 0.95  # not > 0.95: coarse pixel (0, 1) dropped
    terms = contrastive.scc_consistency_loss(stages, PSEUDO, confidence,
                                             stage_weights=(1.0, 2.0))
    # Coarse: smooth-L1(3) = 2.5 over the 3 confident pixels.
    assert float(terms["scc/stage1"]) == pytest.approx(2.5 / 3)
    assert float(terms["scc/stage2"]) == 0.0
    assert float(terms["total"]) == pytest.approx(2.5 / 3)
    empty = contrastive.scc_consistency_loss(
        stages, PSEUDO, np.zeros_like(confidence), stage_weights=(1.0, 2.0))
    assert float(empty["total"]) == 0.0


def test_pseudo_unity_loss_is_ufl_against_detached_pseudo_labels():
    rng = np.random.default_rng(0)
    stages = []
    for size, interval in ((2, 2.0), (4, 1.0)):
        logits = tf.Variable(rng.normal(size=(1, 4, size, size)),
                             dtype=tf.float32)
        base = PSEUDO[:, ::4 // size, ::4 // size]
        hypotheses = base[:, None] + interval * (np.arange(4) - 1.7)[
            None, :, None, None]
        stages.append({"depth": tf.constant(base), "logits": logits,
                       "hypotheses": tf.constant(hypotheses, tf.float32),
                       "interval": tf.constant([interval])})
    mask = np.ones((1, 4, 4), np.float32)
    mask[0, 1:, 1:] = 0.0
    pseudo = tf.Variable(PSEUDO)
    with tf.GradientTape(persistent=True) as tape:
        # The unity volume is sigmoid(logits), as the network makes it.
        for stage in stages:
            stage["volume"] = tf.sigmoid(stage["logits"])
        terms = contrastive.pseudo_unity_loss(
            stages, pseudo, mask, stage_weights=(0.5, 1.0),
            alphas=(0.75, 0.5), gammas=(2.0, 1.0))
    assert set(terms) == {"pseudo_ufl/stage1", "pseudo_ufl/stage2", "total"}
    labels = depth_losses.unity_labels(PSEUDO, stages[1]["hypotheses"], 1.0)
    expected = depth_losses.unified_focal_loss(stages[1]["volume"], labels,
                                               mask, 0.5, 1.0)
    assert float(terms["pseudo_ufl/stage2"]) == pytest.approx(
        float(expected), rel=1e-5)
    assert tape.gradient(terms["total"], pseudo) is None
    assert tape.gradient(terms["total"], stages[0]["logits"]) is not None


def test_reference_rectangle_mask_size_bounds_and_determinism():
    height, width = 7, 10  # rectangle 2 x 3, top in [0, 5), left in [0, 7)
    tops, lefts = set(), set()
    for i in range(120):
        mask = contrastive.reference_rectangle_mask([i, 7], 2, height,
                                                    width).numpy()
        assert mask.shape == (2, height, width)
        np.testing.assert_array_equal(mask[0], mask[1])
        rows, cols = np.nonzero(mask[0] == 0)
        assert len(rows) == 2 * 3
        assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 2
        tops.add(rows.min())
        lefts.add(cols.min())
    assert tops == set(range(5)) and lefts == set(range(7))
    first = contrastive.reference_rectangle_mask([3, 4], 1, height, width)
    again = contrastive.reference_rectangle_mask([3, 4], 1, height, width)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="shape"):
        contrastive.reference_rectangle_mask([1, 2, 3], 1, height, width)


def test_source_masking_rate_fill_and_reference_untouched():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.6, 1.0, size=(2, 3, 40, 40, 3)).astype(np.float32)
    masked = contrastive.apply_source_masking(images, [5, 6], 0.1).numpy()
    np.testing.assert_array_equal(masked[:, 0], images[:, 0])
    changed = masked[:, 1:] != images[:, 1:]
    # 2 x 2 x 40 x 40 x 3 = 19200 draws: std of the rate is 0.0022.
    assert changed.mean() == pytest.approx(0.1, abs=0.01)
    fill = np.broadcast_to(
        np.float32(contrastive.IMAGENET_MEAN), changed.shape)
    np.testing.assert_array_equal(masked[:, 1:][changed], fill[changed])
    # Per channel: the three channels of a pixel are masked independently.
    all_three = changed.all(axis=-1).mean()
    assert all_three < 0.01
    again = contrastive.apply_source_masking(images, [5, 6], 0.1).numpy()
    np.testing.assert_array_equal(masked, again)
    unmasked = contrastive.apply_source_masking(images, [5, 6], 0.0).numpy()
    np.testing.assert_array_equal(unmasked, images)


def test_apply_reference_mask_fills_rectangle_only():
    images = np.ones((1, 2, 6, 6, 3), np.float32)
    filter_mask = contrastive.reference_rectangle_mask([1, 1], 1, 6, 6)
    out = contrastive.apply_reference_mask(images, filter_mask).numpy()
    inside = filter_mask.numpy()[0] == 0
    np.testing.assert_allclose(out[0, 0][inside],
                               np.broadcast_to(contrastive.IMAGENET_MEAN,
                                               (4, 3)))
    np.testing.assert_array_equal(out[0, 0][~inside], 1.0)
    np.testing.assert_array_equal(out[0, 1], images[0, 1])
