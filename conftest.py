"""Pytest options shared by the library tests and the TFDS builder tests."""

import os

import pytest

# Two logical CPU devices are configured lazily by the distribution tests;
# keep TF quiet otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_addoption(parser):
    parser.addoption(
        "--run-large",
        action="store_true",
        default=False,
        help="also run tests marked `large` (slow: minutes each)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip_large = pytest.mark.skip(reason="large test: pass --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip_large)
