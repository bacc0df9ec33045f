"""Depth evaluation of a network on held-out scenes with ground truth.

`evaluate_heldout` scores the network a run trained, at the end of the run
(the synthetic benchmark's held-out split); `evaluate_model` scores a saved
model on the scenes of a data spec (`python -m experiments.evaluate
depth`). Both render the synthetic benchmark first if it is not cached
(`prepare_synthetic`), and show a status line while they score; the
metrics themselves are `keras_mvs.evaluation.evaluate_depth`.
"""

import os
import pathlib
import time
from typing import Dict
from typing import Sequence
from typing import Tuple

import keras
import ml_collections

from keras_mvs import console
from keras_mvs import evaluation
from keras_mvs import inference
from keras_mvs.data import specs
from keras_mvs.data import synthetic


def prepare_synthetic(splits: Sequence[str], *, height: int, width: int,
                      synthetic_views: int) -> None:
    """Renders the synthetic benchmark splits that are not cached yet,
    one status line counting the scenes of all of them."""
    missing = specs.missing_synthetic_splits(
        splits, height=height, width=width, synthetic_views=synthetic_views)
    if not missing:
        return
    total = sum(len(synthetic.benchmark_seeds(split)) for split, _ in missing)
    folder = str(missing[0][1].parent)
    home = str(pathlib.Path.home())
    if folder.startswith(home + os.sep):
        folder = "~" + folder[len(home):]
    console.stage(f"rendering the synthetic benchmark once, into {folder} "
                  f"({height}x{width}, {synthetic_views} views a scene)")
    status = console.StatusLine(every=5)
    done = [0]
    start = time.monotonic()

    def on_scene(index, count):
        done[0] += 1
        status.update(f"rendering the synthetic benchmark {done[0]}/{total}",
                      force=done[0] == 1)

    for split, _ in missing:
        specs.scene_dirs("", split, height=height, width=width,
                         synthetic_views=synthetic_views, on_scene=on_scene)
    status.close(f"rendered the synthetic benchmark: {total} scenes in "
                 f"{console.format_duration(time.monotonic() - start)}")


def evaluate_heldout(config: ml_collections.ConfigDict,
                     network: keras.Model) -> Dict[str, float]:
    """Depth metrics on the held-out split (synthetic benchmark by default)."""
    if config.data.spec:
        return {}
    dirs = specs.scene_dirs(
        "", config.eval.split, height=config.data.height,
        width=config.data.width, synthetic_views=config.data.synthetic_views)
    status = console.StatusLine(every=10)
    total = evaluation.count_reference_views(
        dirs, config.eval.max_views_per_scene)
    label = (f"evaluating depth on the held-out synthetic scenes "
             f"({config.eval.split} split, {len(dirs)} scenes, "
             f"{config.eval.num_views} views)")

    ticker = console.ticking(f"{label}: building the graph")
    ticker.__enter__()

    def on_view(count):
        if count == 1:
            ticker.__exit__(None, None, None)
        status.update(f"{label}: view {count}/{total}", force=count == 1)

    try:
        metrics = evaluation.evaluate_depth(
            network, dirs, num_views=config.eval.num_views,
            height=config.data.height, width=config.data.width,
            max_views_per_scene=config.eval.max_views_per_scene,
            on_view=on_view)
    finally:
        ticker.__exit__(None, None, None)
    status.close(f"{label}: {metrics['num_views_evaluated']} views scored")
    return metrics


def evaluate_model(model: str, spec: str, *, num_views: int, height: int,
                   width: int, max_views_per_scene: int = 0,
                   ) -> Tuple[Dict[str, float], str]:
    """Depth metrics of the model at `model` on the scenes of `spec`.

    Args:
        model: a training work directory, `.keras` file, SavedModel folder
            or preset name (`keras_mvs.inference.load_model`).
        spec: '' (the synthetic benchmark's held-out test split) or a
            folder (`keras_mvs.data.specs`).
        num_views: views per tuple, reference included.
        height, width: evaluation resolution.
        max_views_per_scene: score only the first N references of each
            scene (0: all).

    Returns:
        `(metrics, a description of the data scored)`.

    Raises:
        FileNotFoundError, ValueError: a missing or unreadable model or
            scene, naming it.
    """
    synthetic_views = synthetic.BENCHMARK_NUM_VIEWS
    if not spec:
        prepare_synthetic(["test"], height=height, width=width,
                          synthetic_views=synthetic_views)
    dirs = specs.scene_dirs(spec, "test", height=height, width=width,
                            synthetic_views=synthetic_views)
    data = (f"the held-out synthetic benchmark scenes (test split, "
            f"{len(dirs)} scenes, {dirs[0].parent})" if not spec else
            f"{spec} ({len(dirs)} scene{'s' * (len(dirs) > 1)})")
    data += f" at {height}x{width}, {num_views} views"
    console.stage(f"loading the model {model}")
    predictor = inference.load_model(model)
    total = evaluation.count_reference_views(dirs, max_views_per_scene)
    status = console.StatusLine(every=10)
    status.update(f"scoring {total} views: building the graph", force=True)

    def on_view(count):
        status.update(f"scoring {total} views: view {count}/{total}",
                      force=count == 1)

    metrics = evaluation.evaluate_depth(
        predictor, dirs, num_views=num_views, height=height, width=width,
        max_views_per_scene=max_views_per_scene, on_view=on_view)
    status.close(f"scored {metrics['num_views_evaluated']} views")
    return metrics, data
