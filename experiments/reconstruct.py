"""Reconstruct a scene: depth maps, filtering and fusion to a coloured PLY.

    python -m experiments.reconstruct --images PHOTOS --model PATH --out DIR
        [--sfm-matcher auto|exhaustive|sequential]
        [--sfm-mapper auto|incremental|global] [--sfm-camera-model M]
        [--sfm-max-features N] [--sfm-init-pair A.jpg,B.jpg] [...]
    python -m experiments.reconstruct --scene DIR --model PATH --out DIR
        [--max-height H] [--max-width W] [--views V] [--num-depths 48,32,8]
        [--filter pcd|dypcd|PRESET] [--conf C | --conf C1,C2,C3]
        [--min-consistent-views N] [--images DIR] [--memory-budget-gb G]
        [--no-xla-warp]
        [--gt-ply GT.ply|POINTS.npz [--threshold T] [--max-distance D]]
        [--render VIEW.png] [--overwrite] [--quiet] [--verbose]

The flags and outputs are described in `keras_mvs.reconstruct.command`.
"""

import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console
from keras_mvs import malloc


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    # TensorFlow (imported by keras_mvs) without its log noise unless
    # --verbose.
    malloc.limit_arenas()
    console.quiet_tensorflow(argv)
    from keras_mvs.reconstruct import command

    parser = command.build_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args(argv)
    command.check_arguments(parser, args)
    status, wrote = command.run(args, " ".join(
        sys.argv if argv is None else ["reconstruct", *argv]))
    if wrote:
        console.wrote(wrote, root=str(args.out))
    return status


if __name__ == "__main__":
    sys.exit(main())
