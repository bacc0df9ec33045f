"""Tests for keras_mvs.data.view_tuples (regular and SCC view tuples)."""

import numpy as np
import tensorflow as tf

from keras_mvs.data import view_tuples


def test_reference_tuples_take_top_sources_and_pad():
    pairs = tf.constant([
        [1, 2, 3, 4, -1],    # enough candidates
        [0, -1, -1, -1, -1],  # one candidate: padded with it
        [-1, -1, -1, -1, -1],  # no candidate: not a reference
        [3, 7, 0, 0, 1],     # self, out of range and a repeat are dropped
        [-1, 2, -1, 0, -1],  # padding in the middle
    ], tf.int32)
    refs, views = view_tuples.reference_tuples(pairs, num_views=4)
    np.testing.assert_array_equal(refs, [0, 1, 3, 4])
    np.testing.assert_array_equal(
        views, [[0, 1, 2, 3], [1, 0, 0, 0], [3, 0, 1, 0], [4, 2, 0, 2]])
    candidates, counts = view_tuples.candidate_lists(pairs)
    np.testing.assert_array_equal(counts, [4, 1, 0, 2, 2])
    np.testing.assert_array_equal(candidates[3], [0, 1, -1, -1, -1])


def test_random_source_views_draw_from_candidates_without_repeats():
    candidates = tf.constant([4, 9, 2, 7, 5, 1, -1, -1], tf.int32)
    draw_views = tf.function(lambda seed: view_tuples.random_source_views(
        tf.constant(3), candidates, tf.constant(6), 5, seed))
    seen = np.zeros(10)
    for draw in range(300):
        views = draw_views(tf.constant([draw, 11], tf.int64)).numpy()
        assert views[0] == 3
        assert set(views[1:]) <= {4, 9, 2, 7, 5, 1}
        assert len(set(views[1:])) == 4
        seen[views[1:]] += 1
    # Each of the 6 candidates is drawn 4/6 of the time.
    np.testing.assert_allclose(seen[[4, 9, 2, 7, 5, 1]] / 300, 4 / 6,
                               atol=0.1)
    # Fewer candidates than sources: all used, the first drawn repeats.
    views = view_tuples.random_source_views(
        tf.constant(0), tf.constant([6, 8, -1], tf.int32), tf.constant(2), 5,
        tf.constant([1, 2], tf.int64)).numpy()
    assert views[0] == 0 and set(views[1:3]) == {6, 8}
    np.testing.assert_array_equal(views[3:], [views[1]] * 2)
    again = view_tuples.random_source_views(
        tf.constant(3), candidates, tf.constant(6), 5,
        tf.constant([7, 11], tf.int64))
    np.testing.assert_array_equal(
        again, view_tuples.random_source_views(
            tf.constant(3), candidates, tf.constant(6), 5,
            tf.constant([7, 11], tf.int64)))
