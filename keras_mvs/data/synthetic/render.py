"""`render_scene`: one scene's images, exact depths, normals, cameras, view
pairs and ground-truth surface."""

import numpy as np

from keras_mvs.data import view_selection
from keras_mvs.data.synthetic import layout
from keras_mvs.data.synthetic import raycast
from keras_mvs.data.synthetic import scene_config
from keras_mvs.data.synthetic import shading
from keras_mvs.data.synthetic import surface

# Bumped whenever the rendered output changes, so that cached benchmark
# scenes made by an older renderer are not reused.
RENDERER_VERSION = 3
# Rays cast and shaded together.
_RAY_BLOCK = 16384


def _describe(primitive: layout.Primitive) -> dict:
    """The geometry of a primitive as plain values.

    Keys: `kind` ("rect", "box", "sphere" or "cylinder", shapes as in
    `Primitive`), `rotation` (3x3 world_from_local, nested lists),
    `centre` (3, mm) and `half_size` (3, mm). A world point X has local
    coordinates `rotation^T (X - centre)`.
    """
    return {"kind": primitive.kind,
            "rotation": primitive.rotation.tolist(),
            "centre": primitive.centre.tolist(),
            "half_size": primitive.half_size.tolist()}


def render_scene(config: scene_config.SceneConfig) -> dict:
    """Renders one scene.

    The depth range of each view is the span [d0, d1] of its rendered depths
    widened by `config.depth_margin * (d1 - d0)` on both sides, giving
    `depth_min` and `depth_max`; the cam file's 4-field line is
    `depth_min, depth_interval = (depth_max - depth_min) / num_depths,
    num_depths, depth_max`. Readers following the PyTorch `general_eval`
    rule (or the 2-field DTU rule, `depth_min + k * 1.06 * interval` for
    k < 192) then sweep from `depth_min` to `depth_min + 191 * 1.06 *
    (depth_max - depth_min) / 192`, which is about 5 % beyond `depth_max`,
    so every visible surface lies inside the swept range.

    Args:
        config: what to render.

    Returns:
        A dict (V views, N ground-truth points):
        * `images`: `[V, H, W, 3]` uint8 RGB.
        * `depths`: `[V, H, W]` float32 camera z, mm; 0 where no surface.
        * `masks`: `[V, H, W]` bool, where a surface is hit.
        * `surface_ids`: `[V, H, W]` int32, `primitive * 8 + part`; -1
          where nothing is hit.
        * `normals`: `[V, H, W, 3]` float32 world-frame unit normals facing
          the camera; 0 where nothing is hit.
        * `intrinsics`: `[V, 3, 3]` and `cam_from_world`: `[V, 4, 4]`,
          float64.
        * `depth_min`, `depth_max`, `depth_interval`: `[V]` float64, mm;
          `num_depths`: int (the cam files' depth line).
        * `pairs`: list of `(ref_id, [(src_id, score), ...])`, best first;
          `pair_scores`: `[V, V]` float64.
        * `surface_points`, `surface_normals`: `[N, 3]` float32, world
          frame, the ground-truth surface (see `ground_truth_surface`).
        * `primitives`: list of dicts with `kind`, `rotation` (3x3
          world_from_local), `centre` and `half_size` (mm) describing the
          analytic surfaces, in surface-id order.
        * `config`: the SceneConfig.
    """
    rng = np.random.default_rng(config.seed)
    extra = np.random.default_rng([config.seed, 1])
    noise = shading.ValueNoise(rng)
    primitives = layout.build_scene(config, rng, extra)
    intrinsics, cam_from_world = layout.make_cameras(config, rng, extra)
    light = np.asarray(config.light_direction, float)
    light = light / np.linalg.norm(light)
    shading_options = dict(specular=config.specular, shadows=config.shadows,
                           light=light, ambient=config.ambient)
    gains = 1.0 + extra.uniform(-config.exposure_jitter,
                                config.exposure_jitter, config.num_views)
    height, width, num_views = config.height, config.width, config.num_views

    images = np.zeros((num_views, height, width, 3), dtype=np.uint8)
    depths = np.zeros((num_views, height, width), dtype=np.float32)
    surface_ids = np.zeros((num_views, height, width), dtype=np.int32)
    normals = np.zeros((num_views, height, width, 3), dtype=np.float32)
    pixel_rows = np.repeat(np.arange(height, dtype=np.float64), width)
    pixel_cols = np.tile(np.arange(width, dtype=np.float64), height)
    for view in range(num_views):
        # Sub-pixel offsets (dx, dy) move a ray by K^-1 [dx, dy, 0] in the
        # camera frame (z stays 1), rotated into the world.
        offsets = (np.arange(config.supersample) + 0.5) / config.supersample
        pixel_shifts = [
            (np.linalg.inv(intrinsics[view]) @ [dx - 0.5, dy - 0.5, 0.0])
            @ cam_from_world[view][:3, :3]
            for dy in offsets for dx in offsets]
        # Rays go in blocks that keep the temporaries cache-sized; whole
        # 640x512 views run about twice as slow.
        for start in range(0, height * width, _RAY_BLOCK):
            block = slice(start, start + _RAY_BLOCK)
            origin, directions = raycast.pixel_rays(
                intrinsics[view], cam_from_world[view], pixel_rows[block],
                pixel_cols[block])
            t, surface_id = raycast.cast(primitives, origin, directions)
            if config.supersample == 1:
                colour, block_normals = shading.shade(
                    primitives, noise, origin, directions, t, surface_id,
                    **shading_options)
            else:
                block_normals = raycast.facing_normals(
                    primitives, origin, directions, t, surface_id)
                colour = np.zeros((len(t), 3))
                for shift in pixel_shifts:
                    sub_directions = directions + shift
                    sub_t, sub_id = raycast.cast(primitives, origin,
                                                 sub_directions)
                    colour += shading.shade(primitives, noise, origin,
                                            sub_directions, sub_t, sub_id,
                                            **shading_options)[0]
                colour /= len(pixel_shifts)
            if config.exposure_jitter:
                colour = np.clip(colour * gains[view], 0.0, 1.0)
            images[view].reshape(-1, 3)[block] = np.round(
                colour * 255.0).astype(np.uint8)
            depths[view].reshape(-1)[block] = np.where(np.isfinite(t), t,
                                                       0.0)
            surface_ids[view].reshape(-1)[block] = surface_id
            normals[view].reshape(-1, 3)[block] = block_normals
    masks = depths > 0.0

    depth_min = np.zeros(num_views)
    depth_max = np.zeros(num_views)
    for view in range(num_views):
        if not masks[view].any():
            raise ValueError(
                f"View {view} of seed {config.seed} sees no surface; the "
                "camera settings (camera_distance, cap_*) point the cameras "
                "away from the scene.")
        near = float(depths[view][masks[view]].min())
        far = float(depths[view][masks[view]].max())
        margin = config.depth_margin * (far - near)
        depth_min[view], depth_max[view] = near - margin, far + margin

    points, _ = surface.sample_surface(rng, primitives, config.num_pair_samples)
    visible = surface.visibility(primitives, points, intrinsics, cam_from_world,
                                 height, width)
    seen = visible.any(axis=1)
    voxel_size = (config.camera_distance / (config.focal_scale * width)
                  if config.gt_voxel_size is None else config.gt_voxel_size)
    surface_points, surface_normals = surface.ground_truth_surface(
        depths, normals, intrinsics, cam_from_world, voxel_size)
    centres = -np.einsum("vji,vj->vi", cam_from_world[:, :3, :3],
                         cam_from_world[:, :3, 3])
    scores = view_selection.scores_from_visibility(points[seen],
                                                   visible[seen], centres)
    return {
        "images": images,
        "depths": depths,
        "masks": masks,
        "surface_ids": surface_ids,
        "normals": normals,
        "intrinsics": intrinsics,
        "cam_from_world": cam_from_world,
        "depth_min": depth_min,
        "depth_max": depth_max,
        "depth_interval": (depth_max - depth_min) / config.num_depths,
        "num_depths": config.num_depths,
        "pairs": view_selection.select_pairs(scores, positive_only=False),
        "pair_scores": scores,
        "surface_points": surface_points,
        "surface_normals": surface_normals,
        "primitives": [_describe(primitive) for primitive in primitives],
        "config": config,
    }
