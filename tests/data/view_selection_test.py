import math

import numpy as np

from keras_mvs.data import view_selection


def test_view_selection_scores_hand_worked():
    # One point at the origin, cameras 100 mm away at 0, 5, 15 and 3
    # degrees about the y axis: G(5) = 1, G(15) = exp(-100/200), G(3) =
    # exp(-4/2); view 3 does not see the point.
    angles = np.radians([0.0, 5.0, 15.0, 3.0])
    centres = 100.0 * np.stack(
        [np.sin(angles), np.zeros(4), np.cos(angles)], -1)
    visible = np.array([[True, True, True, False]])
    scores = view_selection.scores_from_visibility(np.zeros((1, 3)), visible,
                                                   centres)
    np.testing.assert_allclose(scores[0], [0.0, 1.0, math.exp(-0.5), 0.0],
                               atol=1e-12)
    # Angle between views 1 and 2 is 10 degrees.
    np.testing.assert_allclose(scores[1, 2], math.exp(-25.0 / 200.0),
                               rtol=1e-12)
    np.testing.assert_array_equal(scores, scores.T)
    # The sparse-track form gives the same table.
    np.testing.assert_array_equal(
        view_selection.view_selection_scores(
            np.zeros((1, 3)), np.zeros(3, int), np.arange(3), centres),
        scores)


SCORES = np.array([
    [0.0, 2.0, 0.0, 5.0],
    [2.0, 0.0, 2.0, 0.0],
    [0.0, 2.0, 0.0, 0.0],
    [5.0, 0.0, 0.0, 0.0],
])


def test_select_pairs_orders_by_score_then_lower_id():
    pairs = view_selection.select_pairs(SCORES, 2, positive_only=False)
    assert pairs == [
        (0, [(3, 5.0), (1, 2.0)]),
        # Views 0 and 2 tie at 2.0: the lower id comes first.
        (1, [(0, 2.0), (2, 2.0)]),
        # One positive score, then the zero-score views by id.
        (2, [(1, 2.0), (0, 0.0)]),
        (3, [(0, 5.0), (1, 0.0)]),
    ]


def test_select_pairs_positive_only_drops_views_sharing_nothing():
    pairs = view_selection.select_pairs(SCORES, positive_only=True)
    assert pairs == [
        (0, [(3, 5.0), (1, 2.0)]),
        (1, [(0, 2.0), (2, 2.0)]),
        (2, [(1, 2.0)]),
        (3, [(0, 5.0)]),
    ]
    # Without positive_only every other view is listed (NUM_SOURCES > 3).
    assert [len(sources) for _, sources in view_selection.select_pairs(
        SCORES, positive_only=False)] == [3, 3, 3, 3]
