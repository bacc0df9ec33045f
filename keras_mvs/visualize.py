"""Colour previews of depth and confidence maps, and point-cloud renders.

Everything returns `uint8` RGB arrays `[H, W, 3]`, ready for `save_png`.
The colormap is viridis-like, interpolated linearly between nine anchor
colours: perceptually ordered, with luminance increasing monotonically from
dark purple (low) to yellow (high), and readable in grey scale. Invalid
pixels are black, a colour the map never produces.

Point clouds are rendered by z-buffered splatting through
`keras_mvs.geometry` (the project's one projection), for documentation
images of fused clouds.
"""

import os
import tempfile
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from keras_mvs import geometry

# Anchor colours at 0, 1/8, ..., 1 (sRGB), chosen along matplotlib's
# viridis; relative luminance rises from 21 to 222 across them.
_ANCHORS = np.array([
    (68, 1, 84), (71, 44, 122), (59, 82, 139), (44, 113, 142),
    (33, 145, 140), (39, 173, 129), (92, 200, 99), (170, 220, 50),
    (253, 231, 37),
], np.float64)


def apply_colormap(values: np.ndarray, valid: Optional[np.ndarray] = None
                   ) -> np.ndarray:
    """Maps values in [0, 1] to colours (clipped outside; invalid black).

    Args:
        values: `[...]` floats; 0 is the low (dark) end, 1 the high end.
        valid: optional bool mask of the same shape; false pixels are black,
            as are non-finite values.

    Returns:
        `[..., 3]` uint8 RGB.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if valid is not None:
        finite &= np.asarray(valid, dtype=bool)
    t = np.clip(np.where(finite, values, 0.0), 0.0, 1.0)
    positions = np.linspace(0.0, 1.0, len(_ANCHORS))
    rgb = np.stack([np.interp(t, positions, _ANCHORS[:, c]) for c in range(3)],
                   axis=-1)
    rgb = np.where(finite[..., np.newaxis], np.round(rgb), 0.0)
    return rgb.astype(np.uint8)


def colorize_depth(
    depth: np.ndarray,
    mask: Optional[np.ndarray] = None,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
) -> np.ndarray:
    """Colour preview of a depth map: near dark purple, far yellow.

    Args:
        depth: `[H, W]` depth (depth units); non-finite or <= 0 is invalid.
        mask: optional `[H, W]` bool; false pixels are invalid too.
        vmin, vmax: the depth range of the ramp, clipped outside; by default
            the 2nd and 98th percentiles of the valid depths, so a few
            outliers do not flatten the preview.

    Returns:
        `[H, W, 3]` uint8 RGB, invalid pixels black.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(
            f"`depth` must be [H, W]; received shape {depth.shape}.")
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != depth.shape:
            raise ValueError(
                f"`mask` {mask.shape} must match `depth` {depth.shape}.")
        valid &= mask
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    if vmin is None:
        vmin = float(np.percentile(depth[valid], 2))
    if vmax is None:
        vmax = float(np.percentile(depth[valid], 98))
    span = vmax - vmin if vmax > vmin else 1.0
    return apply_colormap((depth - vmin) / span, valid)


def colorize_confidence(confidence: np.ndarray) -> np.ndarray:
    """Colour preview of a confidence map in [0, 1] (1 is yellow).

    Args:
        confidence: `[H, W]` confidence; clipped to [0, 1]; non-finite black.

    Returns:
        `[H, W, 3]` uint8 RGB.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.ndim != 2:
        raise ValueError(
            f"`confidence` must be [H, W]; received shape {confidence.shape}.")
    return apply_colormap(confidence)


def save_png(path: str, rgb: np.ndarray) -> None:
    """Writes a uint8 image as PNG, via a temporary name and a rename.

    Args:
        path: destination file.
        rgb: `[H, W, 3]` or `[H, W]` uint8.

    Raises:
        ValueError: for another dtype or shape.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or not (
            rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[-1] == 3)):
        raise ValueError(
            f"save_png({path!r}) needs uint8 [H, W, 3] or [H, W]; received "
            f"{rgb.dtype} {rgb.shape}.")
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(prefix=".tmp_", suffix=".png",
                                         dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(rgb).save(stream, format="PNG", optimize=True)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector)
    if not norm > 0:
        raise ValueError(f"Expected a non-zero direction; received {vector}.")
    return vector / norm


def look_at_pose(
    centre: Sequence[float],
    target: Sequence[float],
    up: Sequence[float] = (0.0, -1.0, 0.0),
) -> np.ndarray:
    """cam_from_world of a camera at `centre` looking at `target`.

    OpenCV axes: z towards the target, y down (away from `up`), x right.

    Args:
        centre: camera centre, world coordinates.
        target: the point on the optical axis.
        up: world direction that appears upwards; a different one is used
            when it is parallel to the viewing direction.

    Returns:
        `[4, 4]` float64 world-to-camera transform.
    """
    centre = np.asarray(centre, dtype=np.float64)
    forward = _unit(np.asarray(target, np.float64) - centre)
    up = _unit(up)
    if abs(forward @ up) > 0.999:
        up = np.roll(up, 1)
    down = _unit(forward * (forward @ up) - up)  # -up, orthogonal to forward
    right = np.cross(down, forward)
    rotation = np.stack([right, down, forward])
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = -rotation @ centre
    return pose


def render_point_cloud(
    points: np.ndarray,
    colors: Optional[np.ndarray],
    width: int,
    height: int,
    cam_from_world: Optional[np.ndarray] = None,
    intrinsics: Optional[np.ndarray] = None,
    view_direction: Sequence[float] = (0.0, 0.0, 1.0),
    up: Sequence[float] = (0.0, -1.0, 0.0),
    field_of_view: float = 40.0,
    point_size: int = 1,
    background: Sequence[int] = (0, 0, 0),
) -> np.ndarray:
    """Renders a point cloud by z-buffered splatting.

    Each point is drawn as a `point_size` square at its rounded pixel; where
    points overlap, the nearest wins. Without `cam_from_world`, the camera
    looks along `view_direction` at the centroid of the cloud, far enough
    back that the sphere holding 98 % of the points fills the view. Without
    `intrinsics`, a pinhole with the given horizontal-and-vertical
    `field_of_view` (degrees, across the shorter image side) centred on the
    image is used.

    Args:
        points: `[N, 3]` world coordinates.
        colors: `[N, 3]` uint8, or None to colour by camera depth (near
            yellow).
        width, height: image size in pixels.
        cam_from_world: optional `[4, 4]` world-to-camera.
        intrinsics: optional `[3, 3]` for a `width x height` image.
        view_direction: world direction the default camera looks along.
        up: world direction shown upwards by the default camera.
        field_of_view: degrees, for the default intrinsics.
        point_size: splat side in pixels.
        background: RGB of empty pixels.

    Returns:
        `[height, width, 3]` uint8 image.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(
            f"`points` must be [N, 3]; received shape {points.shape}.")
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape or colors.dtype != np.uint8:
            raise ValueError(
                f"`colors` must be uint8 {points.shape}; received "
                f"{colors.dtype} {colors.shape}.")
    image = np.empty((height, width, 3), np.uint8)
    image[...] = np.asarray(background, np.uint8)
    if points.shape[0] == 0:
        return image

    half_angle = np.deg2rad(field_of_view) / 2.0
    if intrinsics is None:
        focal = 0.5 * min(width, height) / np.tan(half_angle)
        intrinsics = np.array([[focal, 0, (width - 1) / 2.0],
                               [0, focal, (height - 1) / 2.0], [0, 0, 1]])
    if cam_from_world is None:
        centroid = points.mean(axis=0)
        radius = np.percentile(np.linalg.norm(points - centroid, axis=1), 98)
        distance = max(radius, 1e-9) / np.sin(half_angle)
        cam_from_world = look_at_pose(
            centroid - distance * _unit(view_direction), centroid, up)

    points_cam = geometry.transform_points(
        np.asarray(cam_from_world, np.float64)[np.newaxis],
        points[np.newaxis])
    pixels, depth = geometry.project(
        points_cam, np.asarray(intrinsics, np.float64)[np.newaxis])
    pixels, depth = pixels.numpy()[0], depth.numpy()[0]
    visible = np.all(np.isfinite(pixels), axis=1)
    pixels, depth = np.round(pixels[visible]).astype(np.int64), depth[visible]
    if colors is None:
        near, far = np.percentile(depth, [2, 98]) if depth.size else (0, 1)
        colors = apply_colormap((far - depth) / max(far - near, 1e-12))
    else:
        colors = colors[visible]

    offsets = np.arange(point_size) - point_size // 2
    columns, rows, depths, sources = [], [], [], []
    for dy in offsets:
        for dx in offsets:
            columns.append(pixels[:, 0] + dx)
            rows.append(pixels[:, 1] + dy)
            depths.append(depth)
            sources.append(np.arange(depth.size))
    columns, rows = np.concatenate(columns), np.concatenate(rows)
    depths, sources = np.concatenate(depths), np.concatenate(sources)
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    flat = (rows * width + columns)[inside]
    depths, sources = depths[inside], sources[inside]
    # Sort by pixel, then by depth: the first entry of each pixel is nearest.
    order = np.lexsort((depths, flat))
    unique_pixels, first = np.unique(flat[order], return_index=True)
    image.reshape(-1, 3)[unique_pixels] = colors[sources[order][first]]
    return image
