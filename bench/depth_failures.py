"""Where a model's depth misses: at depth edges or not, and from which stage.

    python -m bench.depth_failures --model MODEL [--data DIR]
        [--views 5] [--height 128 --width 160] [--edge-intervals 8]

A pixel misses when its final depth is more than 4 base intervals (depth
range / 192) from the ground truth, as in `experiments.evaluate depth`.
Misses are split two ways:

* by place: pixels whose ground truth spans more than `--edge-intervals`
  base intervals in their 5x5 neighbourhood (depth edges) and the rest; the
  same split of the cascade's ceiling (`keras_mvs.evaluation.
  cascade_reachable_depth`, every stage exactly right) shows how much of the
  edge misses the cascade itself forces;
* by stage: a stage-1 depth more than 32 base intervals off (outside the
  stage-2 span), else a stage-2 depth more than 4 off (outside the stage-3
  span), else stage 3 alone. Stage depths are resized bilinearly to the
  final resolution for this, as the network resizes them for the next span.

Default data: the held-out synthetic benchmark scenes (test split).
"""

import argparse
import json

import numpy as np

from bench import cascade_ceiling

STAGE_2_HALF_SPAN = 32  # base intervals: 32 planes x 2 / 2
STAGE_3_HALF_SPAN = 4  # 8 planes x 1 / 2
MISS = 4  # base intervals


def edge_mask(depth_gt: np.ndarray, base: float, intervals: float
              ) -> np.ndarray:
    """Pixels whose 5x5 neighbourhood of ground truth spans more than
    `intervals * base` (pixels without ground truth are ignored)."""
    from scipy import ndimage

    known = depth_gt > 0
    high = ndimage.maximum_filter(np.where(known, depth_gt, -np.inf), 5)
    low = ndimage.minimum_filter(np.where(known, depth_gt, np.inf), 5)
    return known & ((high - low) > intervals * base)


def _resized(depth, height: int, width: int) -> np.ndarray:
    import tensorflow as tf

    depth = tf.convert_to_tensor(depth, tf.float32)[tf.newaxis, ...,
                                                    tf.newaxis]
    resized = tf.image.resize(depth, [height, width], "bilinear")
    return resized[0, ..., 0].numpy()


def failures(predictor, dirs, *, num_views: int, height: int, width: int,
             edge_intervals: float = 8.0) -> dict:
    """Shares of the valid pixels, pooled over every reference view."""
    from keras_mvs import evaluation
    from keras_mvs.data import pipeline
    from keras_mvs.models import trainer

    counts = dict.fromkeys(
        ("pixels", "edge", "miss", "miss_edge", "ceiling_miss",
         "ceiling_miss_edge", "miss_stage1", "miss_stage2", "miss_stage3"),
        0)
    views = 0
    scenes = pipeline.scene_dicts_from_folders(dirs, height=height,
                                               width=width)
    for batch in pipeline.make_eval_dataset(scenes, num_views):
        outputs = predictor(trainer.network_inputs(batch))
        for b in range(batch["depth"].shape[0]):
            gt = batch["depth"][b].numpy()
            valid = (batch["mask"][b].numpy() > 0.5) & (gt > 0)
            depth_range = batch["depth_range"][b].numpy()
            base = float(depth_range[1] - depth_range[0]) / 192
            rows, cols = gt.shape
            error = np.abs(np.asarray(outputs["depth"][b]) - gt) / base
            stage_error = [
                np.abs(_resized(stage["depth"][b], rows, cols) - gt) / base
                for stage in outputs["stages"][:2]]
            ceiling = evaluation.cascade_reachable_depth(
                np.where(valid, gt, 0.0), depth_range)
            edge = edge_mask(np.where(valid, gt, 0.0), base, edge_intervals)
            miss = valid & (error > MISS)
            ceiling_miss = valid & (np.abs(ceiling - gt) / base > MISS)
            stage1 = miss & (stage_error[0] > STAGE_2_HALF_SPAN)
            stage2 = miss & ~stage1 & (stage_error[1] > STAGE_3_HALF_SPAN)
            for key, value in (
                    ("pixels", valid), ("edge", valid & edge), ("miss", miss),
                    ("miss_edge", miss & edge),
                    ("ceiling_miss", ceiling_miss),
                    ("ceiling_miss_edge", ceiling_miss & edge),
                    ("miss_stage1", stage1), ("miss_stage2", stage2),
                    ("miss_stage3", miss & ~stage1 & ~stage2)):
                counts[key] += int(value.sum())
            views += 1
    pixels = counts["pixels"]
    edge, rest = counts["edge"], pixels - counts["edge"]
    return {
        "views": views,
        "edge_share": edge / pixels,
        "miss": counts["miss"] / pixels,
        "miss_rate_at_edges": counts["miss_edge"] / max(edge, 1),
        "miss_rate_elsewhere": (counts["miss"] - counts["miss_edge"])
        / max(rest, 1),
        "ceiling_miss": counts["ceiling_miss"] / pixels,
        "ceiling_miss_rate_at_edges": counts["ceiling_miss_edge"]
        / max(edge, 1),
        "ceiling_miss_rate_elsewhere": (counts["ceiling_miss"]
                                        - counts["ceiling_miss_edge"])
        / max(rest, 1),
        "miss_from_stage1": counts["miss_stage1"] / pixels,
        "miss_from_stage2": counts["miss_stage2"] / pixels,
        "miss_from_stage3": counts["miss_stage3"] / pixels,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="preset name, work directory or .keras file")
    parser.add_argument("--data", default=None,
                        help="scene folder(s) with depths/ (default: the "
                        "held-out synthetic benchmark scenes)")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--edge-intervals", type=float, default=8.0)
    args = parser.parse_args(argv)

    from keras_mvs import console
    from keras_mvs import inference
    from keras_mvs import malloc

    malloc.limit_arenas()
    console.quiet_tensorflow()
    dirs = cascade_ceiling.scene_dirs(args.data, args.height, args.width)
    predictor = inference.load_model(args.model)
    if predictor.network is None:
        raise SystemExit(f"--model {args.model}: a Keras model is needed "
                         "(the stages' depths), not a SavedModel")
    result = failures(predictor, dirs, num_views=args.views,
                      height=args.height, width=args.width,
                      edge_intervals=args.edge_intervals)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                      for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
