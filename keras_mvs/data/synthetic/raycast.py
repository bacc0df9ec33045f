"""Exact ray casting against the analytic primitives (float64): first hits,
surface ids, outward and camera-facing normals, and the rays through pixel
centres (x = j, y = i, camera-frame z = 1, so a hit's ray parameter is its
depth)."""

import numpy as np

from keras_mvs.data.synthetic import layout

# Surface ids are `primitive_index * PARTS_PER_PRIMITIVE + part`, a part
# being one smooth piece of a primitive's surface (a box face, a cylinder
# cap); no primitive has more than 6 parts.
PARTS_PER_PRIMITIVE = 8


def _intersect(primitive: layout.Primitive, origins: np.ndarray,
               directions: np.ndarray, t_min: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Intersects rays with one primitive.

    Args:
        primitive: the surface.
        origins: `[N, 3]` or `[3]` ray origins, world frame, mm.
        directions: `[N, 3]` ray directions (any length), world frame.
        t_min: hits at ray parameters <= t_min are ignored.

    Returns:
        `(t [N], part [N] int64)`: ray parameter of the first hit beyond
        t_min (inf for none) and which part of the surface it hit.
    """
    # Rows times R equals R^T applied to each row: world -> local.
    local_origins = (origins - primitive.centre) @ primitive.rotation
    local_dirs = directions @ primitive.rotation
    local_origins = np.broadcast_to(local_origins, local_dirs.shape)
    a, b, c = primitive.half_size
    count = len(local_dirs)
    part = np.zeros(count, dtype=np.int64)
    ox, oy, oz = local_origins.T
    dx, dy, dz = local_dirs.T
    with np.errstate(divide="ignore", invalid="ignore"):
        if primitive.kind == "rect":
            t = -oz / dz
            inside = (np.abs(ox + t * dx) <= a) & (np.abs(oy + t * dy) <= b)
            t = np.where(inside & (t > t_min), t, np.inf)
        elif primitive.kind == "sphere":
            qa = np.einsum("nc,nc->n", local_dirs, local_dirs)
            qb = np.einsum("nc,nc->n", local_origins, local_dirs)
            qc = np.einsum("nc,nc->n", local_origins, local_origins) - a * a
            root = np.sqrt(qb * qb - qa * qc)  # NaN where the ray misses.
            near, far = (-qb - root) / qa, (-qb + root) / qa
            t = np.where(near > t_min, near, np.where(far > t_min, far,
                                                      np.inf))
            t = np.where(np.isnan(t), np.inf, t)
        elif primitive.kind == "box":
            # Slab test. Entering through a face on `axis`, a ray moving
            # towards +axis meets the -axis face (even part number).
            safe = np.where(local_dirs == 0.0, 1e-300, local_dirs)
            t_low = (-primitive.half_size - local_origins) / safe
            t_high = (primitive.half_size - local_origins) / safe
            t_near_axes = np.minimum(t_low, t_high)
            t_far_axes = np.maximum(t_low, t_high)
            t_enter = t_near_axes.max(axis=1)
            t_exit = t_far_axes.min(axis=1)
            hit = t_enter <= t_exit
            entering = hit & (t_enter > t_min)
            t = np.where(entering, t_enter,
                         np.where(hit & (t_exit > t_min), t_exit, np.inf))
            rows = np.arange(count)
            enter_axis = t_near_axes.argmax(axis=1)
            exit_axis = t_far_axes.argmin(axis=1)
            # Parts 0..5: faces -x, +x, -y, +y, -z, +z.
            part = np.where(
                entering,
                2 * enter_axis + (local_dirs[rows, enter_axis] < 0.0),
                2 * exit_axis + (local_dirs[rows, exit_axis] > 0.0))
        else:  # cylinder
            qa = dx * dx + dy * dy
            qb = ox * dx + oy * dy
            qc = ox * ox + oy * oy - a * a
            root = np.sqrt(qb * qb - qa * qc)
            side = np.inf
            for candidate in ((-qb - root) / qa, (-qb + root) / qa):
                valid = (candidate > t_min) & (np.abs(oz + candidate * dz)
                                               <= c)
                side = np.minimum(side, np.where(valid, candidate, np.inf))
            t = side
            for cap_part, cap_z in ((1, c), (2, -c)):
                t_cap = (cap_z - oz) / dz
                cap_x, cap_y = ox + t_cap * dx, oy + t_cap * dy
                valid = (t_cap > t_min) & (cap_x * cap_x + cap_y * cap_y
                                           <= a * a)
                t_cap = np.where(valid, t_cap, np.inf)
                part = np.where(t_cap < t, cap_part, part)
                t = np.minimum(t, t_cap)
    return t, part


def cast(primitives: list[layout.Primitive], origins: np.ndarray,
         directions: np.ndarray, t_min: float = 0.0
         ) -> tuple[np.ndarray, np.ndarray]:
    """Finds the first hit of every ray among all primitives.

    Args:
        primitives: the scene.
        origins: `[N, 3]` or `[3]`, world frame, mm.
        directions: `[N, 3]` (any length).
        t_min: hits at ray parameters <= t_min are ignored.

    Returns:
        `(t [N], surface_id [N] int32)`: ray parameter of the first hit (inf
        where nothing is hit) and `primitive * 8 + part` (-1 for no hit).
    """
    best_t = np.full(len(directions), np.inf)
    surface_id = np.full(len(directions), -1, dtype=np.int32)
    length = np.sqrt(np.einsum("nc,nc->n", directions, directions))
    unit = directions / length[:, None]
    # Terms of the bounding-sphere test that do not depend on the primitive:
    # distances along the unit ray are `unit . c - unit . o`, squared
    # distances from the centre `|c|^2 - 2 o . c + |o|^2 - along^2`.
    if origins.ndim == 1:
        unit_dot_origin = unit @ origins
        origin_squared = origins @ origins
    else:
        unit_dot_origin = np.einsum("nc,nc->n", unit, origins)
        origin_squared = np.einsum("nc,nc->n", origins, origins)
    for index, primitive in enumerate(primitives):
        # Cull with the bounding sphere first: only rays passing within its
        # radius of the centre, and not yet blocked before reaching it, are
        # intersected exactly. The slack keeps rounding from culling a ray
        # that touches the sphere.
        centre = primitive.centre
        radius = _bounding_radius(primitive) * (1.0 + 1e-9) + 1e-6
        along = unit @ centre - unit_dot_origin
        miss_squared = (centre @ centre - 2.0 * (origins @ centre)
                        + origin_squared - along * along)
        rows = np.flatnonzero((miss_squared <= radius * radius)
                              & (along + radius > t_min * length)
                              & (along - radius < best_t * length))
        if len(rows) == 0:
            continue
        t, part = _intersect(
            primitive, origins if origins.ndim == 1 else origins[rows],
            directions[rows], t_min)
        closer = t < best_t[rows]
        rows = rows[closer]
        best_t[rows] = t[closer]
        surface_id[rows] = index * PARTS_PER_PRIMITIVE + part[closer]
    return best_t, surface_id


def _bounding_radius(primitive: layout.Primitive) -> float:
    """Radius (mm) of a sphere about the centre that holds the primitive."""
    a, b, c = primitive.half_size
    if primitive.kind == "sphere":
        return float(a)
    if primitive.kind == "cylinder":
        return float(np.hypot(a, c))
    return float(np.sqrt(a * a + b * b + c * c))


def local_normals(kind: str, points: np.ndarray,
                  part: np.ndarray) -> np.ndarray:
    """Outward unit normals `[N, 3]` at local surface points `[N, 3]`."""
    normals = np.zeros_like(points)
    if kind == "rect":
        normals[:, 2] = 1.0
    elif kind == "sphere":
        normals = points / np.linalg.norm(points, axis=1, keepdims=True)
    elif kind == "box":
        rows = np.arange(len(points))
        normals[rows, part // 2] = np.where(part % 2 == 1, 1.0, -1.0)
    else:
        side = part == 0
        radial = points[:, :2] / np.linalg.norm(
            points[:, :2], axis=1, keepdims=True).clip(1e-12)
        normals[:, :2] = np.where(side[:, None], radial, 0.0)
        normals[:, 2] = np.where(part == 1, 1.0,
                                 np.where(part == 2, -1.0, 0.0))
    return normals


def facing_normals(primitives: list[layout.Primitive], origin: np.ndarray,
                   directions: np.ndarray, t: np.ndarray,
                   surface_id: np.ndarray) -> np.ndarray:
    """World-frame unit normals `[N, 3]` at the hits of rays from `origin`,
    on the side facing the origin (the outward normal of a solid; the seen
    side of a two-sided rectangle); zero where nothing is hit."""
    normals = np.zeros((len(t), 3))
    index = surface_id // PARTS_PER_PRIMITIVE
    for number, primitive in enumerate(primitives):
        rows = np.flatnonzero(index == number)
        if len(rows) == 0:
            continue
        part = (surface_id[rows] % PARTS_PER_PRIMITIVE).astype(np.int64)
        points = origin + t[rows, None] * directions[rows]
        local = (points - primitive.centre) @ primitive.rotation
        normals[rows] = local_normals(primitive.kind, local,
                                      part) @ primitive.rotation.T
    towards_ray = np.einsum("nc,nc->n", normals, directions) > 0.0
    return np.where(towards_ray[:, None], -normals, normals)


def pixel_rays(intrinsics: np.ndarray, cam_from_world: np.ndarray,
               rows: np.ndarray, cols: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres (row i, column j) at x = j, y = i.

    Args:
        intrinsics: `[3, 3]` K.
        cam_from_world: `[4, 4]`.
        rows: `[N]` pixel rows i (float64; fractional for sub-pixel rays).
        cols: `[N]` pixel columns j.

    Returns:
        `(origin [3], directions [N, 3])` in the world frame; each
        direction has camera-frame z = 1, so a hit's ray parameter is its
        depth.
    """
    inverse = np.linalg.inv(intrinsics)
    rays_cam = (cols[:, None] * inverse[:, 0] + rows[:, None] * inverse[:, 1]
                + inverse[:, 2])
    rays_cam /= rays_cam[:, 2:3]  # exactly 1, whatever the rounding of inv
    rotation = cam_from_world[:3, :3]
    origin = -rotation.T @ cam_from_world[:3, 3]
    return origin, rays_cam @ rotation
