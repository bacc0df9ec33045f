"""Tests for keras_mvs.data.folders: check_folders refuses bad data before
training (reading folders into batches is tested with the pipeline)."""

import pathlib
import shutil

import pytest

from keras_mvs.data import folders


def _scene_copy(tmp_path, name="scene"):
    source = (pathlib.Path(__file__).resolve().parents[1] / "fixtures"
              / "scenes" / "office_room")
    return pathlib.Path(shutil.copytree(source, tmp_path / name))


def test_check_folders_names_a_malformed_cam(tmp_path):
    root = _scene_copy(tmp_path)
    cam = root / "cams" / "00000028_cam.txt"
    lines = cam.read_text().split("\n")
    lines[8] = "0 905.6 abc"
    cam.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"1 bad view\(s\): .*00000028_cam"
                       r"\.txt, line 9: expected 3 numbers"):
        folders.check_folders([root], num_views=3)


def test_check_folders_refuses_a_scene_without_overlapping_views(tmp_path):
    root = _scene_copy(tmp_path)
    (root / "pair.txt").write_text("1\n0\n0\n")
    with pytest.raises(ValueError, match="no view of .* has a source view"):
        folders.check_folders([root], num_views=2)


def test_check_folders_needs_depth_for_supervision(tmp_path):
    root = _scene_copy(tmp_path)
    with pytest.raises(ValueError, match=r"depths/00000000\.pfm: missing"):
        folders.check_folders([root], require_depth=True)
    folders.check_folders([root])  # fine without supervision
