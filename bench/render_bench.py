"""Speed of the synthetic scene renderer (keras_mvs.data.synthetic).

    python bench/render_bench.py [--repeats 3]

Renders whole scenes with `render_scene` (ray casting, shading, shadows,
surface samples, visibility and pair scores) on one process and prints the
wall time per scene and per view, best of the repeats, at 160x128 (20 views,
the benchmark setting; target under 10 s per scene) and 640x512 (5 views).
The figure per view is the scene time divided by the view count, so it
includes the view's share of the scene-level work.
"""

import argparse
import time

from keras_mvs.data import synthetic

_CASES = ((128, 160, 20), (512, 640, 5))


def time_scene(height: int, width: int, num_views: int,
               repeats: int) -> float:
    """Best wall time (s) of `repeats` renders of one scene."""
    config = synthetic.SceneConfig(height=height, width=width,
                                   num_views=num_views, seed=1000)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        synthetic.render_scene(config)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3,
                        help="renders per case; the best time is kept")
    args = parser.parse_args()
    print(f"{'size':>9} {'views':>5} {'scene s':>8} {'per view s':>10}")
    for height, width, num_views in _CASES:
        seconds = time_scene(height, width, num_views, args.repeats)
        print(f"{width:>4}x{height:<4} {num_views:>5} {seconds:>8.2f} "
              f"{seconds / num_views:>10.3f}")


if __name__ == "__main__":
    main()
