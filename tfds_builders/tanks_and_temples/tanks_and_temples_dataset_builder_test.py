"""DatasetBuilderTestCase for Tanks and Temples on dummy_data/: intermediate
Family and Horse (with short-range cameras), advanced Auditorium and
Ballroom."""

import tensorflow_datasets as tfds

from tfds_builders.tanks_and_temples import tanks_and_temples_dataset_builder


class IntermediateShortRangeTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tanks_and_temples_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["intermediate_short_range"]
    SPLITS = {"test": 2}
    SKIP_CHECKSUMS = True


class IntermediateTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tanks_and_temples_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["intermediate"]
    SPLITS = {"test": 2}
    SKIP_CHECKSUMS = True


class AdvancedTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = tanks_and_temples_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["advanced"]
    SPLITS = {"test": 2}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
