"""Writing files so that a reader never sees half of one: the one place for
atomic writes, PNG and PLY files, JSON summaries and whole output folders.

Every writer here goes through a temporary sibling and a rename, and gives
the result the mode any other new file gets (0666 minus the umask, usually
0644): `tempfile` creates owner-only files, which a rename would keep.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import shutil
import tempfile
from typing import IO
from typing import Iterator
from typing import Optional
from typing import Union

import numpy as np
import plyfile
from PIL import Image

PathLike = Union[str, os.PathLike]

# Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
FOLDER_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside `path` with the same suffixes (so
    libraries that choose a format by name, like Keras's `save` and
    `save_weights` with `.weights.h5`, still do); when the block ends
    without error the file is renamed to `path` with the usual mode,
    otherwise it is removed and `path` is left as it was."""
    path = pathlib.Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[:len(path.name) - len(suffix)] if suffix else path.name
    handle, temporary = tempfile.mkstemp(
        prefix=f".{stem}.tmp-", suffix=suffix,
        dir=path.parent if str(path.parent) else ".")
    os.close(handle)
    temporary = pathlib.Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """`open(path, mode)` through `atomic_path`: the stream writes a
    temporary sibling that becomes `path` only when the block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a write mode; received {mode!r}.")
    with atomic_path(path) as temporary:
        with open(temporary, mode) as stream:
            yield stream


def write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as stream:
        stream.write(data)


def write_text(path: PathLike, text: str) -> None:
    with atomic_write(path, "w") as stream:
        stream.write(text)


def json_ready(value):
    """`value` with NaN and infinities (invalid JSON) replaced by None and
    numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def write_json(path: PathLike, data) -> None:
    """Indented JSON, NaN written as null, written atomically."""
    write_text(path, json.dumps(json_ready(data), indent=2) + "\n")


def write_png(path: PathLike, image: np.ndarray, **options) -> None:
    """Writes a uint8 `[H, W]` or `[H, W, 3]` array (or a PIL image) as PNG.

    `options` go to PIL's PNG writer (`optimize`, `compress_level`).

    Raises:
        ValueError: for another dtype or shape.
    """
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8 or not (
                array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
            raise ValueError(
                f"write_png({os.fspath(path)!r}) needs uint8 [H, W, 3] or "
                f"[H, W]; received {array.dtype} {array.shape}.")
        image = Image.fromarray(array)
    with atomic_write(path, "wb") as stream:
        image.save(stream, format="PNG", **options)


def write_ply(
    path: PathLike,
    points: np.ndarray,
    colors: Optional[np.ndarray] = None,
    normals: Optional[np.ndarray] = None,
) -> None:
    """Writes a binary little-endian PLY point cloud.

    Args:
        points: `[N, 3]` positions (stored as float32 x, y, z).
        colors: optional `[N, 3]` uint8 (red, green, blue).
        normals: optional `[N, 3]` (stored as float32 nx, ny, nz).

    Raises:
        ValueError: for shapes that do not match `points`.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"write_ply({os.fspath(path)!r}): points must be "
                         f"[N, 3]; received {points.shape}.")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = [points[:, 0], points[:, 1], points[:, 2]]
    for name, values, keys, dtype in (
            ("colors", colors, ("red", "green", "blue"), "u1"),
            ("normals", normals, ("nx", "ny", "nz"), "<f4")):
        if values is None:
            continue
        values = np.asarray(values)
        if name == "colors" and values.dtype != np.uint8:
            raise ValueError(
                f"write_ply({os.fspath(path)!r}): colors must be uint8; "
                f"received {values.dtype}.")
        if values.shape != points.shape:
            raise ValueError(
                f"write_ply({os.fspath(path)!r}): {name} must be "
                f"{points.shape}; received {values.shape}.")
        fields += [(key, dtype) for key in keys]
        columns += [values[:, axis] for axis in range(3)]
    vertices = np.empty(points.shape[0], dtype=fields)
    for (name, _), column in zip(fields, columns, strict=True):
        vertices[name] = column
    element = plyfile.PlyElement.describe(vertices, "vertex")
    with atomic_write(path, "wb") as stream:
        plyfile.PlyData([element], text=False, byte_order="<").write(stream)


def read_ply(
    path: PathLike,
) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Reads the `vertex` element of a PLY file (ASCII or binary).

    Returns:
        `(points [N, 3] float32, colors [N, 3] uint8 or None,
        normals [N, 3] float32 or None)`; colours and normals are None when
        the file lacks red/green/blue or nx/ny/nz.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not a PLY or has no vertex x, y, z.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"PLY file not found: {path}")
    try:
        data = plyfile.PlyData.read(path)
    except Exception as error:
        raise ValueError(f"{path}: not a readable PLY file ({error}).") from (
            error)
    if "vertex" not in data:
        raise ValueError(f"{path}: no 'vertex' element.")
    vertex = data["vertex"]
    names = set(vertex.data.dtype.names)

    def stack(keys: tuple, dtype: type) -> Optional[np.ndarray]:
        if not set(keys) <= names:
            return None
        return np.stack([np.asarray(vertex[key]) for key in keys],
                        axis=-1).astype(dtype)

    points = stack(("x", "y", "z"), np.float32)
    if points is None:
        raise ValueError(
            f"{path}: the vertex element needs x, y, z properties; found "
            f"{sorted(names)}.")
    return (points, stack(("red", "green", "blue"), np.uint8),
            stack(("nx", "ny", "nz"), np.float32))


def staging_directory(out_dir: PathLike) -> pathlib.Path:
    """A new empty folder beside `out_dir` to write a whole output into
    before `publish_directory` moves it into place."""
    out_dir = pathlib.Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-",
                                         dir=out_dir.parent))


@contextlib.contextmanager
def staged_directory(out_dir: PathLike) -> Iterator[pathlib.Path]:
    """Yields an empty staging folder beside `out_dir`; when the block ends
    without error the folder is published as `out_dir`
    (`publish_directory`), otherwise it is removed and `out_dir` is left
    as it was."""
    staging = staging_directory(out_dir)
    try:
        yield staging
        publish_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_directory(staging: PathLike, out_dir: PathLike) -> None:
    """Moves a completely written `staging` folder into place as `out_dir`.

    An existing `out_dir` is first renamed aside and removed afterwards, so
    `out_dir` is always either absent or a complete folder, never a
    half-written one. `staging` must be on the same file system (make it
    with `staging_directory`).
    """
    staging, out_dir = pathlib.Path(staging), pathlib.Path(out_dir)
    staging.chmod(FOLDER_MODE)  # mkdtemp makes owner-only folders
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    retired = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-",
                                            dir=out_dir.parent))
    retired.rmdir()
    out_dir.rename(retired)
    staging.rename(out_dir)
    shutil.rmtree(retired)
