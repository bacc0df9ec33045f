"""Whole-scene reconstruction: per-view inference, filtering and fusion.

The library behind `python -m experiments.reconstruct` (DESIGN.md 8 and 11),
one module per job:

    planning.py   network input sizes, the measured memory model and tiles
    views.py      per-view inference and its files
    layout.py     the output folder (depth/, confidence/, previews/, cams/,
                  images/, fused.ply, summary.json) and its re-reading
    driver.py     the run: inference, fusion, statistics, summary.json
    evaluate.py   the cloud against ground-truth points and object masks
    render.py     rendered views of a cloud
    scenes.py     opening --scene (MVSNet or COLMAP) or --images (SfM)
    cli.py        argument types shared by the entry points
    command.py    the reconstruct command behind its entry point

Example:
    >>> predictor = inference.load_model("runs/unimvs")
    >>> summary = reconstruct(MVSScene("scan24"), predictor, "out/scan24",
    ...                       max_height=864, max_width=1152)
    >>> summary["totals"]["num_points"]
"""

from keras_mvs.reconstruct.driver import FILTER_ALIASES
from keras_mvs.reconstruct.driver import check_filter
from keras_mvs.reconstruct.driver import diagnose
from keras_mvs.reconstruct.driver import filter_from_flags
from keras_mvs.reconstruct.driver import fit_filter_to_pairs
from keras_mvs.reconstruct.driver import reconstruct
from keras_mvs.reconstruct.driver import view_statistics
from keras_mvs.reconstruct.errors import InsufficientMemoryError
from keras_mvs.reconstruct.errors import ReconstructionError
from keras_mvs.reconstruct.evaluate import evaluate_against
from keras_mvs.reconstruct.evaluate import mask_agreement
from keras_mvs.reconstruct.evaluate import read_ground_truth_points
from keras_mvs.reconstruct.layout import RESULT_NAMES
from keras_mvs.reconstruct.layout import OutputViews
from keras_mvs.reconstruct.layout import output_paths
from keras_mvs.reconstruct.planning import DEFAULT_INTERVAL_SCALE
from keras_mvs.reconstruct.planning import DEFAULT_MAX_HEIGHT
from keras_mvs.reconstruct.planning import DEFAULT_MAX_WIDTH
from keras_mvs.reconstruct.planning import DEFAULT_NUM_DEPTHS_BASE
from keras_mvs.reconstruct.planning import DEFAULT_NUM_VIEWS
from keras_mvs.reconstruct.planning import SIZE_MULTIPLE
from keras_mvs.reconstruct.planning import STAGE_SCALES
from keras_mvs.reconstruct.planning import TILE_MARGIN
from keras_mvs.reconstruct.planning import NetworkShape
from keras_mvs.reconstruct.planning import Tile
from keras_mvs.reconstruct.planning import available_memory_bytes
from keras_mvs.reconstruct.planning import check_memory
from keras_mvs.reconstruct.planning import estimate_cost_volume_bytes
from keras_mvs.reconstruct.planning import estimate_working_bytes
from keras_mvs.reconstruct.planning import network_shape
from keras_mvs.reconstruct.planning import plan_sizes
from keras_mvs.reconstruct.planning import plan_tiles
from keras_mvs.reconstruct.planning import with_num_depths
from keras_mvs.reconstruct.render import render_views_direction
from keras_mvs.reconstruct.render import write_render
from keras_mvs.reconstruct.views import ViewLoader
from keras_mvs.reconstruct.views import infer_view
