"""Tests for keras_mvs.data.transforms (resize and crop with intrinsics)."""

import numpy as np

from keras_mvs.data import transforms


def test_crop_intrinsics_shift_the_principal_point():
    intrinsics = np.array([[500.0, 0.5, 320.0], [0, 480.0, 256.0], [0, 0, 1]],
                          np.float32)
    cropped = transforms.crop_intrinsics(intrinsics, 44, 80).numpy()
    np.testing.assert_allclose(
        cropped, [[500.0, 0.5, 240.0], [0, 480.0, 212.0], [0, 0, 1]])
    # A point projecting to (u, v) in the image projects to (u - 80, v - 44)
    # in the crop.
    point = np.array([0.3, -0.2, 2.0], np.float32)
    full, crop = intrinsics @ point, cropped @ point
    np.testing.assert_allclose(crop[:2] / crop[2],
                               full[:2] / full[2] - [80, 44], rtol=1e-6)


def test_resize_view_halves_columns_with_half_pixel_centres():
    # Columns 0, 100, 200, 250 resized to 2 columns: output column j samples
    # x = 2 (j + 0.5) - 0.5, i.e. 0.5 and 2.5, the means of column pairs.
    image = np.tile(np.uint8([0, 100, 200, 250]), (4, 1))[..., None]
    image = np.repeat(image, 3, axis=-1)  # [4, 4, 3]
    intrinsics = np.array([[10.0, 0.0, 1.5], [0.0, 12.0, 1.5],
                           [0.0, 0.0, 1.0]])
    resized, scaled = transforms.resize_view(image, intrinsics, 4, 2)
    assert resized.dtype == np.uint8 and resized.shape == (4, 2, 3)
    np.testing.assert_array_equal(resized[..., 0], [[50, 225]] * 4)
    # fx and cx halve (no half-pixel shift); the row is untouched.
    np.testing.assert_array_equal(
        scaled, [[5.0, 0.0, 0.75], [0.0, 12.0, 1.5], [0.0, 0.0, 1.0]])
    # Float images in [0, 1] stay float.
    resized, _ = transforms.resize_view(image / np.float32(255), intrinsics,
                                        4, 2)
    assert resized.dtype == np.float32
    np.testing.assert_allclose(resized[..., 0], [[50 / 255, 225 / 255]] * 4,
                               rtol=1e-6)
    # Same size: the image as it is and a copy of K.
    same, copied = transforms.resize_view(image, intrinsics, 4, 4)
    assert same is image
    np.testing.assert_array_equal(copied, intrinsics)
    assert copied is not intrinsics


def test_nearest_rows_cols_take_the_top_left_sample():
    rows, cols = transforms.nearest_rows_cols(64, 128, 24, 96)
    np.testing.assert_array_equal(rows[:4], [0, 2, 5, 8])
    np.testing.assert_array_equal(cols[:4], [0, 1, 2, 4])
    rows, cols = transforms.nearest_rows_cols(4, 6, 2, 3)
    np.testing.assert_array_equal(rows, [0, 2])
    np.testing.assert_array_equal(cols, [0, 2, 4])
