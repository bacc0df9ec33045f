"""Evaluate depth maps or point clouds against ground truth.

    python -m experiments.evaluate depth --model PATH [--data SPEC]
        [--views V] [--height H --width W] [--out FILE.json]
    python -m experiments.evaluate pointcloud --pred FUSED.ply
        (--gt GT.ply [--max-distance D] [--threshold T]
         | --dtu-root DIR --scan N)

`depth`: runs the model on every reference view of the scenes of SPEC (by
default the held-out synthetic benchmark scenes) and reports the mean
absolute depth error and the fraction of valid pixels within 1, 2 and 4 base
intervals (base = depth range / 192), pooled over all valid pixels.

`pointcloud`: accuracy / completeness / overall and precision / recall /
F-score against a ground-truth PLY (generic mode), or the DTU protocol
(ALGORITHMS.md 7.1) when the official STL and observation-mask files are
given.
"""

import argparse
import json
import pathlib
import sys
from typing import Dict, Optional, Sequence

import numpy as np

from keras_mvs import evaluation


def evaluate_depth(model, dirs: Sequence[pathlib.Path], *, num_views: int,
                   height: Optional[int], width: Optional[int],
                   max_views_per_scene: int = 0,
                   num_depths_base: int = 192) -> Dict[str, float]:
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

    Returns:
        Pixel-pooled metrics (`evaluation.aggregate_depth_metrics`) plus
        `num_views_evaluated`.
    """
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
    if not per_view:
        raise ValueError("no view was evaluated")
    metrics = evaluation.aggregate_depth_metrics(per_view)
    metrics["num_views_evaluated"] = len(per_view)
    return metrics


def _depth_command(args) -> Dict[str, float]:
    from experiments import training
    from experiments.configs import base
    from keras_mvs import inference

    model = inference.load_model(args.model)
    config = base.get_config()
    config.data.height = args.height
    config.data.width = args.width
    dirs = training.scene_dirs(args.data, "test", config)
    return evaluate_depth(model, dirs, num_views=args.views,
                          height=args.height, width=args.width,
                          max_views_per_scene=args.max_views_per_scene)


def _pointcloud_command(args) -> Dict[str, float]:
    from keras_mvs import fusion

    points, _, _ = fusion.read_ply(args.pred)
    if args.dtu_root:
        truth = evaluation.load_dtu_ground_truth(args.dtu_root, args.scan)
        return evaluation.dtu_evaluate(
            points, truth.stl_points, truth.obs_mask, truth.bb, truth.res,
            truth.plane)
    if not args.gt:
        raise SystemExit("pointcloud: give --gt GT.ply or --dtu-root/--scan")
    gt_points, _, _ = fusion.read_ply(args.gt)
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
    args = parser.parse_args(argv)
    try:
        if args.command == "depth":
            metrics = _depth_command(args)
        else:
            metrics = _pointcloud_command(args)
    except (FileNotFoundError, ValueError) as error:
        # Missing or unreadable models, scenes and clouds name themselves.
        print(f"evaluate {args.command}: error: {error}", file=sys.stderr)
        return 2
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float)
              else f"{key}: {value}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
