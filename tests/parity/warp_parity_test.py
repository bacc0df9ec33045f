"""Plane-sweep warp, cost volumes and cascade hypotheses against the
official code's outputs (`homo_warping.npz`, `depth_range_samples.npz`)."""

import numpy as np
import official_outputs as ref
import pytest

from keras_mvs import geometry
from keras_mvs.layers import cost_volume

# Tolerances of the reference README: rtol 1e-4 / atol 1e-5 for element-wise
# outputs. The warp's absolute atol is 1e-4 because the projected
# coordinates carry float32 round-off of order 1e-5 px (|features| < 5).
WARP_RTOL, WARP_ATOL = 1e-4, 1e-4


def _warp_inputs():
    data = ref.load("homo_warping")
    return data, ref.nchw_to_nhwc(data["src_fea"])


@pytest.mark.parametrize("hypotheses", ["1d", "pix"])
@pytest.mark.parametrize("sampling,suffix", [
    ("align_corners_false", ""),  # what the official code computes
    ("exact", "_align_corners_true"),  # what it meant to compute
])
def test_homography_warp_matches_official(hypotheses, sampling, suffix):
    data, src = _warp_inputs()
    warped = geometry.homography_warp(
        src, data["src_proj"], data["ref_proj"],
        data[f"depth_values_{hypotheses}"], sampling=sampling).numpy()
    expected = ref.ncdhw_to_ndhwc(data[f"warped_{hypotheses}{suffix}"])
    np.testing.assert_allclose(warped, expected, rtol=WARP_RTOL,
                               atol=WARP_ATOL)


def test_the_two_samplings_differ_by_far_more_than_the_tolerance():
    # Pins why the mode matters: matching one sampling is no accident.
    data, src = _warp_inputs()
    warped = geometry.homography_warp(
        src, data["src_proj"], data["ref_proj"], data["depth_values_pix"],
        sampling="exact").numpy()
    other = ref.ncdhw_to_ndhwc(data["warped_pix"])
    assert np.abs(warped - other).max() > 1.0


def test_unknown_sampling_is_refused():
    data, src = _warp_inputs()
    with pytest.raises(ValueError, match="sampling"):
        geometry.homography_warp(src, data["src_proj"], data["ref_proj"],
                                 data["depth_values_1d"], sampling="nearest")


def _aggregation_inputs():
    """Reference features `[B, H, W, C]` and the two sources warped with the
    official sampling, `[B, N, D, H, W, C]`."""
    data = ref.load("homo_warping")
    features = ref.nchw_to_nhwc(data["agg_features"])  # [B, V, H, W, C]
    intrinsics, cam_from_world = ref.split_cams(data["agg_proj_matrices"])
    proj = geometry.projection_matrices(intrinsics, cam_from_world).numpy()
    warped = np.stack([
        geometry.homography_warp(
            features[:, v], proj[:, v], proj[:, 0], data["depth_values_pix"],
            sampling="align_corners_false").numpy()
        for v in (1, 2)], axis=1)
    return data, features[:, 0], warped


def test_variance_volume_matches_official():
    data, ref_features, warped = _aggregation_inputs()
    volume = cost_volume.CostVolume("variance")(ref_features, warped)
    np.testing.assert_allclose(
        np.asarray(volume), ref.ncdhw_to_ndhwc(data["variance_volume"]),
        rtol=1e-4, atol=1e-4)


def test_groupwise_volume_matches_official():
    data, ref_features, warped = _aggregation_inputs()
    volume = cost_volume.CostVolume("groupwise", groups=4)(ref_features,
                                                           warped)
    np.testing.assert_allclose(
        np.asarray(volume), ref.ncdhw_to_ndhwc(data["groupwise_volume_G4"]),
        rtol=1e-4, atol=1e-4)


# === Cascade hypotheses ===


def _samples():
    data = ref.load("depth_range_samples")
    base = float(data["depth_interval"])
    return data, base


def test_base_interval_divides_by_192_like_the_reference():
    data, base = _samples()
    values = data["init_depth_values"][0]
    assert base == pytest.approx((values[-1] - values[0]) / 192, rel=1e-6)


@pytest.mark.parametrize("family", ["uni", "cas", "clmvsnet"])
def test_stage1_hypotheses(family):
    data, _ = _samples()
    first, last = data["init_depth_values"][:, 0], data[
        "init_depth_values"][:, -1]
    hypotheses = geometry.initial_depth_hypotheses(first, last, 48, 16, 20)
    np.testing.assert_allclose(hypotheses.numpy(),
                               data[f"{family}_stage1_samples"],
                               rtol=1e-6, atol=1e-4)
    interval = (last[0] - first[0]) / 47
    assert interval == pytest.approx(float(data["uni_stage1_interval"]),
                                     rel=1e-6)


# The stage size is (16, 20) * 2 ** (s - 1); stage s >= 2 has D_s
# hypotheses at nominal interval r_s * base.
_REFINED = {2: (32, 2.0, 32, 40), 3: (8, 1.0, 64, 80)}


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("family", ["uni", "cas", "clmvsnet"])
def test_refined_hypotheses(stage, family):
    """UniMVSNet and CL-MVSNet build the band at the previous resolution and
    upsample it; CasMVSNet upsamples the previous depth to full size, builds
    the band there and resizes the volume to the stage size. Both are affine
    in the previous depth, and at the cascade's scales (x2 from the previous
    stage, x4 / x2 to full size) every half-pixel bilinear sample of the
    CasMVSNet path averages two full-size samples of one cell, so the orders
    are the same function: one implementation matches all three codes."""
    data, base = _samples()
    num_depths, ratio, height, width = _REFINED[stage]
    hypotheses = geometry.refined_depth_hypotheses(
        data[f"uni_stage{stage}_last_depth"], num_depths, ratio * base,
        height, width).numpy()
    np.testing.assert_allclose(hypotheses,
                               data[f"{family}_stage{stage}_samples"],
                               rtol=1e-6, atol=3e-4)
    interval = ratio * base * num_depths / (num_depths - 1)
    assert interval == pytest.approx(
        float(data[f"uni_stage{stage}_interval"]), rel=1e-6)


@pytest.mark.parametrize("stage", [2, 3])
def test_refined_hypotheses_at_full_resolution_casmvsnet(stage):
    data, base = _samples()
    num_depths, ratio, _, _ = _REFINED[stage]
    hypotheses = geometry.refined_depth_hypotheses(
        data[f"uni_stage{stage}_last_depth"], num_depths, ratio * base,
        64, 80).numpy()
    np.testing.assert_allclose(
        hypotheses, data[f"cas_stage{stage}_samples_fullres"], rtol=1e-6,
        atol=3e-4)


@pytest.mark.parametrize("stage", [2, 3])
def test_refined_band_at_previous_resolution(stage):
    # UniMVSNet's band before upsampling: resizing to the previous size is
    # the identity, so this pins the band itself (ends included, spacing
    # D r base / (D - 1)).
    data, base = _samples()
    num_depths, ratio, _, _ = _REFINED[stage]
    last = data[f"uni_stage{stage}_last_depth"]
    hypotheses = geometry.refined_depth_hypotheses(
        last, num_depths, ratio * base, *last.shape[1:]).numpy()
    np.testing.assert_allclose(hypotheses,
                               data[f"uni_stage{stage}_samples_raw"],
                               rtol=1e-6, atol=3e-4)
