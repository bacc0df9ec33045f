"""DatasetBuilderTestCase for BlendedMVS on dummy_data/ (two scenes, with
training_list.txt naming one and validation_list.txt the other)."""

import pytest
import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import mvs_scene
from tfds_builders.blended_mvs import blended_mvs_dataset_builder


class BlendedMvsLowResTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = blended_mvs_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["low_res"]
    SPLITS = {"train": 1, "validation": 1}
    SKIP_CHECKSUMS = True



def test_scene_splits_without_lists_put_everything_in_train(tmp_path):
    splits = blended_mvs_dataset_builder.scene_splits(
        epath.Path(tmp_path), found=["a", "b"])
    assert splits == {"train": ["a", "b"]}


def test_scene_splits_reject_listed_scenes_that_are_missing(tmp_path):
    (tmp_path / "training_list.txt").write_text("a\nc\n")
    with pytest.raises(mvs_scene.ManualDataError, match=r"\['c'\]"):
        blended_mvs_dataset_builder.scene_splits(epath.Path(tmp_path),
                                                 found=["a", "b"])


if __name__ == "__main__":
    tfds.testing.test_main()
