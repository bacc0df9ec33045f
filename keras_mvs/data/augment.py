"""Photometric augmentation of CL-MVSNet's image-level contrastive branch.

ALGORITHMS.md 4.1: every view of the image-level (ICC) branch independently
gets torchvision's `ColorJitter(brightness=1, contrast=1, saturation=0.5,
hue=0.5)` followed by a random gamma in U[0.5, 2] clipped to [0, 1]. In
torchvision terms the jitter draws

* a brightness factor b in [0, 2]: `clip(b * x)`,
* a contrast factor c in [0, 2]: `clip(c * x + (1 - c) * mean(gray(x)))`,
* a saturation factor s in [0.5, 1.5]: `clip(s * x + (1 - s) * gray(x))`,
* a hue shift h in [-0.5, 0.5] turns of the colour wheel,

and applies the four in a random order (`torch.randperm(4)`), which is kept
here. `gray` uses the ITU-R 601-2 luma weights (0.299, 0.587, 0.114) of PIL's
`convert("L")`, because CL-MVSNet jitters PIL images.

This runs in the `tf.data` pipeline, not in the train step: HSV conversion
per view with a data-dependent order does not belong under XLA. Every draw is
stateless (`tf.random.stateless_*`) from an explicit `[2]` seed, so the same
seed gives the same images. The Bernoulli source masking and the reference
rectangle of the ICC branch are not here: the trainer applies them in the
step (they are cheap elementwise ops on normalised images).

Differences from the reference: it jitters 8-bit PIL images, so each
operation rounds to uint8 and PIL's hue shift is quantised to 1/255 of a
turn; here everything stays in float32.
"""

from typing import NamedTuple

import tensorflow as tf

# ColorJitter(brightness=1, contrast=1, saturation=0.5, hue=0.5) of CL-MVSNet
# (ALGORITHMS.md 4.1) as factor ranges.
BRIGHTNESS_RANGE = (0.0, 2.0)
CONTRAST_RANGE = (0.0, 2.0)
SATURATION_RANGE = (0.5, 1.5)
HUE_RANGE = (-0.5, 0.5)
# RandomGamma(min_gamma=0.5, max_gamma=2.0, clip_image=True).
GAMMA_RANGE = (0.5, 2.0)

# Luma weights of PIL's RGB -> "L" conversion (ITU-R 601-2).
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Operation codes used in `ColorParams.order`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


class ColorParams(NamedTuple):
    """Per-view augmentation parameters; every field has leading axis `[V]`.

    Attributes:
        brightness: `[V]` float32 brightness factors.
        contrast: `[V]` float32 contrast factors.
        saturation: `[V]` float32 saturation factors.
        hue: `[V]` float32 hue shifts in turns (1 = a full turn).
        gamma: `[V]` float32 gamma exponents.
        order: `[V, 4]` int32, a permutation of the operation codes
            (`BRIGHTNESS`, `CONTRAST`, `SATURATION`, `HUE`) per view, applied
            first to last.
    """

    brightness: tf.Tensor
    contrast: tf.Tensor
    saturation: tf.Tensor
    hue: tf.Tensor
    gamma: tf.Tensor
    order: tf.Tensor


def _gray(images: tf.Tensor) -> tf.Tensor:
    """`[..., H, W, 3]` -> `[..., H, W, 1]` luma."""
    # Channel slices are several times faster than a reduction over an
    # axis of size 3 on CPU.
    red, green, blue = (images[..., i:i + 1] for i in range(3))
    return (_LUMA_WEIGHTS[0] * red + _LUMA_WEIGHTS[1] * green
            + _LUMA_WEIGHTS[2] * blue)


def _per_image(factor: tf.Tensor) -> tf.Tensor:
    """Scalar or `[...]` per-image value -> broadcastable `[..., 1, 1, 1]`.

    Floating values become float32; integer ones (operation codes) stay.
    """
    factor = tf.convert_to_tensor(factor)
    if factor.dtype.is_floating:
        factor = tf.cast(factor, tf.float32)
    return factor[..., tf.newaxis, tf.newaxis, tf.newaxis]


def _blend(images: tf.Tensor, other: tf.Tensor,
           factor: tf.Tensor) -> tf.Tensor:
    """torchvision's `_blend`: `clip(factor * images + (1 - factor) * other)`.

    A factor of exactly 1 returns `images` unchanged (for values in [0, 1]).
    """
    return tf.clip_by_value(factor * images + (1.0 - factor) * other, 0.0,
                            1.0)


def adjust_brightness(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Scales intensities: `clip(factor * images, 0, 1)`.

    Args:
        images: `[..., H, W, 3]` float32 RGB in [0, 1].
        factor: float32, scalar or one per image (`[...]`); 1 is the
            identity, 0 gives black.

    Returns:
        `[..., H, W, 3]` float32 in [0, 1].
    """
    return _blend(images, 0.0, _per_image(factor))


def adjust_contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blends each image with its mean luma (a uniform grey).

    Args:
        images: `[..., H, W, 3]` float32 RGB in [0, 1].
        factor: float32, scalar or `[...]`; 1 is the identity, 0 gives the
            mean grey.

    Returns:
        `[..., H, W, 3]` float32 in [0, 1].
    """
    mean = tf.reduce_mean(_gray(images), axis=[-3, -2, -1], keepdims=True)
    return _blend(images, mean, _per_image(factor))


def adjust_saturation(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Blends each image with its own grey version.

    Args:
        images: `[..., H, W, 3]` float32 RGB in [0, 1].
        factor: float32, scalar or `[...]`; 1 is the identity, 0 gives grey
            levels.

    Returns:
        `[..., H, W, 3]` float32 in [0, 1].
    """
    return _blend(images, _gray(images), _per_image(factor))


def adjust_hue(images: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """Rotates the hue by `shift` turns (HSV hue plus shift, modulo 1).

    Args:
        images: `[..., H, W, 3]` float32 RGB in [0, 1].
        shift: float32, scalar or `[...]`, in turns; 0 is the identity (up
            to the float rounding of the HSV round trip), 0.5 maps red to
            cyan.

    Returns:
        `[..., H, W, 3]` float32 in [0, 1].
    """
    # HSV round trip written with elementwise ops (the RGBToHSV kernel is
    # about 10x slower on CPU). With v = max, c = max - min and the hue h in
    # sixths of a turn, channel n of the HSV -> RGB formula is
    # v - c * clip(min(k, 4 - k), 0, 1) with k = (n + h) mod 6, n = 5, 3, 1
    # for R, G, B; v and c do not change under a hue shift.
    red, green, blue = (images[..., i:i + 1] for i in range(3))
    value = tf.maximum(tf.maximum(red, green), blue)
    chroma = value - tf.minimum(tf.minimum(red, green), blue)
    inverse_chroma = 1.0 / tf.where(chroma > 0, chroma, 1.0)
    hue = tf.where(
        value == red, (green - blue) * inverse_chroma,
        tf.where(value == green, (blue - red) * inverse_chroma + 2.0,
                 (red - green) * inverse_chroma + 4.0))
    hue = hue + 6.0 * _per_image(shift)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = offset + hue
        # k mod 6 via floor: tf.math.floormod is much slower on CPU.
        k = k - 6.0 * tf.floor(k * (1.0 / 6.0))
        channels.append(value - chroma * tf.clip_by_value(
            tf.minimum(k, 4.0 - k), 0.0, 1.0))
    return tf.clip_by_value(tf.concat(channels, axis=-1), 0.0, 1.0)


def adjust_gamma(images: tf.Tensor, gamma: tf.Tensor) -> tf.Tensor:
    """`clip(images ** gamma, 0, 1)` (CL-MVSNet's RandomGamma with clipping).

    Args:
        images: `[..., H, W, 3]` float32 RGB in [0, 1].
        gamma: float32, scalar or `[...]` exponents.

    Returns:
        `[..., H, W, 3]` float32 in [0, 1].
    """
    # exp(g log x) is several times faster than tf.pow on CPU; x = 0 gives
    # exp(-inf) = 0 = 0 ** g for g > 0.
    return tf.clip_by_value(tf.exp(_per_image(gamma) * tf.math.log(images)),
                            0.0, 1.0)


def sample_color_params(seed: tf.Tensor, num_views: int) -> ColorParams:
    """Draws independent augmentation parameters for each view.

    Args:
        seed: `[2]` int32 or int64 stateless seed.
        num_views: V, the number of views (a Python int or scalar tensor).

    Returns:
        `ColorParams` with `[V]` fields uniform in the module's ranges and a
        uniformly random permutation `order [V, 4]`.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=6)

    def uniform(index: int, bounds: tuple[float, float]) -> tf.Tensor:
        return tf.random.stateless_uniform(
            [num_views], seeds[index], minval=bounds[0], maxval=bounds[1]
        )

    # argsort of i.i.d. uniforms is a uniformly random permutation.
    keys = tf.random.stateless_uniform([num_views, 4], seeds[5])
    return ColorParams(
        brightness=uniform(0, BRIGHTNESS_RANGE),
        contrast=uniform(1, CONTRAST_RANGE),
        saturation=uniform(2, SATURATION_RANGE),
        hue=uniform(3, HUE_RANGE),
        gamma=uniform(4, GAMMA_RANGE),
        order=tf.argsort(keys, axis=-1, stable=True),
    )


def apply_color_params(images: tf.Tensor, params: ColorParams) -> tf.Tensor:
    """Jitters and gamma-corrects each view with its own parameters.

    Vectorised over views without control flow: at each of the four steps
    every view is blended (brightness, contrast and saturation are all
    `clip(f * x + (1 - f) * other)`, with `other` black, the mean grey or
    the grey image, and f = 1 for a view whose step is the hue), and only
    the views whose step is the hue go through the HSV round trip.

    Args:
        images: `[V, H, W, 3]` float32 RGB in [0, 1].
        params: `ColorParams` with leading axis V.

    Returns:
        `[V, H, W, 3]` float32 in [0, 1].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    for step in range(4):
        operation = params.order[:, step]  # [V]
        factor = tf.gather(
            tf.stack([params.brightness, params.contrast, params.saturation,
                      tf.ones_like(params.hue)], axis=-1),
            operation, batch_dims=1)
        gray = _gray(images)  # [V, H, W, 1]
        mean = tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)
        operation_4d = _per_image(operation)
        other = tf.where(operation_4d == BRIGHTNESS, 0.0,
                         tf.where(operation_4d == CONTRAST, mean, gray))
        images = _blend(images, other, _per_image(factor))
        hue_views = tf.where(operation == HUE)  # [K, 1] int64
        shifted = adjust_hue(tf.gather_nd(images, hue_views),
                             tf.gather_nd(params.hue, hue_views))
        images = tf.tensor_scatter_nd_update(images, hue_views, shifted)
    return adjust_gamma(images, params.gamma)


def augment_views(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The ICC image augmentation: per-view ColorJitter then random gamma.

    Args:
        images: `[V, H, W, 3]` float32 RGB in [0, 1].
        seed: `[2]` int32 or int64 stateless seed; equal seeds give equal
            outputs.

    Returns:
        `[V, H, W, 3]` float32 in [0, 1].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    params = sample_color_params(seed, tf.shape(images)[0])
    return apply_color_params(images, params)
