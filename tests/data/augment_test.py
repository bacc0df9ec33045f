"""Tests for keras_mvs.data.augment (ICC jitter + gamma, ALGORITHMS.md 4.1)."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from keras_mvs.data import augment


def _image(seed: int = 0, height: int = 6, width: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(
        0.05, 0.95, (height, width, 3)
    ).astype(np.float32)


def _identity_params(num_views: int, order=(0, 1, 2, 3)) -> augment.ColorParams:
    ones = tf.ones([num_views])
    return augment.ColorParams(
        brightness=ones, contrast=ones, saturation=ones,
        hue=tf.zeros([num_views]), gamma=ones,
        order=tf.tile(tf.constant([order], tf.int32), [num_views, 1]),
    )


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_identity_parameters_return_the_input(order):
    images = np.stack([_image(0), _image(1)])
    out = augment.apply_color_params(images, _identity_params(2, order))
    np.testing.assert_allclose(out.numpy(), images, atol=2e-6)


def test_single_operations_match_hand_computed_values():
    image = _image(3)
    gray = image @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(
        augment.adjust_brightness(image, 0.5).numpy(), 0.5 * image, atol=1e-6)
    np.testing.assert_allclose(
        augment.adjust_brightness(image, 2.0).numpy(),
        np.minimum(2.0 * image, 1.0), atol=1e-6)
    # Contrast 0 is the mean luma everywhere; saturation 0 is the luma.
    np.testing.assert_allclose(
        augment.adjust_contrast(image, 0.0).numpy(),
        np.full_like(image, gray.mean()), atol=1e-6)
    np.testing.assert_allclose(
        augment.adjust_saturation(image, 0.0).numpy(),
        np.repeat(gray[..., None], 3, axis=-1), atol=1e-6)
    np.testing.assert_allclose(
        augment.adjust_contrast(image, 1.5).numpy(),
        np.clip(1.5 * image - 0.5 * gray.mean(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(
        augment.adjust_gamma(image, 2.0).numpy(), image ** 2, atol=1e-6)


def test_hue_shift_rotates_the_colour_wheel():
    red = np.array([[[1.0, 0.0, 0.0]]], np.float32)
    np.testing.assert_allclose(
        augment.adjust_hue(red, 0.5).numpy(), [[[0.0, 1.0, 1.0]]], atol=1e-6)
    image = _image(4)
    shifted = augment.adjust_hue(image, -0.2).numpy()
    for pixel, result in zip(image.reshape(-1, 3), shifted.reshape(-1, 3)):
        h, s, v = colorsys.rgb_to_hsv(*pixel)
        np.testing.assert_allclose(
            result, colorsys.hsv_to_rgb((h - 0.2) % 1.0, s, v), atol=1e-5)


def _one_view_params(brightness, contrast, saturation, hue, gamma, order):
    return augment.ColorParams(
        *[tf.constant([value], tf.float32)
          for value in (brightness, contrast, saturation, hue, gamma)],
        order=tf.constant([order], tf.int32))


def test_order_matters_and_is_followed():
    image = _image(5)
    luma = np.array([0.299, 0.587, 0.114])
    # Brightness 1.8 then contrast 0 gives the mean grey of the brightened
    # (and clipped) image; the reverse order gives 1.8 times the mean grey.
    bright_first = augment.apply_color_params(
        image[None], _one_view_params(1.8, 0.0, 1.0, 0.0, 1.0, [0, 1, 2, 3]))
    contrast_first = augment.apply_color_params(
        image[None], _one_view_params(1.8, 0.0, 1.0, 0.0, 1.0, [1, 0, 2, 3]))
    gray_mean = float((image @ luma).mean())
    np.testing.assert_allclose(contrast_first.numpy(), 1.8 * gray_mean,
                               atol=1e-5)
    bright_mean = float((np.minimum(1.8 * image, 1) @ luma).mean())
    assert abs(bright_mean - 1.8 * gray_mean) > 0.01
    np.testing.assert_allclose(bright_first.numpy(), bright_mean, atol=1e-5)


def test_all_steps_and_gamma_compose_per_view():
    images = np.stack([_image(6), _image(7)])
    params = augment.ColorParams(
        brightness=tf.constant([0.7, 1.2]), contrast=tf.constant([1.3, 0.6]),
        saturation=tf.constant([0.5, 1.4]), hue=tf.constant([0.25, -0.4]),
        gamma=tf.constant([0.6, 1.7]),
        order=tf.constant([[3, 0, 2, 1], [1, 2, 0, 3]], tf.int32))
    out = augment.apply_color_params(images, params).numpy()
    ops = (augment.adjust_brightness, augment.adjust_contrast,
           augment.adjust_saturation, augment.adjust_hue)
    factors = (params.brightness, params.contrast, params.saturation,
               params.hue)
    for view in range(2):
        expected = images[view]
        for operation in params.order[view].numpy():
            expected = ops[operation](expected, factors[operation][view])
        expected = augment.adjust_gamma(expected, params.gamma[view])
        np.testing.assert_allclose(out[view], expected, atol=1e-5)


def test_parameter_ranges_and_permutations():
    params = augment.sample_color_params(tf.constant([3, 4]), 4000)
    for name, (low, high) in [
        ("brightness", (0.0, 2.0)), ("contrast", (0.0, 2.0)),
        ("saturation", (0.5, 1.5)), ("hue", (-0.5, 0.5)), ("gamma", (0.5, 2.0)),
    ]:
        values = getattr(params, name).numpy()
        assert values.min() >= low and values.max() <= high, name
        # Uniform: the sample spans the range and centres on its middle.
        assert values.min() < low + 0.01 * (high - low), name
        assert values.max() > high - 0.01 * (high - low), name
        assert abs(values.mean() - (low + high) / 2) < 0.03 * (high - low), name
    order = params.order.numpy()
    np.testing.assert_array_equal(np.sort(order, axis=1),
                                  np.tile(range(4), (4000, 1)))
    # Every operation comes first about a quarter of the time.
    counts = np.bincount(order[:, 0], minlength=4) / 4000
    np.testing.assert_allclose(counts, 0.25, atol=0.03)
    # Views draw independently: brightness and contrast are uncorrelated.
    assert abs(np.corrcoef(params.brightness, params.contrast)[0, 1]) < 0.05


def test_augment_views_is_seeded_per_view_and_in_range():
    images = np.stack([_image(0)] * 3)
    first = augment.augment_views(images, tf.constant([1, 2])).numpy()
    again = augment.augment_views(images, tf.constant([1, 2])).numpy()
    other = augment.augment_views(images, tf.constant([1, 3])).numpy()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.01
    # Identical inputs, independent parameters: the views differ.
    assert np.abs(first[0] - first[1]).max() > 0.01
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert first.shape == images.shape and first.dtype == np.float32
