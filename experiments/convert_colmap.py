"""Convert a COLMAP sparse model and its images into an MVSNet scene folder.

    python -m experiments.convert_colmap --colmap DIR --images DIR --out DIR
        [--link] [--overwrite] [--near-factor 0.75] [--far-factor 1.25]
        [--num-sources 10]

`--colmap` holds cameras, images and points3D (.bin or .txt), directly or in
sparse/ or sparse/0/; `--images` is the undistorted images folder (default:
an images/ folder beside the model). The output has images/, cams/ (depth
range from the 1st / 99th percentile of the sparse depths times the near /
far factors), pair.txt (MVSNet view-selection score) and image_names.txt;
see `keras_mvs.data.colmap`. Distorted camera models are refused: run
COLMAP's image_undistorter first.
"""

import argparse
import pathlib
import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    console.quiet_tensorflow([])
    from keras_mvs.reconstruct import cli
    from keras_mvs.reconstruct import scenes

    parser = argparse.ArgumentParser(
        prog="python -m experiments.convert_colmap",
        description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--colmap", required=True,
        help="COLMAP model folder (or its project folder)")
    add("--images", help="undistorted images (default: images/ beside the "
        "model)")
    add("--out", required=True, help="MVSNet folder to write")
    add("--link", action="store_true",
        help="symlink the images instead of copying them")
    add("--overwrite", action="store_true",
        help="replace an existing --out folder")
    add("--near-factor", type=float, default=0.75,
        help="depth_min = this x 1st percentile")
    add("--far-factor", type=float, default=1.25,
        help="depth_max = this x 99th percentile")
    add("--num-sources", type=cli.positive_int, default=10,
        help="sources per view in pair.txt")
    args = parser.parse_args(argv)
    try:
        conversion, out = scenes.convert_colmap(
            args.colmap, args.images, pathlib.Path(args.out), link=args.link,
            overwrite=args.overwrite, near_factor=args.near_factor,
            far_factor=args.far_factor, num_sources=args.num_sources)
    except (ValueError, FileExistsError) as error:
        print(f"convert_colmap: error: {error}", file=sys.stderr)
        return 2
    print(scenes.conversion_table(conversion))
    console.wrote(scenes.scene_folder_outputs(out, args.link), root=str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
