"""DatasetBuilderTestCase for DTU: one class per config, on dummy_data/.

dummy_data/ (written by tfds_builders/make_dummy_data.py) has training scans
scan1 (a test scan) and scan2, no lists/ folder (so train is every scan found
minus the test scans), and test-layout scans scan1 and scan4.
"""

import tensorflow_datasets as tfds

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


if __name__ == "__main__":
    tfds.testing.test_main()
