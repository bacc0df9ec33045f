"""Throughput of the tf.data training pipeline (keras_mvs.data.pipeline).

    python bench/pipeline_bench.py [--scenes 3] [--scene-views 10]
        [--examples 60] [--cache-dir DIR]

Renders a few synthetic scenes at 640x512 once (cached in `--cache-dir`),
then measures examples per second of `make_dataset` with 5 views, batch 1,
no crop, for each branch set (regular; + SCC views; + ICC augmentation;
all three) and two scene sources:

* "folders": `scene_dicts_from_folders` re-reads and decodes every scene on
  every pass (PNG images, PFM depths, PNG masks), as the trainer does;
* "cached": the same scene dicts kept in memory (`Dataset.cache()`), which
  isolates the cost of tuple assembly, conversion and augmentation.

Wall-clock rates suffer from other load on the machine (the load average
is printed); the CPU seconds per example (all tf.data threads of this
process) do much less. Each case first draws `--warmup` examples (default:
one pass over all references, which also fills the in-memory cache) and
then times the next `--examples`. The figures depend on the
cores tf.data may use; this machine has 2.
"""

import argparse
import os
import pathlib
import time

import tensorflow as tf

from keras_mvs.data import pipeline
from keras_mvs.data import synthetic

_HEIGHT, _WIDTH, _NUM_VIEWS = 512, 640, 5
_BRANCH_SETS = (
    ("regular",),
    ("regular", "scc"),
    ("regular", "icc"),
    ("regular", "icc", "scc"),
)


def render_scenes(cache_dir: pathlib.Path, num_scenes: int,
                  num_views: int) -> list[pathlib.Path]:
    """Renders (once) `num_scenes` 640x512 synthetic scenes."""
    dirs = []
    for index in range(num_scenes):
        scene_dir = cache_dir / f"scene_{index:03d}_v{num_views}"
        if not (scene_dir / "pair.txt").is_file():
            config = synthetic.SceneConfig(
                height=_HEIGHT, width=_WIDTH, num_views=num_views,
                seed=1000 + index)
            synthetic.write_scene(synthetic.render_scene(config), scene_dir)
        dirs.append(scene_dir)
    return dirs


def examples_per_second(scenes: tf.data.Dataset, branches: tuple[str, ...],
                        warmup: int, examples: int) -> tuple[float, float]:
    """Times `examples` batches of 1 after `warmup` batches.

    Returns:
        `(examples per wall-clock second, process CPU seconds per example)`;
        the second is less sensitive to other load on the machine.
    """
    dataset = pipeline.make_dataset(
        scenes, num_views=_NUM_VIEWS, batch_size=1, seed=0,
        branches=branches)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(examples):
        next(iterator)
    wall = time.perf_counter() - start
    return examples / wall, (time.process_time() - start_cpu) / examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--scene-views", type=int, default=10,
                        help="views rendered per scene")
    parser.add_argument("--examples", type=int, default=60,
                        help="timed examples per case")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed examples first (default: one pass)")
    parser.add_argument(
        "--cache-dir", type=pathlib.Path,
        default=pathlib.Path.home() / ".cache" / "keras_mvs" /
        "pipeline_bench")
    args = parser.parse_args()
    start = time.perf_counter()
    dirs = render_scenes(args.cache_dir, args.scenes, args.scene_views)
    print(f"{len(dirs)} scenes of {args.scene_views} views at "
          f"{_WIDTH}x{_HEIGHT} ready in {time.perf_counter() - start:.1f} s; "
          f"{os.cpu_count()} CPU cores; V = {_NUM_VIEWS}, batch 1")
    warmup = (args.scenes * args.scene_views if args.warmup is None
              else args.warmup)
    folders = pipeline.scene_dicts_from_folders(dirs)
    sources = {"folders": folders, "cached": folders.cache()}
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'branches':<20} {'folders ex/s':>13} {'CPU s/ex':>9} "
          f"{'cached ex/s':>12} {'CPU s/ex':>9}")
    for branches in _BRANCH_SETS:
        (folder_rate, folder_cpu), (cached_rate, cached_cpu) = [
            examples_per_second(source, branches, warmup, args.examples)
            for source in sources.values()]
        print(f"{'+'.join(branches):<20} {folder_rate:>13.1f} "
              f"{folder_cpu:>9.3f} {cached_rate:>12.1f} {cached_cpu:>9.3f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
