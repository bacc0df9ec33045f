"""The MVSNet view-selection score (ALGORITHMS.md 1.1), one implementation.

Used by the COLMAP conversion (sparse tracks) and the synthetic renderer
(dense visibility of surface samples): score(i, j) sums, over the points seen
by both views, the piecewise Gaussian G(theta) = exp(-(theta - 5)^2 /
(2 sigma^2)) of the triangulation angle theta in degrees, with sigma = 1 for
theta <= 5 and 10 above.
"""

import numpy as np

THETA0_DEG = 5.0
SIGMA_BELOW_DEG = 1.0
SIGMA_ABOVE_DEG = 10.0


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
