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


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.convert_colmap",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--colmap", required=True,
                        help="COLMAP model folder (or its project folder)")
    parser.add_argument("--images",
                        help="undistorted images (default: images/ beside "
                        "the model)")
    parser.add_argument("--out", required=True, help="MVSNet folder to write")
    parser.add_argument("--link", action="store_true",
                        help="symlink the images instead of copying them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out folder")
    parser.add_argument("--near-factor", type=float, default=0.75,
                        help="depth_min = this x 1st percentile")
    parser.add_argument("--far-factor", type=float, default=1.25,
                        help="depth_max = this x 99th percentile")
    parser.add_argument("--num-sources", type=int, default=10,
                        help="sources per view in pair.txt")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.num_sources < 1:
        print(f"convert_colmap: error: --num-sources must be at least 1; "
              f"received {args.num_sources}", file=sys.stderr)
        return 2
    from experiments import console

    console.quiet_tensorflow([])
    from keras_mvs.data import colmap

    try:
        conversion = colmap.convert(
            args.colmap, args.images, near_factor=args.near_factor,
            far_factor=args.far_factor, num_sources=args.num_sources)
        out = colmap.write_mvsnet_folder(
            conversion, pathlib.Path(args.out), link_images=args.link,
            overwrite=args.overwrite)
    except (ValueError, FileExistsError) as error:
        print(f"convert_colmap: error: {error}", file=sys.stderr)
        return 2
    print(f"{conversion.model_dir}: {len(conversion.names)} views")
    print(f"{'view':>6} {'points':>7} {'depth_min':>11} {'depth_max':>11}  "
          "best sources")
    for view, (camera, count, (_, sources)) in enumerate(zip(
            conversion.cameras, conversion.num_points, conversion.pairs)):
        best = " ".join(str(s) for s, _ in sources[:3])
        print(f"{view:>6} {count:>7} {camera.depth_min:>11.4g} "
              f"{camera.depth_max:>11.4g}  {best}")
    from experiments import console

    console.wrote([(str(out / name), what) for name, what in (
        ("cams", "cameras with depth ranges (MVSNet cam files)"),
        ("images", "the undistorted images" + (
            " (links)" if args.link else "")),
        ("pair.txt", "source views per view"))], root=str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
