"""Resizing and cropping a view together with its intrinsics, and the
per-example transforms of the input pipeline (crop, float conversion, ICC
augmentation).

One convention throughout (DESIGN.md 3, ALGORITHMS.md 1.8): pixel (row i,
column j) has its centre at x = j, y = i; a resize by factors (sx, sy)
multiplies K's rows 0 and 1 by them, with no half-pixel shift; a crop moves
the principal point by minus its offset.
"""

from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_mvs.data import augment


def resize_view(image: np.ndarray, intrinsics: np.ndarray, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image resized to `height x width` and its intrinsics to match.

    The image is resized bilinearly with half-pixel centres and no
    antialiasing, as cv2.INTER_LINEAR does in the reference loaders; K rows
    0 and 1 are multiplied by `width / W` and `height / H` (the factors may
    differ; ALGORITHMS.md 1.8.1). Both scene loaders (`MVSScene.load_view`
    and the folder reader of the input pipeline) resize through here.

    Args:
        image: `[H, W, C]` uint8, or float in [0, 1].
        intrinsics: `(3, 3)` K in pixels of `image`.
        height, width: the target size in pixels.

    Returns:
        `(image, intrinsics)`: `[height, width, C]`, uint8 (rounded) for a
        uint8 input, else float32 clipped to [0, 1] (the input itself when
        the size is unchanged); `(3, 3)` float64 K in pixels of the result.
    """
    image_height, image_width = image.shape[:2]
    intrinsics = np.array(intrinsics, dtype=np.float64)
    intrinsics[0] *= width / image_width
    intrinsics[1] *= height / image_height
    if (image_height, image_width) == (height, width):
        return image, intrinsics
    resized = tf.image.resize(image.astype(np.float32), (height, width),
                              method="bilinear", antialias=False).numpy()
    if image.dtype == np.uint8:
        return np.clip(np.round(resized), 0, 255).astype(np.uint8), intrinsics
    return np.clip(resized, 0.0, 1.0), intrinsics


def nearest_rows_cols(height: int, width: int, new_height: int,
                      new_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices floor(i * H / H') of an OpenCV-style nearest resize
    (cv2.INTER_NEAREST, ALGORITHMS.md 9 item 24): `x[rows[:, None], cols]`
    resizes a depth map or mask without interpolating between depths."""
    rows = (np.arange(new_height) * height) // new_height
    cols = (np.arange(new_width) * width) // new_width
    return rows, cols


def crop_intrinsics(intrinsics: tf.Tensor, offset_y: tf.Tensor,
                    offset_x: tf.Tensor) -> tf.Tensor:
    """Intrinsics of a crop whose top-left pixel is (offset_y, offset_x).

    Pixel (i, j) of the crop is pixel (i + offset_y, j + offset_x) of the
    image, so the principal point moves by minus the offset; focal lengths
    are unchanged.

    Args:
        intrinsics: `[..., 3, 3]` float32, pixels of the uncropped image.
        offset_y: scalar, rows removed at the top.
        offset_x: scalar, columns removed at the left.

    Returns:
        `[..., 3, 3]` float32 intrinsics of the crop.
    """
    intrinsics = tf.convert_to_tensor(intrinsics, tf.float32)
    shift = tf.stack([tf.cast(offset_x, tf.float32),
                      tf.cast(offset_y, tf.float32), 0.0])
    # Subtracting shift * K[2, :] from rows 0 and 1 is exact for any K whose
    # last row is (0, 0, 1).
    row_shift = tf.concat([shift[:2, tf.newaxis] * intrinsics[..., 2:3, :],
                           tf.zeros_like(intrinsics[..., 2:3, :])], axis=-2)
    return intrinsics - row_shift


def crop_offset(height: tf.Tensor, width: tf.Tensor, crop: tuple[int, int],
                seed: Optional[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """Top-left corner `(offset_y, offset_x)` of a `crop` window in an image
    of `height x width`: uniform over the valid offsets (stateless, from the
    `[2]` int64 `seed`), or centred when `seed` is None."""
    spare_y, spare_x = height - crop[0], width - crop[1]
    if seed is None:
        return spare_y // 2, spare_x // 2
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    offset_y = tf.random.stateless_uniform(
        [], seeds[0], minval=0, maxval=spare_y + 1, dtype=tf.int32)
    offset_x = tf.random.stateless_uniform(
        [], seeds[1], minval=0, maxval=spare_x + 1, dtype=tf.int32)
    return offset_y, offset_x


def finish_example(example: dict, *, crop: Optional[tuple[int, int]],
                   random_crop: bool, with_icc: bool,
                   keep: Sequence[str]) -> dict:
    """Crop, float conversion and ICC augmentation of one view tuple.

    Args:
        example: one uint8 view tuple of the pipeline (`images`,
            `intrinsics`, optional `scc_*`, `depth`, `mask`, and `seed`, the
            example's `[2]` int64 stateless seed).
        crop: optional (height, width); one window for every view and
            branch of the example.
        random_crop: a seeded random window; otherwise centred.
        with_icc: add `icc_images`, `augment.augment_views` of the cropped
            float images.
        keep: the keys to return.

    Returns:
        The example with float32 images in [0, 1], restricted to `keep`.
    """
    example = dict(example)
    image_keys = [k for k in ("images", "scc_images") if k in example]
    if crop is not None:
        shape = tf.shape(example["images"])
        crop_seed = (tf.random.experimental.stateless_fold_in(
            example["seed"], 2) if random_crop else None)
        top, left = crop_offset(shape[1], shape[2], crop, crop_seed)
        for key in image_keys:
            example[key] = example[key][:, top:top + crop[0],
                                        left:left + crop[1]]
        for key in ("depth", "mask"):
            if key in example:
                example[key] = example[key][top:top + crop[0],
                                            left:left + crop[1]]
        for key in ("intrinsics", "scc_intrinsics"):
            if key in example:
                example[key] = crop_intrinsics(example[key], top, left)
    for key in image_keys:
        example[key] = tf.image.convert_image_dtype(example[key], tf.float32)
    if with_icc:
        example["icc_images"] = augment.augment_views(
            example["images"],
            tf.random.experimental.stateless_fold_in(example["seed"], 3))
    if crop is not None:
        for key in image_keys + ["icc_images"]:
            if key in example:
                example[key] = tf.ensure_shape(
                    example[key], [None, crop[0], crop[1], 3])
        for key in ("depth", "mask"):
            if key in example:
                example[key] = tf.ensure_shape(example[key], crop)
    return {k: v for k, v in example.items() if k in keep}
