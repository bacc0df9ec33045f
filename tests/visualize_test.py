"""Tests for keras_mvs.visualize: previews, PNG writing, cloud renders."""

import os

import numpy as np
import pytest
from PIL import Image

from keras_mvs import visualize

LOW = (68, 1, 84)
HIGH = (253, 231, 37)


def _luminance(rgb):
    return rgb.astype(np.float64) @ [0.2126, 0.7152, 0.0722]


def test_colorize_depth_ramp_range_and_invalid_pixels():
    depth = np.linspace(500.0, 900.0, 200).reshape(1, 200)
    rgb = visualize.colorize_depth(depth, vmin=500.0, vmax=900.0)
    assert rgb.shape == (1, 200, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == LOW and tuple(rgb[0, -1]) == HIGH
    # Luminance never decreases along the ramp and rises end to end.
    luminance = _luminance(rgb[0])
    assert np.all(np.diff(luminance) >= 0)
    assert luminance[-1] - luminance[0] > 180

    depth = depth.copy()
    depth[0, 3], depth[0, 4] = 0.0, np.nan
    mask = np.ones_like(depth, bool)
    mask[0, 5] = False
    rgb = visualize.colorize_depth(depth, mask)
    assert (rgb[0, 3:6] == 0).all()
    assert (rgb[0, 6:].max(axis=-1) > 0).all()  # the map is never black


def test_colorize_depth_default_range_ignores_outliers():
    depth = np.concatenate([np.linspace(1.0, 100.0, 99), [1e6]]).reshape(
        10, 10)
    low, high = np.percentile(depth, [2, 98])
    np.testing.assert_array_equal(
        visualize.colorize_depth(depth),
        visualize.colorize_depth(depth, vmin=low, vmax=high))
    rgb = visualize.colorize_depth(depth)
    assert tuple(rgb[-1, -1]) == HIGH  # the outlier is clipped
    assert _luminance(rgb[5, 0]) < _luminance(rgb[8, 0])
    assert (visualize.colorize_depth(np.zeros((2, 3))) == 0).all()
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        visualize.colorize_depth(np.zeros(4))


def test_colorize_confidence():
    rgb = visualize.colorize_confidence(
        np.array([[0.0, 0.5, 1.0, 1.7, np.nan]]))
    assert tuple(rgb[0, 0]) == LOW
    assert tuple(rgb[0, 1]) == (33, 145, 140)  # the middle anchor
    assert tuple(rgb[0, 2]) == HIGH and tuple(rgb[0, 3]) == HIGH
    assert tuple(rgb[0, 4]) == (0, 0, 0)


def test_save_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    path = str(tmp_path / "preview.png")
    visualize.save_png(path, rgb)
    assert os.listdir(tmp_path) == ["preview.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    with pytest.raises(ValueError, match="uint8"):
        visualize.save_png(path, rgb.astype(np.float32))


def test_render_point_cloud_projection_and_z_buffer():
    K = np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]])
    pose = np.eye(4)
    # (1, -1, 10) projects to x = 4 + 1, y = 3 - 1; (0, 0, 5) and (0, 0, 8)
    # share pixel (4, 3), where the nearer (red) must win in any order.
    points = np.array([[1.0, -1, 10], [0, 0, 8], [0, 0, 5], [0, 0, -5]])
    colors = np.array([[0, 255, 0], [0, 0, 255], [255, 0, 0],
                       [255, 255, 255]], np.uint8)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        image = visualize.render_point_cloud(
            points[order], colors[order], 9, 7, cam_from_world=pose,
            intrinsics=K)
        assert image.shape == (7, 9, 3) and image.dtype == np.uint8
        assert tuple(image[2, 5]) == (0, 255, 0)
        assert tuple(image[3, 4]) == (255, 0, 0)
        # Only two pixels are drawn; the point behind the camera is not.
        assert np.count_nonzero(image.any(axis=-1)) == 2
    big = visualize.render_point_cloud(points[:1], colors[:1], 9, 7, pose, K,
                                       point_size=3)
    assert np.count_nonzero(big.any(axis=-1)) == 9
    assert (big[1:4, 4:7] == (0, 255, 0)).all()


def test_render_point_cloud_default_view_centres_the_cloud():
    # A square in the plane z = 50 with a red centre, looked at along +z.
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5),
                                indexing="ij"), -1).reshape(-1, 2)
    points = np.concatenate([grid, np.full((25, 1), 50.0)], 1) + [3, 4, 0]
    colors = np.full((25, 3), 128, np.uint8)
    colors[12] = (255, 0, 0)  # grid point (0, 0): the centroid
    image = visualize.render_point_cloud(points, colors, 31, 21)
    assert tuple(image[10, 15]) == (255, 0, 0)
    assert np.count_nonzero(image.any(axis=-1)) == 25  # all in view
    # With up = -y the world's +x stays to the right: the corner (+1, +1)
    # appears right of and below the centre.
    rows, cols = np.nonzero(image.any(axis=-1))
    assert cols.max() > 15 and rows.max() > 10
    corner = np.zeros((25, 3), np.uint8)
    corner[24] = (0, 0, 255)  # grid point (+1, +1)
    image = visualize.render_point_cloud(points, corner, 31, 21)
    row, col = np.argwhere((image == (0, 0, 255)).all(-1))[0]
    assert col > 15 and row > 10
