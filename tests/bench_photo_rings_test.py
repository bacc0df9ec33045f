"""bench.photo_rings: the Middlebury calibration and bounding-box readers."""

import numpy as np
import pytest

from bench import photo_rings


def _write_ring(folder, rows):
    folder.mkdir()
    lines = [str(len(rows))]
    for name, rotation, translation in rows:
        values = [3310.4, 0, 316.73, 0, 3325.5, 200.55, 0, 0, 1,
                  *np.ravel(rotation), *translation]
        lines.append(" ".join([name, *map(repr, map(float, values))]))
    (folder / "ringSR_par.txt").write_text("\n".join(lines) + "\n")
    (folder / "README.txt").write_text(
        "The (tight) bounding box for the ring model is\n"
        "(-0.061897 -0.018874 -0.057845)\n(0.010897 0.068227 0.015495)\n")


def test_calibration_gives_the_camera_centres(tmp_path):
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0],
                         [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = np.array([0.1, -0.2, 0.6])
    _write_ring(tmp_path / "ring", [("a.png", rotation, -rotation @ centre),
                                    ("b.png", np.eye(3), [0.0, 0.0, 0.5])])
    centres = photo_rings.read_calibration(tmp_path / "ring")
    np.testing.assert_allclose(centres["a.png"], centre, atol=1e-12)
    np.testing.assert_allclose(centres["b.png"], [0, 0, -0.5], atol=1e-12)
    np.testing.assert_allclose(
        photo_rings.read_bounding_box(tmp_path / "ring"),
        [[-0.061897, -0.018874, -0.057845], [0.010897, 0.068227, 0.015495]])


def test_malformed_calibration_line_is_named(tmp_path):
    _write_ring(tmp_path / "ring", [("a.png", np.eye(3), [0.0, 0.0, 0.5])])
    path = tmp_path / "ring" / "ringSR_par.txt"
    path.write_text(path.read_text() + "b.png 1 2 3\n")
    with pytest.raises(ValueError, match=r"ringSR_par.txt, line 3: expected "
                       r"22 fields \(name, K, R, t\); found 4"):
        photo_rings.read_calibration(tmp_path / "ring")
    (tmp_path / "ring" / "README.txt").write_text("no box here\n")
    with pytest.raises(ValueError, match="expected a bounding box"):
        photo_rings.read_bounding_box(tmp_path / "ring")
