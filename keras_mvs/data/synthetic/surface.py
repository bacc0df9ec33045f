"""The ground-truth surface and the samples that score view pairs: area-
uniform surface points, their visibility by exact ray casting, and the union
of the exact depth maps thinned on a voxel grid."""

import numpy as np

from keras_mvs.data.synthetic import layout
from keras_mvs.data.synthetic import raycast

# Relative tolerance of the surface-sample visibility test: a sample is seen
# from a camera if no surface is hit before (1 - tol) of the way to it.
_VISIBILITY_TOLERANCE = 1e-6


def _surface_area(primitive: layout.Primitive) -> np.ndarray:
    """Areas `[P]` (mm^2) of the parts of a primitive, by part index."""
    a, b, c = primitive.half_size
    if primitive.kind == "rect":
        return np.array([4.0 * a * b])
    if primitive.kind == "sphere":
        return np.array([4.0 * np.pi * a * a])
    if primitive.kind == "box":
        return np.repeat([4.0 * b * c, 4.0 * a * c, 4.0 * a * b], 2)
    return np.array([4.0 * np.pi * a * c, np.pi * a * a, np.pi * a * a])


def _sample_part(rng: np.random.Generator, primitive: layout.Primitive,
                 part: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform local points and normals `[count, 3]` on one part."""
    a, b, c = primitive.half_size
    if primitive.kind == "rect":
        points = np.stack([rng.uniform(-a, a, count),
                           rng.uniform(-b, b, count), np.zeros(count)], -1)
    elif primitive.kind == "sphere":
        points = rng.normal(size=(count, 3))
        points *= a / np.linalg.norm(points, axis=1, keepdims=True)
    elif primitive.kind == "box":
        points = rng.uniform(-primitive.half_size, primitive.half_size,
                             size=(count, 3))
        axis = part // 2
        points[:, axis] = primitive.half_size[axis] * (1 if part % 2 else -1)
    elif part == 0:
        angle = rng.uniform(0.0, 2.0 * np.pi, count)
        points = np.stack([a * np.cos(angle), a * np.sin(angle),
                           rng.uniform(-c, c, count)], -1)
    else:
        radius = a * np.sqrt(rng.random(count))
        angle = rng.uniform(0.0, 2.0 * np.pi, count)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle),
                           np.full(count, c if part == 1 else -c)], -1)
    parts = np.full(count, part, dtype=np.int64)
    return points, raycast.local_normals(primitive.kind, points, parts)


def sample_surface(rng: np.random.Generator, primitives: list[layout.Primitive],
                   count: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws `count` points area-uniformly over all surfaces.

    Returns:
        `(points [count, 3], normals [count, 3])`, world frame, float64.
    """
    areas = [_surface_area(primitive) for primitive in primitives]
    flat_areas = np.concatenate(areas)
    counts = rng.multinomial(count, flat_areas / flat_areas.sum())
    points, normals = [], []
    offset = 0
    for primitive, part_areas in zip(primitives, areas):
        for part in range(len(part_areas)):
            local_points, local_normals = _sample_part(
                rng, primitive, part, int(counts[offset + part]))
            points.append(local_points @ primitive.rotation.T
                          + primitive.centre)
            normals.append(local_normals @ primitive.rotation.T)
        offset += len(part_areas)
    return np.concatenate(points), np.concatenate(normals)


def visibility(primitives: list[layout.Primitive], points: np.ndarray,
               intrinsics: np.ndarray, cam_from_world: np.ndarray,
               height: int, width: int) -> np.ndarray:
    """Which surface points each camera sees.

    A point is seen by a view when it projects inside the image (between
    the first and last pixel centres) in front of the camera and the
    segment from the camera centre to it hits no surface before it
    (exact ray casting, no depth-map lookup).

    Returns:
        `[N, V]` bool.
    """
    visible = np.zeros((len(points), len(intrinsics)), dtype=bool)
    for view, (k, e) in enumerate(zip(intrinsics, cam_from_world)):
        points_cam = points @ e[:3, :3].T + e[:3, 3]
        z = points_cam[:, 2]
        in_front = z > 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            pixels = points_cam @ k.T
            x, y = pixels[:, 0] / z, pixels[:, 1] / z
        candidates = np.flatnonzero(in_front & (x >= 0.0) & (x <= width - 1)
                                    & (y >= 0.0) & (y <= height - 1))
        origin = -e[:3, :3].T @ e[:3, 3]
        t, _ = raycast.cast(primitives, origin, points[candidates] - origin)
        visible[candidates, view] = t >= 1.0 - _VISIBILITY_TOLERANCE
    return visible


def ground_truth_surface(depths: np.ndarray, normals: np.ndarray,
                         intrinsics: np.ndarray, cam_from_world: np.ndarray,
                         voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The surface seen by the cameras, as points thinned on a voxel grid.

    Every pixel with a surface is lifted to the world with its exact depth
    (each point lies on a surface to float32 rounding); the union over all
    views is thinned to one point per cubic voxel of edge `voxel_size`,
    keeping the first in view-then-raster order, so the density is about
    one point per `voxel_size^2` wherever some view resolves that finely.

    Args:
        depths: `[V, H, W]` depth, mm, 0 where there is no surface.
        normals: `[V, H, W, 3]` world-frame unit normals.
        intrinsics: `[V, 3, 3]`.
        cam_from_world: `[V, 4, 4]`.
        voxel_size: voxel edge, mm.

    Returns:
        `(points [N, 3], normals [N, 3])`, float32, world frame, mm.
    """
    kept_keys = np.zeros(0, dtype=np.int64)  # sorted
    points, point_normals = [], []
    # Views are merged one at a time so that memory follows the thinned
    # surface, not the V * H * W pixels.
    for depth, normal, k, extrinsic in zip(depths, normals, intrinsics,
                                           cam_from_world):
        rows, cols = np.nonzero(depth > 0)
        origin, directions = raycast.pixel_rays(
            k, extrinsic, rows.astype(float), cols.astype(float))
        view_points = origin + depth[rows, cols, None] * directions
        cells = np.floor(view_points / voxel_size)
        # One integer per cell: 21 bits per axis, cells offset by 2**20.
        if np.abs(cells).max() >= 2**20:
            raise ValueError(
                f"ground_truth_surface: voxel_size={voxel_size} mm is too "
                "small for the scene's extent (over 2**20 voxels from the "
                "origin along an axis).")
        cells = cells.astype(np.int64) + 2**20
        keys = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
        keys, first = np.unique(keys, return_index=True)
        # Both key arrays are sorted and unique: look the new ones up by
        # bisection and merge by sorting.
        position = np.searchsorted(kept_keys, keys).clip(
            max=max(len(kept_keys) - 1, 0))
        new = (kept_keys[position] != keys if len(kept_keys)
               else np.ones(len(keys), dtype=bool))
        first = np.sort(first[new])  # raster order within the view
        points.append(view_points[first])
        point_normals.append(normal[rows[first], cols[first]])
        kept_keys = np.sort(np.concatenate([kept_keys, keys[new]]))
    return (np.concatenate(points).astype(np.float32),
            np.concatenate(point_normals).astype(np.float32))
