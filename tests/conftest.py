"""Fixtures shared by the library tests."""

import pathlib

import pytest

# The shared data folder lies beside the repository (CI clones the repo with
# shared/ next to it), so it is found from the repository root, not from an
# absolute path.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_MVS_DATA = _REPO_ROOT.parent / "shared" / "mvs_data"


@pytest.fixture(scope="session")
def mvs_data_dir() -> pathlib.Path:
    """`<repo root>/../shared/mvs_data`: real photographs in MVSNet layout."""
    if not _MVS_DATA.is_dir():
        pytest.skip(f"real MVS test data not found at {_MVS_DATA} "
                    "(expected ../shared/mvs_data beside the repository)")
    return _MVS_DATA
