"""Tests for keras_mvs.losses.photometric (CL-MVSNet photometric losses)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_mvs.losses import photometric

HEIGHT, WIDTH = 6, 8
# f = 10 and baselines of 0.2 make a plane at depth 2 shift by exactly one
# pixel between views: x_src = x_ref - f t / d.
INTRINSICS = np.array([[10.0, 0.0, 3.5], [0.0, 10.0, 2.5], [0.0, 0.0, 1.0]],
                      np.float32)


def _camera(tx=0.0, ty=0.0):
    cam_from_world = np.eye(4, dtype=np.float32)
    cam_from_world[:3, 3] = [tx, ty, 0.0]
    return cam_from_world


def _shifted_scene(seed=0, texture=None):
    """Reference + 2 sources of a fronto-parallel textured plane at depth 2.

    Source 1 sits 0.2 to the right (its pixel x sees the reference's x + 1),
    source 2 0.2 to the left (it sees the reference's x - 1).
    """
    if texture is None:
        texture = np.random.default_rng(seed).normal(
            size=(HEIGHT, WIDTH + 2, 3)).astype(np.float32)
    images = np.stack([texture[:, 1:WIDTH + 1], texture[:, 2:WIDTH + 2],
                       texture[:, 0:WIDTH]])[np.newaxis]
    intrinsics = np.broadcast_to(INTRINSICS, (1, 3, 3, 3)).copy()
    cams = np.stack([_camera(), _camera(tx=-0.2), _camera(tx=0.2)])[None]
    return images, intrinsics, cams


def _depth(value, height=HEIGHT, width=WIDTH):
    return np.full((1, height, width), value, np.float32)


def test_standardize_images_hand_values():
    images = np.zeros((1, 1, 1, 2, 3), np.float32)
    images[..., 0, :] = [0.0, 1.0, 5.0]
    images[..., 1, :] = [2.0, 3.0, 5.0]
    out = photometric.standardize_images(images).numpy()
    # Channels 0 and 1: mean +-1 from each value, population std 1.
    np.testing.assert_allclose(out[0, 0, 0, :, 0], [-1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0, :, 1], [-1.0, 1.0], rtol=1e-6)
    # A constant channel: std 0, the 1e-8 keeps it finite (0).
    np.testing.assert_array_equal(out[0, 0, 0, :, 2], [0.0, 0.0])


def test_smooth_l05_branches_and_junction():
    beta = 2.0**-10
    values = photometric.smooth_l05(
        [0.0005, -0.25, beta, beta * (1 - 1e-6), 4.0]).numpy()
    # Quadratic: 2**15 * 0.0005**2 = 0.008192; sqrt branch: sqrt(0.25),
    # sqrt(4); at the junction both give 2**-5.
    np.testing.assert_allclose(
        values, [0.008192, 0.5, 2.0**-5, 2.0**-5, 2.0], rtol=1e-5)
    x = tf.constant([0.0, 0.25])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = photometric.smooth_l05(x)
    # Finite gradient at 0 (quadratic branch); 0.5 / sqrt(0.25) = 1.
    np.testing.assert_allclose(tape.gradient(y, x), [0.0, 1.0], rtol=1e-6)


def test_true_depth_reconstructs_and_wrong_depth_costs_more():
    images, intrinsics, cams = _shifted_scene()
    true_terms = photometric.unsupervised_stage_loss(images, intrinsics, cams,
                                                     _depth(2.0))
    wrong_terms = photometric.unsupervised_stage_loss(images, intrinsics, cams,
                                                      _depth(1.5))
    assert float(true_terms["reconstruction"]) < 1e-3
    assert float(wrong_terms["reconstruction"]) > 0.3
    assert float(wrong_terms["total"]) > float(true_terms["total"]) + 2.0
    # Constant depth: no smoothness cost.
    assert float(true_terms["smoothness"]) == 0.0
    # total = 8 rec + 6 ssim + 0.18 smooth.
    expected = (8 * wrong_terms["reconstruction"] + 6 * wrong_terms["ssim"]
                + 0.18 * wrong_terms["smoothness"])
    assert float(wrong_terms["total"]) == pytest.approx(float(expected),
                                                        rel=1e-6)
    terms = photometric.unsupervised_stage_loss(
        images, intrinsics, cams, _depth(2.0), view_min="per_pixel")
    assert float(terms["reconstruction"]) < 1e-3


def test_inverse_warp_shifts_by_one_pixel_and_masks_taps():
    images, intrinsics, cams = _shifted_scene()
    warped, mask = photometric._inverse_warp(
        tf.constant(images[:, 1:]), tf.constant(_depth(2.0)),
        intrinsics[:, 0], cams[:, 0], intrinsics[:, 1:], cams[:, 1:], False)
    warped, mask = warped.numpy(), mask.numpy()
    # Source 1 sees reference columns 1..W-1; source 2 columns 0..W-3 (its
    # taps x0 + 1 must stay inside). The last row's lower taps fall outside.
    expected_1 = np.zeros((HEIGHT, WIDTH))
    expected_1[:HEIGHT - 1, 1:] = 1.0
    expected_2 = np.zeros((HEIGHT, WIDTH))
    expected_2[:HEIGHT - 1, :WIDTH - 2] = 1.0
    np.testing.assert_array_equal(mask[0, 0], expected_1)
    np.testing.assert_array_equal(mask[0, 1], expected_2)
    valid = mask[0, 0] > 0
    np.testing.assert_allclose(warped[0, 0][valid], images[0, 0][valid],
                               atol=1e-5)


def test_reference_quirks_bottom_bound_and_border_sample():
    # Source 0.1 lower: reference row i lands on source row i + 0.5, so the
    # last row lands between row H-1 and the row below the image.
    images, intrinsics, _ = _shifted_scene()
    cams = np.stack([_camera(), _camera(ty=0.1)])[None]
    args = (tf.constant(images[:, 1:2]), tf.constant(_depth(2.0)),
            intrinsics[:, 0], cams[:, 0], intrinsics[:, 1:2], cams[:, 1:2])
    warped_default, mask_default = photometric._inverse_warp(*args, False)
    warped_quirks, mask_quirks = photometric._inverse_warp(*args, True)
    # Default: the last row is invalid; quirks (y0 <= H - 1): valid. In both
    # modes the sample there is the source's last row: the reference's
    # sampler clamps its taps to the image (border values, not zeros;
    # tests/parity/clmvsnet_parity_test.py checks this on its outputs).
    assert mask_default.numpy()[0, 0, HEIGHT - 1].sum() == 0
    assert mask_quirks.numpy()[0, 0, HEIGHT - 1].sum() == WIDTH - 1
    for warped in (warped_quirks, warped_default):
        np.testing.assert_allclose(warped.numpy()[0, 0, HEIGHT - 1],
                                   images[0, 1, HEIGHT - 1], atol=1e-5)
    np.testing.assert_array_equal(mask_default.numpy()[0, 0, :HEIGHT - 1],
                                  mask_quirks.numpy()[0, 0, :HEIGHT - 1])


def test_reference_quirks_projects_with_reference_intrinsics():
    images, intrinsics, cams = _shifted_scene()
    changed = intrinsics.copy()
    changed[:, 1:, 0, 0] = 12.0  # the sources' focal length differs
    changed[:, 1:, 0, 2] = 3.0
    depth = _depth(2.0)

    def loss(k, quirks):
        return float(photometric.unsupervised_stage_loss(
            images, k, cams, depth, reference_quirks=quirks)["total"])

    # The quirk ignores the source intrinsics; the default uses them.
    assert loss(changed, True) == pytest.approx(loss(intrinsics, True),
                                                rel=1e-6)
    assert loss(changed, False) > loss(intrinsics, False) + 1.0
    assert loss(changed, False) != pytest.approx(loss(changed, True),
                                                 rel=1e-2)


def test_min_over_views_penalty_reference_and_per_pixel_hand_case():
    # Two views, 1 x 3 pixels. View 1 sees pixel 0 only, view 2 pixels 0, 1;
    # pixel 2 is seen by no view (its 1e4 minimum is dropped).
    mask = np.array([[[[1.0, 0.0, 0.0]], [[1.0, 1.0, 0.0]]]], np.float32)
    # Scalar (reference) losses 0.2 and 0.5: pixel 0 -> 0.2, pixel 1 -> 0.5,
    # pixel 2 -> 0: mean 0.7 / 3.
    scalar = np.array([0.2, 0.5], np.float32).reshape(1, 2, 1, 1)
    assert float(photometric._min_over_views(scalar, mask)) == pytest.approx(
        0.7 / 3, rel=1e-6)
    # Per-pixel maps: pixel 0 -> min(0.4, 0.1), pixel 1 -> 0.9 (view 1 is
    # masked there despite its 0.0), pixel 2 -> 0: mean 1.0 / 3.
    maps = np.array([[[[0.4, 0.0, 0.3]], [[0.1, 0.9, 0.2]]]], np.float32)
    assert float(photometric._min_over_views(maps, mask)) == pytest.approx(
        1.0 / 3, rel=1e-6)


def test_per_pixel_map_mean_equals_scalar_view_loss():
    images, intrinsics, cams = _shifted_scene(seed=3)
    warped, mask = photometric._inverse_warp(
        tf.constant(images[:, 1:]), tf.constant(_depth(1.7)),
        intrinsics[:, 0], cams[:, 0], intrinsics[:, 1:], cams[:, 1:], False)
    losses, maps = photometric._reconstruction_losses(
        warped, tf.constant(images[:, 0]), mask)
    np.testing.assert_allclose(tf.reduce_mean(maps, axis=[0, 2, 3]), losses,
                               rtol=1e-5)
    # The two modes differ on this scene.
    rec = {mode: float(photometric.unsupervised_stage_loss(
        images, intrinsics, cams, _depth(1.7), view_min=mode)
        ["reconstruction"]) for mode in photometric.VIEW_MIN_MODES}
    assert abs(rec["reference"] - rec["per_pixel"]) > 1e-3


def test_stage_returns_zero_when_a_source_sees_nothing():
    images, intrinsics, cams = _shifted_scene()
    cams[0, 2] = _camera(tx=100.0)
    terms = photometric.unsupervised_stage_loss(images, intrinsics, cams,
                                                _depth(1.5))
    assert set(terms) == {"total", "reconstruction", "ssim", "smoothness"}
    for value in terms.values():
        assert float(value) == 0.0


def test_ssim_floor_hand_values():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 5, 5, 3))
    ones = np.ones((1, 1, 5, 5))
    # Identical images: SSIM = 1, the map is the 1e-6 floor everywhere.
    value = photometric._ssim_loss(image, image[:, None], ones)
    assert float(value) == pytest.approx(1e-6, rel=1e-6)
    # Two views are summed; an empty mask contributes 0.
    two = np.concatenate([ones, np.zeros_like(ones)], axis=1)
    value = photometric._ssim_loss(image, np.stack([image, image], 1), two)
    assert float(value) == pytest.approx(1e-6, rel=1e-6)
    # Constant 1 vs constant 0: SSIM = C1 / (1 + C1), map (1 - SSIM) / 2.
    c1 = 0.01**2
    value = photometric._ssim_loss(np.ones((1, 3, 3, 1)),
                                   np.zeros((1, 1, 3, 3, 1)),
                                   np.ones((1, 1, 3, 3)))
    assert float(value) == pytest.approx((1 - c1 / (1 + c1)) / 2 + 1e-6,
                                         rel=1e-6)


def test_smoothness_hand_value():
    depth = np.array([[[1.0, 2.0], [4.0, 8.0]]], np.float32)
    image = np.zeros((1, 2, 2, 3), np.float32)
    image[:, :, 1, :] = 1.0  # |dx I| = 1 in both rows, dy I = 0
    # x: (|1 - 2| + |4 - 8|) / 2 * e^-1; y: (|1 - 4| + |2 - 8|) / 2 * 1.
    value = photometric._smoothness_loss(tf.constant(depth),
                                         tf.constant(image))
    assert float(value) == pytest.approx(2.5 * math.exp(-1) + 4.5, rel=1e-6)


def test_cascade_loss_scales_intrinsics_and_subsamples_images():
    images, intrinsics, cams = _shifted_scene(seed=5)
    half_depth = _depth(1.8, HEIGHT // 2, WIDTH // 2)
    stages = [{"depth": tf.constant(half_depth)},
              {"depth": tf.constant(_depth(1.8))}]
    terms = photometric.unsupervised_cascade_loss(
        stages, images, intrinsics, cams, stage_weights=(0.5, 2.0),
        view_min="per_pixel")
    half_k = intrinsics.copy()
    half_k[..., :2, :] *= 0.5
    stage1 = photometric.unsupervised_stage_loss(
        images[:, :, ::2, ::2], half_k, cams, half_depth,
        view_min="per_pixel")
    stage2 = photometric.unsupervised_stage_loss(
        images, intrinsics, cams, _depth(1.8), view_min="per_pixel")
    assert float(terms["unsup/stage1"]) == pytest.approx(
        float(stage1["total"]), rel=1e-6)
    assert float(terms["ssim/stage2"]) == pytest.approx(
        float(stage2["ssim"]), rel=1e-6)
    assert float(terms["total"]) == pytest.approx(
        0.5 * float(stage1["total"]) + 2.0 * float(stage2["total"]),
        rel=1e-6)
    assert float(terms["ssim"]) == pytest.approx(
        0.5 * float(stage1["ssim"]) + 2.0 * float(stage2["ssim"]), rel=1e-6)
    assert float(terms["total"]) == pytest.approx(
        8 * float(terms["reconstruction"]) + 6 * float(terms["ssim"])
        + 0.18 * float(terms["smoothness"]), rel=1e-6)
    with pytest.raises(ValueError, match="one entry per stage"):
        photometric.unsupervised_cascade_loss(stages, images, intrinsics,
                                              cams)


def test_traces_once_for_dynamic_views_and_size():
    spec = [tf.TensorSpec([None, None, None, None, 3]),
            tf.TensorSpec([None, None, 3, 3]),
            tf.TensorSpec([None, None, 4, 4]),
            tf.TensorSpec([None, None, None])]
    traces = []

    def total(*args):
        traces.append(1)  # runs once per trace, not per call
        return photometric.unsupervised_stage_loss(*args)["total"]

    loss = tf.function(total, input_signature=spec)
    images, intrinsics, cams = _shifted_scene()
    eager = photometric.unsupervised_stage_loss(images, intrinsics, cams,
                                                _depth(1.5))["total"]
    assert float(loss(images, intrinsics, cams, _depth(1.5))) == (
        pytest.approx(float(eager), rel=1e-6))
    # Fewer views and a smaller depth map reuse the same trace.
    two_views = loss(images[:, :2], intrinsics[:, :2], cams[:, :2],
                     _depth(1.5)[:, :2, :2])
    eager_two = photometric.unsupervised_stage_loss(
        images[:, :2], intrinsics[:, :2], cams[:, :2],
        _depth(1.5)[:, :2, :2])["total"]
    assert float(two_views) == pytest.approx(float(eager_two), rel=1e-6)
    assert len(traces) == 1


def test_rejects_bad_view_min():
    images, intrinsics, cams = _shifted_scene()
    with pytest.raises(ValueError, match="view_min"):
        photometric.unsupervised_stage_loss(images, intrinsics, cams,
                                            _depth(2.0), view_min="best")


def test_gradient_wrt_depth_float64():
    # A texture linear in x and y makes bilinear sampling exact (no kinks at
    # integer coordinates); depth slopes keep |dD| away from abs's kink; all
    # penalties stay away from the smooth-L0.5 junction at 2**-10.
    ys, xs = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH + 2),
                         indexing="ij")
    texture = np.stack([0.3 * xs + 0.1 * ys, -0.2 * xs + 0.05 * ys,
                        0.1 * xs - 0.3 * ys], axis=-1)
    images, intrinsics, cams = _shifted_scene(texture=texture)
    images = images.astype(np.float64)[:, :, :4, :5]
    intrinsics = intrinsics.astype(np.float64)
    intrinsics[..., 0, 2], intrinsics[..., 1, 2] = 2.0, 1.5
    # A small vertical baseline keeps projected rows off integer values,
    # where the validity mask would flip under the finite difference.
    cams = cams.astype(np.float64)
    cams[0, 1:, 1, 3] = [0.03, -0.05]
    rows, cols = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    depth = (1.6 + 0.07 * rows + 0.05 * cols + 0.013 * rows * cols)[None]

    def loss(d):
        return photometric.unsupervised_stage_loss(
            images, intrinsics, cams, d, view_min="per_pixel")["total"]

    analytic, numeric = tf.test.compute_gradient(
        loss, [tf.constant(depth)], delta=1e-6)
    assert np.abs(analytic[0]).max() > 1e-2
    np.testing.assert_allclose(analytic[0], numeric[0], rtol=1e-4, atol=1e-6)
