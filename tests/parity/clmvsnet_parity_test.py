"""CL-MVSNet's unsupervised and contrastive losses against the official
code's outputs (`clmvsnet_losses.npz`: a textured plane seen by 3 cameras,
64x80, B = 1)."""

import numpy as np
import official_outputs as ref
import pytest
import tensorflow as tf

from keras_mvs import schedules
from keras_mvs.losses import contrastive
from keras_mvs.losses import photometric

DEPTHS = ("true", "perturbed")
# `reference_quirks=True` reproduces the reference exactly: scalars within
# 1e-4 relative. The default mode projects with each source's own K and
# uses the correct bottom bound, a documented difference within 3 %.
QUIRKS_RTOL = 1e-4
DEFAULT_RTOL = 3e-2


def _scene():
    data = ref.load("clmvsnet_losses")
    images = ref.nchw_to_nhwc(data["imgs"])  # [B, V, H, W, 3]
    intrinsics, cam_from_world = ref.split_cams(data["cams_stage3"])
    return data, images, intrinsics, cam_from_world


def _warp(depth_name: str):
    data, images, intrinsics, cam_from_world = _scene()
    return data, photometric._inverse_warp(
        tf.constant(images[:, 1:]), tf.constant(data[f"depth_{depth_name}"]),
        intrinsics[:, 0], cam_from_world[:, 0], intrinsics[:, 1:],
        cam_from_world[:, 1:], reference_quirks=True)


@pytest.mark.parametrize("depth_name", DEPTHS)
def test_inverse_warp_values_and_mask(depth_name):
    data, (warped, mask) = _warp(depth_name)
    for view in (1, 2):
        expected_mask = data[f"warp_mask_{depth_name}_view{view}"][..., 0]
        np.testing.assert_array_equal(mask[:, view - 1].numpy(),
                                      expected_mask)
        # Everywhere, including outside the mask, where the reference's
        # clamped taps read border values (not zeros).
        expected = data[f"warped_{depth_name}_view{view}"]
        np.testing.assert_allclose(warped[:, view - 1].numpy(), expected,
                                   rtol=1e-4, atol=1e-5)
        assert np.abs(expected[expected_mask == 0]).max() > 0.1


@pytest.mark.parametrize("depth_name", DEPTHS)
def test_per_view_reconstruction_loss(depth_name):
    data, (warped, mask) = _warp(depth_name)
    ref_image = ref.nchw_to_nhwc(data["imgs"])[:, 0]
    losses, _ = photometric._reconstruction_losses(warped, ref_image, mask)
    for view in (1, 2):
        assert float(losses[view - 1]) == pytest.approx(
            float(data[f"reconstr_l05_{depth_name}_view{view}"]),
            rel=QUIRKS_RTOL)


@pytest.mark.parametrize("depth_name", DEPTHS)
def test_ssim_term_per_view(depth_name):
    data, (warped, mask) = _warp(depth_name)
    ref_image = ref.nchw_to_nhwc(data["imgs"])[:, 0]
    for view in (1, 2):
        ssim = photometric._ssim_loss(ref_image, warped[:, view - 1:view],
                                      mask[:, view - 1:view])
        expected = data[f"ssim_map_{depth_name}_view{view}"].mean()
        assert float(ssim) == pytest.approx(float(expected), rel=QUIRKS_RTOL)


@pytest.mark.parametrize("depth_name", DEPTHS)
def test_edge_aware_smoothness(depth_name):
    data, images, _, _ = _scene()
    smoothness = photometric._smoothness_loss(
        tf.constant(data[f"depth_{depth_name}"]), images[:, 0])
    assert float(smoothness) == pytest.approx(
        float(data[f"smoothness_{depth_name}"]), rel=QUIRKS_RTOL)


def test_smooth_l05():
    data = ref.load("clmvsnet_losses")
    value = tf.reduce_mean(photometric.smooth_l05(
        data["smooth_l05_pred"] - data["smooth_l05_gt"]))
    assert float(value) == pytest.approx(float(data["smooth_l05"]),
                                         rel=1e-5)


_TERMS = {"total": "total", "reconstruction": "reconstr", "ssim": "ssim",
          "smoothness": "smooth"}


def _stage_loss(depth, intrinsics, reference_quirks):
    _, images, _, cam_from_world = _scene()
    return photometric.unsupervised_stage_loss(
        images, intrinsics, cam_from_world, depth,
        reference_quirks=reference_quirks)


@pytest.mark.parametrize("depth_name", DEPTHS)
@pytest.mark.parametrize("quirks,rtol", [(True, QUIRKS_RTOL),
                                         (False, DEFAULT_RTOL)])
def test_unsupervised_stage3_loss(depth_name, quirks, rtol):
    data, _, intrinsics, _ = _scene()
    terms = _stage_loss(data[f"depth_{depth_name}"], intrinsics, quirks)
    for ours, theirs in _TERMS.items():
        assert float(terms[ours]) == pytest.approx(
            float(data[f"unsup_stage3_{depth_name}_{theirs}"]), rel=rtol)


@pytest.mark.parametrize("quirks,rtol", [(True, QUIRKS_RTOL),
                                         (False, DEFAULT_RTOL)])
def test_unsupervised_stage1_loss(quirks, rtol):
    # Stage 1: quarter-resolution depth, K / 4, images subsampled inside
    # the loss (top-left pixel of each 4x4 block, `F.interpolate`).
    data = ref.load("clmvsnet_losses")
    intrinsics, _ = ref.split_cams(data["cams_stage1"])
    terms = _stage_loss(data["depth_stage1"], intrinsics, quirks)
    for ours, theirs in _TERMS.items():
        assert float(terms[ours]) == pytest.approx(
            float(data[f"unsup_stage1_{theirs}"]), rel=rtol)


def test_default_mode_differs_from_the_quirks_where_documented():
    # The two modes differ only through the source intrinsics and the
    # bottom bound; here the sources share K, so only the bound (one more
    # row excluded from the mask) separates them, and it lowers the
    # reconstruction term.
    data, _, intrinsics, _ = _scene()
    depth = data["depth_true"]
    quirks = _stage_loss(depth, intrinsics, True)
    default = _stage_loss(depth, intrinsics, False)
    np.testing.assert_array_equal(intrinsics[0, 1], intrinsics[0, 0])
    assert float(default["reconstruction"]) < float(quirks["reconstruction"])
    assert float(default["smoothness"]) == float(quirks["smoothness"])


# === Contrastive consistency ===


def _branch(prefix: str) -> list:
    data = ref.load("clmvsnet_losses")
    return [{"depth": tf.constant(data[f"{prefix}_stage{s}_depth"])}
            for s in (1, 2, 3)]


@pytest.mark.parametrize("epoch", [0, 3, 12])
def test_icc_loss(epoch):
    data = ref.load("clmvsnet_losses")
    terms = contrastive.icc_consistency_loss(
        _branch("icc"), data["icc_pseudo_depth"],
        data["icc_filter_mask"][:, 0])
    value = float(schedules.icc_weight(epoch)) * float(terms["total"])
    assert value == pytest.approx(float(data[f"icc_loss_epoch{epoch}"]),
                                  rel=1e-5)


def test_scc_loss():
    data = ref.load("clmvsnet_losses")
    terms = contrastive.scc_consistency_loss(
        _branch("scc"), data["icc_pseudo_depth"], data["scc_confidence"],
        threshold=0.5)
    value = contrastive.SCC_WEIGHT * float(terms["total"])
    assert value == pytest.approx(float(data["scc_loss_mask_conf0.5"]),
                                  rel=1e-5)
