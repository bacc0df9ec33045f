"""Render a point cloud to a PNG, without re-running reconstruction.

    python -m experiments.render CLOUD.ply --out view.png [--camera CAM]
        [--size 640x480] [--verbose]

Without `--camera`, the virtual camera looks along the world +z axis (the
way the cameras of DTU and of the synthetic scenes look) at the cloud's
centre, far enough back to frame it. `--camera` takes an MVSNet cam file
(e.g. SCENE/cams/00000003_cam.txt) and renders from that view: its pose and
its intrinsics, scaled to `--size` from the size of the view's image
(`images/` beside `cams/`; without it, twice the principal point). Points
keep their colours; a cloud without colours is coloured by depth. This is
the code `reconstruct --render` uses (`keras_mvs.reconstruct.write_render`).
"""

import argparse
import pathlib
import sys
from typing import Optional
from typing import Sequence
from typing import Tuple

from experiments import console


def _size(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        width = height = 0
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 640x480; received {text!r}")
    return width, height


def camera_for_render(cam_file: pathlib.Path, width: int, height: int):
    """`(cam_from_world, intrinsics)` of an MVSNet cam file, K scaled to a
    `width x height` render.

    The cam file's K belongs to its image; that image's size is read from
    `images/` beside `cams/` when there, else taken as twice the principal
    point.

    Raises:
        FileNotFoundError: no such cam file.
    """
    import numpy as np
    from PIL import Image

    from keras_mvs.data import formats

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


def render(cloud: pathlib.Path, out: pathlib.Path, width: int, height: int,
           camera: Optional[pathlib.Path] = None) -> int:
    """Renders `cloud` to `out`; returns the PNG's size in bytes.

    Raises:
        FileNotFoundError: no such cloud or cam file.
        ValueError: the cloud has no points.
    """
    from keras_mvs import files
    from keras_mvs import reconstruct as reconstruct_lib

    if not cloud.is_file():
        raise FileNotFoundError(f"{cloud}: no such point cloud")
    points, colors, _ = files.read_ply(str(cloud))
    if points.shape[0] == 0:
        raise ValueError(f"{cloud}: the cloud has no points")
    pose = intrinsics = None
    if camera is not None:
        pose, intrinsics = camera_for_render(camera, width, height)
    out.parent.mkdir(parents=True, exist_ok=True)
    return reconstruct_lib.write_render(
        out, points, colors, (0.0, 0.0, 1.0), (0.0, -1.0, 0.0), width, height,
        cam_from_world=pose, intrinsics=intrinsics)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m experiments.render",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("cloud", help="point cloud (.ply)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--camera", help="MVSNet cam file to render from")
    parser.add_argument("--size", type=_size, default=(640, 480),
                        help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's log messages")
    args = parser.parse_args(argv)
    console.quiet_tensorflow(["--verbose"] if args.verbose else [])
    width, height = args.size
    out = pathlib.Path(args.out)
    try:
        size = render(pathlib.Path(args.cloud), out, width, height,
                      pathlib.Path(args.camera) if args.camera else None)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    console.wrote([(str(out), f"{width}x{height} render of {args.cloud} "
                    f"({size / 1000:.0f} kB)")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
