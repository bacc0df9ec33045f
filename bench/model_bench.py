"""Inference speed and memory of CascadeMVSNet (adaptive + unity, batch 1).

    python -m bench.model_bench [--repeats N] [--sizes 128x160,256x320,...]
                                [--modes graph,graph_xla_warp,xla] [--views V]

Each (size, mode) runs in a fresh subprocess, so its peak resident memory
(ru_maxrss, which includes the ~0.5 GB of the TensorFlow runtime) is its own.
Modes: "graph" is `tf.function` with the model's defaults (every op plain
TensorFlow); "graph_xla_warp" the same with `xla_warp=True` (only the
plane-sweep warp compiled by XLA); "xla" is `tf.function(jit_compile=True)`
around the whole model. The first call (tracing, XLA compilation) is
reported separately and excluded from the median. A configuration stops
repeating once its timed calls pass `--budget` seconds (at least one timed
call), so the slow whole-model XLA runs at 512x640 finish.

Times are wall-clock; on a shared machine other processes inflate them, so
the table also gives the 1-minute load average and "cpu s", the process CPU
time per call (both threads), which contention disturbs much less. With 2
threads on an idle machine, wall is roughly cpu / 2 or more.

Reference (issue 4): the official PyTorch UniMVSNet on this 2-thread CPU
takes about 0.56 s at 128x160 and 2.1 s at 256x320 (5 views, D=48/32/8).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

PYTORCH_SECONDS = {"128x160": 0.56, "256x320": 2.1}
DEFAULT_SIZES = "128x160,256x320,512x640"


def _inputs(num_views: int, height: int, width: int) -> dict:
    """Random images and a sideways rig of cameras looking at a 2-6 range."""
    import numpy as np

    rng = np.random.default_rng(0)
    focal = 0.8 * width
    intrinsics = np.array([[focal, 0.0, width / 2.0],
                           [0.0, focal, height / 2.0],
                           [0.0, 0.0, 1.0]], np.float32)
    cam_from_world = np.tile(np.eye(4, dtype=np.float32),
                             (1, num_views, 1, 1))
    cam_from_world[0, :, 0, 3] = -0.1 * np.arange(num_views)
    return {
        "images": rng.uniform(size=(1, num_views, height, width, 3)).astype(
            np.float32),
        "intrinsics": np.tile(intrinsics, (1, num_views, 1, 1)),
        "cam_from_world": cam_from_world,
        "depth_range": np.array([[2.0, 6.0]], np.float32),
    }


def run_one(size: str, mode: str, repeats: int, num_views: int,
            budget: float) -> dict:
    """Times one configuration in this process; returns a result row."""
    import numpy as np
    import tensorflow as tf

    from keras_mvs import models

    height, width = (int(n) for n in size.split("x"))
    inputs = {k: tf.constant(v)
              for k, v in _inputs(num_views, height, width).items()}
    model = models.CascadeMVSNet(num_depths=(48, 32, 8),
                                 aggregation="adaptive", head="unity",
                                 xla_warp=mode == "graph_xla_warp")
    model.build()
    infer = tf.function(
        lambda batch: {k: model(batch, training=False)[k]
                       for k in ("depth", "confidence")},
        jit_compile=mode == "xla")
    start = time.perf_counter()
    infer(inputs)["depth"].numpy()
    first = time.perf_counter() - start
    times, cpu_times = [], []
    while len(times) < repeats and (not times or sum(times) < budget):
        start, cpu_start = time.perf_counter(), time.process_time()
        infer(inputs)["depth"].numpy()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"size": size, "mode": mode, "runs": len(times),
            "median_s": float(np.median(times)), "first_s": first,
            "median_cpu_s": float(np.median(cpu_times)),
            "peak_rss_mb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed calls per configuration")
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--modes", default="graph,graph_xla_warp,xla")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        size, mode = args.child.split(":")
        print(json.dumps(run_one(size, mode, args.repeats, args.views,
                                 args.budget)))
        return
    load_before = os.getloadavg()[0]
    rows = []
    for size in args.sizes.split(","):
        for mode in args.modes.split(","):
            command = [sys.executable, "-m", "bench.model_bench", "--child",
                       f"{size}:{mode}", "--repeats", str(args.repeats),
                       "--views", str(args.views), "--budget",
                       str(args.budget)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{size} {mode} failed:\n{out.stderr[-2000:]}",
                      file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\nInference, {args.views} views, batch 1, D=48/32/8, adaptive + "
          f"unity (median of up to {args.repeats} calls after the first); "
          f"{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} "
          f"before and {os.getloadavg()[0]:.1f} after (other processes "
          "inflate wall-clock times)")
    print(f"{'size':9s} {'mode':14s} {'runs':>4s} {'median s':>9s} "
          f"{'cpu s':>7s} {'first s':>8s} {'peak RSS MB':>12s} "
          f"{'PyTorch s':>10s}")
    for row in rows:
        reference = PYTORCH_SECONDS.get(row["size"])
        reference = "-" if reference is None else f"{reference:.2f}"
        print(f"{row['size']:9s} {row['mode']:14s} {row['runs']:4d} "
              f"{row['median_s']:9.3f} {row['median_cpu_s']:7.2f} "
              f"{row['first_s']:8.1f} {row['peak_rss_mb']:12.0f} "
              f"{reference:>10s}")


if __name__ == "__main__":
    main()
