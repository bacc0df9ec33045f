"""Tests for keras_mvs.visualize: previews, PNG writing, cloud renders."""

import os

import numpy as np
import pytest
from PIL import Image

from keras_mvs import files
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


# === Legends (issue 17) ===


def test_nice_ticks_are_round_and_inside():
    np.testing.assert_allclose(visualize.nice_ticks(0.0, 1.0),
                               [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(visualize.nice_ticks(512.3, 891.7),
                               [600, 700, 800])
    np.testing.assert_allclose(visualize.nice_ticks(425.0, 935.0, count=6),
                               [500, 600, 700, 800, 900])


def test_depth_preview_keeps_the_map_and_adds_a_labelled_colour_bar():
    depth = np.tile(np.linspace(500.0, 900.0, 96), (64, 1))
    depth[:4, :4] = 0.0  # invalid: black, and the legend says so
    preview = visualize.depth_preview(depth, vmin=500.0, vmax=900.0,
                                      unit="mm")
    assert preview.dtype == np.uint8 and preview.shape[1] > 96 + 30
    assert preview.shape[0] >= 64
    np.testing.assert_array_equal(
        preview[:64, :96], visualize.colorize_depth(depth, vmin=500.0,
                                                    vmax=900.0))
    panel = preview[:, 96:]
    # A vertical ramp: the far (yellow) end on top, the near end below.
    colours = {tuple(c) for c in panel.reshape(-1, 3)}
    assert HIGH in colours and LOW in colours
    rows_high = np.nonzero(np.all(panel == HIGH, axis=-1))[0]
    rows_low = np.nonzero(np.all(panel == LOW, axis=-1))[0]
    assert rows_high.max() < rows_low.min()
    # Text (tick values, title) is drawn in black on the white panel.
    assert np.sum(np.all(panel < 60, axis=-1)) > 50
    assert np.sum(np.all(panel == 255, axis=-1)) > panel.shape[0] * 10


def test_confidence_preview_bar_spans_zero_to_one():
    confidence = np.tile(np.linspace(0.0, 1.0, 160), (128, 1))
    preview = visualize.confidence_preview(confidence)
    np.testing.assert_array_equal(preview[:128, :160],
                                  visualize.colorize_confidence(confidence))
    assert preview.shape[1] > 160


def test_render_command_uses_a_cam_file(tmp_path, capsys):
    from experiments import render
    from keras_mvs.data import formats

    # A red square 1000 mm in front of a camera at the origin.
    grid = np.stack(np.meshgrid(np.linspace(-50, 50, 40),
                                np.linspace(-50, 50, 40)), -1).reshape(-1, 2)
    points = np.concatenate([grid, np.full((len(grid), 1), 1000.0)], 1)
    colors = np.tile(np.array([[255, 0, 0]], np.uint8), (len(points), 1))
    cloud = tmp_path / "cloud.ply"
    files.write_ply(str(cloud), points.astype(np.float32), colors)
    (tmp_path / "cams").mkdir()
    cam_file = tmp_path / "cams" / "00000000_cam.txt"
    formats.write_cam_file(cam_file, formats.Camera(
        intrinsics=np.array([[800.0, 0, 160], [0, 800.0, 120], [0, 0, 1]]),
        cam_from_world=np.eye(4), depth_min=900.0, depth_interval=2.0))
    out = tmp_path / "view.png"
    assert render.main([str(cloud), "--out", str(out), "--camera",
                        str(cam_file), "--size", "160x120"]) == 0
    with Image.open(out) as png:
        image = np.asarray(png.convert("RGB"))
    assert image.shape == (120, 160, 3)
    red = np.all(image == (255, 0, 0), axis=-1)
    # 100 mm at 1000 mm with f = 400 px (scaled to 160 px): 40 px, centred.
    rows, cols = np.nonzero(red)
    assert abs(rows.mean() - 59.5) < 2 and abs(cols.mean() - 79.5) < 2
    assert 36 <= cols.max() - cols.min() <= 44
    assert f"{out}" in capsys.readouterr().out
