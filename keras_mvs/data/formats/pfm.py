"""PFM depth maps (ALGORITHMS.md 1.3): the parser, serializer, reader and
writer; arrays are top row first."""

import math
import os

import numpy as np

from keras_mvs import files
from keras_mvs.data.formats.common import EMPTY_FILE
from keras_mvs.data.formats.common import FormatError
from keras_mvs.data.formats.common import PathLike


def _pfm_header_line(
    data: bytes, start: int, source: str, line: int, expected: str
) -> tuple[str, int]:
    """Returns the text of the header line at `start` and the next offset."""
    end = data.find(b"\n", start)
    if end < 0:
        raise FormatError(source, line, expected + " ending with a newline",
                          data[start:start + 40].decode("latin-1"))
    text = data[start:end].decode("latin-1").strip()
    return text, end + 1


def parse_pfm_bytes(data: bytes, source_name: str) -> np.ndarray:
    """Decodes a PFM image (ALGORITHMS.md 1.3).

    Header: `PF` (3 channels) or `Pf` (1 channel); `W H`; a non-zero scale
    whose sign gives the byte order (negative: little-endian). Then exactly
    `H * W * C` float32 values, rows stored bottom to top.

    Args:
        data: the file contents.
        source_name: the name used in error messages.

    Returns:
        float32 `(H, W)` or `(H, W, 3)`, top row first, native byte order.

    Raises:
        FormatError: bad identifier, dimensions or scale (naming the header
            line), or a payload shorter or longer than the header implies.
    """
    if not data:
        raise FormatError(source_name, 1, "'PF' or 'Pf'", EMPTY_FILE)
    identifier, offset = _pfm_header_line(data, 0, source_name, 1,
                                          "'PF' or 'Pf'")
    if identifier not in ("PF", "Pf"):
        raise FormatError(source_name, 1, "'PF' or 'Pf'", identifier)
    channels = 3 if identifier == "PF" else 1
    dims, offset = _pfm_header_line(data, offset, source_name, 2,
                                    "'WIDTH HEIGHT'")
    tokens = dims.split()
    if len(tokens) != 2 or not all(t.isdigit() for t in tokens) or any(
            int(t) == 0 for t in tokens):
        raise FormatError(source_name, 2,
                          "'WIDTH HEIGHT' (two positive integers)", dims)
    width, height = int(tokens[0]), int(tokens[1])
    scale_text, offset = _pfm_header_line(data, offset, source_name, 3,
                                          "a non-zero scale")
    try:
        scale = float(scale_text)
    except ValueError:
        raise FormatError(source_name, 3, "a non-zero scale",
                          scale_text) from None
    if scale == 0.0 or not math.isfinite(scale):
        raise FormatError(source_name, 3, "a finite non-zero scale",
                          scale_text)
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    expected_bytes = width * height * channels * 4
    payload = len(data) - offset
    if payload != expected_bytes:
        raise FormatError(
            source_name, None,
            f"{expected_bytes} payload bytes after the header ({height} "
            f"rows x {width} columns x {channels} channels of float32)",
            f"{payload} bytes", quote=False)
    values = np.frombuffer(data, dtype=dtype, offset=offset)
    shape = (height, width, 3) if channels == 3 else (height, width)
    # Rows are stored bottom to top.
    return np.flipud(values.reshape(shape)).astype(np.float32)


def serialize_pfm(array: np.ndarray, scale: float = 1.0) -> bytes:
    """Encodes an image as little-endian PFM bytes, rows bottom to top.

    Args:
        array: `(H, W)`, `(H, W, 1)` or `(H, W, 3)`; cast to float32 (a
            float64 input loses precision).
        scale: positive header scale; written negated to mark little-endian.

    Returns:
        The PFM file contents.
    """
    image = np.asarray(array, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3
                                    ) or 0 in image.shape:
        raise ValueError(
            "write_pfm expects a non-empty (H, W), (H, W, 1) or (H, W, 3) "
            f"array; received shape {np.shape(array)}")
    if not (scale > 0.0 and math.isfinite(scale)):
        raise ValueError(f"PFM scale must be positive; received {scale}")
    identifier = "PF" if image.ndim == 3 else "Pf"
    height, width = image.shape[:2]
    header = f"{identifier}\n{width} {height}\n{-float(scale)!r}\n"
    payload = np.ascontiguousarray(np.flipud(image), dtype="<f4").tobytes()
    return header.encode("ascii") + payload


def read_pfm(path: PathLike) -> np.ndarray:
    """Reads a PFM file; see `parse_pfm_bytes`."""
    with open(path, "rb") as handle:
        data = handle.read()
    return parse_pfm_bytes(data, os.fspath(path))


def write_pfm(path: PathLike, array: np.ndarray, scale: float = 1.0) -> None:
    """Writes a PFM file (little-endian, rows bottom to top); see
    `serialize_pfm`."""
    files.write_bytes(path, serialize_pfm(array, scale))
