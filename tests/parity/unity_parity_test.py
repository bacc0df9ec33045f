"""Unity labels, Unified Focal Loss and the depth heads against the official
code's outputs (`unity_ufl.npz`, `unity_regression.npz`)."""

import numpy as np
import official_outputs as ref
import pytest
import tensorflow as tf

from keras_mvs import heads
from keras_mvs.losses import depth as depth_losses

STAGES = (1, 2, 3)


def _stage(stage: int) -> dict:
    data = ref.load("unity_ufl")
    return {key[len(f"stage{stage}_"):]: value for key, value in data.items()
            if key.startswith(f"stage{stage}_")}


def _labels(stage: dict) -> np.ndarray:
    return depth_losses.unity_labels(
        stage["depth_gt"], stage["depth_values"],
        float(stage["interval"])).numpy()


@pytest.mark.parametrize("stage", STAGES)
def test_unity_labels(stage):
    data = _stage(stage)
    labels = _labels(data)
    on_hypothesis = data["gt_on_hypothesis"][:, None]  # [B, 1, H, W]
    expected = data["unity_labels"]
    # Everywhere: equal to float32 round-off of (g - h) / interval.
    np.testing.assert_allclose(labels, expected, rtol=0, atol=2e-6)
    # Off the on-hypothesis pixels the positive bin is the same one.
    np.testing.assert_array_equal((labels > 0) | on_hypothesis,
                                  (expected > 0) | on_hypothesis)


@pytest.mark.parametrize("stage", STAGES)
def test_ufl_per_element(stage):
    data = _stage(stage)
    labels = _labels(data)
    index = stage - 1
    alpha = float(ref.load("unity_ufl")["alphas"][index])
    gamma = float(ref.load("unity_ufl")["gammas"][index])
    # The loss restricted to the valid pixels off the on-hypothesis edge case
    # is the mean of the reference's per-element losses over those voxels,
    # and the reference's own strict scalar.
    keep = (data["mask"] > 0.5) & ~data["gt_on_hypothesis"]
    loss = depth_losses.unified_focal_loss(
        data["prob_volume"], labels, keep.astype(np.float32), alpha,
        gamma).numpy()
    per_element = data["per_element_loss"] * keep[:, None]
    expected = per_element.sum() / (keep.sum() * labels.shape[1])
    assert loss == pytest.approx(expected, rel=1e-4)
    assert loss == pytest.approx(float(data["loss_excl_on_hypothesis"]),
                                 rel=1e-4)


@pytest.mark.parametrize("stage", STAGES)
def test_ufl_stage_loss_including_on_hypothesis_pixels(stage):
    # Where the ground truth sits exactly on a hypothesis, float rounding
    # gives the previous bin a ~1e-7 positive label and flips that voxel's
    # focal weight (README, unity_ufl.npz). `unity_labels` writes the bin
    # test as the reference does, so it rounds the same way and the whole
    # stage loss agrees too.
    data = _stage(stage)
    index = stage - 1
    loss = depth_losses.unified_focal_loss(
        data["prob_volume"], _labels(data), data["mask"],
        float(ref.load("unity_ufl")["alphas"][index]),
        float(ref.load("unity_ufl")["gammas"][index])).numpy()
    assert loss == pytest.approx(float(data["loss"]), rel=1e-5)


def test_ufl_total_through_the_cascade_loss():
    """`supervised_cascade_loss` (BCE from the logits, as training uses it)
    against the reference `mvs_loss(mode="unification")` total."""
    all_data = ref.load("unity_ufl")
    total = 0.0
    for index, stage in enumerate(STAGES):
        data = _stage(stage)
        prob = data["prob_volume"].astype(np.float64)
        stage_outputs = {
            "depth": tf.constant(data["depth_gt"]),
            "volume": data["prob_volume"],
            "logits": np.log(prob / (1.0 - prob)).astype(np.float32),
            "hypotheses": data["depth_values"],
            "interval": np.full([2], data["interval"], np.float32),
        }
        # Each stage has its own ground truth here, so the cascade loss is
        # called per stage with that stage's weight and constants.
        total += depth_losses.supervised_cascade_loss(
            [stage_outputs], data["depth_gt"], data["mask"],
            stage_weights=(all_data["dlossw"][index],),
            alphas=(all_data["alphas"][index],),
            gammas=(all_data["gammas"][index],))["total"].numpy()
    assert total == pytest.approx(float(all_data["total_loss_unification"]),
                                  rel=1e-4)


def test_constants_are_the_reference_ones():
    data = ref.load("unity_ufl")
    np.testing.assert_array_equal(depth_losses.UFL_ALPHAS, data["alphas"])
    np.testing.assert_array_equal(depth_losses.UFL_GAMMAS, data["gammas"])
    np.testing.assert_array_equal(depth_losses.STAGE_WEIGHTS, data["dlossw"])


# === Depth heads (unity_regression.npz) ===


def _heads():
    data = ref.load("unity_regression")
    return data, data["cost_reg"][:, 0]  # logits [B, D, H, W]


def test_unity_regression_and_confidence():
    data, logits = _heads()
    unity = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(unity, data["prob_volume"], rtol=1e-5,
                               atol=1e-6)
    depth = heads.unity_regression(data["prob_volume"], data["depth_values"],
                                   float(data["interval"])).numpy()
    np.testing.assert_allclose(depth, data["depth"], rtol=1e-6)
    np.testing.assert_allclose(depth, data["unification_depth"], rtol=1e-6)
    confidence = heads.unity_confidence(logits).numpy()
    np.testing.assert_allclose(confidence, data["unification_confidence"],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["regression", "clmvsnet"])
def test_soft_argmin_depth_and_confidence(family):
    # CasMVSNet/UniMVSNet's regression head and CL-MVSNet's RegressionDepth
    # give the same depth and 4-neighbour confidence.
    data, logits = _heads()
    depth, confidence = heads.soft_argmin(logits, data["depth_values"])
    np.testing.assert_allclose(depth.numpy(), data[f"{family}_depth"],
                               rtol=1e-5)
    np.testing.assert_allclose(confidence.numpy(),
                               data[f"{family}_confidence"], rtol=1e-4,
                               atol=1e-6)


def test_soft_argmin_with_planes_per_batch():
    data = ref.load("unity_regression")
    probability = data["depth_regression_1d_prob"]
    depth, _ = heads.soft_argmin(np.log(probability),
                                 data["depth_regression_1d_values"])
    np.testing.assert_allclose(depth.numpy(), data["depth_regression_1d"],
                               rtol=1e-5)
