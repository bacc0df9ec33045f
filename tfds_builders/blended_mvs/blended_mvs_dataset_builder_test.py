"""DatasetBuilderTestCase for BlendedMVS on dummy_data/ (two scenes, with
training_list.txt naming one and validation_list.txt the other)."""

import tensorflow_datasets as tfds

from tfds_builders.blended_mvs import blended_mvs_dataset_builder


class BlendedMvsLowResTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = blended_mvs_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["low_res"]
    SPLITS = {"train": 1, "validation": 1}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
