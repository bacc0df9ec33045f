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
the code `reconstruct --render` uses (`keras_mvs.reconstruct.render`).
"""

import argparse
import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    console.quiet_tensorflow(argv)
    from keras_mvs.reconstruct import cli
    from keras_mvs.reconstruct import render

    parser = argparse.ArgumentParser(prog="python -m experiments.render",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("cloud", help="point cloud (.ply)")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--camera", help="MVSNet cam file to render from")
    parser.add_argument("--size", type=cli.image_size(16), default=(640, 480),
                        help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's log messages")
    args = parser.parse_args(argv)
    try:
        size = render.render_cloud(args.cloud, args.out, *args.size,
                                   camera=args.camera)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    console.wrote([(args.out, f"{args.size[0]}x{args.size[1]} render of "
                    f"{args.cloud} ({size / 1000:.0f} kB)")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
