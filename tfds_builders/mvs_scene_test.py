"""Tests of the scene reading shared by the builders."""

import io

import numpy as np
import pytest
from etils import epath
from PIL import Image

from keras_mvs.data import formats
from tfds_builders import mvs_scene


def test_view_order_and_pair_table():
    pairs = [(5, [(7, 0.9), (9, 0.5)]),
             (7, [(k, 1.0 - k / 100) for k in range(20, 32)] + [(5, 0.1)])]
    view_ids = mvs_scene.view_order(pairs)
    # References first, in file order, then views that are only sources.
    assert view_ids == [5, 7, 9] + list(range(20, 32))
    table, scores = mvs_scene.pair_table(pairs, view_ids)
    assert table.shape == scores.shape == (15, mvs_scene.MAX_SOURCES)
    # Entries are positions in view_ids, not ids.
    np.testing.assert_array_equal(table[0], [1, 2] + [-1] * 8)
    np.testing.assert_allclose(scores[0], [0.9, 0.5] + [0.0] * 8)
    # The first 10 of 13 sources, in file order (ids 20..29); 30, 31 and 5
    # are cut.
    np.testing.assert_array_equal(table[1], range(3, 13))
    np.testing.assert_allclose(scores[1], 1.0 - np.arange(20, 30) / 100,
                               rtol=1e-6)
    np.testing.assert_array_equal(table[2:], -1)


def _write_view(root: epath.Path, vid: int, size: tuple[int, int]):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(size + (3,), np.uint8)).save(buffer, "PNG")
    (root / f"{vid}.png").write_bytes(buffer.getvalue())
    camera = formats.Camera(intrinsics=np.eye(3), cam_from_world=np.eye(4),
                            depth_min=1.0, depth_interval=0.01)
    (root / f"{vid}_cam.txt").write_text(formats.format_cam_text(camera))
    return mvs_scene.ViewFiles(view_id=vid, image=root / f"{vid}.png",
                               cam=root / f"{vid}_cam.txt")


def test_scene_example_rejects_views_of_different_size(tmp_path):
    root = epath.Path(tmp_path)
    (root / "pair.txt").write_text(
        formats.format_pair_text([(0, [(1, 1.0)]), (1, [(0, 1.0)])]))
    views = (_write_view(root, 0, (4, 6)), _write_view(root, 1, (4, 7)))
    plan = mvs_scene.ScenePlan(key="s", scene="s",
                               pair_file=root / "pair.txt", views=views)
    with pytest.raises(ValueError, match=r"1\.png: expected the image "
                       r"shape \(4, 6\)"):
        mvs_scene.scene_example(plan, lambda camera: (1.0, 2.0))


def test_require_names_the_file_and_gives_instructions(tmp_path):
    missing = epath.Path(tmp_path) / "pair.txt"
    with pytest.raises(mvs_scene.ManualDataError) as error:
        mvs_scene.require(missing, "the pair file", "Download X.")
    assert str(error.value) == (
        f"Incomplete manual directory: the pair file is missing: "
        f"{missing}\n\nDownload X.")
