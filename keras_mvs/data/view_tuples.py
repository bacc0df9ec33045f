"""View tuples: which views each reference view is matched with.

A scene's `pairs` table (`[N, M]` int32, row i listing view i's candidate
source views best first as indices along the N axis, -1 padded; built from
pair.txt) gives the tuples of the input pipeline (ALGORITHMS.md 1.2 and
4.1). Every view with at least one valid candidate is a reference. The
regular tuple is the reference followed by the first V - 1 candidates, padded
by repeating the first source when fewer (UniMVSNet `general_eval`). The
scene-level (SCC) tuple is the same reference followed by V - 1 candidates
drawn without replacement from the whole candidate list (padded the same
way when the list has fewer than V - 1 entries).

How pair.txt itself is scored and written is `keras_mvs.data.view_selection`.
"""

import tensorflow as tf

# The reference loaders keep the first 10 pair.txt candidates.
MAX_CANDIDATES = 10


def candidate_lists(pairs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Compacts each pairs row to its valid candidates, in order.

    A candidate is valid when it is in [0, N), differs from its row's view
    and does not repeat an earlier entry of the row.

    Args:
        pairs: `[N, M]` int32 candidate indices, -1 padded.

    Returns:
        `(candidates [N, M] int32, counts [N] int32)`: row i holds view i's
        valid candidates first (order kept), then -1.
    """
    pairs = tf.convert_to_tensor(pairs, tf.int32)
    count, width = tf.shape(pairs)[0], tf.shape(pairs)[1]
    own = tf.range(count)[:, tf.newaxis]
    same = tf.equal(pairs[:, :, tf.newaxis], pairs[:, tf.newaxis, :])
    earlier = tf.linalg.band_part(tf.ones([width, width], tf.bool), -1, 0)
    earlier = tf.logical_and(earlier, tf.logical_not(tf.eye(width,
                                                            dtype=tf.bool)))
    repeated = tf.reduce_any(tf.logical_and(same, earlier), axis=-1)
    valid = ((pairs >= 0) & (pairs < count) & (pairs != own)
             & tf.logical_not(repeated))
    # Stable sort on "invalid" moves valid entries to the front in order.
    order = tf.argsort(tf.cast(tf.logical_not(valid), tf.int32), axis=-1,
                       stable=True)
    candidates = tf.where(tf.gather(valid, order, batch_dims=1),
                          tf.gather(pairs, order, batch_dims=1), -1)
    return candidates, tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1)


def _pad_sources(sources: tf.Tensor, counts: tf.Tensor,
                 num_sources: int) -> tf.Tensor:
    """Replaces entries at positions >= count by the first source."""
    positions = tf.range(num_sources)
    return tf.where(positions < counts[..., tf.newaxis], sources,
                    sources[..., :1])


def reference_tuples(pairs: tf.Tensor,
                     num_views: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Regular view tuples: every view with a candidate, with its top sources.

    Args:
        pairs: `[N, M]` int32 candidate indices, -1 padded.
        num_views: V >= 2, reference included.

    Returns:
        `(refs [R] int32, views [R, V] int32)`: view indices, reference
        first, then the first V - 1 valid candidates, padded by repeating
        the first source.
    """
    return regular_tuples(*candidate_lists(pairs), num_views)


def regular_tuples(candidates: tf.Tensor, counts: tf.Tensor,
                   num_views: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`reference_tuples` from the output of `candidate_lists`."""
    refs = tf.cast(tf.where(counts > 0)[:, 0], tf.int32)
    num_sources = num_views - 1
    # Rows may be narrower than V - 1; pad with -1 before slicing.
    candidates = tf.pad(candidates, [[0, 0], [0, num_sources]],
                        constant_values=-1)
    sources = _pad_sources(tf.gather(candidates, refs)[:, :num_sources],
                           tf.gather(counts, refs), num_sources)
    views = tf.concat([refs[:, tf.newaxis], sources], axis=1)
    return refs, tf.ensure_shape(views, [None, num_views])


def random_source_views(ref: tf.Tensor, candidates: tf.Tensor,
                        count: tf.Tensor, num_views: int,
                        seed: tf.Tensor) -> tf.Tensor:
    """SCC tuple: the reference plus V - 1 random candidates, no repeats.

    Args:
        ref: scalar int32 reference index.
        candidates: `[M]` int32, the reference's valid candidates first
            (`candidate_lists`), then -1.
        count: scalar int32, number of valid candidates (>= 1).
        num_views: V >= 2.
        seed: `[2]` int64 stateless seed.

    Returns:
        `[V]` int32 view indices, reference first. With fewer than V - 1
        candidates all are used and the first drawn one repeats.
    """
    num_sources = num_views - 1
    width = tf.shape(candidates)[0]
    keys = tf.random.stateless_uniform([width], seed)
    # Invalid slots get keys above every valid one, so they sort last.
    keys = tf.where(tf.range(width) < count, keys, 2.0)
    drawn = tf.gather(candidates, tf.argsort(keys))
    drawn = tf.pad(drawn, [[0, num_sources]], constant_values=-1)
    sources = _pad_sources(drawn[:num_sources], count, num_sources)
    return tf.ensure_shape(tf.concat([[ref], sources], axis=0), [num_views])
