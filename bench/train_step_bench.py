"""Training-step speed and memory: supervised UFL and the CL three-branch step.

    python -m bench.train_step_bench [--repeats N] [--height H --width W]
                                     [--torch-python PYTHON|none]
                                     [--recompute] [--recompute-regularization]
                                     [--recompute-features]

Each configuration runs in a fresh subprocess so that its peak resident memory
(ru_maxrss) is its own. Reported: median seconds per optimizer step over the
repeats (after warm-up/compilation), its process CPU seconds (all threads;
the figure to trust when the machine is shared), and peak RSS. Graph mode is
the default training path; "graph_xla_warp" is graph mode with only the
plane-sweep warp compiled (`--config.model.xla_warp=true`); "xla" compiles
forward + loss + gradients per replica (`--config.train.xla=true`).

"Working MB" is the peak resident memory during the timed steps minus the
resident memory just before the first step ("1st MB": during the first step,
which traces; see bench/model_bench.py). With a PyTorch interpreter
(`--torch-python`, the environment variable KERAS_MVS_TORCH_PYTHON, or
/work/torchenv/bin/python)
the supervised PyTorch UniMVSNet step of `tools/torch_reference.py` (Adam,
a loss on every stage) runs in the same bench run as the baseline, and the
table gives our time and working memory as ratios to it; without one, the
table says why. "TF peak MB" is TensorFlow's CPU allocator peak over the
same steps (see bench/model_bench.py).
"""

import argparse
import json
import subprocess
import sys
import time

from bench import model_bench
from keras_mvs import malloc

CONFIGS = (
    # name, objective, aggregation, head, branches
    ("supervised-unity (UniMVSNet)", "supervised", "adaptive", "unity",
     ("regular",)),
    ("unsupervised 3-branch (CL-MVSNet)", "unsupervised", "groupwise",
     "regression", ("regular", "icc", "scc")),
    ("unsupervised_unity 3-branch", "unsupervised_unity", "groupwise",
     "unity", ("regular", "icc", "scc")),
)


def _batch(num_views, height, width, seed=0):
    import numpy as np

    from keras_mvs.data import synthetic

    scene = synthetic.render_scene(synthetic.SceneConfig(
        height=height, width=width, num_views=max(num_views + 2, 8),
        seed=seed))
    views = list(range(num_views))
    depth_range = np.array([[scene["depth_min"][0], scene["depth_max"][0]]],
                           np.float32)
    batch = {
        "images": scene["images"][views][None].astype(np.float32) / 255.0,
        "intrinsics": scene["intrinsics"][views][None].astype(np.float32),
        "cam_from_world": scene["cam_from_world"][views][None].astype(
            np.float32),
        "depth_range": depth_range,
        "depth": scene["depths"][0][None].astype(np.float32),
        "mask": scene["masks"][0][None].astype(np.float32),
    }
    batch["icc_images"] = batch["images"]
    scc = [0] + list(range(num_views, 2 * num_views - 1))
    batch["scc_images"] = scene["images"][scc][None].astype(
        np.float32) / 255.0
    batch["scc_intrinsics"] = scene["intrinsics"][scc][None].astype(
        np.float32)
    batch["scc_cam_from_world"] = scene["cam_from_world"][scc][None].astype(
        np.float32)
    return batch


# The child's flags, in `run_one`'s order (the parent passes them on).
RECOMPUTE_FLAGS = ("recompute", "recompute_regularization",
                   "recompute_features")


def run_one(index, mode, repeats, num_views, height, width,
            recompute=False, recompute_regularization=False,
            recompute_features=False):
    import numpy as np
    import tensorflow as tf

    from keras_mvs import models
    from keras_mvs.models import trainer as trainer_lib
    from keras_mvs.training import optimizers

    name, objective, aggregation, head, branches = CONFIGS[index]
    batch = {k: tf.constant(v) for k, v in
             _batch(num_views, height, width).items()}
    network = models.CascadeMVSNet(aggregation=aggregation, head=head,
                                   xla_warp=mode == "graph_xla_warp",
                                   recompute_sources=recompute,
                                   recompute_regularization=(
                                       recompute_regularization),
                                   recompute_features=recompute_features)
    trainer = trainer_lib.MVSTrainer(network, objective=objective,
                                     branches=branches, xla=mode == "xla")
    trainer.compile(optimizer=optimizers.Adam(1e-4), jit_compile=False)
    trainer(trainer_lib.network_inputs(batch))
    # As `fit` does before its first step: building the optimizer's slots
    # inside the traced step instead costs ~140-230 MB of resident memory
    # that training never pays.
    trainer.optimizer.build(trainer.network.trainable_variables)
    step = tf.function(trainer.train_step)
    tf.config.experimental.reset_memory_stats("CPU:0")
    rss_before = model_bench.current_rss_mb()
    start = time.perf_counter()
    step(batch)  # trace (and compile with XLA)
    first = time.perf_counter() - start
    first_working = model_bench.peak_rss_mb() - rss_before
    # As the training driver does after its first step
    # (callbacks.ReleaseMemoryAfterFirstStep).
    malloc.release_free_memory()
    model_bench.reset_peak_rss()
    tf.config.experimental.reset_memory_stats("CPU:0")
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        logs = step(batch)
        float(logs["loss"])
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"name": name, "mode": mode,
            "median_s": float(np.median(times)),
            "median_cpu_s": float(np.median(cpu_times)), "first_s": first,
            "peak_rss_mb": model_bench.peak_rss_mb(),
            "working_mb": model_bench.peak_rss_mb() - rss_before,
            "tf_peak_mb": model_bench.tf_peak_mb(),
            "first_working_mb": first_working}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--modes", default="graph,graph_xla_warp,xla")
    parser.add_argument("--configs", default="0,1,2")
    parser.add_argument("--torch-python", default=None,
                        help="python with torch for the baseline ('none' "
                        "skips it)")
    parser.add_argument("--recompute", action="store_true",
                        help="CascadeMVSNet(recompute_sources=True)")
    parser.add_argument("--recompute-regularization", action="store_true",
                        help="CascadeMVSNet(recompute_regularization=True)")
    parser.add_argument("--recompute-features", action="store_true",
                        help="CascadeMVSNet(recompute_features=True)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        index, mode = args.child.split(":")
        # As the commands run the network (keras_mvs/malloc.py).
        malloc.limit_arenas()
        print(json.dumps(run_one(int(index), mode, args.repeats,
                                 args.views, args.height, args.width,
                                 *(getattr(args, flag)
                                   for flag in RECOMPUTE_FLAGS))))
        return
    rows = []
    python, torch_note = model_bench.torch_python(args.torch_python)
    print(f"PyTorch baseline: {torch_note}", flush=True)
    baseline = None
    if python is not None:
        baseline = model_bench.run_torch(
            python, f"{args.height}x{args.width}", args.views, "unimvsnet",
            "train", args.repeats)
        print(baseline, flush=True)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - {"graph", "graph_xla_warp", "xla"})
    if unknown:
        parser.error("--modes takes graph, graph_xla_warp and xla; got "
                     f"{unknown}")
    for index in (int(i) for i in args.configs.split(",")):
        for mode in modes:
            command = [sys.executable, "-m", "bench.train_step_bench",
                       "--child", f"{index}:{mode}",
                       "--repeats", str(args.repeats), "--views",
                       str(args.views), "--height", str(args.height),
                       "--width", str(args.width)] + [
                           "--" + flag.replace("_", "-")
                           for flag in RECOMPUTE_FLAGS if getattr(args, flag)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\nTraining step, {args.views} views, {args.height}x{args.width}, "
          f"batch 1, D=48/32/8 (median of {args.repeats}); PyTorch "
          f"UniMVSNet supervised step ({torch_note}): "
          + ("-" if baseline is None else
             f"{baseline['median_s']:.2f} s, {baseline['working_mb']:.0f} "
             "working MB"))
    print(f"{'configuration':38s} {'mode':14s} {'median s':>9s} "
          f"{'CPU s':>7s} {'first s':>8s} {'1st MB':>8s} {'work MB':>8s} "
          f"{'TF peak':>8s} {'speedup':>8s} {'mem ratio':>9s}")
    for row in rows:
        ratios = f"{'-':>8s} {'-':>9s}"
        if baseline is not None:
            ratios = (f"{baseline['median_s'] / row['median_s']:7.2f}x "
                      f"{row['working_mb'] / baseline['working_mb']:8.2f}x")
        print(f"{row['name']:38s} {row['mode']:14s} {row['median_s']:9.3f} "
              f"{row['median_cpu_s']:7.2f} {row['first_s']:8.1f} "
              f"{row['first_working_mb']:8.0f} {row['working_mb']:8.0f} "
              f"{row['tf_peak_mb']:8.0f} {ratios}")


if __name__ == "__main__":
    main()
