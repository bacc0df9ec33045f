"""CL-MVSNet's unsupervised photometric losses (ALGORITHMS.md 4.2).

What this module owns: the images the losses compare (`standardize_images`),
the inverse warp of each source into the reference, the robust penalty
`smooth_l05`, the per-view reconstruction loss with image-gradient terms, the
"minimum over views" with its 1e4 invalid penalty, SSIM over the first two
sources, edge-aware depth smoothness, the stage loss
`8 L_rec + 6 L_ssim + 0.18 L_smooth` and its stage-weighted sum over the
cascade. All of it follows `CL:loss.py::UnSupLoss` and `CL:tools.py`.

Conventions: images `[B, V, H, W, 3]` with view 0 the reference, intrinsics
`[B, V, 3, 3]` in pixels of the map they are used with, `cam_from_world
[B, V, 4, 4]`, depth `[B, H, W]` in camera-file units. Projection goes
through `keras_mvs.geometry` (pixel centres at integer coordinates). The
losses are differentiable with respect to the depth; they compute in float32
(float64 depth keeps float64, for gradient checks). Sources are folded into
the batch axis, so one traced function serves any number of views.

Two behaviours of the reference code are selectable:

* `reference_quirks=True` projects into every source with the reference
  intrinsics and uses the bottom bound `y0 <= H - 1` in the validity mask,
  as `CL:tools.py::inverse_warping` does; the default uses each view's own
  intrinsics and the bound `y1 <= H - 1` of the sample's lower taps. In both
  modes a point must lie in front of the source camera (the reference has no
  such test and divides by `z + 1e-10`).
* `view_min="reference"` reduces each view's loss to a scalar before the
  per-pixel minimum (the reference; it picks the globally best view among
  those that see a pixel); `view_min="per_pixel"` takes a true per-pixel
  minimum of per-pixel loss maps (see `_reconstruction_losses`). The
  functions here default to the reference; the training configs use
  `per_pixel`, which trained faster and better in a measured comparison
  (`experiments/configs/base.py`, README).
"""

from typing import Mapping
from typing import Sequence

import tensorflow as tf

from keras_mvs import geometry
from keras_mvs.losses.depth import TensorLike
from keras_mvs.losses.depth import _check_stage_lengths
from keras_mvs.losses.depth import _spatial_size
from keras_mvs.losses.depth import downsample_to

# Robust-penalty threshold of `CL:tools.py::smooth_l0_5`: below it the
# penalty is quadratic so that its gradient stays finite at 0.
SMOOTH_L05_BETA = 2.0**-10
# Added to a view's loss where it does not see the pixel, so the per-pixel
# minimum prefers any view that sees it; pixels seen by no view are dropped.
INVALID_VIEW_PENALTY = 1e4
# Term weights of `CL:loss.py::UnSupLoss` (`--wrecon` 8; 6 and 0.18 are
# hard-coded there) and the weight of the gradient terms in the per-view
# reconstruction loss (`compute_reconstr_loss_l0_5`, alpha 0.5).
RECONSTRUCTION_WEIGHT = 8.0
SSIM_WEIGHT = 6.0
SMOOTHNESS_WEIGHT = 0.18
GRADIENT_TERM_WEIGHT = 0.5
# SSIM constants (`CL:tools.py::SSIM`) and the floor added to its map.
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
SSIM_FLOOR = 1e-6
# Only the first two sources enter the SSIM term (ALGORITHMS.md 4.2 step 5).
SSIM_NUM_SOURCES = 2
VIEW_MIN_MODES = ("reference", "per_pixel")


def _compute_dtype(x: tf.Tensor) -> tf.DType:
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def standardize_images(images: TensorLike) -> tf.Tensor:
    """Standardises each image and channel: `(I - mean) / (std + 1e-8)`.

    CL-MVSNet's `center_image`: the photometric losses compare these images,
    not the network's ImageNet-normalised input. Mean and standard deviation
    (population, numpy's default `ddof=0`) run over the whole image, per view
    and per channel.

    Args:
        images: `[B, V, H, W, 3]` images (any scale, e.g. [0, 1]).

    Returns:
        `[B, V, H, W, 3]` float32 with zero mean and unit deviation per image
        and channel.
    """
    images = tf.convert_to_tensor(images)
    images = tf.cast(images, _compute_dtype(images))
    tf.debugging.assert_rank(images, 5, message="images must be "
                             "[B, V, H, W, 3]")
    mean = tf.reduce_mean(images, axis=[2, 3], keepdims=True)
    std = tf.sqrt(tf.reduce_mean(tf.square(images - mean), axis=[2, 3],
                                 keepdims=True))
    return (images - mean) / (std + 1e-8)


def smooth_l05(x: TensorLike) -> tf.Tensor:
    """Smooth L0.5 penalty (ALGORITHMS.md 4.2 step 2), element-wise.

    `2**15 x**2` where `|x| < 2**-10`, else `sqrt(|x|)`. The branches meet at
    `|x| = 2**-10` with the value `2**-5`.

    Args:
        x: any shape.

    Returns:
        Same shape and dtype (float32 unless float64).
    """
    x = tf.convert_to_tensor(x)
    x = tf.cast(x, _compute_dtype(x))
    abs_x = tf.abs(x)
    small = abs_x < SMOOTH_L05_BETA
    # sqrt's gradient is infinite at 0; keep its input away from 0 where the
    # quadratic branch is selected, so no 0 * inf reaches the gradient.
    safe_abs = tf.where(small, tf.ones_like(abs_x), abs_x)
    return tf.where(small, (2.0**15) * tf.square(x), tf.sqrt(safe_abs))


def _inverse_warp(
    src_images: tf.Tensor,
    depth: tf.Tensor,
    ref_intrinsics: tf.Tensor,
    ref_cam_from_world: tf.Tensor,
    src_intrinsics: tf.Tensor,
    src_cam_from_world: tf.Tensor,
    reference_quirks: bool,
):
    """Warps each source image into the reference view at the given depth.

    Args:
        src_images: `[B, S, H, W, C]` source images.
        depth: `[B, H, W]` reference depth.
        ref_intrinsics: `[B, 3, 3]`; ref_cam_from_world: `[B, 4, 4]`.
        src_intrinsics: `[B, S, 3, 3]`; src_cam_from_world: `[B, S, 4, 4]`.
        reference_quirks: project with the reference intrinsics and use the
            bottom bound `y0 <= H - 1`, as the reference code does.

    Returns:
        `(warped [B, S, H, W, C], mask [B, S, H, W])`. `warped` is the
        bilinear sample with the coordinates clamped to the source, as the
        reference's sampler computes it: a pixel that projects outside reads
        border values, not zeros. The reconstruction term masks those pixels
        out, but the SSIM windows at the mask's edge read them.
        `mask` is 1 where the pixel is valid for the loss.
    """
    shape = tf.shape(src_images)
    batch, num_src = shape[0], shape[1]
    height, width = shape[2], shape[3]
    flat = batch * num_src
    src_flat = tf.reshape(src_images, tf.concat([[flat], shape[2:]], 0))
    depth_flat = tf.repeat(depth, num_src, axis=0)  # [B*S, H, W]
    ref_cam_flat = tf.repeat(ref_cam_from_world, num_src, axis=0)
    ref_k_flat = tf.repeat(ref_intrinsics, num_src, axis=0)
    src_cam_flat = tf.reshape(src_cam_from_world, [flat, 4, 4])
    if reference_quirks:
        projection_k = ref_k_flat
    else:
        projection_k = tf.reshape(src_intrinsics, [flat, 3, 3])
    pixels, src_depth = geometry.reproject(
        depth_flat, ref_k_flat, ref_cam_flat, projection_k, src_cam_flat)

    x, y = pixels[..., 0], pixels[..., 1]  # [B*S, H, W]
    x0 = tf.stop_gradient(tf.floor(x))
    y0 = tf.stop_gradient(tf.floor(y))
    max_x = tf.cast(width - 1, x.dtype)
    max_y = tf.cast(height - 1, x.dtype)
    if reference_quirks:
        bottom_ok = y0 <= max_y
    else:
        bottom_ok = y0 + 1.0 <= max_y
    # NaN pixels (points behind the source) fail every comparison.
    valid = ((x0 >= 0.0) & (x0 + 1.0 <= max_x) & (y0 >= 0.0) & bottom_ok
             & (src_depth > 0.0))

    warped = geometry.bilinear_sample(tf.cast(src_flat, x.dtype), pixels,
                                      padding="border")
    warped = tf.reshape(warped, tf.concat([[batch, num_src], shape[2:]], 0))
    mask = tf.reshape(tf.cast(valid, x.dtype),
                      tf.stack([batch, num_src, height, width]))
    return warped, mask


def _forward_differences(x: tf.Tensor):
    """Forward differences of `[..., H, W, C]` along W and H."""
    return x[..., :, 1:, :] - x[..., :, :-1, :], x[..., 1:, :, :] - x[
        ..., :-1, :, :]


def _reconstruction_losses(
    warped: tf.Tensor, ref_image: tf.Tensor, mask: tf.Tensor
):
    """Per-view reconstruction loss (`compute_reconstr_loss_l0_5`).

    `l_v = 0.5 mean rho(W M - I M) + 0.5 (mean rho(dx(W M) - dx(I M)) +
    mean rho(dy(W M) - dy(I M)))`, each mean over every element of its
    tensor (batch included; masked pixels contribute rho(0) = 0).

    The per-pixel map spreads the same quantity over pixels: at pixel p, the
    channel mean of the photometric penalty plus the channel means of the
    gradient penalties of the forward differences starting at p (0 on the
    last column / row), the latter scaled by `W / (W - 1)` and
    `H / (H - 1)`. With that scaling the mean of the map over `B x H x W`
    equals the scalar `l_v` exactly, so both "min over views" modes rank the
    same quantity.

    Args:
        warped: `[B, S, H, W, C]` warped sources.
        ref_image: `[B, H, W, C]`.
        mask: `[B, S, H, W]` validity.

    Returns:
        `(losses [S], loss_maps [B, S, H, W])`.
    """
    mask = mask[..., tf.newaxis]
    warped_masked = warped * mask
    ref_masked = ref_image[:, tf.newaxis] * mask  # [B, S, H, W, C]
    photometric = smooth_l05(warped_masked - ref_masked)
    warped_dx, warped_dy = _forward_differences(warped_masked)
    ref_dx, ref_dy = _forward_differences(ref_masked)
    gradient_x = smooth_l05(warped_dx - ref_dx)  # [B, S, H, W-1, C]
    gradient_y = smooth_l05(warped_dy - ref_dy)  # [B, S, H-1, W, C]

    axes = [0, 2, 3, 4]
    losses = (1.0 - GRADIENT_TERM_WEIGHT) * tf.reduce_mean(
        photometric, axis=axes) + GRADIENT_TERM_WEIGHT * (
        tf.reduce_mean(gradient_x, axis=axes)
        + tf.reduce_mean(gradient_y, axis=axes))  # [S]

    shape = tf.shape(photometric)
    height = tf.cast(shape[2], photometric.dtype)
    width = tf.cast(shape[3], photometric.dtype)
    map_x = tf.pad(tf.reduce_mean(gradient_x, axis=-1),
                   [[0, 0], [0, 0], [0, 0], [0, 1]]) * (width / (width - 1.0))
    map_y = tf.pad(tf.reduce_mean(gradient_y, axis=-1),
                   [[0, 0], [0, 0], [0, 1], [0, 0]]) * (height / (height - 1.0))
    loss_maps = (1.0 - GRADIENT_TERM_WEIGHT) * tf.reduce_mean(
        photometric, axis=-1) + GRADIENT_TERM_WEIGHT * (map_x + map_y)
    return losses, loss_maps


def _min_over_views(losses: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The masked "minimum over views" of ALGORITHMS.md 4.2 step 4.

    Per pixel: `min_v (l_v + 1e4 (1 - M_v))`, set to 0 where that minimum is
    at least 1e4 (no view sees the pixel), then the mean over all pixels.

    Args:
        losses: per-view losses broadcastable to `mask`: `[1, S, 1, 1]`
            scalars (the reference) or `[B, S, H, W]` maps.
        mask: `[B, S, H, W]` validity.

    Returns:
        Scalar mean over the `B x H x W` pixels.
    """
    penalised = losses + INVALID_VIEW_PENALTY * (1.0 - mask)
    best = tf.reduce_min(penalised, axis=1)  # [B, H, W]
    best = tf.where(best < INVALID_VIEW_PENALTY, best, tf.zeros_like(best))
    return tf.reduce_mean(best)


def _ssim_loss(
    ref_image: tf.Tensor, warped: tf.Tensor, mask: tf.Tensor
) -> tf.Tensor:
    """SSIM term of one or more sources (`CL:tools.py::SSIM`), summed.

    Per view: the map `clamp((1 - SSIM) / 2, 0, 1) + 1e-6` of 3x3 valid mean
    filters, times the 3x3-averaged mask, averaged over all its elements; 0
    for a view whose pooled mask is empty. The views are summed.

    Args:
        ref_image: `[B, H, W, C]`.
        warped: `[B, S, H, W, C]` warped sources (unmasked).
        mask: `[B, S, H, W]` validity.

    Returns:
        Scalar.
    """
    shape = tf.shape(warped)
    batch, num_src = shape[0], shape[1]
    flat = batch * num_src
    y = tf.reshape(warped, tf.concat([[flat], shape[2:]], 0))
    x = tf.repeat(ref_image, num_src, axis=0)  # [B*S, H, W, C]
    mask_flat = tf.reshape(mask, tf.concat([[flat], shape[2:4], [1]], 0))

    def pool(t):
        return tf.nn.avg_pool2d(t, ksize=3, strides=1, padding="VALID")

    mu_x, mu_y = pool(x), pool(y)
    sigma_x = pool(x * x) - mu_x**2
    sigma_y = pool(y * y) - mu_y**2
    sigma_xy = pool(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y
                                                   + SSIM_C2)
    pooled_mask = pool(mask_flat)  # [B*S, H-2, W-2, 1]
    dissimilarity = (tf.clip_by_value((1.0 - numerator / denominator) / 2.0,
                                      0.0, 1.0) + SSIM_FLOOR) * pooled_mask
    per_view_shape = tf.concat([[batch, num_src], tf.shape(dissimilarity)[1:]],
                               0)
    dissimilarity = tf.reshape(dissimilarity, per_view_shape)
    pooled_mask = tf.reshape(pooled_mask, tf.concat(
        [[batch, num_src], tf.shape(pooled_mask)[1:]], 0))
    per_view = tf.reduce_mean(dissimilarity, axis=[0, 2, 3, 4])  # [S]
    seen = tf.reduce_sum(pooled_mask, axis=[0, 2, 3, 4]) > 0.0
    return tf.reduce_sum(tf.where(seen, per_view, tf.zeros_like(per_view)))


def _smoothness_loss(depth: tf.Tensor, ref_image: tf.Tensor) -> tf.Tensor:
    """Edge-aware first-order smoothness (`CL:tools.py::depth_smoothness`).

    `mean |dx D exp(-mean_c |dx I|)| + mean |dy D exp(-mean_c |dy I|)|`.

    Args:
        depth: `[B, H, W]` depth in its own units.
        ref_image: `[B, H, W, C]` standardised reference image.

    Returns:
        Scalar.
    """
    depth_dx, depth_dy = _forward_differences(depth[..., tf.newaxis])
    image_dx, image_dy = _forward_differences(ref_image)
    weight_x = tf.exp(-tf.reduce_mean(tf.abs(image_dx), axis=-1,
                                      keepdims=True))
    weight_y = tf.exp(-tf.reduce_mean(tf.abs(image_dy), axis=-1,
                                      keepdims=True))
    return tf.reduce_mean(tf.abs(depth_dx * weight_x)) + tf.reduce_mean(
        tf.abs(depth_dy * weight_y))


def _downsample_views(images: tf.Tensor, height, width) -> tf.Tensor:
    """Top-left-of-block downsampling of `[B, V, H, W, C]` to height x width."""
    shape = tf.shape(images)
    folded = tf.reshape(images, tf.concat([[-1], shape[2:]], 0))
    small = downsample_to(folded, height, width)
    return tf.reshape(small, tf.concat([shape[:2], tf.shape(small)[1:]], 0))


def unsupervised_stage_loss(
    images: TensorLike,
    intrinsics: TensorLike,
    cam_from_world: TensorLike,
    depth: TensorLike,
    view_min: str = "reference",
    reference_quirks: bool = False,
) -> dict:
    """CL-MVSNet's unsupervised loss of one stage (ALGORITHMS.md 4.2, 1-7).

    Every source is warped into the reference with the stage depth; the
    loss is `8 L_rec + 6 L_ssim + 0.18 L_smooth`:

    * `L_rec`: per-view reconstruction losses, then the masked minimum over
      views with the 1e4 penalty (`view_min`, see the module docstring),
      averaged over all `B x h x w` pixels;
    * `L_ssim`: SSIM dissimilarity of the first two sources, summed;
    * `L_smooth`: edge-aware smoothness of the depth.

    As in the reference, if any source sees no pixel of the batch (an
    all-zero mask over the whole batch, the reference's `mask.sum() == 0`)
    the stage returns 0 for every term. The decision is per batch, not per
    batch element, exactly as the reference; with one sample per replica
    (the reference's setting) the two coincide.

    Args:
        images: `[B, V, H, W, 3]` the images compared, view 0 the reference,
            already standardised by the caller (`standardize_images`). When
            the depth map is smaller, they are subsampled by taking the
            top-left pixel of each block (H, W multiples of h, w).
        intrinsics: `[B, V, 3, 3]` for the depth map's resolution h x w.
        cam_from_world: `[B, V, 4, 4]` world-to-camera transforms.
        depth: `[B, h, w]` stage depth (differentiable), camera-file units.
        view_min: `"reference"` or `"per_pixel"`.
        reference_quirks: reproduce the reference's warp exactly (reference
            intrinsics for every source, bound `y0 <= H - 1`).

    Returns:
        Dict of scalars: `total`, `reconstruction`, `ssim`, `smoothness`
        (the unweighted terms; `total` is their weighted sum).

    Raises:
        ValueError: for an unknown `view_min` or fewer than 2 views.
    """
    if view_min not in VIEW_MIN_MODES:
        raise ValueError(f"view_min must be one of {VIEW_MIN_MODES}. "
                         f"Received: view_min={view_min!r}")
    depth = tf.convert_to_tensor(depth)
    dtype = _compute_dtype(depth)
    depth = tf.cast(depth, dtype)
    images = tf.cast(images, dtype)
    intrinsics = tf.cast(intrinsics, dtype)
    cam_from_world = tf.cast(cam_from_world, dtype)
    tf.debugging.assert_shapes([
        (images, ("B", "V", "H", "W", 3)),
        (intrinsics, ("B", "V", 3, 3)),
        (cam_from_world, ("B", "V", 4, 4)),
        (depth, ("B", "h", "w")),
    ])
    if images.shape[1] is not None and images.shape[1] < 2:
        raise ValueError("unsupervised_stage_loss needs a reference and at "
                         f"least one source. Received: {images.shape[1]} "
                         "view(s)")

    height, width = _spatial_size(depth)
    images = _downsample_views(images, height, width)  # [B, V, h, w, 3]
    ref_image = images[:, 0]
    warped, mask = _inverse_warp(
        images[:, 1:], depth, intrinsics[:, 0], cam_from_world[:, 0],
        intrinsics[:, 1:], cam_from_world[:, 1:], reference_quirks)

    losses, loss_maps = _reconstruction_losses(warped, ref_image, mask)
    if view_min == "reference":
        per_view = losses[tf.newaxis, :, tf.newaxis, tf.newaxis]
    else:
        per_view = loss_maps
    reconstruction = _min_over_views(per_view, mask)
    ssim = _ssim_loss(ref_image, warped[:, :SSIM_NUM_SOURCES],
                      mask[:, :SSIM_NUM_SOURCES])
    smoothness = _smoothness_loss(depth, ref_image)
    total = (RECONSTRUCTION_WEIGHT * reconstruction + SSIM_WEIGHT * ssim
             + SMOOTHNESS_WEIGHT * smoothness)

    every_source_sees = tf.reduce_all(
        tf.reduce_sum(mask, axis=[0, 2, 3]) > 0.0)
    terms = {"total": total, "reconstruction": reconstruction, "ssim": ssim,
             "smoothness": smoothness}
    return {name: tf.where(every_source_sees, value, tf.zeros_like(value))
            for name, value in terms.items()}


def unsupervised_cascade_loss(
    stages: Sequence[Mapping[str, tf.Tensor]],
    images: TensorLike,
    intrinsics: TensorLike,
    cam_from_world: TensorLike,
    stage_weights: Sequence[float] = (0.5, 1.0, 2.0),
    **stage_kwargs,
) -> dict:
    """Stage-weighted unsupervised loss of the cascade (ALGORITHMS.md 4.2 8).

    Stage s compares the images subsampled to its depth's size (top-left of
    each block) with the intrinsics scaled to that size.

    Args:
        stages: per-stage dicts, coarse to fine, each with `depth [B, h, w]`.
        images: `[B, V, H, W, 3]` standardised full-resolution images.
        intrinsics: `[B, V, 3, 3]` for the full-resolution images.
        cam_from_world: `[B, V, 4, 4]`.
        stage_weights: lambda_s, one per stage.
        **stage_kwargs: `view_min`, `reference_quirks` for
            `unsupervised_stage_loss`.

    Returns:
        Dict with, for each stage s (1 = coarsest), the unweighted terms
        `"reconstruction/stage{s}"`, `"ssim/stage{s}"`,
        `"smoothness/stage{s}"` and the stage loss `"unsup/stage{s}"`; the
        stage-weighted sums `"reconstruction"`, `"ssim"`, `"smoothness"`
        (for logging); and `"total"` = `sum_s lambda_s unsup_s` = `8
        reconstruction + 6 ssim + 0.18 smoothness`. Use `"total"`: summing
        every value would count terms several times.
    """
    if not stages:
        raise ValueError("stages is empty: expected one dict per stage.")
    _check_stage_lengths(stages, stage_weights=stage_weights)
    images = tf.convert_to_tensor(images)
    dtype = _compute_dtype(tf.convert_to_tensor(stages[0]["depth"]))
    intrinsics = tf.cast(intrinsics, dtype)
    full_height = tf.cast(tf.shape(images)[2], dtype)
    full_width = tf.cast(tf.shape(images)[3], dtype)
    parts = ("reconstruction", "ssim", "smoothness")
    terms = {}
    weighted = {name: tf.zeros([], dtype) for name in parts + ("total",)}
    for index, stage in enumerate(stages):
        depth = stage["depth"]
        height, width = _spatial_size(depth)
        stage_intrinsics = geometry.scale_intrinsics(
            intrinsics, tf.cast(width, dtype) / full_width,
            tf.cast(height, dtype) / full_height)
        stage_terms = unsupervised_stage_loss(
            images, stage_intrinsics, cam_from_world, depth, **stage_kwargs)
        suffix = f"/stage{index + 1}"
        for name in parts:
            terms[name + suffix] = stage_terms[name]
        terms["unsup" + suffix] = stage_terms["total"]
        for name in weighted:
            weighted[name] += stage_weights[index] * stage_terms[name]
    terms.update(weighted)
    return terms
