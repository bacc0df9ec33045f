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

from typing import Optional
from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from keras_mvs import files
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


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def nice_ticks(vmin: float, vmax: float, count: int = 5) -> np.ndarray:
    """Round tick values inside [vmin, vmax], about `count` of them."""
    if not vmax > vmin:
        return np.array([vmin])
    raw = (vmax - vmin) / max(count - 1, 1)
    magnitude = 10.0 ** np.floor(np.log10(raw))

    def how_many(step):
        return np.floor(vmax / step + 1e-9) - np.ceil(vmin / step - 1e-9) + 1

    # The round step whose tick count is nearest `count`; fewer on a tie.
    step = min((m * magnitude for m in (0.5, 1, 2, 2.5, 5, 10)),
               key=lambda step: (abs(how_many(step) - count),
                                 how_many(step)))
    first = np.ceil(vmin / step - 1e-9) * step
    ticks = np.arange(first, vmax + 1e-9 * step, step)
    return ticks[(ticks >= vmin - 1e-9 * step) & (ticks <= vmax + 1e-9 * step)]


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, int(-np.floor(np.log10(step))) if step < 1 else 0)
    if step < 1 and abs(step * 10 ** decimals - round(step * 10 ** decimals)
                        ) > 1e-6:
        decimals += 1
    return f"{value + 0.0:.{decimals}f}"


def with_colorbar(rgb: np.ndarray, vmin: float, vmax: float, title: str,
                  note: str = "") -> np.ndarray:
    """Adds a legend to a colour-mapped image: a vertical colour bar.

    The bar runs from `vmin` (bottom, the map's low end) to `vmax` (top),
    with round tick values and `title` (what and in which unit) above it.
    The image keeps its pixels; the legend is a white panel on its right.

    Args:
        rgb: `[H, W, 3]` uint8, made with `apply_colormap` over
            [vmin, vmax].
        vmin, vmax: the values at the ends of the colour ramp.
        title: e.g. "depth (mm)"; drawn above the bar.
        note: optional line under the bar, e.g. "black: no depth".

    Returns:
        `[H', W + panel, 3]` uint8, with `H' >= H` (room for the text on
        small images).
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"`rgb` must be uint8 [H, W, 3]; received "
                         f"{rgb.dtype} {rgb.shape}.")
    height, width = rgb.shape[:2]
    size = int(np.clip(round(height / 22), 10, 20))
    font = _font(size)
    line = size + size // 3
    margin = size // 2
    bar_height = max(height - 2 * line - 2 * margin, 5 * line)
    canvas_height = max(height, bar_height + 2 * line + 2 * margin)
    ticks = nice_ticks(vmin, vmax, count=int(np.clip(
        bar_height // (2 * line), 2, 6))) + 0.0
    step = ticks[1] - ticks[0] if ticks.size > 1 else max(abs(vmax), 1.0)
    labels = [_tick_label(t, step) for t in ticks]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_width(text):
        return measure.textlength(text, font=font)

    bar_width = max(size, 8)
    label_width = max([text_width(t) for t in labels] + [0])
    panel = int(max(bar_width + 2 * margin + size // 2 + label_width,
                    text_width(title) + 2 * margin,
                    text_width(note) + 2 * margin if note else 0)) + margin
    image = Image.new("RGB", (width + panel, canvas_height), (255, 255, 255))
    image.paste(Image.fromarray(rgb), (0, 0))
    draw = ImageDraw.Draw(image)
    left = width + margin
    top = margin + line
    draw.text((left, margin // 2), title, fill=(0, 0, 0), font=font)
    ramp = np.linspace(1.0, 0.0, bar_height)[:, np.newaxis]
    strip = apply_colormap(np.repeat(ramp, bar_width, axis=1))
    image.paste(Image.fromarray(strip), (left, top))
    draw.rectangle([left - 1, top - 1, left + bar_width, top + bar_height],
                   outline=(0, 0, 0))
    span = vmax - vmin if vmax > vmin else 1.0
    for tick, label in zip(ticks, labels):
        y = top + (bar_height - 1) * (1.0 - (tick - vmin) / span)
        draw.line([left + bar_width, y, left + bar_width + size // 3, y],
                  fill=(0, 0, 0))
        draw.text((left + bar_width + size // 2, y - size / 2), label,
                  fill=(0, 0, 0), font=font)
    if note:
        draw.text((left, top + bar_height + margin // 2), note,
                  fill=(0, 0, 0), font=font)
    return np.asarray(image)


def depth_preview(depth: np.ndarray, mask: Optional[np.ndarray] = None,
                  vmin: Optional[float] = None, vmax: Optional[float] = None,
                  unit: str = "mm") -> np.ndarray:
    """`colorize_depth` with a colour bar of the depths and their unit.

    Args: as `colorize_depth`; `unit` names the depth unit of the cameras
        ("" for none).

    Returns:
        `[H', W', 3]` uint8, the depth preview with its legend.
    """
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if vmin is None:
        vmin = float(np.percentile(depth[valid], 2)) if valid.any() else 0.0
    if vmax is None:
        vmax = (float(np.percentile(depth[valid], 98)) if valid.any()
                else 1.0)
    rgb = colorize_depth(depth, mask, vmin, vmax)
    title = f"depth ({unit})" if unit else "depth"
    note = "black: none" if not valid.all() else ""
    return with_colorbar(rgb, vmin, vmax if vmax > vmin else vmin + 1.0,
                         title, note)


def confidence_preview(confidence: np.ndarray) -> np.ndarray:
    """`colorize_confidence` with a colour bar from 0 to 1."""
    return with_colorbar(colorize_confidence(confidence), 0.0, 1.0,
                         "confidence")


def save_png(path: str, rgb: np.ndarray) -> None:
    """Writes a uint8 `[H, W, 3]` or `[H, W]` image as an optimised PNG
    (atomically, see `keras_mvs.files.write_png`)."""
    files.write_png(path, rgb, optimize=True)


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
