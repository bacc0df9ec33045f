"""Tests for `keras_mvs.data.specs`: what `--data SPEC` names."""

import pytest

from keras_mvs.data import specs


@pytest.mark.parametrize("spec, expected", [
    ("tfds:dtu", ("dtu", None)),
    ("tfds:dtu/train_light3", ("dtu", "train_light3")),
    ("", None),
    ("some/folder", None),
])
def test_parse_tfds(spec, expected):
    assert specs.parse_tfds(spec) == expected


def _scene(folder):
    (folder / "cams").mkdir(parents=True)
    return folder


def test_a_scene_or_a_folder_of_scenes(tmp_path):
    one = _scene(tmp_path / "one")
    kwargs = dict(height=64, width=96, synthetic_views=8)
    assert specs.scene_dirs(str(one), "train", **kwargs) == [one]
    two = _scene(tmp_path / "two")
    (tmp_path / "notes").mkdir()  # not a scene: skipped
    assert specs.scene_dirs(str(tmp_path), "train", **kwargs) == [one, two]


def test_missing_or_empty_folders_are_named(tmp_path):
    kwargs = dict(height=64, width=96, synthetic_views=8)
    with pytest.raises(FileNotFoundError, match="nowhere: not a folder"):
        specs.scene_dirs(str(tmp_path / "nowhere"), "train", **kwargs)
    with pytest.raises(FileNotFoundError, match="neither a scene"):
        specs.scene_dirs(str(tmp_path), "train", **kwargs)
