"""Rendered views of a fused cloud (`reconstruct --render`,
`python -m experiments.render`), through `visualize.render_point_cloud`."""

import pathlib
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
from PIL import Image

from keras_mvs import files
from keras_mvs import visualize
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib

PathLike = formats.PathLike


def render_views_direction(
    scene: scene_lib.MVSScene, view_ids: Sequence[int],
) -> Tuple[np.ndarray, np.ndarray]:
    """The mean viewing direction and image-up direction of the cameras,
    world frame, for a render that looks at the cloud as the photos do."""
    forward, down = np.zeros(3), np.zeros(3)
    for view_id in view_ids:
        rotation = scene.camera(view_id).cam_from_world[:3, :3]
        forward += rotation[2]
        down += rotation[1]
    return forward, -down


def write_render(
    path: PathLike, points: np.ndarray, colors: Optional[np.ndarray],
    view_direction: Sequence[float], up: Sequence[float],
    width: int = 640, height: int = 480, max_bytes: int = 300_000,
    cam_from_world: Optional[np.ndarray] = None,
    intrinsics: Optional[np.ndarray] = None,
) -> int:
    """Renders the cloud (`visualize.render_point_cloud`) to a PNG.

    A full-colour PNG of a noisy splat image can exceed `max_bytes`; it is
    then written again with a 256-colour palette, which keeps the render
    recognisable at a third of the size.

    Args:
        path: destination `.png`.
        points: `[N, 3]` world coordinates.
        colors: `[N, 3]` uint8 or None.
        view_direction, up: world directions of the virtual camera.
        width, height: image size, pixels.
        max_bytes: size above which the palette form is written.
        cam_from_world, intrinsics: a camera to render from instead (`[4,
            4]` and `[3, 3]` for a `width x height` image).

    Returns:
        The size of the written file in bytes.
    """
    path = pathlib.Path(path)
    rgb = visualize.render_point_cloud(
        points, colors, width, height, view_direction=view_direction, up=up,
        cam_from_world=cam_from_world, intrinsics=intrinsics,
        point_size=2 if points.shape[0] < width * height // 4 else 1)
    visualize.save_png(str(path), rgb)
    if path.stat().st_size > max_bytes:
        files.write_png(path, Image.fromarray(rgb).quantize(256),
                        optimize=True)
    return path.stat().st_size


def camera_for_render(cam_file: PathLike, width: int,
                      height: int) -> Tuple[np.ndarray, np.ndarray]:
    """`(cam_from_world, intrinsics)` of an MVSNet cam file, K scaled to a
    `width x height` render.

    The cam file's K belongs to its image; that image's size is read from
    `images/` beside `cams/` when there, else taken as twice the principal
    point.

    Raises:
        FileNotFoundError: no such cam file.
    """
    cam_file = pathlib.Path(cam_file)
    if not cam_file.is_file():
        raise FileNotFoundError(f"--camera {cam_file}: no such cam file")
    camera = formats.read_cam_file(cam_file)
    stem = cam_file.name[:-len("_cam.txt")] if cam_file.name.endswith(
        "_cam.txt") else cam_file.stem
    source_size = None
    images = cam_file.parent.parent / "images"
    for image in sorted(images.glob(f"{stem}.*")) if images.is_dir() else []:
        try:
            with Image.open(image) as opened:
                source_size = opened.size
            break
        except OSError:
            continue
    if source_size is None:
        source_size = (2 * camera.intrinsics[0, 2],
                       2 * camera.intrinsics[1, 2])
    intrinsics = np.array(camera.intrinsics, np.float64)
    intrinsics[0] *= width / source_size[0]
    intrinsics[1] *= height / source_size[1]
    return camera.cam_from_world, intrinsics


def render_cloud(cloud: PathLike, out: PathLike, width: int, height: int,
                 camera: Optional[PathLike] = None) -> int:
    """Renders the PLY `cloud` to the PNG `out` (`write_render`): from the
    MVSNet cam file `camera`, or without one looking along the world +z
    axis (the way the cameras of DTU and of the synthetic scenes look) at
    the cloud's centre, far enough back to frame it.

    Returns:
        The PNG's size in bytes.

    Raises:
        FileNotFoundError: no such cloud or cam file.
        ValueError: the cloud has no points.
    """
    cloud, out = pathlib.Path(cloud), pathlib.Path(out)
    if not cloud.is_file():
        raise FileNotFoundError(f"{cloud}: no such point cloud")
    points, colors, _ = files.read_ply(str(cloud))
    if points.shape[0] == 0:
        raise ValueError(f"{cloud}: the cloud has no points")
    pose = intrinsics = None
    if camera is not None:
        pose, intrinsics = camera_for_render(camera, width, height)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_render(
        out, points, colors, (0.0, 0.0, 1.0), (0.0, -1.0, 0.0), width, height,
        cam_from_world=pose, intrinsics=intrinsics)
