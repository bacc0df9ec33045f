"""Inference speed and memory of CascadeMVSNet (adaptive + unity, batch 1).

    python -m bench.model_bench [--repeats N] [--sizes 128x160,256x320,...]
                                [--modes graph,graph_xla_warp,xla] [--views V]
                                [--aggregation adaptive|variance|groupwise]
                                [--torch-python PYTHON|none]
                                [--torch-variant unimvsnet|casmvsnet]

Each (size, mode) runs in a fresh subprocess, so its peak resident memory
(ru_maxrss, which includes the ~0.5 GB of the TensorFlow runtime) is its own.
Modes: "graph" is the model's defaults (every op plain TensorFlow) called
as `reconstruct` calls it on a view that fits in memory (through
`inference.Predictor`: `tf.function`, the depth and confidence maps
returned); "graph_xla_warp" the same with `xla_warp=True` (only the
plane-sweep warp compiled by XLA); "xla" is `tf.function(jit_compile=True)`
around the whole model. The first call (tracing, XLA compilation) is
reported separately and excluded from the median. A configuration stops
repeating once its timed calls pass `--budget` seconds (at least one timed
call), so the slow whole-model XLA runs at 512x640 finish.

Times are wall-clock; on a shared machine other processes inflate them, so
the table also gives the 1-minute load average and "cpu s", the process CPU
time per call (both threads), which contention disturbs much less. With 2
threads on an idle machine, wall is roughly cpu / 2 or more.

Memory: "working MB" is the peak resident memory (VmHWM) during the timed
calls minus the resident memory just before the first call (the framework's
import and the weights are excluded), the figure that grows with the input;
"1st MB" the same over the first call, which also traces and compiles (the
peak is restarted after it through /proc/self/clear_refs). "TF peak MB" is
TensorFlow's own CPU allocator peak over the timed calls
(`tf.config.experimental.reset_memory_stats("CPU:0")` after the first call,
`get_memory_info("CPU:0")["peak"]` after the last): the tensors alone,
without the allocator's slack, oneDNN scratch or the graph.

Baseline: with a PyTorch interpreter (`--torch-python`, or the environment
variable KERAS_MVS_TORCH_PYTHON, or /work/torchenv/bin/python when it
exists), every size also runs `tools/torch_reference.py` (the official
network's sampling and per-source accumulation; `--torch-variant`, by default
UniMVSNet, the issue-14 baseline) in a fresh process, and the table prints
our time and working memory as ratios to it. When no interpreter with torch
is found, the table says so and prints no ratios. Finally the working memory of
each mode is fitted against H x W over the sizes run: MB per megapixel (least
squares, and between consecutive sizes: equal for linear growth) and the
log-log exponent.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

from keras_mvs import malloc

DEFAULT_SIZES = "128x160,256x320,512x640"
TORCH_REFERENCE = (pathlib.Path(__file__).resolve().parents[1] / "tools"
                   / "torch_reference.py")
DEFAULT_TORCH_PYTHON = "/work/torchenv/bin/python"


def current_rss_mb() -> float:
    """Resident memory of this process now, MB (/proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last
    `reset_peak_rss`, MB (VmHWM of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> None:
    """Restarts the VmHWM peak from the current RSS (/proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def torch_python(option) -> tuple:
    """`(interpreter, why)`: the PyTorch python for the baseline, or None
    and the reason it is not run.

    `option` ('none' skips the baseline), else the environment variable
    KERAS_MVS_TORCH_PYTHON, else DEFAULT_TORCH_PYTHON; the interpreter must
    import torch.
    """
    if option == "none":
        return None, "skipped (--torch-python none)"
    python = (option or os.environ.get("KERAS_MVS_TORCH_PYTHON")
              or DEFAULT_TORCH_PYTHON)
    if not os.path.exists(python):
        return None, (f"unavailable: {python} does not exist (set "
                      "--torch-python or KERAS_MVS_TORCH_PYTHON)")
    check = subprocess.run([python, "-c", "import torch"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"unavailable: {python} cannot import torch ({last})"
    return python, python


def run_torch(python: str, size: str, views: int, variant: str, mode: str,
              repeats: int, threads: int = 2) -> dict:
    """Runs tools/torch_reference.py in a fresh process; its JSON row."""
    out = subprocess.run(
        [python, str(TORCH_REFERENCE), "--size", size, "--views",
         str(views), "--variant", variant, "--mode", mode, "--repeats",
         str(repeats), "--threads", str(threads)], capture_output=True,
        text=True)
    if out.returncode != 0:
        print(f"PyTorch {size} {mode} failed:\n{out.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_slope(points) -> tuple:
    """(MB per megapixel, log-log exponent) of `[(pixels, MB), ...]`."""
    import numpy as np

    pixels = np.array([p for p, _ in points], np.float64) / 1e6
    values = np.array([m for _, m in points], np.float64)
    slope = np.polyfit(pixels, values, 1)[0]
    exponent = np.polyfit(np.log(pixels), np.log(np.maximum(values, 1e-3)),
                          1)[0]
    return float(slope), float(exponent)


def _inputs(num_views: int, height: int, width: int) -> dict:
    """Random images and a sideways rig of cameras looking at a 2-6 range."""
    from keras_mvs.testing import tiny

    return tiny.sideways_rig_inputs(num_views, height, width)


def run_one(size: str, mode: str, repeats: int, num_views: int,
            budget: float, aggregation: str = "adaptive",
            memory_budget_gb: float = None) -> dict:
    """Times one configuration in this process; returns a result row.

    With `memory_budget_gb`, the view is run as `reconstruct` runs it under
    that budget: in one call when the memory model says it fits, else in
    the tiles of `planning.plan_tiles` (`CascadeMVSNet.predict_tiled`).
    """
    import numpy as np
    import tensorflow as tf

    from keras_mvs import inference
    from keras_mvs import models

    height, width = (int(n) for n in size.split("x"))
    inputs = {k: tf.constant(v)
              for k, v in _inputs(num_views, height, width).items()}
    model = models.CascadeMVSNet(num_depths=(48, 32, 8),
                                 aggregation=aggregation, head="unity",
                                 xla_warp=mode == "graph_xla_warp")
    model.build()
    if mode == "xla":
        infer = tf.function(
            lambda batch: inference.network_maps(model(batch,
                                                       training=False)),
            jit_compile=True)
    else:
        # What `reconstruct` calls on a view that fits in memory.
        infer = inference.Predictor(pathlib.Path("bench"), "keras",
                                    network=model)
    tiles = [None]
    if memory_budget_gb is not None:
        from keras_mvs.reconstruct import planning

        shape = planning.NetworkShape((48, 32, 8), model._feature_channels(),
                                      192, True)
        tiles = planning.plan_tiles(height, width, num_views, shape,
                                    int(memory_budget_gb * 2**30))
        if len(tiles) > 1:
            windows = [(tile.window, tile.core) for tile in tiles]

            def infer(batch):
                return model.predict_tiled(batch, windows)
    tf.config.experimental.reset_memory_stats("CPU:0")
    rss_before = current_rss_mb()
    start = time.perf_counter()
    np.asarray(infer(inputs)["depth"])
    first = time.perf_counter() - start
    # The first call also traces and compiles (XLA's compiler holds memory
    # the later calls do not): its figures are kept apart.
    first_working, first_tf_peak = peak_rss_mb() - rss_before, tf_peak_mb()
    reset_peak_rss()
    tf.config.experimental.reset_memory_stats("CPU:0")
    times, cpu_times = [], []
    while len(times) < repeats and (not times or sum(times) < budget):
        start, cpu_start = time.perf_counter(), time.process_time()
        np.asarray(infer(inputs)["depth"])
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"size": size, "mode": mode, "runs": len(times),
            "median_s": float(np.median(times)), "first_s": first,
            "median_cpu_s": float(np.median(cpu_times)),
            "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
            "working_mb": peak_rss_mb() - rss_before,
            "tf_peak_mb": tf_peak_mb(), "first_working_mb": first_working,
            "first_tf_peak_mb": first_tf_peak, "tiles": len(tiles)}


def tf_peak_mb() -> float:
    """TensorFlow's CPU allocator peak since the last reset, MB."""
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed calls per configuration")
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--modes", default="graph,graph_xla_warp,xla")
    parser.add_argument("--aggregation", default="adaptive",
                        choices=("adaptive", "variance", "groupwise"))
    parser.add_argument("--torch-python", default=None,
                        help="python with torch for the baseline ('none' "
                        "skips it); default $KERAS_MVS_TORCH_PYTHON or "
                        f"{DEFAULT_TORCH_PYTHON}")
    parser.add_argument("--torch-variant", default="unimvsnet",
                        choices=("unimvsnet", "casmvsnet"))
    parser.add_argument("--torch-threads", type=int, default=2,
                        help="torch.set_num_threads of the baseline (on a "
                        "loaded machine, 2 OpenMP threads spin and run "
                        "slower than 1)")
    parser.add_argument("--memory-budget-gb", type=float, default=None,
                        help="run each view as reconstruct would under this "
                        "budget (tiles when the memory model says it does "
                        "not fit)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        size, mode = args.child.split(":")
        # As the commands run the network (keras_mvs/malloc.py).
        malloc.limit_arenas()
        print(json.dumps(run_one(size, mode, args.repeats, args.views,
                                 args.budget, args.aggregation,
                                 args.memory_budget_gb)))
        return
    python, torch_note = torch_python(args.torch_python)
    variant = args.torch_variant
    print(f"PyTorch baseline: {torch_note}", flush=True)
    load_before = os.getloadavg()[0]
    rows, baselines = [], {}
    for size in args.sizes.split(","):
        if python is not None:
            baselines[size] = run_torch(python, size, args.views, variant,
                                        "inference", min(args.repeats, 3),
                                        args.torch_threads)
            print(baselines[size], flush=True)
        for mode in args.modes.split(","):
            command = [sys.executable, "-m", "bench.model_bench", "--child",
                       f"{size}:{mode}", "--repeats", str(args.repeats),
                       "--views", str(args.views), "--budget",
                       str(args.budget), "--aggregation", args.aggregation]
            if args.memory_budget_gb is not None:
                command += ["--memory-budget-gb", str(args.memory_budget_gb)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{size} {mode} failed:\n{out.stderr[-2000:]}",
                      file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\nInference, {args.views} views, batch 1, D=48/32/8, "
          f"{args.aggregation} + unity (median of up to {args.repeats} calls "
          f"after the first); PyTorch baseline: {variant}, "
          f"{args.torch_threads} threads, {torch_note}; "
          f"{os.cpu_count()} CPUs, 1-min load "
          f"average {load_before:.1f} before and {os.getloadavg()[0]:.1f} "
          "after (other processes inflate wall-clock times)")
    print(f"{'size':9s} {'mode':14s} {'runs':>4s} {'median s':>9s} "
          f"{'cpu s':>7s} {'first s':>8s} {'1st MB':>7s} {'work MB':>8s} "
          f"{'TF peak':>8s} {'torch s':>8s} {'t cpu s':>8s} {'torch MB':>9s} "
          f"{'speedup':>8s} {'mem ratio':>9s}")
    for row in rows:
        base = baselines.get(row["size"])
        if base is None:
            extra = f"{'-':>8s} {'-':>8s} {'-':>9s} {'-':>8s} {'-':>9s}"
        else:
            extra = (f"{base['median_s']:8.2f} "
                     f"{base.get('median_cpu_s', float('nan')):8.2f} "
                     f"{base['working_mb']:9.0f} "
                     f"{base['median_s'] / row['median_s']:7.2f}x "
                     f"{row['working_mb'] / base['working_mb']:8.2f}x")
        mode = row["mode"] + (f" x{row['tiles']}" if row.get("tiles", 1) > 1
                              else "")
        print(f"{row['size']:9s} {mode:14s} {row['runs']:4d} "
              f"{row['median_s']:9.3f} {row['median_cpu_s']:7.2f} "
              f"{row['first_s']:8.1f} {row['first_working_mb']:7.0f} "
              f"{row['working_mb']:8.0f} {row['tf_peak_mb']:8.0f} {extra}")
    series = {}
    for row in rows:
        height, width = (int(n) for n in row["size"].split("x"))
        series.setdefault(row["mode"], []).append(
            (height * width, row["working_mb"]))
        series.setdefault(row["mode"] + " (TF peak)", []).append(
            (height * width, row["tf_peak_mb"]))
    for size, base in baselines.items():
        if base is not None:
            height, width = (int(n) for n in size.split("x"))
            series.setdefault("pytorch", []).append(
                (height * width, base["working_mb"]))
    for mode, points in series.items():
        if len(points) >= 2:
            slope, exponent = fit_slope(points)
            points = sorted(points)
            # Between consecutive sizes: constant for linear growth (the
            # log-log exponent is below 1 while the fixed part weighs in).
            steps = ", ".join(
                f"{(m1 - m0) / ((p1 - p0) / 1e6):.0f}" for (p0, m0), (p1, m1)
                in zip(points[:-1], points[1:]))
            print(f"working memory vs H x W, {mode}: {slope:.0f} MB per "
                  f"megapixel (least squares; between consecutive sizes "
                  f"{steps}), log-log exponent {exponent:.2f} "
                  f"({len(points)} sizes)")


if __name__ == "__main__":
    main()
