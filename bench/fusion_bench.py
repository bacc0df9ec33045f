"""Fusion speed: 49 views at 800x600, 10 sources each.

Depth maps are ray-cast analytically from a sphere in front of a plane, seen
by 49 cameras on a 7x7 grid of viewing directions, so every source agrees
with its reference and the filter keeps most pixels (the realistic worst
case for the averaging and unprojection work). Prints the seconds taken by
`keras_mvs.fusion.fuse_views` for each filter method (wall clock, and the
process's CPU seconds, which say more on a machine shared with other jobs).
The first method's figure includes the one-off XLA compilation.

    python -m bench.fusion_bench [--views 49] [--height 600] [--width 800]
"""

import argparse
import time

import numpy as np

from keras_mvs import fusion
from keras_mvs import geometry

SPHERE_CENTRE = np.array([0.0, 0.0, 600.0])
SPHERE_RADIUS = 150.0
# The plane z = 800 (world units, "mm") behind the sphere.
PLANE_Z = 800.0


def _look_at(centre, target):
    """cam_from_world of a camera at `centre` looking at `target` (y down)."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = -rotation @ centre
    return pose.astype(np.float32)


def _render_depth(intrinsics, cam_from_world, height, width):
    """Depth of the nearest of sphere and plane along every pixel's ray."""
    rays = geometry.unproject(np.ones((1, height, width), np.float32),
                              intrinsics[np.newaxis]).numpy()[0]  # z = 1
    rotation = cam_from_world[:3, :3].astype(np.float64)
    origin = -rotation.T @ cam_from_world[:3, 3]
    directions = rays @ rotation  # world directions; t along them is depth
    offset = origin - SPHERE_CENTRE
    a = np.sum(directions ** 2, axis=-1)
    b = 2.0 * directions @ offset
    c = offset @ offset - SPHERE_RADIUS ** 2
    discriminant = b ** 2 - 4 * a * c
    sphere = np.where(discriminant >= 0,
                      (-b - np.sqrt(np.maximum(discriminant, 0))) / (2 * a),
                      np.inf)
    plane = (PLANE_Z - origin[2]) / directions[..., 2]
    plane = np.where(plane > 0, plane, np.inf)
    depth = np.minimum(sphere, plane)
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


def make_scene(num_views, height, width, num_sources=10):
    """FusionViews and a pair list of the analytic scene."""
    side = int(np.ceil(np.sqrt(num_views)))
    angles = np.deg2rad(np.linspace(-15.0, 15.0, side))
    intrinsics = np.array([[width, 0, (width - 1) / 2],
                           [0, width, (height - 1) / 2], [0, 0, 1]],
                          np.float32)
    rng = np.random.default_rng(0)
    views, centres = [], []
    for index in range(num_views):
        yaw, pitch = angles[index % side], angles[index // side]
        direction = np.array([np.sin(yaw), np.sin(pitch), -1.0])
        centre = SPHERE_CENTRE + 600.0 * direction / np.linalg.norm(direction)
        pose = _look_at(centre, SPHERE_CENTRE)
        centres.append(centre)
        views.append(fusion.FusionView(
            depth=_render_depth(intrinsics, pose, height, width),
            confidence=np.ones((height, width), np.float32),
            intrinsics=intrinsics, cam_from_world=pose,
            image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
    centres = np.array(centres)
    pairs = []
    for index in range(num_views):
        distances = np.linalg.norm(centres - centres[index], axis=-1)
        order = [int(i) for i in np.argsort(distances) if i != index]
        pairs.append((index, order[:num_sources]))
    return views, pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--sources", type=int, default=10)
    args = parser.parse_args()

    start = time.perf_counter()
    views, pairs = make_scene(args.views, args.height, args.width,
                              args.sources)
    print(f"scene: {args.views} views {args.width}x{args.height}, "
          f"{args.sources} sources each, rendered in "
          f"{time.perf_counter() - start:.1f} s")
    for preset in ("casmvsnet", "unimvsnet_dypcd"):
        config = fusion.FilterConfig.preset(
            preset, confidence_thresholds=(0.5,))
        start, start_cpu = time.perf_counter(), time.process_time()
        cloud = fusion.fuse_views(views, pairs, config)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - start_cpu
        print(f"{config.method:6s} ({preset}): {seconds:.1f} s wall, "
              f"{cpu_seconds:.1f} s CPU, {cloud.points.shape[0]} points, "
              f"{seconds / args.views:.2f} s per reference view")


if __name__ == "__main__":
    main()
