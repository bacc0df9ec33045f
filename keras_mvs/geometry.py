"""Camera and plane-sweep geometry: pure TensorFlow functions on tensors.

This module is the one projective-geometry implementation of keras-mvs. The
network's homography warp, the photometric losses, depth fusion, evaluation
and the synthetic renderer's tests all call it, so that every part agrees on
one convention:

* Pixel (row i, column j) has its centre at x = j, y = i. Sampling at
  (x, y) = (0.5, 0) returns the mean of columns 0 and 1 of row 0; there is no
  half-pixel shift anywhere (the reference code's `align_corners=True`
  intent, ALGORITHMS.md 2.2).
* Bilinear sampling pads with zeros by default: a tap outside the image
  contributes 0 (the photometric loss alone clamps to the border, as
  CL-MVSNet's sampler does).
* `intrinsics [..., 3, 3]` are in pixels of the map they are used with.
  Resizing a map by s scales fx, fy, cx, cy by s (no half-pixel correction,
  ALGORITHMS.md 1.8).
* `cam_from_world [..., 4, 4]` maps world points to camera coordinates with
  OpenCV axes (x right, y down, z forward). Depth is the camera-frame z.
* Transforms are named `a_from_b` and compose left to right:
  `src_from_ref = src_from_world @ world_from_ref`.

Shapes use B (batch), D (depth hypotheses), H, W (height, width), C
(channels). Functions accept numpy arrays; floating inputs keep their dtype
(float64 works for gradient checks), anything else becomes float32.
"""

from typing import Optional
from typing import Union

import numpy as np
import tensorflow as tf

TensorLike = Union[tf.Tensor, np.ndarray, float, int]

# How `homography_warp` samples the source at a projected pixel (u, v):
# "exact" samples at (u, v) itself (the reference code's intent,
# `align_corners=True`); "align_corners_false" samples at
# (u W / (W - 1) - 0.5, v H / (H - 1) - 0.5), what the official code actually
# computes on PyTorch >= 1.3 (ALGORITHMS.md 2.2): it normalises with
# (W - 1) / 2 but calls `grid_sample` with the default
# `align_corners=False`. Every official checkpoint learned its weights under
# the second sampling.
WARP_SAMPLINGS = ("exact", "align_corners_false")

# Points closer to a camera than this (in depth units) are treated as not
# projectable: their projection is reported as invalid instead of dividing
# by a near-zero depth.
MIN_PROJECTABLE_DEPTH = 1e-6


def _float(x: TensorLike, dtype=None) -> tf.Tensor:
    """Converts `x` to a floating tensor (float32 unless already floating)."""
    if dtype is not None:
        return tf.cast(tf.convert_to_tensor(x), dtype)
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return x


def projection_matrices(
    intrinsics: TensorLike, cam_from_world: TensorLike
) -> tf.Tensor:
    """Builds 4x4 projection matrices `P = [[K R, K t], [0, 0, 0, 1]]`.

    `P` maps a homogeneous world point `[X, 1]` to `[d * x, d * y, d, 1]`,
    where (x, y) is its pixel and d its depth, so `inv(P)` lifts
    `[d * p, 1]` back to the world (ALGORITHMS.md 2.2).

    Args:
        intrinsics: `[..., 3, 3]` pixel intrinsics.
        cam_from_world: `[..., 4, 4]` world-to-camera transforms.

    Returns:
        `[..., 4, 4]` projection matrices.

    Example:
        >>> P = projection_matrices(np.eye(3), np.eye(4))  # identity camera
    """
    intrinsics = _float(intrinsics)
    cam_from_world = _float(cam_from_world, intrinsics.dtype)
    top = tf.linalg.matmul(intrinsics, cam_from_world[..., :3, :4])
    bottom = tf.broadcast_to(
        tf.constant([0.0, 0.0, 0.0, 1.0], intrinsics.dtype),
        tf.concat([tf.shape(top)[:-2], [1, 4]], axis=0),
    )
    return tf.concat([top, bottom], axis=-2)


def scale_intrinsics(
    intrinsics: TensorLike,
    scale_x: TensorLike,
    scale_y: TensorLike = None,
) -> tf.Tensor:
    """Rescales intrinsics for a map resized by (scale_x, scale_y).

    Rows 0 and 1 of K are multiplied by the factors (fx, cx by scale_x; fy, cy
    by scale_y), the MVSNet convention with no half-pixel shift.

    Args:
        intrinsics: `[..., 3, 3]`.
        scale_x: new width / old width (scalar or broadcastable to `[...]`).
        scale_y: new height / old height; defaults to `scale_x`.

    Returns:
        `[..., 3, 3]` intrinsics of the resized map.
    """
    intrinsics = _float(intrinsics)
    scale_x = _float(scale_x, intrinsics.dtype)
    scale_y = scale_x if scale_y is None else _float(scale_y, intrinsics.dtype)
    ones = tf.ones_like(scale_x * scale_y)
    factors = tf.stack([scale_x * ones, scale_y * ones, ones], axis=-1)
    return intrinsics * factors[..., :, tf.newaxis]


def pixel_grid(height, width, dtype=tf.float32) -> tf.Tensor:
    """The `[H, W, 2]` grid of pixel coordinates (x = column, y = row)."""
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=dtype), tf.range(width, dtype=dtype),
        indexing="ij",
    )
    return tf.stack([xs, ys], axis=-1)


def bilinear_sample(image: TensorLike, coords: TensorLike,
                    padding: str = "zeros") -> tf.Tensor:
    """Samples `image` bilinearly at pixel coordinates.

    A gather-based sampler (no tensorflow-addons) that compiles under XLA and
    is differentiable with respect to both the image values and the
    coordinates. Two paddings:

    * `"zeros"`: each of the four taps outside the image contributes zero;
      non-finite coordinates sample zero (the plane-sweep warp, as
      `grid_sample(padding_mode="zeros")`).
    * `"border"`: the coordinates are clamped to the image first, so a
      point outside reads the nearest border value and carries no gradient
      along the clamped axis; non-finite coordinates read pixel (0, 0).
      This is what CL-MVSNet's photometric sampler computes: it clamps the
      tap indices and weights them with the clamped upper taps, which
      amounts to the same values (ALGORITHMS.md 4.2 step 1).

    Args:
        image: `[B, H, W, C]`.
        coords: `[B, ..., 2]` as (x, y) in pixels of `image`.
        padding: "zeros" or "border".

    Returns:
        `[B, ..., C]` samples, same dtype as `image`.

    Example:
        >>> img = tf.reshape(tf.range(4.0), [1, 1, 4, 1])
        >>> bilinear_sample(img, [[[0.5, 0.0]]])  # mean of columns 0 and 1
    """
    if padding not in ("zeros", "border"):
        raise ValueError('`padding` must be "zeros" or "border". '
                         f"Received: padding={padding!r}")
    image = _float(image)
    coords = _float(coords)
    if coords.dtype != image.dtype and image.dtype in (tf.float16,
                                                       tf.bfloat16):
        compute_dtype = coords.dtype
    else:
        compute_dtype = image.dtype
    coords = tf.cast(coords, compute_dtype)
    shape = tf.shape(image)
    batch, height, width = shape[0], shape[1], shape[2]
    channels = image.shape[-1] if image.shape[-1] is not None else shape[3]
    coords_shape = tf.shape(coords)
    flat_coords = tf.reshape(coords, [batch, -1, 2])  # [B, N, 2]

    finite = tf.reduce_all(tf.math.is_finite(flat_coords), axis=-1)
    flat_coords = tf.where(
        finite[..., tf.newaxis], flat_coords, tf.constant(-2.0, compute_dtype)
    )
    x, y = flat_coords[..., 0], flat_coords[..., 1]
    max_x = tf.cast(width - 1, compute_dtype)
    max_y = tf.cast(height - 1, compute_dtype)
    if padding == "border":
        x = tf.clip_by_value(x, 0.0, max_x)
        y = tf.clip_by_value(y, 0.0, max_y)
    x0, y0 = tf.floor(x), tf.floor(y)
    # Weights are linear in the coordinates, so gradients reach them.
    wx1, wy1 = x - x0, y - y0
    wx0, wy0 = 1.0 - wx1, 1.0 - wy1

    flat_image = tf.reshape(tf.cast(image, compute_dtype),
                            [batch, -1, channels])  # [B, H*W, C]
    result = 0.0
    for tap_x, tap_y, weight in (
        (x0, y0, wx0 * wy0),
        (x0 + 1.0, y0, wx1 * wy0),
        (x0, y0 + 1.0, wx0 * wy1),
        (x0 + 1.0, y0 + 1.0, wx1 * wy1),
    ):
        inside = (tap_x >= 0.0) & (tap_x <= max_x) & (tap_y >= 0.0) & (
            tap_y <= max_y)
        ix = tf.cast(tf.clip_by_value(tap_x, 0.0, max_x), tf.int32)
        iy = tf.cast(tf.clip_by_value(tap_y, 0.0, max_y), tf.int32)
        values = tf.gather(flat_image, iy * width + ix, batch_dims=1)
        weight = tf.where(inside, weight, tf.zeros_like(weight))
        result += values * weight[..., tf.newaxis]  # [B, N, C]

    out_shape = tf.concat([coords_shape[:-1], [channels]], axis=0)
    return tf.cast(tf.reshape(result, out_shape), image.dtype)


def transform_points(transform: TensorLike, points: TensorLike) -> tf.Tensor:
    """Applies `[B, 4, 4]` rigid transforms to `[B, ..., 3]` points."""
    points = _float(points)
    transform = _float(transform, points.dtype)
    flat = tf.reshape(points, [tf.shape(points)[0], -1, 3])  # [B, N, 3]
    moved = tf.linalg.matmul(flat, transform[:, :3, :3], transpose_b=True)
    moved += transform[:, tf.newaxis, :3, 3]
    return tf.reshape(moved, tf.shape(points))


def unproject(depth: TensorLike, intrinsics: TensorLike) -> tf.Tensor:
    """Lifts every pixel of a depth map to camera coordinates.

    Args:
        depth: `[B, H, W]` camera-frame z.
        intrinsics: `[B, 3, 3]` for the depth map's resolution.

    Returns:
        `[B, H, W, 3]` points `d * inv(K) @ [x, y, 1]` in the camera frame.
    """
    depth = _float(depth)
    intrinsics = _float(intrinsics, depth.dtype)
    shape = tf.shape(depth)
    grid = pixel_grid(shape[1], shape[2], depth.dtype)  # [H, W, 2]
    homogeneous = tf.concat([grid, tf.ones_like(grid[..., :1])], axis=-1)
    rays = tf.einsum("bij,hwj->bhwi", tf.linalg.inv(intrinsics), homogeneous)
    return rays * depth[..., tf.newaxis]  # [B, H, W, 3]


def project(points_cam: TensorLike, intrinsics: TensorLike):
    """Projects camera-frame points to pixels.

    Args:
        points_cam: `[B, ..., 3]` points in the camera frame.
        intrinsics: `[B, 3, 3]`.

    Returns:
        `(pixels [B, ..., 2], depth [B, ...])`. Points with depth below
        `MIN_PROJECTABLE_DEPTH` (behind or at the camera) get NaN pixels, which
        `bilinear_sample` reads as outside the image.
    """
    points_cam = _float(points_cam)
    intrinsics = _float(intrinsics, points_cam.dtype)
    flat = tf.reshape(points_cam, [tf.shape(points_cam)[0], -1, 3])
    image_points = tf.linalg.matmul(flat, intrinsics, transpose_b=True)
    z = image_points[..., 2]
    projectable = z > MIN_PROJECTABLE_DEPTH
    safe_z = tf.where(projectable, z, tf.ones_like(z))
    pixels = image_points[..., :2] / safe_z[..., tf.newaxis]
    nan = tf.constant(np.nan, pixels.dtype)
    pixels = tf.where(projectable[..., tf.newaxis], pixels, nan)
    out_shape = tf.shape(points_cam)
    pixels = tf.reshape(pixels, tf.concat([out_shape[:-1], [2]], axis=0))
    depth = tf.reshape(flat[..., 2], out_shape[:-1])
    return pixels, depth


def relative_transform(
    src_cam_from_world: TensorLike, ref_cam_from_world: TensorLike
) -> tf.Tensor:
    """`src_from_ref = src_from_world @ inv(ref_from_world)`, `[..., 4, 4]`."""
    src_cam_from_world = _float(src_cam_from_world)
    ref_cam_from_world = _float(ref_cam_from_world, src_cam_from_world.dtype)
    return tf.linalg.matmul(
        src_cam_from_world, tf.linalg.inv(ref_cam_from_world))


def reproject(
    depth_ref: TensorLike,
    ref_intrinsics: TensorLike,
    ref_cam_from_world: TensorLike,
    src_intrinsics: TensorLike,
    src_cam_from_world: TensorLike,
):
    """Maps every reference pixel, at its depth, into a source view.

    Args:
        depth_ref: `[B, H, W]` reference depth.
        ref_intrinsics, src_intrinsics: `[B, 3, 3]`.
        ref_cam_from_world, src_cam_from_world: `[B, 4, 4]`.

    Returns:
        `(pixels_src [B, H, W, 2], depth_src [B, H, W])`: where each reference
        pixel lands in the source and its depth in the source frame. Pixels are
        NaN where the point is not in front of the source camera.
    """
    points_ref = unproject(depth_ref, ref_intrinsics)
    src_from_ref = relative_transform(src_cam_from_world, ref_cam_from_world)
    points_src = transform_points(src_from_ref, points_ref)
    return project(points_src, src_intrinsics)


def _matrix_dtype(features: tf.Tensor) -> tf.DType:
    """The warp's geometry dtype: float64 for float64 features, else
    float32 (half-precision features are warped with float32 geometry)."""
    return tf.float64 if features.dtype == tf.float64 else tf.float32


def plane_sweep_sampler(
    src_features: TensorLike,
    src_proj: TensorLike,
    ref_proj: TensorLike,
    height,
    width,
    sampling: str = "exact",
    ref_offset: Optional[TensorLike] = None,
):
    """The sampler of `homography_warp`, for warping one plane at a time.

    Args:
        src_features: `[B, H, W, C]` source feature map.
        src_proj: `[B, 4, 4]` source projection matrix at this map's scale.
        ref_proj: `[B, 4, 4]` reference projection matrix at this scale.
        height, width: the reference grid, `h x w` (ints or int32 scalars).
        sampling: "exact" or "align_corners_false" (`homography_warp`).
        ref_offset: `(y0, x0)` of the reference grid in the map `ref_proj`
            describes, or None (`homography_warp`).

    Returns:
        `sample(depth)`: `depth [B, h, w]` or `[B, D, h, w]` (depth units,
        the matrices' dtype) -> the source sampled where each reference
        pixel at that depth projects, `[B, h, w, C]` or `[B, D, h, w, C]`,
        the dtype of `src_features`; exactly the values of `homography_warp`
        at those depths.

    Raises:
        ValueError: for an unknown `sampling`.
    """
    if sampling not in WARP_SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {WARP_SAMPLINGS}. "
                         f"Received: sampling={sampling!r}")
    src_features = _float(src_features)
    matrix_dtype = _matrix_dtype(src_features)
    src_proj = _float(src_proj, matrix_dtype)
    ref_proj = _float(ref_proj, matrix_dtype)
    shape = tf.shape(src_features)
    size = tf.cast(tf.stack([shape[2], shape[1]]), matrix_dtype)  # source's
    src_from_ref = tf.linalg.matmul(src_proj, tf.linalg.inv(ref_proj))
    rotation = src_from_ref[:, :3, :3]
    translation = src_from_ref[:, :3, 3]
    grid = pixel_grid(height, width, matrix_dtype)
    if ref_offset is not None:
        # Whole numbers, so the window's coordinates are exactly the ones
        # these pixels have in the whole map.
        offset = tf.cast(ref_offset, matrix_dtype)
        grid = grid + tf.stack([offset[1], offset[0]])
    homogeneous = tf.concat([grid, tf.ones_like(grid[..., :1])], axis=-1)
    rays = tf.einsum("bij,hwj->bhwi", rotation, homogeneous)  # [B, H, W, 3]

    def sample(depth):
        """Samples the source at `depth [B, ..., H, W]`: `[B, ..., H, W, C]`."""
        extra = len(depth.shape) - 3  # 1 for [B, D, H, W], 0 for a plane
        ray = rays
        shift = translation[:, tf.newaxis, tf.newaxis, :]
        for _ in range(extra):
            ray, shift = ray[:, tf.newaxis], shift[:, tf.newaxis]
        points = ray * depth[..., tf.newaxis] + shift
        z = points[..., 2]
        projectable = z > MIN_PROJECTABLE_DEPTH
        safe_z = tf.where(projectable, z, tf.ones_like(z))
        coords = points[..., :2] / safe_z[..., tf.newaxis]
        if sampling == "align_corners_false":
            # grid_sample(align_corners=False) maps the normalised
            # u / ((W-1)/2) - 1 back to pixels as ((u_n + 1) W - 1) / 2.
            coords = coords * (size / tf.maximum(size - 1.0, 1.0)) - 0.5
        coords = tf.where(projectable[..., tf.newaxis], coords,
                          tf.constant(np.nan, matrix_dtype))
        return bilinear_sample(src_features, tf.stop_gradient(coords))

    return sample


def homography_warp(
    src_features: TensorLike,
    src_proj: TensorLike,
    ref_proj: TensorLike,
    depth_hypotheses: TensorLike,
    sampling: str = "exact",
    plane_by_plane: bool = False,
    ref_offset: Optional[TensorLike] = None,
) -> tf.Tensor:
    """Warps source features onto the reference view for each depth plane.

    Plane-sweep warping (Eq. 1 of MVSNet in its projective form): with
    `M = P_src @ inv(P_ref)`, `A = M[:3, :3]` and `b = M[:3, 3]`, the
    reference pixel p at depth d lands at `d * A p + b` in the source. The
    translation is not multiplied by d because `inv(P_ref)` is applied to the
    homogeneous `[d p, 1]`. The source is sampled bilinearly with zero
    padding, at the projected pixel itself (`sampling="exact"`) or where the
    official code samples it (`sampling="align_corners_false"`: at
    `(u W / (W - 1) - 0.5, v H / (H - 1) - 0.5)`, see `WARP_SAMPLINGS`;
    converted official checkpoints need it). As in the reference code, the
    sampling grid carries no gradient: the warp is differentiable with
    respect to the source features only. Points that fall behind the source
    camera sample zero (the reference code divides by z regardless).

    Args:
        src_features: `[B, H, W, C]` source feature map.
        src_proj: `[B, 4, 4]` source projection matrix at this map's scale.
        ref_proj: `[B, 4, 4]` reference projection matrix at this scale.
        depth_hypotheses: `[B, D]` (the same planes for every pixel) or
            `[B, D, H, W]` (per-pixel hypotheses).
        sampling: "exact" (default) or "align_corners_false".
        plane_by_plane: project and sample one depth plane at a time (a
            `tf.while_loop`), so the sampler's intermediates (points,
            coordinates, the four taps' indices, weights and values) have
            the size of one plane, not of the whole `[B, D, H, W, C]`
            volume. The same values; for plain graph mode, where TF's
            kernels would otherwise hold several volume-sized
            intermediates. XLA fuses the batched form by itself.
        ref_offset: `(y0, x0)`, a tensor so that new values do not retrace:
            warp onto a window of the reference map instead of all of it
            (tiled inference). The reference pixels are then the
            hypotheses' `h x w` grid starting at row y0, column x0 of the
            map `ref_proj` describes, so `depth_hypotheses` must be
            `[B, D, h, w]`; every pixel gets the coordinates, hence the
            values, it has in the whole map. None (default): the reference
            grid is the source map's `H x W` from (0, 0).

    Returns:
        `[B, D, H, W, C]` warped features (`[B, D, h, w, C]` with
        `ref_offset`), the dtype of `src_features`.

    Raises:
        ValueError: for an unknown `sampling`.

    Example:
        >>> P = projection_matrices(K[None], E[None])
        >>> volume = homography_warp(features, P, P, tf.constant([[1.0, 2.0]]))
    """
    # plane_sweep_sampler checks `sampling`, before any sampling is done.
    src_features, depth_hypotheses, height, width, num_depths = (
        _sweep_inputs(src_features, depth_hypotheses, ref_offset))
    sample = plane_sweep_sampler(src_features, src_proj, ref_proj, height,
                                 width, sampling, ref_offset)

    if not plane_by_plane:
        return sample(depth_hypotheses)  # [B, D, H, W, C]

    planes = tf.TensorArray(src_features.dtype, size=num_depths,
                            element_shape=tf.TensorShape(
                                [None, None, None, src_features.shape[-1]]))

    def body(index, planes):
        return index + 1, planes.write(
            index, sample(depth_hypotheses[:, index]))

    # maximum_iterations: XLA (a whole training step compiled) needs the
    # bound to size the loop's gradient accumulators.
    _, planes = tf.while_loop(lambda index, _: index < num_depths, body,
                              (tf.constant(0), planes),
                              parallel_iterations=1,
                              maximum_iterations=num_depths)
    return tf.transpose(planes.stack(), [1, 0, 2, 3, 4])  # [B, D, H, W, C]


def homography_warp_vjp(
    src_features: TensorLike,
    upstream: TensorLike,
    src_proj: TensorLike,
    ref_proj: TensorLike,
    depth_hypotheses: TensorLike,
    sampling: str = "exact",
    ref_offset: Optional[TensorLike] = None,
) -> tf.Tensor:
    """The gradient of `homography_warp` with respect to the source features.

    `upstream` is the gradient reaching the warped volume; the result is
    what `tf.GradientTape` gives for `src_features` through
    `homography_warp(src_features, src_proj, ref_proj, depth_hypotheses,
    sampling, ref_offset=ref_offset)` (the warp has no other gradient),
    computed one depth plane at a time and summed over the planes, so only
    one plane's sampler intermediates exist at once. Compiled with XLA, the
    gradient taken through the whole compiled warp instead keeps several
    volume-sized intermediates of the forward pass (the `xla_warp` of
    `CascadeMVSNet` uses this function as its gradient).

    Args:
        src_features: `[B, H, W, C]`.
        upstream: `[B, D, h, w, C]`, the warped volume's gradient.
        src_proj, ref_proj, depth_hypotheses, sampling, ref_offset: as for
            `homography_warp`.

    Returns:
        `[B, H, W, C]`, the dtype of `src_features`.
    """
    src_features, depth_hypotheses, height, width, num_depths = (
        _sweep_inputs(src_features, depth_hypotheses, ref_offset))
    upstream = tf.cast(upstream, src_features.dtype)

    def body(index, total):
        with tf.GradientTape() as tape:
            tape.watch(src_features)
            plane = plane_sweep_sampler(
                src_features, src_proj, ref_proj, height, width, sampling,
                ref_offset)(depth_hypotheses[:, index])  # [B, h, w, C]
        return index + 1, total + tape.gradient(
            plane, src_features, output_gradients=upstream[:, index])

    _, gradient = tf.while_loop(
        lambda index, _: index < num_depths, body,
        (tf.constant(0), tf.zeros_like(src_features)),
        parallel_iterations=1)
    return gradient


def _sweep_inputs(src_features, depth_hypotheses, ref_offset):
    """The inputs of `homography_warp` and its VJP as they sample: float
    source features, `[B, D, h, w]` hypotheses in the matrices' dtype, and
    the reference grid's h, w and D. `[B, D]` and `[B, D, H, W]`
    hypotheses alike, without relying on the static rank (a relaxed
    retrace, e.g. under XLA with reduce_retracing, may lose it)."""
    src_features = _float(src_features)
    depth_hypotheses = _float(depth_hypotheses,
                              _matrix_dtype(src_features))
    shape = tf.shape(src_features)
    batch, height, width = shape[0], shape[1], shape[2]
    if ref_offset is not None:
        height = tf.shape(depth_hypotheses)[2]
        width = tf.shape(depth_hypotheses)[3]
    num_depths = tf.shape(depth_hypotheses)[1]
    depth_hypotheses = tf.reshape(
        tf.broadcast_to(
            tf.reshape(depth_hypotheses, tf.stack([batch, num_depths, -1])),
            tf.stack([batch, num_depths, height * width])),
        tf.stack([batch, num_depths, height, width]))
    return src_features, depth_hypotheses, height, width, num_depths


def initial_depth_hypotheses(
    depth_min: TensorLike,
    depth_max: TensorLike,
    num_depths: int,
    height,
    width,
) -> tf.Tensor:
    """Stage-1 hypotheses: `num_depths` planes from min to max, both included.

    Args:
        depth_min, depth_max: `[B]`.
        num_depths: D.
        height, width: the stage resolution.

    Returns:
        `[B, D, H, W]` with `h_k = min + k (max - min) / (D - 1)`.
    """
    depth_min = _float(depth_min)
    depth_max = _float(depth_max, depth_min.dtype)
    steps = tf.range(num_depths, dtype=depth_min.dtype) / tf.cast(
        max(num_depths - 1, 1), depth_min.dtype)
    planes = (depth_min[:, tf.newaxis]
              + steps * (depth_max - depth_min)[:, tf.newaxis])  # [B, D]
    return tf.broadcast_to(
        planes[:, :, tf.newaxis, tf.newaxis],
        tf.stack([tf.shape(planes)[0], num_depths, height, width]),
    )


def refined_depth_hypotheses(
    prev_depth: TensorLike,
    num_depths: int,
    interval: TensorLike,
    height,
    width,
) -> tf.Tensor:
    """Hypotheses of a refinement stage around the previous stage's depth.

    The band `prev - D * interval / 2 ... prev + D * interval / 2` is sampled
    with both ends included (spacing `D * interval / (D - 1)`) at the previous
    resolution, then resized bilinearly with half-pixel centres (PyTorch
    `align_corners=False`) to `height x width`, the UniMVSNet / CL-MVSNet
    order (ALGORITHMS.md 2.5). Hypotheses are not clamped to the depth range,
    and the previous depth is a constant (stop-gradient).

    Args:
        prev_depth: `[B, h, w]` depth of the previous stage.
        num_depths: D of this stage.
        interval: nominal interval `r_s * base`, scalar or `[B]`.
        height, width: this stage's resolution.

    Returns:
        `[B, D, H, W]`.
    """
    prev_depth = tf.stop_gradient(_float(prev_depth))
    interval = _float(interval, prev_depth.dtype)
    interval = tf.reshape(interval, [-1, 1, 1, 1])  # [B or 1, 1, 1, 1]
    steps = tf.range(num_depths, dtype=prev_depth.dtype)[
        tf.newaxis, :, tf.newaxis, tf.newaxis]
    spacing = interval * num_depths / max(num_depths - 1, 1)
    start = prev_depth[:, tf.newaxis] - interval * (num_depths / 2.0)
    hypotheses = start + steps * spacing  # [B, D, h, w]
    resized = tf.image.resize(
        tf.transpose(hypotheses, [0, 2, 3, 1]), tf.stack([height, width]),
        method="bilinear",
    )
    return tf.cast(tf.transpose(resized, [0, 3, 1, 2]), prev_depth.dtype)
