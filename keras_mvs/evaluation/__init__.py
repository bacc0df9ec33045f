"""Evaluation: depth-map metrics and point-cloud metrics (DTU, F-score).

Depth-map metrics (`depth`) compare a predicted depth map with ground truth
pixel by pixel, and score a network over the reference views of scenes
(`evaluate_depth`). Point-cloud metrics (`points`) follow ALGORITHMS.md 7:
accuracy / completeness / overall (the DTU protocol, 7.1, when the official
STL and observation-mask files are given, or the same distances against any
ground-truth cloud) and precision / recall / F-score at a distance
threshold (7.2). `report` words the metrics for a person to read.

Units: every distance, threshold and spacing is in the units of the points
and depth maps, i.e. of the camera files (mm for DTU, whose protocol
constants 0.2 mm and 20 mm are the defaults of `dtu_evaluate`).

Example:
    >>> gt = load_dtu_ground_truth("/data/SampleSet/MVS Data", 24)
    >>> scores = dtu_evaluate(points, **dataclasses.asdict(gt))
    >>> scores["overall"]
"""

from keras_mvs.evaluation.depth import aggregate_depth_metrics
from keras_mvs.evaluation.depth import cascade_reachable_depth
from keras_mvs.evaluation.depth import count_reference_views
from keras_mvs.evaluation.depth import depth_metrics
from keras_mvs.evaluation.depth import evaluate_depth
from keras_mvs.evaluation.points import DTUGroundTruth
from keras_mvs.evaluation.points import accuracy_completeness
from keras_mvs.evaluation.points import dtu_evaluate
from keras_mvs.evaluation.points import evaluate_point_cloud_files
from keras_mvs.evaluation.points import load_dtu_ground_truth
from keras_mvs.evaluation.points import precision_recall_fscore
from keras_mvs.evaluation.points import reduce_points
from keras_mvs.evaluation.report import METRICS
from keras_mvs.evaluation.report import describe_depth_metrics
from keras_mvs.evaluation.report import describe_metrics
