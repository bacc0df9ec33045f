"""Speed of the synthetic scene renderer (keras_mvs.data.synthetic).

    python bench/render_bench.py [--repeats 3]

Renders whole scenes with `render_scene` (ray casting, shading, shadows,
surface samples, visibility and pair scores) in one process and prints the
wall and CPU time per scene and per view, best of the repeats, at 160x128
(20 views, the benchmark setting; target under 10 s per scene) and 640x512
(5 views). The figure per view is the scene time divided by the view count,
so it includes the view's share of the scene-level work. CPU time is the
process's, which stays meaningful when other jobs share the cores.
"""

import argparse
import time

from keras_mvs.data import synthetic

_CASES = ((128, 160, 20), (512, 640, 5))


def time_scene(height: int, width: int, num_views: int,
               repeats: int) -> tuple[float, float]:
    """Best wall and CPU times (s) of `repeats` renders of one scene."""
    config = synthetic.SceneConfig(height=height, width=width,
                                   num_views=num_views, seed=1000)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        synthetic.render_scene(config)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="renders per case; the best time is kept")
    args = parser.parse_args()
    print(f"{'size':>9} {'views':>5} {'scene wall s':>12} "
          f"{'view wall s':>11} {'view cpu s':>10}")
    for height, width, num_views in _CASES:
        wall, cpu = time_scene(height, width, num_views, args.repeats)
        print(f"{width:>4}x{height:<4} {num_views:>5} {wall:>12.2f} "
              f"{wall / num_views:>11.3f} {cpu / num_views:>10.3f}")


if __name__ == "__main__":
    main()
