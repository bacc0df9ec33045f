"""Tests for keras_mvs.evaluation: depth metrics, cloud metrics, DTU."""

import dataclasses

import numpy as np
import pytest
import scipy.io
from scipy.spatial import cKDTree

from keras_mvs import evaluation
from keras_mvs import files


def test_depth_metrics_hand_values():
    gt = np.array([[100.0, 100.0, 100.0], [100.0, 0.0, 100.0]])
    pred = np.array([[100.5, 102.0, 97.0], [110.0, 50.0, np.nan]])
    mask = np.array([[True, True, True], [True, True, False]])
    metrics = evaluation.depth_metrics(pred, gt, mask, interval=1.0,
                                       abs_thresholds=(2.0,))
    # Valid: the four pixels of errors 0.5, 2, 3, 10 (gt 0, masked, NaN out).
    assert metrics["num_pixels"] == 4
    assert metrics["mean_abs_error"] == pytest.approx(15.5 / 4)
    assert metrics["within_1_intervals"] == pytest.approx(0.25)
    assert metrics["within_2_intervals"] == pytest.approx(0.5)  # inclusive
    assert metrics["within_4_intervals"] == pytest.approx(0.75)
    assert metrics["within_abs_2"] == pytest.approx(0.5)
    half = evaluation.depth_metrics(pred, gt, None, interval=2.5,
                                    interval_thresholds=(0.5,))
    # Without a mask the NaN prediction still drops out; 0.5 <= 1.25.
    assert half["num_pixels"] == 4
    assert half["within_0.5_intervals"] == pytest.approx(0.25)

    empty = evaluation.depth_metrics(pred, gt, np.zeros_like(mask), 1.0)
    assert empty["num_pixels"] == 0 and np.isnan(empty["mean_abs_error"])
    with pytest.raises(ValueError, match="same shape"):
        evaluation.depth_metrics(pred[:1], gt, None, 1.0)


def test_aggregate_depth_metrics_is_pixel_weighted():
    a = {"num_pixels": 1, "mean_abs_error": 4.0, "within_1_intervals": 0.0}
    b = {"num_pixels": 3, "mean_abs_error": 0.0, "within_1_intervals": 1.0}
    empty = {"num_pixels": 0, "mean_abs_error": float("nan"),
             "within_1_intervals": float("nan")}
    total = evaluation.aggregate_depth_metrics([a, b, empty])
    assert total == {"num_pixels": 4, "mean_abs_error": 1.0,
                     "within_1_intervals": 0.75}
    with pytest.raises(ValueError, match="View 1"):
        evaluation.aggregate_depth_metrics([a, {"num_pixels": 1}])


def test_reduce_points_spacing_property():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 5, (3000, 3))
    spacing = 0.4
    kept, indices = evaluation.reduce_points(points, spacing, seed=3,
                                             return_indices=True)
    np.testing.assert_array_equal(kept, points[indices])
    assert 0 < kept.shape[0] < points.shape[0]
    # No two kept points within the spacing.
    pairs = cKDTree(kept).query_pairs(spacing)
    assert not pairs
    # Every removed point is within the spacing of a kept point.
    removed = np.setdiff1d(np.arange(points.shape[0]), indices)
    distances, _ = cKDTree(kept).query(points[removed])
    assert distances.max() <= spacing
    # Exact duplicates collapse; other seeds give other, equally valid sets.
    doubled = evaluation.reduce_points(np.concatenate([points, points]),
                                       1e-9)
    assert doubled.shape == points.shape
    other = evaluation.reduce_points(points, spacing, seed=4)
    assert not np.array_equal(np.sort(other, 0), np.sort(kept, 0))


def test_accuracy_completeness_of_a_shifted_copy():
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0),
                                indexing="ij"), -1).reshape(-1, 2) * 10
    gt = np.concatenate([grid, np.zeros((100, 1))], 1)
    pred = gt + [0.0, 0.0, 1.5]
    far = np.array([[45.0, 45.0, 30.0]])  # 30 from every gt point
    result = evaluation.accuracy_completeness(np.concatenate([pred, far]),
                                              gt, max_distance=20.0)
    assert result["accuracy"] == pytest.approx(1.5)
    assert result["accuracy_median"] == pytest.approx(1.5)
    assert result["accuracy_fraction_cut"] == pytest.approx(1 / 101)
    assert result["completeness"] == pytest.approx(1.5)
    assert result["completeness_fraction_cut"] == 0.0
    assert result["overall"] == pytest.approx(1.5)
    uncut = evaluation.accuracy_completeness(np.concatenate([pred, far]),
                                             gt, max_distance=None)
    # The far point's nearest gt is (40, 40, 0) etc.: sqrt(25+25+900).
    assert uncut["accuracy"] == pytest.approx(
        (100 * 1.5 + np.sqrt(950.0)) / 101)


def test_precision_recall_fscore_hand_values():
    gt = np.array([[0.0, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0]])
    # Two predictions 0.5 away from gt points, one 3 away from all.
    pred = np.array([[0.5, 0, 0], [10, 0.5, 0], [20, 0, 3]])
    result = evaluation.precision_recall_fscore(pred, gt, threshold=1.0)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 4)
    assert result["fscore"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # Strictly less than tau.
    assert evaluation.precision_recall_fscore(
        pred, gt, threshold=0.5)["precision"] == 0.0
    assert evaluation.precision_recall_fscore(
        pred, gt, threshold=0.5)["fscore"] == 0.0


def _fake_dtu():
    """A tiny DTU-like scan with hand-computed scores (see the test)."""
    coords = np.array([1.0, 6, 11, 16, 21, 26])
    grid = np.stack(np.meshgrid(coords, coords, indexing="ij"),
                    -1).reshape(-1, 2)
    surface = np.concatenate([grid, np.full((36, 1), 10.0)], 1)
    stl = np.concatenate([
        surface,
        [[1, 1, 0], [6, 1, 0]],   # below the plane z = 5: not for comp
        [[16, 16, 14]],           # 3 from the nearest prediction
        [[200, 200, 10]],         # far from everything: cut
    ])
    pred = np.concatenate([
        surface + [0, 0, 1],      # 1 above the surface
        [[1, 1, 11]],             # exact duplicate: thinned away
        [[26, 26, 13]],           # voxel (3, 3, 1), masked out
        [[1, 1, 25]],             # z / 10 = 2.5: MATLAB rounds to voxel 3
        [[1, 1, 45]],             # voxel z 5: outside the grid
        [[11, 11, 34]],           # in the mask, 24 from the stl: cut
        [[6, 21, 14]],            # in the mask, 4 from the stl
    ])
    obs_mask = np.ones((4, 4, 4), bool)
    obs_mask[3, 3, 1] = False
    obs_mask[0, 0, 3] = False
    bb = np.array([[0.0, 0, 0], [30, 30, 30]])
    plane = np.array([0.0, 0, 1, -5])
    return pred, stl, obs_mask, bb, 10.0, plane


def _check_fake_scores(result):
    # Accuracy: 35 surface points at 1 (the one in voxel (3, 3, 1) is
    # masked) and the point at 4 are kept; the one at 24 is cut.
    assert result["num_points"] == 42 and result["num_reduced"] == 41
    assert result["num_in_mask"] == 37
    assert result["accuracy"] == pytest.approx(39 / 36)
    assert result["accuracy_fraction_cut"] == pytest.approx(1 / 37)
    # Completeness: 38 stl points above the plane; 36 at 1, one at 3, one
    # cut.
    assert result["num_stl_above_plane"] == 38
    assert result["completeness"] == pytest.approx(39 / 37)
    assert result["completeness_fraction_cut"] == pytest.approx(1 / 38)
    assert result["overall"] == pytest.approx((39 / 36 + 39 / 37) / 2)


def test_dtu_evaluate_on_a_fake_scan():
    pred, stl, obs_mask, bb, res, plane = _fake_dtu()
    result = evaluation.dtu_evaluate(pred, stl, obs_mask, bb, res, plane)
    _check_fake_scores(result)


def test_load_dtu_ground_truth_and_evaluate(tmp_path):
    pred, stl, obs_mask, bb, res, plane = _fake_dtu()
    (tmp_path / "Points" / "stl").mkdir(parents=True)
    (tmp_path / "ObsMask").mkdir()
    with pytest.raises(FileNotFoundError, match="stl024_total.ply"):
        evaluation.load_dtu_ground_truth(str(tmp_path), 24)
    files.write_ply(str(tmp_path / "Points" / "stl" / "stl024_total.ply"),
                     stl)
    scipy.io.savemat(str(tmp_path / "ObsMask" / "ObsMask24_10.mat"),
                     {"ObsMask": obs_mask, "BB": bb, "Res": np.array([[res]])})
    with pytest.raises(FileNotFoundError, match="Plane24.mat"):
        evaluation.load_dtu_ground_truth(str(tmp_path), 24)
    scipy.io.savemat(str(tmp_path / "ObsMask" / "Plane24.mat"),
                     {"P": plane.reshape(4, 1)})

    gt = evaluation.load_dtu_ground_truth(str(tmp_path), 24)
    assert gt.obs_mask.dtype == bool and gt.obs_mask.shape == (4, 4, 4)
    assert gt.res == 10.0 and gt.bb.shape == (2, 3)
    np.testing.assert_array_equal(gt.plane, plane)
    np.testing.assert_array_equal(gt.stl_points, stl.astype(np.float32))
    _check_fake_scores(
        evaluation.dtu_evaluate(pred, **dataclasses.asdict(gt)))

    scipy.io.savemat(str(tmp_path / "ObsMask" / "Plane24.mat"),
                     {"Q": plane})
    with pytest.raises(ValueError, match="Plane24.mat: no variable 'P'"):
        evaluation.load_dtu_ground_truth(str(tmp_path), 24)


# --- cascade_reachable_depth ---

@pytest.mark.parametrize("head, right_edge", [
    ("unity", 800.0 + 12.5 + 3.125 * 8 / 7),  # top hypothesis + interval
    ("regression", 800.0 + 12.5),               # top hypothesis
])
def test_cascade_reachable_depth_step_edge(head, right_edge):
    # Depth 500 left of column 32, 900 right of it; range [400, 1000], so
    # base = 3.125. The ideal stages are exact at 8x16 and 16x32, but the
    # bilinear upsampling to 32x64 centres stage 3 at 600 (column 31) and
    # 800 (column 32), whose +-12.5 spans cannot reach 500 and 900.
    gt = np.where(np.arange(64)[np.newaxis] < 32, 500.0, 900.0) * np.ones(
        (32, 1))
    depth = evaluation.cascade_reachable_depth(gt, (400.0, 1000.0),
                                               head=head)
    expected = gt.copy()
    expected[:, 31] = 600.0 - 12.5
    expected[:, 32] = right_edge
    np.testing.assert_allclose(depth, expected, atol=1e-3)
    metrics = evaluation.depth_metrics(depth, gt, None, interval=3.125)
    assert metrics["within_4_intervals"] == pytest.approx(62 / 64)


def test_cascade_reachable_depth_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible by 4"):
        evaluation.cascade_reachable_depth(np.ones((30, 64)), (0.5, 2.0))
    with pytest.raises(ValueError, match="head"):
        evaluation.cascade_reachable_depth(np.ones((32, 64)), (0.5, 2.0),
                                           head="softmax")
