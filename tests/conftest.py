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
