"""Tests for keras_mvs.fusion: consistency checks, filters, fusion, PLY I/O."""

import os

import numpy as np
import plyfile
import pytest

from keras_mvs import files
from keras_mvs import fusion
from keras_mvs import geometry


def _intrinsics(focal, cx, cy):
    return np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], np.float32)


def _translation(tx, ty=0.0, tz=0.0):
    """cam_from_world of an unrotated camera centred at (tx, ty, tz)."""
    pose = np.eye(4, dtype=np.float32)
    pose[:3, 3] = [-tx, -ty, -tz]
    return pose


def _plane_depth(intrinsics, cam_from_world, normal, offset, height, width):
    """Analytic depth of the plane `normal . X = offset` seen by a camera."""
    rays = geometry.unproject(
        np.ones((1, height, width), np.float32),
        intrinsics[np.newaxis]).numpy()[0]  # [H, W, 3] with z = 1
    rotation = cam_from_world[:3, :3].astype(np.float64)
    centre = -rotation.T @ cam_from_world[:3, 3]
    directions = rays @ rotation  # world directions, one per pixel
    # The ray's camera z grows by 1 per unit of t, so t is the depth.
    return ((offset - normal @ centre) / (directions @ normal)).astype(
        np.float32)


class TestCheckGeometricConsistency:
    # Fronto-parallel plane at z = 500, source 10 to the right, f = 100:
    # disparity f b / Z = 2 px, so reference column x lands at x - 2.
    K = _intrinsics(100.0, 7.5, 2.5)
    ref_pose = _translation(0.0)
    src_pose = _translation(10.0)

    def test_plane_is_consistent_inside_the_overlap(self):
        depth = np.full((6, 16), 500.0, np.float32)
        mask, reprojected = fusion.check_geometric_consistency(
            depth, self.K, self.ref_pose, depth, self.K, self.src_pose)
        assert mask.shape == (6, 16) and mask.dtype == bool
        # Columns 0 and 1 land at x = -2, -1: outside the source image.
        assert not mask[:, :2].any()
        assert mask[:, 2:].all()
        np.testing.assert_allclose(reprojected[:, 2:], 500.0, rtol=1e-6)
        assert (reprojected[:, :2] == 0).all()

    def test_occluder_in_the_source_breaks_consistency(self):
        depth_ref = np.full((6, 16), 500.0, np.float32)
        depth_src = depth_ref.copy()
        depth_src[:, 5:10] = 250.0  # an object in front, seen by the source
        mask, reprojected = fusion.check_geometric_consistency(
            depth_ref, self.K, self.ref_pose, depth_src, self.K,
            self.src_pose)
        # Reference columns 7..11 land on source columns 5..9.
        expected = np.ones(16, bool)
        expected[:2] = False
        expected[7:12] = False
        np.testing.assert_array_equal(mask, np.tile(expected, (6, 1)))
        assert (reprojected[~mask] == 0).all()

    def test_missing_depths(self):
        depth = np.full((6, 16), 500.0, np.float32)
        depth_ref = depth.copy()
        depth_ref[0, 5] = 0.0
        depth_ref[1, 5] = np.nan
        depth_src = depth.copy()
        depth_src[3, 8] = np.nan  # seen by reference pixel (3, 10)
        mask, _ = fusion.check_geometric_consistency(
            depth_ref, self.K, self.ref_pose, depth_src, self.K,
            self.src_pose)
        assert not mask[0, 5] and not mask[1, 5] and mask[0, 6]
        # The NaN is "no depth" and does not leak into its neighbours.
        assert not mask[3, 10] and mask[3, 9] and mask[3, 11]


class TestPerturbedSourceDepth:
    # f = 1000, baseline 100, Z = 500: disparity D = 200 px. A source depth
    # Z (1 + e) comes back at x - D + D / (1 + e), so the round-trip error is
    # D e / (1 + e) px and the relative depth error is e.
    K = _intrinsics(1000.0, 120.0, 0.5)
    ref_pose = _translation(0.0)
    src_pose = _translation(100.0)
    depth_ref = np.full((2, 240), 500.0, np.float32)

    def _check(self, e, **thresholds):
        return fusion.check_geometric_consistency(
            self.depth_ref, self.K, self.ref_pose,
            np.full((2, 240), 500.0 * (1 + e), np.float32), self.K,
            self.src_pose, **thresholds)

    def test_errors_match_hand_values(self):
        e = np.array([0.004, -0.004, 0.006, 0.011], np.float32)
        depth_src = 500.0 * (1 + e)[:, None, None] * np.ones((4, 2, 240))
        errors = fusion.reprojection_errors(
            self.depth_ref, self.K, self.ref_pose, depth_src,
            np.stack([self.K] * 4), np.stack([self.src_pose] * 4))
        overlap = np.s_[:, :, 200:]
        np.testing.assert_allclose(
            errors.pixel_error[overlap],
            np.broadcast_to((200 * np.abs(e) / (1 + e))[:, None, None],
                            (4, 2, 40)), atol=2e-3)
        np.testing.assert_allclose(
            errors.relative_depth_error[overlap],
            np.broadcast_to(np.abs(e)[:, None, None], (4, 2, 40)), atol=1e-5)
        np.testing.assert_allclose(
            errors.depth_reprojected[overlap],
            np.broadcast_to((500 * (1 + e))[:, None, None], (4, 2, 40)),
            rtol=1e-5)
        # Columns up to 198 land at x <= -2: no tap inside, undefined.
        # Column 199 lands at -1 +- rounding, where the zero padding blends
        # in a near-zero depth: defined but wildly wrong.
        assert np.isinf(errors.pixel_error[:, :, :199]).all()
        assert (errors.relative_depth_error[:, :, 199] > 0.5).all()

    @pytest.mark.parametrize("e, consistent", [
        (0.004, True),    # 0.797 px, 0.4 %
        (-0.004, True),   # 0.803 px
        (0.006, False),   # 1.193 px: the pixel test fails first
        (-0.006, False),  # 1.207 px
    ])
    def test_pixel_threshold(self, e, consistent):
        mask, reprojected = self._check(e)
        assert (mask[:, 200:] == consistent).all()
        assert not mask[:, :200].any()
        expected = 500.0 * (1 + e) if consistent else 0.0
        np.testing.assert_allclose(reprojected[:, 200:], expected, rtol=1e-5)

    @pytest.mark.parametrize("e, consistent", [
        (0.009, True),    # 1.784 px < 2, 0.9 % < 1 %
        (0.011, False),   # 2.176 px and 1.1 %: both fail
        (-0.0095, True),  # 200 * 0.0095 / 0.9905 = 1.918 px, 0.95 %
    ])
    def test_relative_threshold(self, e, consistent):
        mask, _ = self._check(e, max_pixel_error=2.0)
        assert (mask[:, 200:] == consistent).all()

    def test_relative_threshold_alone(self):
        # A loose pixel threshold isolates the 1 % depth test.
        mask, _ = self._check(0.0105, max_pixel_error=100.0)
        assert not mask.any()
        mask, _ = self._check(0.0095, max_pixel_error=100.0)
        assert mask[:, 200:].all()


def _errors(pixel, relative, reprojected):
    """ReprojectionErrors from per-source lists of per-pixel values."""
    as_maps = [np.asarray(v, np.float32)[:, np.newaxis, :]
               for v in (pixel, relative, reprojected)]  # [S, 1, P]
    return fusion.ReprojectionErrors(*as_maps)


def test_pcd_consistency_averages_consistent_sources():
    # Same perturbed-plane scene: three source depth maps with e = 0.004,
    # -0.002 (consistent) and 0.02 (2 % off: inconsistent).
    K = _intrinsics(1000.0, 120.0, 0.5)
    e = np.array([0.004, -0.002, 0.02], np.float32)
    depth_ref = np.full((2, 240), 500.0, np.float32)
    errors = fusion.reprojection_errors(
        depth_ref, K, _translation(0.0),
        500.0 * (1 + e)[:, None, None] * np.ones((3, 2, 240), np.float32),
        np.stack([K] * 3), np.stack([_translation(100.0)] * 3))
    geo, depth = fusion.pcd_consistency(errors, depth_ref,
                                        min_consistent_views=2)
    assert geo[:, 200:].all() and not geo[:, :200].any()
    # (500 + 502 + 499) / 3
    np.testing.assert_allclose(depth[:, 200:], 1501.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(depth[:, :200], 500.0)
    geo, _ = fusion.pcd_consistency(errors, depth_ref, min_consistent_views=3)
    assert not geo.any()


def test_dynamic_consistency_levels():
    inf = np.inf
    base = 1.0 / 1300.0
    # Five pixels (columns), three sources (rows).
    pixel = [[0.4, 0.6, 0.7, 0.1, 0.4],
             [0.4, 0.6, 0.7, 0.1, 0.4],
             [2.0, 2.4, 0.7, inf, 0.4]]
    relative = [[1.5 * base, 0.0, 2.9 * base, 2.5 * base, 0.0],
                [1.5 * base, 0.0, 0.0, 2.5 * base, 0.0],
                [0.005, 0.0, 0.0, inf, 3.5 * base]]
    reprojected = [[101.0] * 5, [99.0] * 5, [102.0] * 5]
    depth_ref = np.full((1, 5), 100.0, np.float32)
    geo, depth = fusion.dynamic_consistency(
        _errors(pixel, relative, reprojected), depth_ref)
    # 0: two sources within 0.5 px and 2/1300 -> level 2 passes.
    # 1: 0.6 px fails level 2; level 3 has only 2 sources -> rejected.
    # 2: three sources within 0.75 px and 3/1300 -> level 3 passes.
    # 3: 2.5/1300 fails level 2; level 3 has only 2 sources -> rejected.
    # 4: the third source fails level 2 (3.5/1300), but n_2 = 2 suffices.
    np.testing.assert_array_equal(geo[0], [True, False, True, False, True])
    # Averaging uses the sources consistent at level 10 (2.5 px, 10/1300):
    # column 0 includes the third source (2.0 px, 0.5 %); column 3 excludes
    # it (undefined).
    np.testing.assert_allclose(depth[0], [100.5, 100.5, 100.5,
                                          100.0, 100.5])
    # With N_src = 2 the level-3 test is not available: column 2 fails.
    geo, _ = fusion.dynamic_consistency(
        _errors(pixel, relative, reprojected), depth_ref, num_source_views=2)
    np.testing.assert_array_equal(geo[0], [True, False, False, False, True])


def test_photometric_mask_ands_stages():
    stage1 = np.array([[0.2, 0.05, 0.2]])
    stage2 = np.array([[0.2, 0.9, 0.1]])
    final = np.array([[0.95, 0.95, 0.95]])
    mask = fusion.photometric_mask([stage1, stage2, final], (0.1, 0.15, 0.9))
    np.testing.assert_array_equal(mask, [[True, False, False]])
    # Strict inequality, as the reference filters.
    assert not fusion.photometric_mask([np.array([[0.9]])], (0.9,)).any()
    with pytest.raises(ValueError, match="one confidence map per threshold"):
        fusion.photometric_mask([final], (0.1, 0.9))


def test_filter_config_presets_and_validation():
    cl = fusion.FilterConfig.preset("clmvsnet")
    assert (cl.method, cl.confidence_thresholds, cl.max_pixel_error,
            cl.max_relative_depth_error, cl.min_consistent_views) == (
                "pcd", (0.8,), 0.75, 0.001, 3)
    cl24 = fusion.FilterConfig.preset(
        "clmvsnet", max_pixel_error=fusion.CLMVSNET_DTU_PIXEL_ERROR[24])
    assert cl24.max_pixel_error == 0.5
    dy = fusion.FilterConfig.preset("unimvsnet_dypcd")
    assert dy.method == "dypcd" and dy.confidence_thresholds == (
        0.1, 0.15, 0.9)
    assert fusion.FilterConfig.preset("casmvsnet").min_consistent_views == 5
    with pytest.raises(ValueError, match="'pcd' or 'dypcd'"):
        fusion.FilterConfig(method="gipuma")
    with pytest.raises(ValueError, match="Unknown filter preset"):
        fusion.FilterConfig.preset("mvsnet")


def _plane_scene(height=24, width=32):
    """Three cameras looking at a tilted plane; returns views, pairs, plane."""
    normal = np.array([0.1, -0.2, 1.0])
    normal /= np.linalg.norm(normal)
    offset = float(normal @ np.array([0.0, 0.0, 500.0]))
    K = _intrinsics(40.0, (width - 1) / 2, (height - 1) / 2)
    angle = np.deg2rad(3.0)
    rotation = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0],
                         [np.sin(angle), 0, np.cos(angle)]])
    poses = [_translation(0.0), _translation(0.0, 15.0), np.eye(4)]
    poses[2][:3, :3] = rotation
    poses[2][:3, 3] = -rotation @ np.array([20.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    views = []
    for pose in poses:
        pose = pose.astype(np.float32)
        confidence = np.ones((height, width), np.float32)
        confidence[:4, :4] = 0.2  # a low-confidence corner
        views.append(fusion.FusionView(
            depth=_plane_depth(K, pose, normal, offset, height, width),
            confidence=confidence, intrinsics=K, cam_from_world=pose,
            image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    pairs = [(0, [(1, 0.9), (2, 0.8)]), (1, [0, 2]), (2, [0, 1])]
    return views, pairs, normal, offset


def _in_border_band(points, views):
    """Points whose projection into some view falls less than one pixel
    outside its image, where bilinear sampling blends in the zero padding."""
    band = np.zeros(points.shape[0], bool)
    for view in views:
        pixels, _ = geometry.project(
            geometry.transform_points(view.cam_from_world[np.newaxis],
                                      points[np.newaxis]),
            view.intrinsics[np.newaxis])
        x, y = pixels.numpy()[0].T
        height, width = view.depth.shape
        inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        near = (x > -1) & (x < width) & (y > -1) & (y < height)
        band |= near & ~inside
    return band


def _plane_error(points, normal, offset):
    return np.abs(points.astype(np.float64) @ normal - offset) / offset


def test_fuse_views_puts_every_point_on_the_plane():
    views, pairs, normal, offset = _plane_scene()
    config = fusion.FilterConfig.preset(
        "casmvsnet", confidence_thresholds=(0.5,), min_consistent_views=2)
    reported = []
    cloud = fusion.fuse_views(views, pairs, config, on_view=reported.append)
    assert reported == cloud.view_stats
    assert cloud.points.dtype == np.float32 and cloud.colors.dtype == np.uint8
    relative = _plane_error(cloud.points, normal, offset)
    # As in the reference (cv2.remap, constant-0 border), a source sample
    # less than a pixel outside the image blends with 0 and still passes a
    # 1 % test; those few points are off by less than 1 %, the rest are
    # exact up to float32.
    band = _in_border_band(cloud.points, views)
    assert band.sum() < 0.05 * band.size
    assert relative[~band].max() < 1e-4
    assert relative[band].max() < 0.01
    stats = cloud.view_stats
    assert [s.view_id for s in stats] == [0, 1, 2]
    assert all(s.pixels == 24 * 32 and s.photometric_kept == 24 * 32 - 16
               for s in stats)
    assert sum(s.points_kept for s in stats) == cloud.points.shape[0]
    # Most of each view overlaps both others.
    assert all(s.points_kept > 0.5 * s.pixels for s in stats)
    # Colours come from the reference image at the pixel the point came from.
    first = stats[0].points_kept
    pixels, _ = geometry.project(
        geometry.transform_points(views[0].cam_from_world[np.newaxis],
                                  cloud.points[np.newaxis, :first]),
        views[0].intrinsics[np.newaxis])
    cols, rows = np.round(pixels.numpy()[0]).astype(int).T
    np.testing.assert_array_equal(cloud.colors[:first],
                                  views[0].image[rows, cols])
    assert cloud.summary()["num_points"] == cloud.points.shape[0]


def test_fuse_views_dypcd_and_errors():
    views, pairs, normal, offset = _plane_scene()
    config = fusion.FilterConfig.preset(
        "unimvsnet_dypcd", confidence_thresholds=(0.5,))
    cloud = fusion.fuse_views(views, pairs, config)
    # Exact depths: every overlapping pixel passes level 2 with both sources.
    assert cloud.points.shape[0] > 0.5 * 3 * 24 * 32
    relative = _plane_error(cloud.points, normal, offset)
    band = _in_border_band(cloud.points, views)
    assert relative[~band].max() < 1e-4
    assert relative[band].max() < 10.0 / 1300.0

    with pytest.raises(ValueError, match="source view 7"):
        fusion.fuse_views(views, [(0, [1, 7])], config)
    three_stage = fusion.FilterConfig.preset("unimvsnet_dypcd")
    with pytest.raises(ValueError, match="stage confidences"):
        fusion.fuse_views(views, pairs, three_stage)
    bad = list(views)
    bad[1] = fusion.FusionView(**{**vars(views[1]),
                                  "image": views[1].image[:, :, 0]})
    with pytest.raises(ValueError, match="View 1: image"):
        fusion.fuse_views(bad, pairs, config)


def test_ply_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32) * 100
    colors = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    normals = rng.normal(size=(50, 3)).astype(np.float32)
    path = str(tmp_path / "cloud.ply")
    files.write_ply(path, points, colors)
    assert os.listdir(tmp_path) == ["cloud.ply"]  # no temporary left

    data = plyfile.PlyData.read(path)
    assert data.byte_order == "<" and not data.text
    vertex = data["vertex"]
    assert [p.name for p in vertex.properties] == [
        "x", "y", "z", "red", "green", "blue"]
    assert [vertex.data.dtype[n].str for n in vertex.data.dtype.names] == [
        "<f4"] * 3 + ["|u1"] * 3

    read_points, read_colors, read_normals = files.read_ply(path)
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)
    assert read_normals is None

    files.write_ply(path, points, normals=normals)
    read_points, read_colors, read_normals = files.read_ply(path)
    assert read_colors is None
    np.testing.assert_array_equal(read_normals, normals)

    with pytest.raises(ValueError, match="colors must be uint8"):
        files.write_ply(path, points, colors.astype(np.float32))
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        files.read_ply(str(tmp_path / "missing.ply"))
    (tmp_path / "junk.ply").write_text("not a ply")
    with pytest.raises(ValueError, match="junk.ply"):
        files.read_ply(str(tmp_path / "junk.ply"))


def test_fuse_views_with_a_source_at_another_resolution():
    views, pairs, normal, offset = _plane_scene()
    # View 2 at twice the resolution: K scaled by 2, no half-pixel shift.
    big = views[2]
    K = geometry.scale_intrinsics(big.intrinsics, 2.0).numpy()
    views[2] = fusion.FusionView(
        depth=_plane_depth(K, big.cam_from_world, normal, offset, 48, 64),
        confidence=np.ones((48, 64), np.float32), intrinsics=K,
        cam_from_world=big.cam_from_world,
        image=np.zeros((48, 64, 3), np.uint8))
    config = fusion.FilterConfig.preset(
        "casmvsnet", confidence_thresholds=(0.5,), min_consistent_views=2)
    cloud = fusion.fuse_views(views, pairs[:2], config)
    band = _in_border_band(cloud.points, views)
    assert cloud.view_stats[0].points_kept > 0.5 * 24 * 32
    assert _plane_error(cloud.points[~band], normal, offset).max() < 1e-4


def test_float32_round_trip_at_real_dtu_scale(real_data_dir):
    # Real DTU cameras (mm, f ~ 2900 px at 1600x1200) scaled to 400x300 and a
    # plane through the scan's sparse points, fronto-parallel in view 0: the
    # float32 round trip must stay far below CL-MVSNet's tightest threshold
    # (0.15 px, 0.1 %). The fixture's cams hold K for 1/8 of the full size.
    from keras_mvs.data import formats

    DTU_SCAN24 = real_data_dir / "mvsnet_format" / "dtu_scan24"

    def camera(view_id):
        cam = formats.read_cam_file(
            os.path.join(DTU_SCAN24, "cams", f"{view_id:08d}_cam.txt"))
        return (geometry.scale_intrinsics(cam.intrinsics, 2.0).numpy(),
                np.asarray(cam.cam_from_world, np.float32))

    pairs = formats.read_pair_file(os.path.join(DTU_SCAN24, "pair.txt"))
    sparse = np.load(os.path.join(DTU_SCAN24, "sparse_points_dtu_frame.npz"))
    K, pose = camera(0)
    normal = pose[2, :3].astype(np.float64)
    offset = float(normal @ np.median(sparse["xyz"], axis=0))
    sources = [camera(s) for s, _ in pairs[0][1][:4]]
    errors = fusion.reprojection_errors(
        _plane_depth(K, pose, normal, offset, 300, 400), K, pose,
        np.stack([_plane_depth(k, p, normal, offset, 300, 400)
                  for k, p in sources]),
        np.stack([k for k, _ in sources]), np.stack([p for _, p in sources]))
    # Away from the image borders (where zero padding blends in), nearly all
    # of the overlap is exact up to float32 rounding.
    interior = errors.relative_depth_error < 1e-3
    assert interior.mean() > 0.7
    assert np.percentile(errors.pixel_error[interior], 99) < 2e-3
    assert np.percentile(errors.relative_depth_error[interior], 99) < 1e-6
