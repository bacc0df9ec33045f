"""MVSNet cam files (ALGORITHMS.md 1.1): `Camera`, its depth-line forms
and depth range, and the parser, formatter, reader and writer."""

import dataclasses
import os

import numpy as np

from keras_mvs import files
from keras_mvs.data.formats.common import EMPTY_FILE
from keras_mvs.data.formats.common import END_OF_FILE
from keras_mvs.data.formats.common import FormatError
from keras_mvs.data.formats.common import PathLike
from keras_mvs.data.formats.common import parse_numbers
from keras_mvs.data.formats.common import read_text

# Number of planes the "min_max" depth line is divided into to give an
# interval; the MVSNet family's default plane count (ALGORITHMS.md 1.9).
MIN_MAX_NUM_PLANES = 192

# Tolerance on the rotation block of an extrinsic: max |R^T R - I| and
# |det R - 1|. Cam files in the wild print 6 to 17 significant digits, which
# leaves errors of about 1e-6; a scaled or sheared matrix is off by far more.
ROTATION_TOLERANCE = 1e-3

DEPTH_LINE_FORMS = (
    "min_interval", "min_interval_num", "min_interval_num_max", "min_max")

_DEPTH_LINE_EXPECTED = (
    "2 to 4 numbers 'DEPTH_MIN DEPTH_INTERVAL [NUM [MAX]]'")


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
            raise FormatError(source, last + 1, expected, END_OF_FILE)
        number, text = lines[start + r]
        values = parse_numbers(text, source, number, expected)
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
    values = parse_numbers(text, source, line, _DEPTH_LINE_EXPECTED)
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
                          EMPTY_FILE)
    position = 0

    def keyword(word: str) -> None:
        nonlocal position
        if position >= len(lines):
            raise FormatError(source_name, lines[-1][0] + 1,
                              f"the keyword '{word}'", END_OF_FILE)
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
                          END_OF_FILE)
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


def read_cam_file(path: PathLike) -> Camera:
    """Reads an MVSNet `XXXXXXXX_cam.txt` file; see `parse_cam_text`.

    Args:
        path: the file.

    Returns:
        The Camera.

    Raises:
        FormatError: on malformed content (message names file and line).
    """
    return parse_cam_text(read_text(path), os.fspath(path))


def write_cam_file(path: PathLike, camera: Camera) -> None:
    """Writes an MVSNet cam file; see `format_cam_text`."""
    files.write_bytes(path, format_cam_text(camera).encode("utf-8"))
