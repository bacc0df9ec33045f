"""Tests of keras_mvs.geometry: the pixel convention, warps, hypotheses."""

import numpy as np
import pytest
import tensorflow as tf

from keras_mvs import geometry


def _camera(focal=10.0, cx=5.0, cy=4.0, translation=(0.0, 0.0, 0.0)):
    intrinsics = np.array(
        [[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], np.float64)
    cam_from_world = np.eye(4)
    cam_from_world[:3, 3] = translation
    return intrinsics, cam_from_world


def _rotation(axis, angle):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                     [-axis[1], axis[0], 0]])
    return (np.eye(3) + np.sin(angle) * skew
            + (1 - np.cos(angle)) * skew @ skew)


def _random_pose(rng, scale=0.2):
    pose = np.eye(4)
    pose[:3, :3] = _rotation(rng.normal(size=3), scale * rng.uniform())
    pose[:3, 3] = rng.normal(size=3) * scale
    return pose


class TestProjectionMatrices:
    def test_top_rows_are_k_times_extrinsic(self):
        rng = np.random.default_rng(0)
        intrinsics, _ = _camera()
        pose = _random_pose(rng)
        proj = geometry.projection_matrices(intrinsics[None], pose[None])
        np.testing.assert_allclose(proj[0, :3].numpy(),
                                   intrinsics @ pose[:3, :4], atol=1e-12)
        np.testing.assert_array_equal(proj[0, 3].numpy(), [0, 0, 0, 1])

    def test_batched_leading_dims(self):
        intrinsics = np.tile(np.eye(3), [2, 3, 1, 1])
        poses = np.tile(np.eye(4), [2, 3, 1, 1])
        proj = geometry.projection_matrices(intrinsics, poses)
        assert proj.shape == (2, 3, 4, 4)


class TestBilinearSample:
    def test_half_pixel_probe_is_mean_of_neighbours(self):
        image = tf.constant([[[[2.0], [6.0], [10.0]]]])  # [1, 1, 3, 1]
        sample = geometry.bilinear_sample(image, [[[0.5, 0.0]]])
        np.testing.assert_allclose(sample.numpy().ravel(), [4.0])
        sample = geometry.bilinear_sample(image, [[[1.25, 0.0]]])
        np.testing.assert_allclose(sample.numpy().ravel(), [7.0])

    def test_integer_coordinates_return_pixels(self):
        image = np.arange(12.0).reshape(1, 3, 4, 1)
        ys, xs = np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij")
        coords = np.stack([xs, ys], -1)[None]
        sample = geometry.bilinear_sample(image, coords)
        np.testing.assert_array_equal(sample.numpy(), image)

    def test_zero_padding_outside(self):
        image = np.ones((1, 2, 2, 1))
        coords = [[[-0.5, 0.0], [1.5, 1.0], [-1.0, 0.0], [0.0, 2.0],
                   [np.nan, 0.0], [np.inf, 0.0]]]
        sample = geometry.bilinear_sample(image, coords).numpy().ravel()
        np.testing.assert_allclose(sample, [0.5, 0.5, 0.0, 0.0, 0.0, 0.0])

    def test_gradient_float64(self):
        rng = np.random.default_rng(1)
        image = tf.constant(rng.normal(size=(1, 3, 5, 2)))
        coords = tf.constant(rng.uniform(-0.7, 4.6, size=(1, 4, 2)))
        # Keep coordinates away from integers, where the sampler has kinks.
        coords = tf.where(tf.abs(coords - tf.round(coords)) < 0.05,
                          coords + 0.2, coords)
        theoretical, numerical = tf.test.compute_gradient(
            lambda img, c: geometry.bilinear_sample(img, c),
            [image, coords])
        for t, n in zip(theoretical, numerical):
            np.testing.assert_allclose(t, n, atol=1e-6)


class TestProjectUnproject:
    def test_round_trip(self):
        rng = np.random.default_rng(2)
        intrinsics = np.array([[[50.0, 0, 20.0], [0, 48.0, 15.0], [0, 0, 1]]])
        depth = rng.uniform(1.0, 5.0, size=(1, 6, 7))
        points = geometry.unproject(depth, intrinsics)
        pixels, z = geometry.project(points, intrinsics)
        grid = geometry.pixel_grid(6, 7, tf.float64)
        np.testing.assert_allclose(pixels[0].numpy(), grid.numpy(), atol=1e-9)
        np.testing.assert_allclose(z.numpy(), depth, atol=1e-12)

    def test_points_behind_camera_are_nan(self):
        pixels, _ = geometry.project([[[0.0, 0.0, -1.0], [0.0, 0.0, 2.0]]],
                                     np.eye(3)[None])
        assert np.isnan(pixels[0, 0]).all()
        np.testing.assert_allclose(pixels[0, 1], [0.0, 0.0])

    def test_relative_transforms_compose_to_identity(self):
        rng = np.random.default_rng(3)
        pose_a, pose_b = _random_pose(rng), _random_pose(rng)
        b_from_a = geometry.relative_transform(pose_b[None], pose_a[None])
        a_from_b = geometry.relative_transform(pose_a[None], pose_b[None])
        np.testing.assert_allclose((a_from_b @ b_from_a)[0].numpy(), np.eye(4),
                                   atol=1e-12)

    def test_resize_commutes_with_projection(self):
        # Projecting with K scaled by s lands at s times the original pixel.
        rng = np.random.default_rng(4)
        intrinsics = np.array([[[300.0, 0, 80.0], [0, 290.0, 60.0], [0, 0, 1]]])
        points = rng.uniform([-1, -1, 2], [1, 1, 4], size=(1, 10, 3))
        pixels, _ = geometry.project(points, intrinsics)
        for scale in (0.25, 0.5, 2.0):
            scaled = geometry.scale_intrinsics(intrinsics, scale)
            scaled_pixels, _ = geometry.project(points, scaled)
            np.testing.assert_allclose(scaled_pixels.numpy(),
                                       scale * pixels.numpy(), rtol=1e-12)

    def test_anisotropic_scale(self):
        intrinsics = np.array([[10.0, 0, 4.0], [0, 12.0, 3.0], [0, 0, 1]])
        scaled = geometry.scale_intrinsics(intrinsics, 0.5, 2.0).numpy()
        np.testing.assert_allclose(
            scaled, [[5.0, 0, 2.0], [0, 24.0, 6.0], [0, 0, 1]])

    def test_downsampled_image_matches_scaled_intrinsics(self):
        # A point's sample in an image and in its 2x strided copy agree when
        # projected with K and K/2: the no-half-pixel convention.
        image = np.arange(8 * 10, dtype=np.float64).reshape(1, 8, 10, 1)
        small = image[:, ::2, ::2]
        intrinsics = np.array([[[20.0, 0, 4.0], [0, 20.0, 2.0], [0, 0, 1]]])
        points = np.array([[[0.2, 0.1, 2.0], [0.4, 0.3, 4.0]]])
        pixels, _ = geometry.project(points, intrinsics)
        small_pixels, _ = geometry.project(
            points, geometry.scale_intrinsics(intrinsics, 0.5))
        np.testing.assert_allclose(small_pixels.numpy(), pixels.numpy() / 2)
        # Both projections land on even full-res pixels: identical samples.
        np.testing.assert_allclose(
            geometry.bilinear_sample(image, pixels).numpy(),
            geometry.bilinear_sample(small, small_pixels).numpy())


class TestHomographyWarp:
    def test_identity_cameras_return_input_at_every_depth(self):
        rng = np.random.default_rng(5)
        features = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
        intrinsics, pose = _camera()
        proj = geometry.projection_matrices(
            np.stack([intrinsics] * 2), np.stack([pose] * 2))
        depths = np.array([[0.5, 1.0, 7.0], [2.0, 3.0, 100.0]], np.float32)
        volume = geometry.homography_warp(features, proj, proj, depths)
        assert volume.shape == (2, 3, 6, 7, 3)
        for d in range(3):
            np.testing.assert_allclose(volume[:, d].numpy(), features,
                                       atol=1e-5)

    @pytest.mark.parametrize("depth,baseline,focal", [(2.0, 1.0, 4.0),
                                                      (1.0, 1.0, 3.0),
                                                      (4.0, -2.0, 4.0)])
    def test_known_shift_is_focal_times_baseline_over_depth(
            self, depth, baseline, focal):
        # Source camera centre at x = baseline: a point seen at column u in
        # the reference is at column u - f * baseline / depth in the source.
        height, width = 3, 9
        features = np.arange(height * width, dtype=np.float32).reshape(
            1, height, width, 1) + 1.0
        k_ref, pose_ref = _camera(focal, 4.0, 1.0)
        k_src, pose_src = _camera(focal, 4.0, 1.0, (-baseline, 0.0, 0.0))
        ref_proj = geometry.projection_matrices(k_ref[None], pose_ref[None])
        src_proj = geometry.projection_matrices(k_src[None], pose_src[None])
        volume = geometry.homography_warp(features, src_proj, ref_proj,
                                          [[depth]])[0, 0, ..., 0].numpy()
        shift = int(round(focal * baseline / depth))
        for col in range(width):
            src_col = col - shift
            expected = (features[0, :, src_col, 0]
                        if 0 <= src_col < width else np.zeros(height))
            np.testing.assert_allclose(volume[:, col], expected, atol=1e-4,
                                       err_msg=f"column {col}")

    def test_per_pixel_hypotheses_match_plane_hypotheses(self):
        rng = np.random.default_rng(6)
        features = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
        k, pose_ref = _camera(8.0, 3.0, 2.0)
        pose_src = _random_pose(rng, 0.05)
        ref_proj = geometry.projection_matrices(k[None], pose_ref[None])
        src_proj = geometry.projection_matrices(k[None], pose_src[None])
        planes = np.array([[2.0, 3.0]], np.float32)
        dense = np.broadcast_to(planes[:, :, None, None], (1, 2, 5, 6))
        np.testing.assert_allclose(
            geometry.homography_warp(features, src_proj, ref_proj,
                                     planes).numpy(),
            geometry.homography_warp(features, src_proj, ref_proj,
                                     dense).numpy(), atol=1e-6)

    def test_homography_path_matches_reprojection_path(self):
        rng = np.random.default_rng(7)
        height, width = 12, 16
        features = rng.normal(size=(1, height, width, 4))
        k_ref = np.array([[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
        k_src = np.array([[19.0, 0, 8.0], [0, 18.5, 6.0], [0, 0, 1]])
        pose_ref = _random_pose(rng, 0.1)
        pose_src = _random_pose(rng, 0.1)
        depth = rng.uniform(3.0, 6.0, size=(1, 2, height, width))
        ref_proj = geometry.projection_matrices(k_ref[None], pose_ref[None])
        src_proj = geometry.projection_matrices(k_src[None], pose_src[None])
        warped = geometry.homography_warp(features, src_proj, ref_proj, depth)
        for d in range(2):
            pixels, _ = geometry.reproject(depth[:, d], k_ref[None],
                                           pose_ref[None], k_src[None],
                                           pose_src[None])
            np.testing.assert_allclose(
                warped[:, d].numpy(),
                geometry.bilinear_sample(features, pixels).numpy(),
                atol=1e-8)

    def test_warp_gradient_float64(self):
        rng = np.random.default_rng(8)
        features = tf.constant(rng.normal(size=(1, 3, 5, 2)))
        k, pose_ref = _camera(6.0, 2.0, 1.0)
        _, pose_src = _camera(6.0, 2.0, 1.0, (-0.37, 0.11, 0.0))
        ref_proj = geometry.projection_matrices(k[None], pose_ref[None])
        src_proj = geometry.projection_matrices(k[None], pose_src[None])
        depths = tf.constant(rng.uniform(2.0, 3.0, size=(1, 4, 3, 5)))
        theoretical, numerical = tf.test.compute_gradient(
            lambda f: geometry.homography_warp(f, src_proj, ref_proj, depths),
            [features])
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
        assert np.abs(theoretical[0]).sum() > 0

    def test_dynamic_shapes_in_one_trace(self):
        fn = tf.function(geometry.homography_warp, input_signature=[
            tf.TensorSpec([None, None, None, None], tf.float32),
            tf.TensorSpec([None, 4, 4], tf.float32),
            tf.TensorSpec([None, 4, 4], tf.float32),
            tf.TensorSpec([None, None, None, None], tf.float32)])
        for batch, depth, height, width in ((1, 3, 4, 5), (2, 2, 6, 3)):
            proj = tf.eye(4, batch_shape=[batch])
            out = fn(tf.ones([batch, height, width, 2]), proj, proj,
                     tf.ones([batch, depth, height, width]))
            assert out.shape == (batch, depth, height, width, 2)
        assert fn.experimental_get_tracing_count() == 1


class TestDepthHypotheses:
    def test_initial_hypotheses_include_both_ends(self):
        hyp = geometry.initial_depth_hypotheses([425.0, 10.0], [931.0, 20.0],
                                                48, 2, 3).numpy()
        assert hyp.shape == (2, 48, 2, 3)
        np.testing.assert_allclose(hyp[0, [0, -1], 1, 2], [425.0, 931.0])
        np.testing.assert_allclose(hyp[0, 1, 0, 0] - hyp[0, 0, 0, 0],
                                   506.0 / 47, rtol=1e-6)
        np.testing.assert_allclose(hyp[1, :, 0, 0], np.linspace(10, 20, 48),
                                   rtol=1e-6)

    def test_refined_band_and_spacing_hand_worked(self):
        # D = 4, interval 2: band 100 +- 4, spacing 4 * 2 / 3.
        prev = np.full((1, 2, 2), 100.0, np.float32)
        hyp = geometry.refined_depth_hypotheses(prev, 4, 2.0, 2, 2)
        np.testing.assert_allclose(hyp[0, :, 1, 1],
                                   [96.0, 96 + 8 / 3, 96 + 16 / 3, 104.0],
                                   rtol=1e-6)

    def test_refined_dtu_stage_spacing(self):
        base = (931.149 - 425.0) / 192
        prev = np.full((1, 1, 1), 600.0, np.float32)
        stage2 = geometry.refined_depth_hypotheses(prev, 32, 2 * base, 1, 1)
        stage3 = geometry.refined_depth_hypotheses(prev, 8, base, 1, 1)
        np.testing.assert_allclose(stage2[0, 1, 0, 0] - stage2[0, 0, 0, 0],
                                   5.442, atol=1e-3)
        np.testing.assert_allclose(600.0 - stage2[0, 0, 0, 0], 84.36,
                                   atol=1e-2)
        np.testing.assert_allclose(stage3[0, 1, 0, 0] - stage3[0, 0, 0, 0],
                                   3.013, atol=1e-3)

    def test_refined_resize_is_half_pixel_bilinear(self):
        # Previous depth [[0, 4]] at 1x2, upsampled to 1x4 with half-pixel
        # centres: output x = (j + 0.5) / 2 - 0.5 -> 0, 1, 3, 4 (clamped).
        prev = np.array([[[0.0, 4.0]]], np.float32)
        hyp = geometry.refined_depth_hypotheses(prev, 2, 2.0, 1, 4)
        # D = 2: offsets -2 and +2 around the centre.
        np.testing.assert_allclose(hyp[0, 0, 0], [-2.0, -1.0, 1.0, 2.0])
        np.testing.assert_allclose(hyp[0, 1, 0], [2.0, 3.0, 5.0, 6.0])

    def test_refined_per_batch_interval_and_no_gradient(self):
        prev = tf.Variable(np.full((2, 1, 1), 10.0, np.float32))
        with tf.GradientTape() as tape:
            hyp = geometry.refined_depth_hypotheses(prev, 2, [1.0, 3.0], 1, 1)
            total = tf.reduce_sum(hyp)
        np.testing.assert_allclose(hyp[:, :, 0, 0], [[9.0, 11.0], [7.0, 13.0]])
        assert tape.gradient(total, prev) is None

    def test_not_clamped_to_range(self):
        prev = np.full((1, 1, 1), 1.0, np.float32)
        hyp = geometry.refined_depth_hypotheses(prev, 8, 1.0, 1, 1)
        assert hyp.numpy().min() < 0.0


@pytest.mark.parametrize("sampling", geometry.WARP_SAMPLINGS)
@pytest.mark.parametrize("per_pixel", [False, True])
def test_plane_by_plane_warp_equals_batched(sampling, per_pixel):
    rng = np.random.default_rng(0)
    src = tf.constant(rng.normal(size=(2, 32, 40, 8)).astype(np.float32))
    ref_proj = np.tile(np.eye(4), (2, 1, 1))
    ref_proj[:, :3, :3] = [[30.0, 0, 20], [0, 30.0, 16], [0, 0, 1]]
    src_proj = ref_proj.copy()
    src_proj[:, 0, 3] = -5.0
    planes = (rng.uniform(2, 6, (2, 8, 32, 40)) if per_pixel
              else np.tile(np.linspace(2, 6, 8), (2, 1)))
    args = [tf.constant(a, tf.float32) for a in (src_proj, ref_proj, planes)]

    def loss(plane_by_plane):
        with tf.GradientTape() as tape:
            tape.watch(src)
            warped = geometry.homography_warp(
                src, *args, sampling=sampling, plane_by_plane=plane_by_plane)
            value = tf.reduce_sum(tf.square(warped))
        return warped, tape.gradient(value, src)

    (batched, grad_a), (looped, grad_b) = loss(False), loss(True)
    np.testing.assert_allclose(looped, batched, atol=1e-5)
    np.testing.assert_allclose(grad_b, grad_a, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sampling", geometry.WARP_SAMPLINGS)
@pytest.mark.parametrize("hypotheses", ["planes", "per_pixel", "window"])
def test_warp_vjp_is_the_warps_gradient(sampling, hypotheses):
    rng = np.random.default_rng(1)
    src = tf.constant(rng.normal(size=(2, 24, 30, 4)).astype(np.float32))
    ref_proj = np.tile(np.eye(4), (2, 1, 1))
    ref_proj[:, :3, :3] = [[25.0, 0, 15], [0, 25.0, 12], [0, 0, 1]]
    src_proj = ref_proj.copy()
    src_proj[:, 0, 3] = -4.0
    src_proj[1, 1, 3] = 2.0
    offset = None
    if hypotheses == "planes":
        planes = np.tile(np.linspace(2, 6, 5), (2, 1))
    elif hypotheses == "per_pixel":
        planes = rng.uniform(2, 6, (2, 5, 24, 30))
    else:  # a 10x12 window of the reference map from row 7, column 9
        planes = rng.uniform(2, 6, (2, 5, 10, 12))
        offset = tf.constant([7, 9])
    args = [tf.constant(a, tf.float32) for a in (src_proj, ref_proj, planes)]
    with tf.GradientTape() as tape:
        tape.watch(src)
        warped = geometry.homography_warp(src, *args, sampling=sampling,
                                          ref_offset=offset)
    upstream = tf.constant(rng.normal(size=warped.shape).astype(np.float32))
    expected = tape.gradient(warped, src, output_gradients=upstream)
    assert float(tf.reduce_max(tf.abs(expected))) > 0.1
    vjp = geometry.homography_warp_vjp(src, upstream, *args,
                                       sampling=sampling, ref_offset=offset)
    np.testing.assert_allclose(vjp, expected, rtol=1e-5, atol=1e-5)


def test_compiled_warp_gradient_equals_the_plain_warps():
    from keras_mvs.models import cas_mvsnet

    rng = np.random.default_rng(2)
    src = tf.constant(rng.normal(size=(1, 16, 20, 8)).astype(np.float32))
    ref_proj = np.eye(4)[None]
    ref_proj[:, :3, :3] = [[18.0, 0, 10], [0, 18.0, 8], [0, 0, 1]]
    src_proj = ref_proj.copy()
    src_proj[:, 0, 3] = 3.0
    planes = np.linspace(2, 5, 6)[None]
    args = [tf.constant(a, tf.float32) for a in (src_proj, ref_proj, planes)]

    def value_and_gradient(warp):
        with tf.GradientTape() as tape:
            tape.watch(src)
            loss = tf.reduce_sum(tf.square(warp(
                src, *args, sampling="align_corners_false")))
        return loss, tape.gradient(loss, src)

    loss, gradient = value_and_gradient(geometry.homography_warp)
    xla_loss, xla_gradient = value_and_gradient(
        cas_mvsnet._xla_homography_warp)
    assert float(xla_loss) == pytest.approx(float(loss), rel=1e-6)
    assert float(tf.reduce_max(tf.abs(gradient))) > 1.0
    np.testing.assert_allclose(xla_gradient, gradient, rtol=1e-5, atol=1e-5)
