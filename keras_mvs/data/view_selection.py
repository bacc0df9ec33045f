"""MVSNet view selection (ALGORITHMS.md 1.1), one implementation: the pair
scores and the choice of each view's source views from them.

Used by the COLMAP conversion (sparse tracks) and the synthetic renderer
(dense visibility of surface samples): score(i, j) sums, over the points seen
by both views, the piecewise Gaussian G(theta) = exp(-(theta - 5)^2 /
(2 sigma^2)) of the triangulation angle theta in degrees, with sigma = 1 for
theta <= 5 and 10 above; `select_pairs` keeps each view's best-scored
sources, the pair.txt list.
"""

import numpy as np

from keras_mvs.data import formats

THETA0_DEG = 5.0
SIGMA_BELOW_DEG = 1.0
SIGMA_ABOVE_DEG = 10.0
# Sources listed per view in pair.txt (the MVSNet convention).
NUM_SOURCES = 10


def view_selection_scores(
    points: np.ndarray, point_index: np.ndarray, view_index: np.ndarray,
    camera_centres: np.ndarray,
) -> np.ndarray:
    """MVSNet view-selection scores from sparse tracks (ALGORITHMS.md 1.1).

    score(i, j) sums, over the points observed by both i and j, the
    piecewise Gaussian G(theta) of the triangulation angle theta (degrees)
    between the rays from the point to the two camera centres.

    Args:
        points: `[N, 3]` world points.
        point_index: `[M]` int, the point of each observation.
        view_index: `[M]` int, the view of each observation (an
            observation repeated within one view counts once).
        camera_centres: `[V, 3]` world camera centres.

    Returns:
        `[V, V]` float64 scores, symmetric, zero on the diagonal.
    """
    from scipy import sparse

    num_views = camera_centres.shape[0]
    visible = sparse.csr_matrix(
        (np.ones(point_index.shape[0], bool), (point_index, view_index)),
        shape=(points.shape[0], num_views))
    visible.sum_duplicates()
    by_view = visible.tocsc()
    scores = np.zeros((num_views, num_views))
    for ref in range(num_views):
        rows = by_view.indices[by_view.indptr[ref]:by_view.indptr[ref + 1]]
        if rows.size == 0:
            continue
        shared = visible[rows].tocoo()  # row r: views seeing point rows[r]
        point = points[rows[shared.row]]
        to_ref = camera_centres[ref] - point
        to_other = camera_centres[shared.col] - point
        cosine = np.sum(to_ref * to_other, axis=-1) / np.maximum(
            np.linalg.norm(to_ref, axis=-1)
            * np.linalg.norm(to_other, axis=-1), 1e-12)
        theta = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
        sigma = np.where(theta <= THETA0_DEG, SIGMA_BELOW_DEG,
                         SIGMA_ABOVE_DEG)
        gauss = np.exp(-((theta - THETA0_DEG) ** 2) / (2.0 * sigma ** 2))
        scores[ref] = np.bincount(shared.col, weights=gauss,
                                  minlength=num_views)
        scores[ref, ref] = 0.0
    return scores


def scores_from_visibility(points: np.ndarray, visible: np.ndarray,
                           camera_centres: np.ndarray) -> np.ndarray:
    """`view_selection_scores` from a dense `[N, V]` bool visibility table."""
    point_index, view_index = np.nonzero(visible)
    return view_selection_scores(points, point_index, view_index,
                                 camera_centres)


def select_pairs(scores: np.ndarray, num_sources: int = NUM_SOURCES, *,
                 positive_only: bool) -> formats.Pairs:
    """Each view's best sources by score, the content of pair.txt.

    Args:
        scores: `[V, V]` pair scores (`view_selection_scores`).
        num_sources: sources kept per view (fewer when fewer qualify).
        positive_only: drop views that share no scored point (score 0),
            as the COLMAP conversion does; otherwise every other view may
            fill the list (the synthetic renderer always lists
            `num_sources`, as MVSNet's pair files do).

    Returns:
        `[(ref_id, [(src_id, score), ...]), ...]` for ref_id 0..V-1, sources
        best first, ties broken by the lower id.
    """
    pairs = []
    for ref, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))
        sources = [int(view) for view in order
                   if view != ref and (row[view] > 0 or not positive_only)]
        pairs.append((ref, [(view, float(row[view]))
                            for view in sources[:num_sources]]))
    return pairs
