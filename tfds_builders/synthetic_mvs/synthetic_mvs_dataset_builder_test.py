"""DatasetBuilderTestCase for the synthetic scenes (config tiny_32x40: 2 train
and 2 test scenes of 3 views, rendered in a fraction of a second)."""

import tensorflow_datasets as tfds

from tfds_builders.synthetic_mvs import synthetic_mvs_dataset_builder


class SyntheticTinyTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = synthetic_mvs_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny_32x40"]
    SPLITS = {"train": 2, "test": 2}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
