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
intervals (base = depth range / 192), pooled over all valid pixels, with
readable names, the depth unit, and the data it scored.

`pointcloud`: accuracy / completeness / overall and precision / recall /
F-score against a ground-truth PLY (generic mode), or the DTU protocol
(ALGORITHMS.md 7.1) when the official STL and observation-mask files are
given.
"""

import argparse
import gc
import json
import pathlib
import sys
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Sequence

from keras_mvs.training import console

# Readable names and units of the metrics; "depth" is the cameras' unit.
METRICS = {
    "mean_abs_error": ("mean absolute depth error", "depth"),
    "within_1_intervals": ("within 1 depth interval", "%"),
    "within_2_intervals": ("within 2 depth intervals", "%"),
    "within_4_intervals": ("within 4 depth intervals", "%"),
    "num_pixels": ("valid pixels scored", ""),
    "num_views_evaluated": ("views scored", ""),
    "train_steps": ("training steps", ""),
    "accuracy": ("accuracy (mean distance to the truth)", "depth"),
    "completeness": ("completeness (mean distance from the truth)",
                     "depth"),
    "overall": ("overall (mean of the two)", "depth"),
    "precision": ("precision", "%"),
    "recall": ("recall", "%"),
    "fscore": ("F-score", "%"),
    "threshold": ("distance threshold", "depth"),
}


def describe_metrics(metrics: Dict[str, float], title: str,
                     unit: str = "mm") -> str:
    """Lines `  readable name   value unit` under `title`.

    Args:
        metrics: metric name to value; ints print as ints, fractions of
            the `%` metrics as percentages, unknown names as they are.
        title: the first line, naming the data scored.
        unit: the depth unit of the cameras.
    """
    rows = []
    for key, value in metrics.items():
        label, kind = METRICS.get(key, (key.replace("_", " "), ""))
        rows.append((label, console.format_number(value, kind, unit)))
    width = max(len(label) for label, _ in rows) if rows else 0
    return "\n".join([title] + [f"  {label:<{width}}  {text}"
                                  for label, text in rows])


def describe_depth_metrics(metrics: Dict[str, float], data: str,
                           unit: str = "mm") -> str:
    """The depth metrics of `evaluate_depth` for a person to read."""
    return describe_metrics(
        metrics, f"Depth of {data}, against ground truth (depth unit "
        f"{unit}; one depth interval = the view's depth range / 192):", unit)


def count_reference_views(dirs: Sequence[pathlib.Path],
                          max_views_per_scene: int = 0) -> int:
    """How many reference views `evaluate_depth` scores in `dirs`."""
    total = 0
    for folder in dirs:
        views = len(list((pathlib.Path(folder) / "cams").glob("*_cam.txt")))
        total += min(views, max_views_per_scene) if max_views_per_scene else (
            views)
    return total


def evaluate_depth(model, dirs: Sequence[pathlib.Path], *, num_views: int,
                   height: Optional[int], width: Optional[int],
                   max_views_per_scene: int = 0,
                   num_depths_base: int = 192,
                   on_view: Optional[Callable[[int], None]] = None,
                   ) -> Dict[str, float]:
    """Depth metrics of `model` over every reference view of `dirs`.

    Args:
        model: a Keras network or `keras_mvs.inference.Predictor`, called on
            the network's input dict.
        dirs: scene folders with ground-truth `depths/` and `masks/`.
        num_views: V, reference included.
        height, width: evaluation resolution (None: the scenes' own).
        max_views_per_scene: evaluate only the first N references of each
            scene (0: all).
        num_depths_base: the base interval is depth range / this.
        on_view: called with the number of views scored so far.

    Returns:
        Pixel-pooled metrics (`evaluation.aggregate_depth_metrics`) plus
        `num_views_evaluated`.
    """
    import numpy as np

    from keras_mvs import evaluation
    from keras_mvs.data import pipeline
    from keras_mvs.models import trainer as trainer_lib

    scenes = pipeline.scene_dicts_from_folders(dirs, height=height,
                                               width=width)
    dataset = pipeline.make_eval_dataset(scenes, num_views)
    per_view = []
    seen: Dict[int, int] = {}
    for batch in dataset:
        index = int(batch["scene_index"][0])
        seen[index] = seen.get(index, 0) + 1
        if max_views_per_scene and seen[index] > max_views_per_scene:
            continue
        if "depth" not in batch:
            raise ValueError(
                f"scene {batch['scene_name'][0].numpy().decode()} has no "
                "ground-truth depths/ to evaluate against")
        outputs = model(trainer_lib.network_inputs(batch))
        depth_range = batch["depth_range"].numpy()
        depth = np.asarray(outputs["depth"])
        for b in range(depth.shape[0]):
            base = (depth_range[b, 1] - depth_range[b, 0]) / num_depths_base
            per_view.append(evaluation.depth_metrics(
                depth[b], batch["depth"][b].numpy(),
                batch["mask"][b].numpy() > 0.5, interval=float(base)))
            if on_view is not None:
                on_view(len(per_view))
    if not per_view:
        raise ValueError("no view was evaluated")
    metrics = evaluation.aggregate_depth_metrics(per_view)
    metrics["num_views_evaluated"] = len(per_view)
    return metrics


def _depth_command(args):
    """Runs `evaluate depth`; returns (metrics, the data's description)."""
    from experiments import training
    from experiments.configs import base
    from keras_mvs import inference

    config = base.get_config()
    config.data.height = args.height
    config.data.width = args.width
    if not args.data:
        training.prepare_synthetic(config, ["test"])
    dirs = training.scene_dirs(args.data, "test", config)
    data = (f"the held-out synthetic benchmark scenes (test split, "
            f"{len(dirs)} scenes, {dirs[0].parent})" if not args.data else
            f"{args.data} ({len(dirs)} scene{'s' * (len(dirs) > 1)})")
    data += f" at {args.height}x{args.width}, {args.views} views"
    console.stage(f"loading the model {args.model}")
    model = inference.load_model(args.model)
    total = count_reference_views(dirs, args.max_views_per_scene)
    status = console.StatusLine(every=10)
    status.update(f"scoring {total} views: building the graph", force=True)

    def on_view(count):
        status.update(f"scoring {total} views: view {count}/{total}",
                      force=count == 1)

    metrics = evaluate_depth(model, dirs, num_views=args.views,
                             height=args.height, width=args.width,
                             max_views_per_scene=args.max_views_per_scene,
                             on_view=on_view)
    status.close(f"scored {metrics['num_views_evaluated']} views")
    return metrics, data


def _pointcloud_command(args) -> Dict[str, float]:
    from keras_mvs import evaluation
    from keras_mvs import files

    points, _, _ = files.read_ply(args.pred)
    if args.dtu_root:
        truth = evaluation.load_dtu_ground_truth(args.dtu_root, args.scan)
        return evaluation.dtu_evaluate(
            points, truth.stl_points, truth.obs_mask, truth.bb, truth.res,
            truth.plane)
    if not args.gt:
        raise SystemExit("pointcloud: give --gt GT.ply or --dtu-root/--scan")
    gt_points, _, _ = files.read_ply(args.gt)
    metrics = evaluation.accuracy_completeness(
        points, gt_points, max_distance=args.max_distance)
    metrics.update(evaluation.precision_recall_fscore(
        points, gt_points, threshold=args.threshold))
    return metrics


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


def main(argv: Optional[Sequence[str]] = None) -> int:
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
    args = parser.parse_args(argv)
    console.quiet_tensorflow([] if not args.verbose else ["--verbose"])
    try:
        if args.command == "depth":
            metrics, data = _depth_command(args)
            # Dataset iterators finalised after the interpreter log an
            # error.
            gc.collect()
            print(describe_depth_metrics(metrics, data, args.depth_unit))
        else:
            metrics = _pointcloud_command(args)
            against = (f"DTU scan {args.scan}" if args.dtu_root
                       else str(args.gt))
            print(describe_metrics(
                metrics, f"{args.pred} against {against} (depth unit "
                f"{args.depth_unit}):", args.depth_unit))
    except (FileNotFoundError, ValueError) as error:
        # Missing or unreadable models, scenes and clouds name themselves.
        print(f"evaluate {args.command}: error: {error}", file=sys.stderr)
        return 2
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(metrics, indent=2))
        console.wrote([(args.out, "the metrics as JSON")])
    else:
        print("\nWrote nothing (--out FILE.json keeps the metrics).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
