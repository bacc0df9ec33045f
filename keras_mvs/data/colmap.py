"""COLMAP sparse models as MVSNet scenes (ALGORITHMS.md 1.1).

A COLMAP model (cameras, images and points3D, binary `.bin` or text `.txt`,
read with pycolmap) plus its undistorted images becomes an MVSNet scene:

* Views: the registered images sorted by name; view id k is the k-th name
  (`image_names.txt` keeps the mapping).
* Intrinsics: K of the camera model. Only pinhole models are accepted:
  SIMPLE_PINHOLE, PINHOLE, and the radial / OpenCV models when all their
  distortion coefficients are zero; anything else must go through COLMAP's
  `image_undistorter` first. COLMAP puts the centre of the top-left pixel
  at (0.5, 0.5) and this project at (0, 0) (DESIGN.md 3), so
  `cx = cx_colmap - 0.5` and `cy = cy_colmap - 0.5`. MVSNet's
  `colmap2mvsnet.py` copies the principal point unchanged, half a pixel
  off.
* Pose: `cam_from_world` of the image (COLMAP's axes are OpenCV's).
* Depth range: the 1st and 99th percentiles of the camera-frame depths of
  the sparse points the image observes, multiplied by 0.75 and 1.25, the
  margins of `colmap2mvsnet.py` (sparse points miss the nearest and
  farthest surfaces). The cam file gets the 4-field line
  `depth_min (depth_max - depth_min) / 192 192 depth_max`, read with the
  `general_eval` rule (`Camera.depth_range`).
* Pairs: the MVSNet view-selection score, the sum over the sparse points
  two views share of G(theta), theta the triangulation angle in degrees,
  G = exp(-(theta - 5)^2 / (2 sigma^2)), sigma = 1 below 5 degrees and 10
  above; the 10 best sources are kept.

Example:
    >>> conversion = convert("project/dense/sparse", "project/dense/images")
    >>> write_mvsnet_folder(conversion, "project/mvsnet")

The module stays a little over ~500 lines as one job, the COLMAP model
format in both directions: `write_text_model` is the inverse of `convert`
(the tests check one against the other), and both share the pixel-centre
and camera-model conventions above.
"""

import dataclasses
import os
import pathlib
import shutil
import warnings
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
from PIL import Image

from keras_mvs import files
from keras_mvs.data import formats
from keras_mvs.data import view_selection

PathLike = formats.PathLike

# Depth-range margins of colmap2mvsnet.py.
NEAR_FACTOR = 0.75
FAR_FACTOR = 1.25
# Percentiles of the observed point depths that bound the range.
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0
# DEPTH_NUM written to the cam files (the MVSNet family's N0).
NUM_DEPTHS = 192
# Fewer observed points than this make the percentiles unreliable; such
# views are kept, with a warning.
MIN_POINTS_WARNING = 20

_MODEL_FILES = ("cameras", "images", "points3D")
# Pinhole models and the distortion parameters after fx, fy, cx, cy (or
# f, cx, cy); zero distortion makes the radial / OpenCV models pinholes.
_PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
_ZERO_DISTORTION_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV",
                           "FULL_OPENCV")
_MVSNET_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Files counted as images when looking for unregistered ones.
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class ColmapError(ValueError):
    """A COLMAP model that cannot be converted; the message says why."""


@dataclasses.dataclass
class ColmapConversion:
    """A COLMAP model in MVSNet terms; index k is view id k.

    Attributes:
        model_dir: the folder the model was read from.
        names: image names as in the model (relative to the images folder).
        image_paths: the image files.
        cameras: one `formats.Camera` per view (K for the image size).
        image_sizes: `(height, width)` per view.
        pairs: `[(ref, [(src, score), ...]), ...]`, best source first.
        num_points: sparse points observed per view.
        unregistered: images that are not views: in the model without a
            pose, or image files in the images folder the model does not
            hold (relative names, sorted).
    """

    model_dir: pathlib.Path
    names: List[str]
    image_paths: List[pathlib.Path]
    cameras: List[formats.Camera]
    image_sizes: List[Tuple[int, int]]
    pairs: formats.Pairs
    num_points: List[int]
    unregistered: List[str] = dataclasses.field(default_factory=list)


# Parameters per COLMAP camera model id (colmap/sensor/models.h).
_CAMERA_PARAMS = {0: 3, 1: 4, 2: 4, 3: 5, 4: 8, 5: 8, 6: 12, 7: 5, 8: 4,
                  9: 5, 10: 12, 11: 16}


def damaged_binary_file(model_dir: PathLike) -> Optional[str]:
    """Walks the binary model files and says which one is damaged, or None.

    COLMAP's layouts: `cameras.bin` is a uint64 count, then per camera
    int32 id, int32 model, uint64 width, uint64 height and the model's
    float64 parameters; `images.bin` a count, then per image int32 id, 7
    float64 pose values, int32 camera id, a NUL-terminated name, a uint64
    point count and 24 bytes per point; `points3D.bin` a count, then per
    point uint64 id, 3 float64, 3 uint8, float64 error, a uint64 track
    length and 8 bytes per track element.

    Returns:
        A message naming the file, the record and what was expected, or None
        when every binary file present is structurally complete.
    """
    import struct

    folder = pathlib.Path(model_dir)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        path = folder / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        size = len(data)

        def need(offset, count, what, index, path=path, size=size):
            if offset + count > size:
                raise EOFError(f"{path}: truncated: the file ends inside "
                               f"{what} {index} (byte {size}; expected at "
                               f"least {offset + count})")
            return offset + count

        try:
            need(0, 8, "the record count", 0)
            (count,) = struct.unpack_from("<Q", data, 0)
            offset = 8
            for index in range(count):
                if name == "cameras.bin":
                    need(offset, 24, "camera", index)
                    model = struct.unpack_from("<i", data, offset + 4)[0]
                    if model not in _CAMERA_PARAMS:
                        return (f"{path}: camera {index} has model id "
                                f"{model}; expected one of COLMAP's 0-11")
                    offset = need(offset, 24 + 8 * _CAMERA_PARAMS[model],
                                  "camera", index)
                elif name == "images.bin":
                    offset = need(offset, 64, "image", index)
                    end = data.find(b"\0", offset)
                    if end < 0:
                        raise EOFError(f"{path}: truncated: image {index}'s "
                                       "name has no end")
                    offset = need(end + 1, 8, "image", index)
                    (points,) = struct.unpack_from("<Q", data, end + 1)
                    offset = need(offset, 24 * points, "image", index)
                else:
                    need(offset, 51, "point", index)
                    (track,) = struct.unpack_from("<Q", data, offset + 43)
                    offset = need(offset, 51 + 8 * track, "point", index)
            if offset != size:
                return (f"{path}: {size - offset} bytes after the {count} "
                        "records the header announces; expected the file to "
                        "end there")
        except EOFError as error:
            return str(error)
    return None


def _has_model(folder: pathlib.Path) -> bool:
    return all(
        any((folder / f"{name}{suffix}").is_file()
            for suffix in (".bin", ".txt"))
        for name in _MODEL_FILES)


def find_model_dir(path: PathLike) -> Optional[pathlib.Path]:
    """The folder holding the model files, or None: `path` itself,
    `path/sparse` (image_undistorter output), `path/sparse/0` or `path/0`
    (the mapper's first model)."""
    path = pathlib.Path(path)
    for candidate in (path, path / "sparse", path / "sparse" / "0",
                      path / "0"):
        if candidate.is_dir() and _has_model(candidate):
            return candidate
    return None


def find_images_dir(model_dir: pathlib.Path) -> Optional[pathlib.Path]:
    """The conventional images folder of a model: `images/` beside the
    model folder, or beside its parent (`dense/images` for `dense/sparse`,
    `project/images` for `project/sparse/0`)."""
    for parent in (model_dir, model_dir.parent, model_dir.parent.parent):
        if (parent / "images").is_dir():
            return parent / "images"
    return None


def pinhole_intrinsics(camera) -> np.ndarray:
    """K of a COLMAP camera in this project's pixel convention.

    Args:
        camera: a `pycolmap.Camera`.

    Returns:
        `(3, 3)` float64 K with the principal point moved by -0.5 pixel
        (COLMAP's top-left pixel centre is (0.5, 0.5), ours (0, 0)).

    Raises:
        ColmapError: a model with non-zero distortion or a non-pinhole
            projection.
    """
    model = camera.model_name
    params = np.asarray(camera.params, np.float64)
    if model == "SIMPLE_PINHOLE" or model in ("SIMPLE_RADIAL", "RADIAL"):
        fx = fy = params[0]
        cx, cy = params[1], params[2]
        distortion = params[3:]
    elif model == "PINHOLE" or model in ("OPENCV", "FULL_OPENCV"):
        fx, fy, cx, cy = params[:4]
        distortion = params[4:]
    else:
        distortion = None
    if distortion is None or (model not in _PINHOLE_MODELS
                              and np.any(distortion != 0)):
        raise ColmapError(
            f"COLMAP camera {camera.camera_id} uses the {model} model "
            f"with parameters {params.tolist()}; expected an undistorted "
            f"pinhole camera ({', '.join(_PINHOLE_MODELS)}, or "
            f"{', '.join(_ZERO_DISTORTION_MODELS)} with zero distortion). "
            "Run COLMAP's image_undistorter (`colmap image_undistorter "
            "--image_path IMAGES --input_path SPARSE --output_path DENSE`) "
            "and use DENSE/sparse with DENSE/images")
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5],
                     [0.0, 0.0, 1.0]])


def unregistered_images(reconstruction,
                        images_dir: pathlib.Path) -> List[str]:
    """Images a model does not place: its images without a pose, and
    image files under `images_dir` it does not name.

    Args:
        reconstruction: a `pycolmap.Reconstruction`.
        images_dir: the images folder the model's names are relative to.

    Returns:
        Sorted names relative to `images_dir` (POSIX separators).
    """
    posed = {image.name for image in reconstruction.images.values()
             if image.has_pose}
    unposed = {image.name for image in reconstruction.images.values()
               if not image.has_pose}
    image_files = {
        path.relative_to(images_dir).as_posix()
        for path in images_dir.rglob("*")
        if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES}
    return sorted((unposed | image_files) - posed)


def depth_range(depths: np.ndarray, near_factor: float = NEAR_FACTOR,
                far_factor: float = FAR_FACTOR) -> Tuple[float, float]:
    """`(near_factor * P1, far_factor * P99)` of positive point depths.

    Raises:
        ColmapError: no positive depth.
    """
    depths = depths[depths > 0]
    if depths.size == 0:
        raise ColmapError("no sparse point lies in front of the camera")
    low, high = np.percentile(depths, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(low * near_factor), float(high * far_factor)


def convert(
    model_dir: PathLike,
    images_dir: Optional[PathLike] = None,
    *,
    near_factor: float = NEAR_FACTOR,
    far_factor: float = FAR_FACTOR,
    num_sources: int = view_selection.NUM_SOURCES,
) -> ColmapConversion:
    """Reads a COLMAP model and converts it to MVSNet cameras and pairs.

    Args:
        model_dir: the model folder (or a folder `find_model_dir` resolves).
        images_dir: the undistorted images; default `find_images_dir`.
        near_factor, far_factor: multipliers of the 1st / 99th depth
            percentile.
        num_sources: sources kept per view in the pairs.

    Returns:
        The ColmapConversion.

    Raises:
        ColmapError: no model, no images folder, a missing or wrongly sized
            image, a distorted camera model, or fewer than 2 usable views.
    """
    import pycolmap

    if not 0 < near_factor <= 1 <= far_factor:
        raise ValueError(
            f"convert: expected 0 < near_factor <= 1 <= far_factor; "
            f"received {near_factor}, {far_factor}")
    given = pathlib.Path(model_dir)
    found = find_model_dir(given)
    if found is None:
        raise ColmapError(
            f"{given}: no COLMAP model (cameras, images and points3D as "
            ".bin or .txt) in the folder, its sparse/ or sparse/0/")
    model_dir = found
    if images_dir is None:
        images_dir = find_images_dir(model_dir)
        if images_dir is None:
            raise ColmapError(
                f"{model_dir}: no images/ folder beside the model; pass the "
                "undistorted images folder (--images)")
    images_dir = pathlib.Path(images_dir)
    if not images_dir.is_dir():
        raise ColmapError(f"images folder {images_dir} does not exist")
    # pycolmap reads some truncated files without a word, and its errors
    # ("unordered_map::at") name no file: check the layout first.
    culprit = damaged_binary_file(model_dir)
    if culprit:
        raise ColmapError(culprit)
    try:
        reconstruction = pycolmap.Reconstruction(str(model_dir))
    except Exception as error:  # pycolmap raises plain RuntimeErrors
        raise ColmapError(
            f"{model_dir}: pycolmap cannot read the model ({error})") from None

    images = sorted((image for image in reconstruction.images.values()
                     if image.has_pose), key=lambda image: image.name)
    if len(images) < 2:
        raise ColmapError(
            f"{model_dir}: {len(images)} registered image(s); MVS needs at "
            "least 2")
    missing = [image.name for image in images
               if not (images_dir / image.name).is_file()]
    if missing:
        raise ColmapError(
            f"{images_dir}: {len(missing)} of the model's {len(images)} "
            f"images are missing, e.g. {missing[:3]}; expected the folder "
            "the model's image names are relative to")

    unregistered = unregistered_images(reconstruction, images_dir)
    if unregistered:
        warnings.warn(
            f"{model_dir}: {len(unregistered)} image(s) are not registered "
            f"in the model and get no view: {', '.join(unregistered)}",
            UserWarning, stacklevel=2)

    index_of = {image.image_id: k for k, image in enumerate(images)}
    point_ids = list(reconstruction.points3D.keys())
    points = np.array([reconstruction.points3D[p].xyz for p in point_ids],
                      np.float64).reshape(-1, 3)
    point_index, view_index = [], []
    for row, point_id in enumerate(point_ids):
        for element in reconstruction.points3D[point_id].track.elements:
            view = index_of.get(element.image_id)
            if view is not None:
                point_index.append(row)
                view_index.append(view)
    point_index = np.array(point_index, np.int64)
    view_index = np.array(view_index, np.int64)

    cameras, sizes, seen_points, centres, poses = [], [], [], [], []
    intrinsics_cache = {}
    for k, image in enumerate(images):
        camera = reconstruction.cameras[image.camera_id]
        if image.camera_id not in intrinsics_cache:
            intrinsics_cache[image.camera_id] = pinhole_intrinsics(camera)
        path = images_dir / image.name
        with Image.open(path) as handle:
            width, height = handle.size
        if (width, height) != (camera.width, camera.height):
            raise ColmapError(
                f"{path}: the image is {width}x{height} but COLMAP camera "
                f"{image.camera_id} is {camera.width}x{camera.height}; "
                "expected the images the model was made with (for an "
                "undistorted model, image_undistorter's images/ folder)")
        pose = np.eye(4)
        pose[:3, :4] = image.cam_from_world().matrix()
        poses.append(pose)
        centres.append(-pose[:3, :3].T @ pose[:3, 3])
        sizes.append((height, width))
        seen_points.append(np.unique(point_index[view_index == k]))

    num_points = [int(seen.size) for seen in seen_points]
    low_views = [k for k, n in enumerate(num_points) if n < MIN_POINTS_WARNING]
    for k, image in enumerate(images):
        depths = points[seen_points[k]] @ poses[k][2, :3] + poses[k][2, 3]
        try:
            near, far = depth_range(depths, near_factor, far_factor)
        except ColmapError as error:
            raise ColmapError(
                f"{model_dir}, image {image.name}: {error}; cannot estimate "
                "its depth range") from None
        cameras.append(formats.Camera(
            intrinsics=intrinsics_cache[image.camera_id],
            cam_from_world=poses[k], depth_min=near,
            depth_interval=(far - near) / NUM_DEPTHS, num_depths=NUM_DEPTHS,
            depth_max=far))
    if low_views:
        warnings.warn(
            f"{model_dir}: images with fewer than {MIN_POINTS_WARNING} sparse "
            "points have an unreliable depth range: "
            f"{[images[k].name for k in low_views]}", UserWarning,
            stacklevel=2)
    scores = view_selection.view_selection_scores(
        points, point_index, view_index, np.array(centres))
    return ColmapConversion(
        model_dir=model_dir, names=[image.name for image in images],
        image_paths=[images_dir / image.name for image in images],
        cameras=cameras, image_sizes=sizes,
        pairs=view_selection.select_pairs(
            scores, num_sources, positive_only=True), num_points=num_points,
        unregistered=unregistered)


def _place_image(source: pathlib.Path, target_stem: pathlib.Path,
                 link: bool) -> None:
    """Links or copies a JPEG / PNG; re-encodes any other format as PNG."""
    suffix = source.suffix.lower()
    if suffix in _MVSNET_IMAGE_SUFFIXES:
        target = target_stem.with_suffix(suffix)
        if link:
            try:
                os.symlink(source.resolve(), target)
                return
            except OSError:
                pass  # file systems without symlinks: copy instead
        shutil.copyfile(source, target)
        return
    with Image.open(source) as image:
        files.write_png(target_stem.with_suffix(".png"), image.convert("RGB"))


def write_mvsnet_folder(
    conversion: ColmapConversion, out_dir: PathLike, *,
    link_images: bool = False, overwrite: bool = False,
) -> pathlib.Path:
    """Writes a conversion as an MVSNet scene folder.

    Files: `images/{id:08d}.jpg|png` (copies, or symlinks with
    `link_images`; other formats re-encoded as PNG), `cams/{id:08d}_cam.txt`,
    `pair.txt` and `image_names.txt` (`id name` per line). The folder is
    assembled under a temporary sibling name and renamed when complete.

    Args:
        conversion: the output of `convert`.
        out_dir: folder to create.
        link_images: symlink the images instead of copying them.
        overwrite: replace an existing folder; otherwise an existing
            non-empty folder is an error.

    Returns:
        The folder.

    Raises:
        FileExistsError: `out_dir` is not empty and `overwrite` is False.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"write_mvsnet_folder: {out_dir} exists and is not empty; pass "
            "overwrite=True to replace it")
    with files.staged_directory(out_dir) as staging:
        (staging / "images").mkdir()
        (staging / "cams").mkdir()
        for view, (path, camera) in enumerate(zip(conversion.image_paths,
                                                  conversion.cameras)):
            _place_image(path, staging / "images" / f"{view:08d}",
                         link_images)
            formats.write_cam_file(staging / "cams" / f"{view:08d}_cam.txt",
                                   camera)
        formats.write_pair_file(staging / "pair.txt", conversion.pairs)
        files.write_text(staging / "image_names.txt", "".join(
            f"{view} {name}\n" for view, name in enumerate(conversion.names)))
    return out_dir


def write_text_model(
    model_dir: PathLike, names: Sequence[str],
    image_sizes: Sequence[Tuple[int, int]], intrinsics: np.ndarray,
    cam_from_world: np.ndarray, points: np.ndarray, visible: np.ndarray,
    ids: Optional[Sequence[Tuple[int, int]]] = None,
) -> pathlib.Path:
    """Writes known cameras and points as a COLMAP text model.

    The inverse of `convert` for pinhole cameras: one PINHOLE camera per
    image (principal point moved by +0.5 pixel into COLMAP's convention),
    image k with id k + 1 (or `ids[k]`), and each point observed where it
    projects in the images marked in `visible`. Useful to open a scene in
    the COLMAP GUI, to test the conversion against exact cameras, and to
    triangulate with known cameras.

    Args:
        model_dir: folder to write cameras.txt, images.txt, points3D.txt to
            (created if needed).
        names: image file names, one per view.
        image_sizes: `(height, width)` per view.
        intrinsics: `[V, 3, 3]` K in this project's convention.
        cam_from_world: `[V, 4, 4]` world-to-camera transforms.
        points: `[N, 3]` world points.
        visible: `[N, V]` bool, which views observe each point; points seen
            by no view are left out.
        ids: optional `(image_id, camera_id)` per view, e.g. those a COLMAP
            database gave the images (default `(k + 1, k + 1)` for view k).

    Returns:
        The model folder.
    """
    from scipy.spatial import transform

    model_dir = pathlib.Path(model_dir)
    num_views = len(names)
    intrinsics = np.asarray(intrinsics, np.float64)
    cam_from_world = np.asarray(cam_from_world, np.float64)
    points = np.asarray(points, np.float64)
    visible = np.asarray(visible, bool)
    if (intrinsics.shape != (num_views, 3, 3)
            or cam_from_world.shape != (num_views, 4, 4)
            or len(image_sizes) != num_views
            or points.ndim != 2 or points.shape[1] != 3
            or visible.shape != (points.shape[0], num_views)):
        raise ValueError(
            f"write_text_model: expected {num_views} sizes, intrinsics "
            f"[{num_views}, 3, 3], cam_from_world [{num_views}, 4, 4], points "
            f"[N, 3] and visible [N, {num_views}]; received "
            f"{len(image_sizes)}, {intrinsics.shape}, {cam_from_world.shape}, "
            f"{points.shape}, {visible.shape}")
    ids = ([(view + 1, view + 1) for view in range(num_views)]
           if ids is None else [(int(i), int(c)) for i, c in ids])
    if len(ids) != num_views:
        raise ValueError(f"write_text_model: expected {num_views} ids, "
                         f"received {len(ids)}")
    model_dir.mkdir(parents=True, exist_ok=True)
    keep = np.flatnonzero(visible.any(axis=1))
    tracks = {int(p): [] for p in keep}
    camera_lines, image_lines = [], []
    for view in range(num_views):
        k, pose = intrinsics[view], cam_from_world[view]
        height, width = image_sizes[view]
        params = (k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5)
        image_id, camera_id = ids[view]
        camera_lines.append(f"{camera_id} PINHOLE {width} {height} "
                            + " ".join(repr(float(p)) for p in params))
        x, y, z, w = transform.Rotation.from_matrix(pose[:3, :3]).as_quat()
        numbers = " ".join(repr(float(n)) for n in (w, x, y, z, *pose[:3, 3]))
        image_lines.append(
            f"{image_id} {numbers} {camera_id} {names[view]}")
        observed = keep[visible[keep, view]]
        camera_points = points[observed] @ pose[:3, :3].T + pose[:3, 3]
        pixels = camera_points @ k.T
        pixels = pixels[:, :2] / pixels[:, 2:] + 0.5
        entries = []
        for index, (u, v) in enumerate(pixels):
            tracks[int(observed[index])].append(f"{image_id} {index}")
            entries.append(f"{float(u)!r} {float(v)!r} {observed[index] + 1}")
        image_lines.append(" ".join(entries))
    point_lines = [
        f"{p + 1} {' '.join(repr(float(c)) for c in points[p])} "
        f"128 128 128 0 {' '.join(tracks[p])}" for p in keep]
    for name, lines in (("cameras", camera_lines), ("images", image_lines),
                        ("points3D", point_lines)):
        files.write_text(model_dir / f"{name}.txt", "\n".join(lines) + "\n")
    return model_dir
