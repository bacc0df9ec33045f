"""The depth accuracy a perfect network could reach with the cascade.

    python -m bench.cascade_ceiling [--data DIR] [--height H --width W]
        [--heads unity,regression]

Runs `keras_mvs.evaluation.cascade_reachable_depth` (every stage exactly
right at its own resolution, each refinement span centred on the bilinearly
upsampled previous depth) on every view with ground truth, and prints the
pooled depth metrics of the evaluate command (base interval = range / 192).
Whatever a trained model scores on the same views can only be compared with
this ceiling, not with 100 %: across depth edges the upsampled stage-1 depth
blends foreground and background, and the next span (+-32 base intervals at
stage 2, +-4 at stage 3) may not reach either side.

Default data: the held-out synthetic benchmark scenes (`--data` takes any
MVSNet-layout folder or folder of scenes with depths/).
"""

import argparse
import json

from keras_mvs import evaluation


def ceiling(dirs, height, width, head, num_depths=(48, 32, 8),
            ratios=(4, 2, 1)) -> dict:
    from keras_mvs.data import pipeline

    per_view = []
    for scene in pipeline.scene_dicts_from_folders(dirs, height=height,
                                                   width=width):
        depths = scene["depths"].numpy()
        masks = scene["masks"].numpy() > 0.5
        ranges = scene["depth_range"].numpy()
        for depth_gt, mask, depth_range in zip(depths, masks, ranges):
            depth = evaluation.cascade_reachable_depth(
                depth_gt, depth_range, num_depths, ratios, head=head)
            base = (depth_range[1] - depth_range[0]) / 192
            per_view.append(evaluation.depth_metrics(depth, depth_gt, mask,
                                                     interval=float(base)))
    metrics = evaluation.aggregate_depth_metrics(per_view)
    metrics["num_views"] = len(per_view)
    return metrics


def scene_dirs(data, height: int, width: int) -> list:
    """The scene folders of `--data`: the held-out synthetic benchmark
    scenes (test split, rendered on first use) when None, else the
    folder spec's scenes."""
    if data is None:
        from keras_mvs.data import synthetic

        return synthetic.ensure_benchmark("test", height=height, width=width)
    from keras_mvs.data import specs

    # A folder spec: the synthetic settings do not apply.
    return specs.scene_dirs(data, "test", height=height, width=width,
                            synthetic_views=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None,
                        help="MVSNet-layout scene folder(s) with depths/ "
                             "(default: the held-out synthetic scenes)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--heads", default="unity,regression")
    args = parser.parse_args()

    dirs = scene_dirs(args.data, args.height, args.width)
    source = (f"synthetic test split at {args.height}x{args.width}"
              if args.data is None else args.data)
    for head in args.heads.split(","):
        metrics = ceiling(dirs, args.height, args.width, head)
        print(f"{source}, {head} head, ideal stages:")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in metrics.items()}, indent=2))


if __name__ == "__main__":
    main()
