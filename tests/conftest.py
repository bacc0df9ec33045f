"""Fixtures shared by the library tests."""

import pathlib

import pytest

# The shared data folder lies beside the repository (CI clones the repo with
# shared/ next to it), so it is found from the repository root, not from an
# absolute path.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_MVS_DATA = _REPO_ROOT.parent / "shared" / "mvs_data"
# Its small copy inside the repository (tools/make_test_fixtures.py).
_FIXTURE_MVS_DATA = _REPO_ROOT / "tests" / "fixtures" / "mvs_data"


@pytest.fixture(scope="session")
def real_data_dir() -> pathlib.Path:
    """`tests/fixtures/mvs_data`: every real scene, small, in any checkout.

    The layout of `../shared/mvs_data` with every view; images, masks and K
    reduced by a point-sampling step, DTU scan24's sparse points thinned,
    raw office_room files byte for byte (tools/make_test_fixtures.py says
    exactly how). The tests read this copy even when `../shared` is present,
    so they check the same values in every checkout; the full-size data is
    for the `large` tests (`mvs_data_dir`). The copy is part of the
    repository: a missing one is an error, not a skip.
    """
    if not _FIXTURE_MVS_DATA.is_dir():
        raise FileNotFoundError(
            f"{_FIXTURE_MVS_DATA} is missing; it is committed with the "
            "tests (regenerate it with tools/make_test_fixtures.py)")
    return _FIXTURE_MVS_DATA


@pytest.fixture(scope="session")
def mvs_data_dir() -> pathlib.Path:
    """`<repo root>/../shared/mvs_data`: the full-size real scenes (for the
    `large` tests; skips when the folder is absent)."""
    if not _MVS_DATA.is_dir():
        pytest.skip(f"real MVS test data not found at {_MVS_DATA} "
                    "(expected ../shared/mvs_data beside the repository)")
    return _MVS_DATA


# The reconstruct tests share one small synthetic scene and one tiny untrained
# network (tests/reconstruct_test.py relies on this size: 64x96, 6 views).
@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> pathlib.Path:
    from keras_mvs.data import synthetic

    config = synthetic.SceneConfig(height=64, width=96, num_views=6, seed=5,
                                   num_pair_samples=2000)
    return synthetic.write_scene(synthetic.render_scene(config),
                                 tmp_path_factory.mktemp("scene") / "s")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> pathlib.Path:
    from keras_mvs.models import CascadeMVSNet

    network = CascadeMVSNet(num_depths=(8, 8, 8), base_channels=4, groups=4)
    network.build()
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    network.save(path)
    return path
