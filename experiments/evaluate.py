"""Evaluate depth maps or point clouds against ground truth.

    python -m experiments.evaluate depth --model PATH [--data SPEC]
        [--views V] [--height H --width W] [--out FILE.json]
        [--depth-unit mm] [--verbose]
    python -m experiments.evaluate pointcloud --pred FUSED.ply
        (--gt GT.ply [--max-distance D] [--threshold T]
         | --dtu-root DIR --scan N) [--out FILE.json]

`depth`: runs the model on every reference view of the scenes of SPEC (by
default the held-out synthetic benchmark scenes) and reports the mean
absolute depth error and the fraction of valid pixels within 1, 2 and 4 base
intervals (base = depth range / 192), pooled over all valid pixels
(`keras_mvs.training.heldout.evaluate_model`). `pointcloud`: accuracy /
completeness / overall and precision / recall / F-score against a
ground-truth PLY, or the DTU protocol (ALGORITHMS.md 7.1) when the official
STL and observation-mask files are given
(`keras_mvs.evaluation.evaluate_point_cloud_files`).
"""

import argparse
import gc
import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console
from keras_mvs import malloc


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (the reference and at least one "
            f"source); received {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    depth = commands.add_parser("depth", help="depth maps vs ground truth")
    depth.add_argument("--model", required=True,
                       help="work directory, .keras file or SavedModel")
    depth.add_argument("--data", default="",
                       help="'' (held-out synthetic scenes) or a folder")
    depth.add_argument("--views", type=_at_least_two, default=5,
                       help="views per tuple, reference included (>= 2)")
    depth.add_argument("--height", type=int, default=128)
    depth.add_argument("--width", type=int, default=160)
    depth.add_argument("--max-views-per-scene", type=int, default=0)
    cloud = commands.add_parser("pointcloud",
                                help="fused cloud vs ground-truth points")
    cloud.add_argument("--pred", required=True, help="reconstructed PLY")
    cloud.add_argument("--gt", help="ground-truth PLY (generic mode)")
    cloud.add_argument("--max-distance", type=float, default=20.0,
                       help="distance cut-off, depth units (DTU: 20 mm)")
    cloud.add_argument("--threshold", type=float, default=1.0,
                       help="precision/recall threshold, depth units")
    cloud.add_argument("--dtu-root", help="official DTU evaluation folder "
                       "(Points/stl, ObsMask)")
    cloud.add_argument("--scan", type=int, help="DTU scan number")
    for sub in (depth, cloud):
        sub.add_argument("--out", help="also write the metrics as JSON")
        sub.add_argument("--depth-unit", default="mm",
                         help="the cameras' depth unit, for the printout "
                         "(default mm: DTU and the synthetic scenes)")
        sub.add_argument("--verbose", action="store_true",
                         help="show TensorFlow's log messages")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    malloc.limit_arenas()
    console.quiet_tensorflow([] if not args.verbose else ["--verbose"])
    from keras_mvs import evaluation
    from keras_mvs import files
    from keras_mvs.training import heldout

    try:
        if args.command == "depth":
            metrics, data = heldout.evaluate_model(
                args.model, args.data, num_views=args.views,
                height=args.height, width=args.width,
                max_views_per_scene=args.max_views_per_scene)
            # Dataset iterators finalised after the interpreter log an
            # error.
            gc.collect()
            text = evaluation.describe_depth_metrics(metrics, data,
                                                     args.depth_unit)
        else:
            metrics = evaluation.evaluate_point_cloud_files(
                args.pred, gt=args.gt, dtu_root=args.dtu_root,
                scan=args.scan, max_distance=args.max_distance,
                threshold=args.threshold)
            against = (f"DTU scan {args.scan}" if args.dtu_root
                       else str(args.gt))
            text = evaluation.describe_metrics(
                metrics, f"{args.pred} against {against} (depth unit "
                f"{args.depth_unit}):", args.depth_unit)
    except (FileNotFoundError, ValueError) as error:
        # Missing or unreadable models, scenes and clouds name themselves.
        print(f"evaluate {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(text)
    if args.out:
        files.write_json(args.out, metrics)
        console.wrote([(args.out, "the metrics as JSON")])
    else:
        print("\nWrote nothing (--out FILE.json keeps the metrics).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
