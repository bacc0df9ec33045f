"""Access to the official code's outputs copied into tests/fixtures/.

`tests/fixtures/reference_outputs/` holds byte-identical copies of
`../shared/reference_outputs/*.npz` (the outputs of the unmodified official
UniMVSNet, CasMVSNet and CL-MVSNet code on fixed inputs; its README documents
every array), so the parity tests run on a fresh clone. The arrays follow
PyTorch's layouts; the helpers here turn them into ours.
"""

import functools
import pathlib

import numpy as np

FIXTURES = (pathlib.Path(__file__).resolve().parents[1] / "fixtures"
            / "reference_outputs")


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict:
    """All arrays of `<name>.npz` as a dict of numpy arrays."""
    with np.load(FIXTURES / f"{name}.npz") as archive:
        return {key: archive[key] for key in archive.files}


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """`(..., C, H, W)` -> `(..., H, W, C)`."""
    return np.moveaxis(x, -3, -1)


def ncdhw_to_ndhwc(x: np.ndarray) -> np.ndarray:
    """`(B, C, D, H, W)` -> `(B, D, H, W, C)`."""
    return np.moveaxis(x, 1, -1)


def split_cams(cams: np.ndarray):
    """Reference cam tensors `(..., 2, 4, 4)` -> `(intrinsics, cam_from_world)`.

    Slot 0 is the world-to-camera extrinsic, slot 1 holds K in its top-left
    3x3 block.
    """
    return (np.ascontiguousarray(cams[..., 1, :3, :3]),
            np.ascontiguousarray(cams[..., 0, :, :]))


def max_relative(actual, expected) -> float:
    """Largest |actual - expected| / max(|expected|, tiny)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)
                        / np.maximum(np.abs(expected), 1e-30)))
