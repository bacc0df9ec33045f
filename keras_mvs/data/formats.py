"""Readers and writers for the MVSNet file formats: cam, pair and PFM files.

The layouts are those of ALGORITHMS.md 1.1 to 1.3. Every reader comes in two
layers: a parser on text or bytes (`parse_cam_text`, `parse_pair_text`,
`parse_pfm_bytes`) that does no file access, so that TFDS builders can read
files through `epath` and hand over the contents, and a path-based reader
(`read_cam_file`, `read_pair_file`, `read_pfm`) that calls it. The writers
mirror this (`format_cam_text`, `format_pair_text`, `serialize_pfm`).

Malformed input never produces a silent wrong value or a bare IndexError: the
parsers raise `FormatError`, whose message names the file, the 1-based line
and what was expected. Inconsistencies that still leave an unambiguous reading
(a pair-file header count that disagrees with the body) are read as found and
reported with a `FormatWarning`.

Numbers are written with `repr(float)`, the shortest decimal that reads back
to the same float64, so write-then-read round trips are exact.
"""

import dataclasses
import math
import os
import warnings
from collections.abc import Sequence
from typing import Union

import numpy as np

from keras_mvs import files

PathLike = Union[str, os.PathLike]

# Number of planes the "min_max" depth line is divided into to give an
# interval; the MVSNet family's default plane count (ALGORITHMS.md 1.9).
MIN_MAX_NUM_PLANES = 192

# Tolerance on the rotation block of an extrinsic: max |R^T R - I| and
# |det R - 1|. Cam files in the wild print 6 to 17 significant digits, which
# leaves errors of about 1e-6; a scaled or sheared matrix is off by far more.
ROTATION_TOLERANCE = 1e-3

DEPTH_LINE_FORMS = (
    "min_interval", "min_interval_num", "min_interval_num_max", "min_max")

# Findings that describe the input rather than quote it.
_END_OF_FILE = "end of file"
_EMPTY_FILE = "an empty file"
_UNQUOTED_FINDINGS = (_END_OF_FILE, _EMPTY_FILE)

_DEPTH_LINE_EXPECTED = (
    "2 to 4 numbers 'DEPTH_MIN DEPTH_INTERVAL [NUM [MAX]]'")


class FormatError(ValueError):
    """A malformed MVSNet cam, pair or PFM file.

    The message reads `"<source>, line <n>: expected <what>, found '<text>'"`.

    Attributes:
        source: the file name (or the name given to a parser).
        line: 1-based line number, or None where no line applies (e.g. a
            PFM payload).
        expected: what the reader expected.
        found: what it found instead, or None.
        quote: whether `found` is quoted text from the file (True) or a
            description such as "21 bytes" (False).
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        expected: str,
        found: str | None = None,
        quote: bool = True,
    ):
        self.source = source
        self.line = line
        self.expected = expected
        self.found = found
        self.quote = quote
        where = source if line is None else f"{source}, line {line}"
        message = f"{where}: expected {expected}"
        if found in _UNQUOTED_FINDINGS or (found is not None and not quote):
            message += f", found {found}"
        elif found is not None:
            shown = found if len(found) <= 120 else found[:117] + "..."
            message += f", found '{shown}'"
        super().__init__(message)

    def __reduce__(self):
        # Exceptions pickle as cls(*self.args); keep the four fields instead
        # of the formatted message so that errors survive multiprocessing.
        return (FormatError,
                (self.source, self.line, self.expected, self.found,
                 self.quote))


class FormatWarning(UserWarning):
    """An inconsistent file that could still be read unambiguously."""


@dataclasses.dataclass
class Camera:
    """One view's camera as stored in an MVSNet cam file.

    Attributes:
        intrinsics: `(3, 3)` float64 K in pixels of the image the file belongs
            to.
        cam_from_world: `(4, 4)` float64 world-to-camera rigid transform,
            OpenCV axes (x right, y down, z forward); depth is camera z.
        depth_min: nearest depth, in the file's units (mm for DTU).
        depth_interval: spacing between hypotheses, in the same units, as in
            the file (for "min_max", `(depth_max - depth_min) / 192`).
        num_depths: the file's plane count (3- and 4-field lines), else None.
        depth_max: the file's far depth (4-field and "min_max" lines), else
            None.
        depth_line: how the depth line was read, one of:
            * "min_interval": `DEPTH_MIN DEPTH_INTERVAL` (DTU).
            * "min_interval_num": `DEPTH_MIN DEPTH_INTERVAL NUM`.
            * "min_interval_num_max": `DEPTH_MIN DEPTH_INTERVAL NUM MAX`
              (Tanks and Temples, BlendedMVS).
            * "min_max": `DEPTH_MIN DEPTH_MAX`, two fields whose second is
              larger than the first (see `parse_cam_text` for the rule).
            Constructing a Camera with `num_depths` set and the default
            "min_interval" selects the 3- or 4-field form the fields imply.
    """

    intrinsics: np.ndarray
    cam_from_world: np.ndarray
    depth_min: float
    depth_interval: float
    num_depths: int | None = None
    depth_max: float | None = None
    depth_line: str = "min_interval"

    def __post_init__(self):
        self.intrinsics = np.array(self.intrinsics, dtype=np.float64)
        self.cam_from_world = np.array(self.cam_from_world, dtype=np.float64)
        if self.intrinsics.shape != (3, 3):
            raise ValueError(
                f"Camera.intrinsics must be (3, 3); received shape "
                f"{self.intrinsics.shape}")
        if self.cam_from_world.shape != (4, 4):
            raise ValueError(
                f"Camera.cam_from_world must be (4, 4); received shape "
                f"{self.cam_from_world.shape}")
        if self.depth_line not in DEPTH_LINE_FORMS:
            raise ValueError(
                f"Camera.depth_line must be one of {DEPTH_LINE_FORMS}; "
                f"received {self.depth_line!r}")
        if not (self.depth_min > 0 and self.depth_interval > 0):
            raise ValueError(
                "Camera.depth_min and depth_interval must be positive; "
                f"received {self.depth_min!r}, {self.depth_interval!r}")
        if self.depth_line == "min_interval" and self.num_depths is not None:
            self.depth_line = ("min_interval_num" if self.depth_max is None
                               else "min_interval_num_max")
        has_num = self.num_depths is not None
        has_max = self.depth_max is not None
        consistent = {
            "min_interval": not has_num and not has_max,
            "min_interval_num": has_num and not has_max,
            "min_interval_num_max": has_num and has_max,
            "min_max": not has_num and has_max,
        }[self.depth_line]
        if not consistent:
            raise ValueError(
                f"Camera.depth_line {self.depth_line!r} does not match "
                f"num_depths={self.num_depths!r}, depth_max={self.depth_max!r}")

    def depth_range(
        self, num_depths: int = 192, interval_scale: float = 1.06
    ) -> tuple[float, float]:
        """Returns the first and last depth hypothesis for the network.

        The rules reproduce the PyTorch loaders (ALGORITHMS.md 1.1, 1.9):

        * "min_interval": `last = min + (N - 1) * interval * interval_scale`
          (DTU `425.0 2.5`, N = 192: 425 to 931.149).
        * "min_interval_num" and "min_interval_num_max" (the `general_eval`
          rule; the file's MAX is ignored, as there):
          `max' = min + int(NUM) * interval`,
          `interval' = (max' - min) / N * interval_scale`,
          `last = min + (N - 1) * interval'`.
        * "min_max": `(min, max)` as written; the file states the range
          itself, so neither N nor interval_scale applies.

        Args:
            num_depths: N, the number of initial hypotheses.
            interval_scale: multiplier on the interval (1.06 in the
                reference scripts).

        Returns:
            `(first, last)` depth, in the file's units.
        """
        if num_depths < 2:
            raise ValueError(
                f"num_depths must be at least 2; received {num_depths}")
        if self.depth_line == "min_max":
            return float(self.depth_min), float(self.depth_max)
        if self.depth_line == "min_interval":
            interval = self.depth_interval * interval_scale
        else:
            file_max = self.depth_min + self.num_depths * self.depth_interval
            interval = ((file_max - self.depth_min) / num_depths
                        * interval_scale)
        last = self.depth_min + (num_depths - 1) * interval
        return float(self.depth_min), float(last)


def _numbers(
    text: str, source: str, line: int, expected: str
) -> list[float]:
    """Parses a whitespace-separated line of finite floats."""
    values = []
    for token in text.split():
        try:
            value = float(token)
        except ValueError:
            raise FormatError(source, line, expected, text.strip()) from None
        if not math.isfinite(value):
            raise FormatError(
                source, line, expected + " (finite values)", text.strip())
        values.append(value)
    return values


def _matrix_rows(
    lines: list[tuple[int, str]],
    start: int,
    rows: int,
    cols: int,
    source: str,
    name: str,
) -> tuple[np.ndarray, list[int]]:
    """Reads `rows` lines of `cols` numbers beginning at `lines[start]`.

    Returns the matrix and the 1-based file line of each row.
    """
    matrix = np.zeros((rows, cols), np.float64)
    row_lines = []
    for r in range(rows):
        expected = f"{cols} numbers (row {r + 1} of the {rows}x{cols} {name})"
        if start + r >= len(lines):
            last = lines[-1][0] if lines else 0
            raise FormatError(source, last + 1, expected, _END_OF_FILE)
        number, text = lines[start + r]
        values = _numbers(text, source, number, expected)
        if len(values) != cols:
            raise FormatError(source, number, expected, text.strip())
        matrix[r] = values
        row_lines.append(number)
    return matrix, row_lines


def _check_extrinsic(
    matrix: np.ndarray, source: str, row_lines: list[int]
) -> None:
    """Checks that a 4x4 extrinsic is a rigid world-to-camera transform."""
    if not np.array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise FormatError(
            source, row_lines[3], "extrinsic last row '0 0 0 1'",
            " ".join(repr(float(v)) for v in matrix[3]))
    rotation = matrix[:3, :3]
    orthogonality = np.max(np.abs(rotation.T @ rotation - np.eye(3)))
    determinant = np.linalg.det(rotation)
    if orthogonality > ROTATION_TOLERANCE or abs(
            determinant - 1.0) > ROTATION_TOLERANCE:
        raise FormatError(
            source, row_lines[0],
            "an invertible rigid extrinsic: rotation block R with "
            f"max|R^T R - I| <= {ROTATION_TOLERANCE} and |det R - 1| <= "
            f"{ROTATION_TOLERANCE}",
            f"max|R^T R - I| = {orthogonality:.3g}, det R = {determinant:.6g}",
            quote=False)


def _check_intrinsic(
    matrix: np.ndarray, source: str, row_lines: list[int]
) -> None:
    """Checks K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0."""
    if not np.array_equal(matrix[2], [0.0, 0.0, 1.0]):
        raise FormatError(
            source, row_lines[2], "intrinsic last row '0 0 1'",
            " ".join(repr(float(v)) for v in matrix[2]))
    if matrix[0, 0] <= 0.0:
        raise FormatError(
            source, row_lines[0], "a positive focal length fx (K[0][0])",
            repr(float(matrix[0, 0])))
    if matrix[1, 1] <= 0.0:
        raise FormatError(
            source, row_lines[1], "a positive focal length fy (K[1][1])",
            repr(float(matrix[1, 1])))


def _parse_depth_line(
    text: str, source: str, line: int
) -> dict:
    """Interprets the depth line; returns Camera keyword arguments."""
    values = _numbers(text, source, line, _DEPTH_LINE_EXPECTED)
    if not 2 <= len(values) <= 4:
        raise FormatError(source, line, _DEPTH_LINE_EXPECTED, text.strip())
    depth_min, second = values[0], values[1]
    if depth_min <= 0.0:
        raise FormatError(
            source, line, "DEPTH_MIN > 0 (first number of the depth line)",
            text.strip())
    if second <= 0.0:
        raise FormatError(
            source, line,
            "DEPTH_INTERVAL > 0 (second number of the depth line)",
            text.strip())
    fields: dict = {"depth_min": depth_min}
    if len(values) == 2:
        # An interval is a small fraction of the near depth (DTU: 2.5 at
        # 425): an "interval" at least as large as DEPTH_MIN would put the
        # last of 192 planes beyond 192 times the first. A far depth, in
        # contrast, always exceeds the near one. So a second field larger
        # than the first can only be DEPTH_MAX (raw office_room_rcv:
        # 4.336407 8.482101).
        if second > depth_min:
            fields.update(
                depth_max=second, depth_line="min_max",
                depth_interval=(second - depth_min) / MIN_MAX_NUM_PLANES)
        else:
            fields.update(depth_interval=second, depth_line="min_interval")
        return fields
    fields["depth_interval"] = second
    num = values[2]
    if num != int(num) or num < 1:
        raise FormatError(
            source, line,
            "NUM (third number of the depth line) a positive integer",
            text.strip())
    fields["num_depths"] = int(num)
    if len(values) == 3:
        fields["depth_line"] = "min_interval_num"
        return fields
    if values[3] <= depth_min:
        raise FormatError(
            source, line,
            "MAX (fourth number of the depth line) greater than DEPTH_MIN",
            text.strip())
    fields.update(depth_max=values[3], depth_line="min_interval_num_max")
    return fields


def parse_cam_text(text: str, source_name: str) -> Camera:
    """Parses the contents of an MVSNet cam file (ALGORITHMS.md 1.1).

    Expected, in order (blank lines anywhere are skipped, which accepts both
    the canonical layout and files with missing or extra blank lines):
    `extrinsic`, 4 rows of 4 numbers (world-to-camera), `intrinsic`, 3 rows
    of 3 numbers (K), and the depth line. Trailing content is an error.

    The depth line is required: without it the view has no depth range, and
    any default would be a silent wrong value. Its forms:

    * 2 numbers `A B` with `B <= A`: `DEPTH_MIN DEPTH_INTERVAL`
      ("min_interval").
    * 2 numbers with `B > A`: `DEPTH_MIN DEPTH_MAX` ("min_max"); the
      interval is set to `(B - A) / 192`. Rationale: a real interval is a
      small fraction of the near depth (DTU 2.5 at 425 mm), and one at least
      as large as DEPTH_MIN would put 192 planes beyond 192 times the near
      depth, while a far depth always exceeds the near one.
    * 3 numbers: `DEPTH_MIN DEPTH_INTERVAL NUM` ("min_interval_num").
    * 4 numbers: `DEPTH_MIN DEPTH_INTERVAL NUM MAX`
      ("min_interval_num_max").

    Checks: every number finite; extrinsic last row `0 0 0 1` and rotation
    block orthonormal with det +1 (within `ROTATION_TOLERANCE`), which also
    makes it invertible; K last row `0 0 1`, fx > 0, fy > 0;
    DEPTH_MIN > 0, interval > 0, NUM a positive integer, MAX > DEPTH_MIN.

    Args:
        text: the file contents.
        source_name: the name used in error messages (e.g. the path).

    Returns:
        The Camera, with `depth_line` saying how the depth line was read.

    Raises:
        FormatError: on any malformed content.
    """
    lines = [(number, raw) for number, raw in
             enumerate(text.splitlines(), start=1) if raw.strip()]
    if not lines:
        raise FormatError(source_name, 1, "the keyword 'extrinsic'",
                          _EMPTY_FILE)
    position = 0

    def keyword(word: str) -> None:
        nonlocal position
        if position >= len(lines):
            raise FormatError(source_name, lines[-1][0] + 1,
                              f"the keyword '{word}'", _END_OF_FILE)
        number, raw = lines[position]
        if raw.strip().lower() != word:
            raise FormatError(source_name, number, f"the keyword '{word}'",
                              raw.strip())
        position += 1

    keyword("extrinsic")
    cam_from_world, row_lines = _matrix_rows(lines, position, 4, 4,
                                             source_name, "extrinsic")
    _check_extrinsic(cam_from_world, source_name, row_lines)
    position += 4
    keyword("intrinsic")
    intrinsics, row_lines = _matrix_rows(lines, position, 3, 3, source_name,
                                         "intrinsic")
    _check_intrinsic(intrinsics, source_name, row_lines)
    position += 3
    if position >= len(lines):
        raise FormatError(source_name, lines[-1][0] + 1,
                          "the depth line: " + _DEPTH_LINE_EXPECTED,
                          _END_OF_FILE)
    depth_line_number, depth_text = lines[position]
    fields = _parse_depth_line(depth_text, source_name, depth_line_number)
    if position + 1 < len(lines):
        number, raw = lines[position + 1]
        raise FormatError(source_name, number,
                          "end of file after the depth line", raw.strip())
    return Camera(intrinsics=intrinsics, cam_from_world=cam_from_world,
                  **fields)


def format_cam_text(camera: Camera) -> str:
    """Formats a Camera as MVSNet cam-file text (the inverse of parsing).

    The depth line takes the form named by `camera.depth_line`: 2 numbers
    (`min interval`, or `min max` for "min_max"), 3 (`min interval num`) or
    4 (`min interval num max`). Numbers are written as `repr(float)`, so
    reading the text back gives the same float64 values.

    Args:
        camera: the camera to write.

    Returns:
        The file contents, ending with a newline.
    """
    def row(values: np.ndarray) -> str:
        return " ".join(repr(float(v)) for v in values)

    depth_fields = {
        "min_interval": [camera.depth_min, camera.depth_interval],
        "min_interval_num": [camera.depth_min, camera.depth_interval,
                             camera.num_depths],
        "min_interval_num_max": [camera.depth_min, camera.depth_interval,
                                 camera.num_depths, camera.depth_max],
        "min_max": [camera.depth_min, camera.depth_max],
    }[camera.depth_line]
    depth_text = " ".join(
        str(int(v)) if isinstance(v, (int, np.integer)) else repr(float(v))
        for v in depth_fields)
    lines = ["extrinsic"]
    lines += [row(r) for r in camera.cam_from_world]
    lines += ["", "intrinsic"]
    lines += [row(r) for r in camera.intrinsics]
    lines += ["", depth_text]
    return "\n".join(lines) + "\n"


def _read_text(path: PathLike) -> str:
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(
            os.fspath(path), data[:error.start].count(b"\n") + 1,
            "UTF-8 text", f"byte 0x{data[error.start]:02x}",
            quote=False) from None


def read_cam_file(path: PathLike) -> Camera:
    """Reads an MVSNet `XXXXXXXX_cam.txt` file; see `parse_cam_text`.

    Args:
        path: the file.

    Returns:
        The Camera.

    Raises:
        FormatError: on malformed content (message names file and line).
    """
    return parse_cam_text(_read_text(path), os.fspath(path))


def write_cam_file(path: PathLike, camera: Camera) -> None:
    """Writes an MVSNet cam file; see `format_cam_text`."""
    files.write_bytes(path, format_cam_text(camera).encode("utf-8"))


Pairs = list[tuple[int, list[tuple[int, float]]]]


def _integer(text: str, source: str, line: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FormatError(source, line, expected, text) from None
    if value < 0:
        raise FormatError(source, line, expected, text)
    return value


def parse_pair_text(text: str, source_name: str) -> Pairs:
    """Parses the contents of a `pair.txt` view-selection file.

    Layout (ALGORITHMS.md 1.2): the view count N, then per view a line with
    the reference id and a line `K id_1 score_1 ... id_K score_K`. Blank
    lines are skipped.

    A header N that disagrees with the number of blocks present is not an
    error: the blocks present are read and a `FormatWarning` names the file
    and both counts (raw office_room_rcv/pair.txt says 40 and lists 35).
    The last block may be cut short by a truncated file (raw
    office_room_rcv/pair.txt ends after 8 of 40 entries, mid-number): its
    complete entries are kept, minus the last one when the file does not end
    with a newline (that number may be cut), with a `FormatWarning`. A short
    block anywhere else is an error. Entries are returned as written (a
    reference listed among its own sources stays there; choosing sources is
    the caller's business).

    Args:
        text: the file contents.
        source_name: the name used in messages.

    Returns:
        `[(ref_id, [(src_id, score), ...]), ...]` in file order.

    Raises:
        FormatError: empty file, non-integer count or id, a block whose K
            disagrees with its entries (except the truncated last block),
            a reference line with no source line, non-finite scores, or a
            reference listed twice.
    """
    lines = [(number, raw.strip()) for number, raw in
             enumerate(text.splitlines(), start=1) if raw.strip()]
    if not lines:
        raise FormatError(source_name, 1, "the number of views",
                          _EMPTY_FILE)
    header_line, header = lines[0]
    declared = _integer(header, source_name, header_line,
                        "the number of views (a non-negative integer)")
    pairs: Pairs = []
    seen: dict[int, int] = {}
    position = 1
    while position < len(lines):
        ref_line, ref_text = lines[position]
        ref_id = _integer(ref_text, source_name, ref_line,
                          "a reference view id (a non-negative integer)")
        if ref_id in seen:
            raise FormatError(
                source_name, ref_line,
                f"each reference once (view {ref_id} was already listed on "
                f"line {seen[ref_id]})", ref_text)
        seen[ref_id] = ref_line
        if position + 1 >= len(lines):
            raise FormatError(
                source_name, ref_line + 1,
                f"the source list 'K id score ...' of reference {ref_id}",
                _END_OF_FILE)
        list_line, list_text = lines[position + 1]
        tokens = list_text.split()
        expected_list = "'K id_1 score_1 ... id_K score_K'"
        count = _integer(tokens[0], source_name, list_line,
                         f"{expected_list} with K a non-negative integer")
        truncated = (position + 2 == len(lines)
                     and len(tokens) < 1 + 2 * count)
        if len(tokens) != 1 + 2 * count and not truncated:
            raise FormatError(
                source_name, list_line,
                f"{expected_list} with K = {count}, i.e. {1 + 2 * count} "
                f"numbers (found {len(tokens)})", list_text)
        present = (len(tokens) - 1) // 2
        if truncated:
            # The file was cut off inside its last source list. Keep the
            # complete entries; without a final newline the last number may
            # itself be cut short, so that entry is dropped as well.
            if not text.endswith("\n") and present and len(tokens) % 2:
                present -= 1
            warnings.warn(
                f"{source_name}, line {list_line}: the file ends inside the "
                f"source list of reference {ref_id} (K = {count}); keeping "
                f"the {present} complete entries", FormatWarning,
                stacklevel=3)
        sources = []
        for k in range(present):
            src_id = _integer(tokens[1 + 2 * k], source_name, list_line,
                              f"{expected_list}: id_{k + 1} a non-negative "
                              "integer")
            score = _numbers(tokens[2 + 2 * k], source_name, list_line,
                             f"{expected_list}: score_{k + 1} a number")[0]
            sources.append((src_id, score))
        pairs.append((ref_id, sources))
        position += 2
    if declared != len(pairs):
        warnings.warn(
            f"{source_name}: header says {declared} views but the file "
            f"lists {len(pairs)}; using the {len(pairs)} listed",
            FormatWarning, stacklevel=3)
    return pairs


def format_pair_text(pairs: Sequence[tuple[int, Sequence[tuple[int, float]]]]
                     ) -> str:
    """Formats view-selection pairs as `pair.txt` text (scores as repr)."""
    lines = [str(len(pairs))]
    for ref_id, sources in pairs:
        lines.append(str(int(ref_id)))
        entries = [str(len(sources))]
        for src_id, score in sources:
            entries += [str(int(src_id)), repr(float(score))]
        lines.append(" ".join(entries))
    return "\n".join(lines) + "\n"


def read_pair_file(path: PathLike) -> Pairs:
    """Reads a `pair.txt` file; see `parse_pair_text`."""
    return parse_pair_text(_read_text(path), os.fspath(path))


def write_pair_file(
    path: PathLike,
    pairs: Sequence[tuple[int, Sequence[tuple[int, float]]]],
) -> None:
    """Writes a `pair.txt` file; see `format_pair_text`."""
    files.write_bytes(path, format_pair_text(pairs).encode("utf-8"))


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
        raise FormatError(source_name, 1, "'PF' or 'Pf'", _EMPTY_FILE)
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
