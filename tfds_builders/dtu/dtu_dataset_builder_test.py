"""DatasetBuilderTestCase for DTU: one class per config, on dummy_data/.

dummy_data/ (written by tfds_builders/make_dummy_data.py) has training scans
scan1 (a test scan) and scan2, no lists/ folder (so train is every scan found
minus the test scans), and test-layout scans scan1 and scan4.
"""

import pytest
import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import mvs_scene
from tfds_builders.dtu import dtu_dataset_builder


class DtuTrainLight3Test(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = dtu_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["train_light3"]
    SPLITS = {"train": 1, "test": 1}
    SKIP_CHECKSUMS = True


class DtuTrainAllLightsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = dtu_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["train_all_lights"]
    SPLITS = {"train": 7, "test": 7}
    SKIP_CHECKSUMS = True


class DtuTestSetTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = dtu_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["test"]
    SPLITS = {"test": 2}
    SKIP_CHECKSUMS = True



def test_training_splits_without_lists(tmp_path):
    splits = dtu_dataset_builder.training_splits(
        epath.Path(tmp_path), found=[1, 2, 3, 4, 118, 128])
    assert splits == {"train": [2, 3, 128], "test": [1, 4, 118]}


def test_training_splits_from_lists(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("scan2\nscan3\n\n")
    (tmp_path / "lists" / "val.txt").write_text("128\n")
    splits = dtu_dataset_builder.training_splits(
        epath.Path(tmp_path), found=[1, 2, 3, 4, 128])
    assert splits == {"train": [2, 3], "validation": [128], "test": [1, 4]}
    (tmp_path / "lists" / "val.txt").write_text("scan5\n")
    with pytest.raises(mvs_scene.ManualDataError, match=r"\[5\]"):
        dtu_dataset_builder.training_splits(epath.Path(tmp_path),
                                            found=[1, 2, 3])
    (tmp_path / "lists" / "val.txt").write_text("scan_x\n")
    with pytest.raises(ValueError, match="val.txt: expected a scan name"):
        dtu_dataset_builder.training_splits(epath.Path(tmp_path),
                                            found=[1, 2, 3])


if __name__ == "__main__":
    tfds.testing.test_main()
