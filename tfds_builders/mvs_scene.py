"""What the keras-mvs TFDS builders share: the scene features and the reading
of one scene stored in an MVSNet layout.

One TFDS example is one scene (DESIGN.md section 7): every view's image is
stored once, with its camera, its depth range and its row of the view
selection table. View tuples (a reference plus sources) are assembled later
in `tf.data`, so a training pipeline can draw sources from the full candidate
list without the images being duplicated on disk.

Files are read through `epath` (never `os` or `open`): TFDS'
`DatasetBuilderTestCase` replaces both in a builder module, and `epath` also
reaches GCS and other file systems.
"""

import dataclasses
import io
from collections.abc import Callable
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from keras_mvs.data import formats

# Width of the view-selection table: pair.txt files list the top 10 sources
# of each reference (ALGORITHMS.md 1.2). Longer lists are cut to this length.
MAX_SOURCES = 10

# Stored mask values above this count as valid. DTU's `depth_visual_*.png`
# masks are thresholded this way by the reference loaders (ALGORITHMS.md 1.4
# step 1); masks we write ourselves use 0 and 255.
MASK_THRESHOLD = 10

_IMAGE_FORMATS = ("PNG", "JPEG")


class ManualDataError(FileNotFoundError):
    """A manual-download directory that lacks a file the builder needs."""


def require(path: epath.Path, what: str, instructions: str) -> epath.Path:
    """Returns `path` if it exists, else raises with the download steps.

    Args:
        path: the file or folder the builder needs.
        what: a few words naming it for the message ("the pair file").
        instructions: the builder's MANUAL_DOWNLOAD_INSTRUCTIONS.

    Raises:
        ManualDataError: `path` does not exist.
    """
    if not path.exists():
        raise ManualDataError(
            f"Incomplete manual directory: {what} is missing: {path}\n\n"
            f"{instructions}")
    return path


@dataclasses.dataclass(frozen=True)
class ViewFiles:
    """The files of one view.

    Attributes:
        view_id: the id used in the file names and in pair.txt.
        image: the PNG or JPEG image.
        cam: the MVSNet cam file.
        depth: the PFM depth map, or None when the set has no depth.
        mask: the PNG validity mask, or None.
    """

    view_id: int
    image: epath.Path
    cam: epath.Path
    depth: epath.Path | None = None
    mask: epath.Path | None = None


@dataclasses.dataclass(frozen=True)
class ScenePlan:
    """One example to write: a scene's files, checked to exist.

    Attributes:
        key: the unique TFDS example key.
        scene: the scene name stored in the example ("scan1", "Family").
        pair_file: the scene's pair.txt.
        views: the views, in storage order.
        extra: additional features of the example (e.g. DTU's `light`).
    """

    key: str
    scene: str
    pair_file: epath.Path
    views: tuple[ViewFiles, ...]
    extra: dict = dataclasses.field(default_factory=dict)


def read_pairs(pair_file: epath.Path) -> formats.Pairs:
    """Reads and parses a pair.txt file through epath."""
    return formats.parse_pair_text(pair_file.read_text(), str(pair_file))


def view_order(pairs: formats.Pairs) -> list[int]:
    """Returns the view ids a scene stores, in storage order.

    The references of pair.txt come first, in file order; ids that occur
    only as sources follow in increasing order, so that every view the table
    points at is stored.

    Args:
        pairs: the parsed pair file.

    Returns:
        The view ids.
    """
    references = [ref for ref, _ in pairs]
    known = set(references)
    sources_only = sorted(
        {src for _, sources in pairs for src, _ in sources} - known)
    return references + sources_only


def pair_table(
    pairs: formats.Pairs, view_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Turns pair.txt entries into fixed-width index and score tables.

    Args:
        pairs: the parsed pair file.
        view_ids: the stored views' ids; row v of the tables belongs to
            `view_ids[v]` and entries are positions in this list.

    Returns:
        `(pairs [N, MAX_SOURCES] int32, scores [N, MAX_SOURCES] float32)`:
        the first MAX_SOURCES sources of each view in file order, as indices
        into the stored views, padded with -1 (score 0). A view without a
        pair.txt entry has an all -1 row.
    """
    index = {view_id: i for i, view_id in enumerate(view_ids)}
    table = np.full((len(view_ids), MAX_SOURCES), -1, np.int32)
    scores = np.zeros((len(view_ids), MAX_SOURCES), np.float32)
    for ref, sources in pairs:
        row = index[ref]
        for k, (src, score) in enumerate(sources[:MAX_SOURCES]):
            table[row, k] = index[src]
            scores[row, k] = score
    return table, scores


def _image_size(data: bytes, path: epath.Path) -> tuple[int, int]:
    """Returns (height, width) from an encoded image's header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, (width, height) = image.format, image.size
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path}: expected a PNG or JPEG image ({error})") from None
    if image_format not in _IMAGE_FORMATS:
        raise ValueError(
            f"{path}: expected a PNG or JPEG image, found {image_format}")
    return height, width


def _read_mask(path: epath.Path) -> np.ndarray:
    """Reads a mask PNG as `[H, W, 1]` uint8 (colour masks go to luma)."""
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            gray = image if image.mode == "L" else image.convert("L")
            return np.asarray(gray, np.uint8)[:, :, None]
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: expected a PNG mask ({error})") from None


def _same_shape(shapes: list[tuple[int, ...]], paths: list[epath.Path],
                what: str) -> None:
    """Raises when the arrays of one scene disagree in shape."""
    for shape, path in zip(shapes, paths):
        if shape != shapes[0]:
            raise ValueError(
                f"{path}: expected the {what} shape {shapes[0]} of "
                f"{paths[0]}, found {shape}")


DepthRangeFn = Callable[[formats.Camera], tuple[float, float]]


def scene_example(plan: ScenePlan, depth_range: DepthRangeFn) -> dict:
    """Reads one scene and returns its TFDS example.

    Images are stored as the encoded bytes found on disk (no re-encoding);
    depth maps as float32; masks as uint8.

    Args:
        plan: the scene's files.
        depth_range: maps a view's Camera to its (first, last) depth
            hypothesis, following the dataset's reference loader.

    Returns:
        A dict matching `scene_features`.

    Raises:
        ValueError: an unreadable file, or views of one scene that disagree
            in image, depth or mask size (the message names the file).
    """
    pairs = read_pairs(plan.pair_file)
    view_ids = [view.view_id for view in plan.views]
    table, scores = pair_table(pairs, view_ids)
    images = [view.image.read_bytes() for view in plan.views]
    image_paths = [view.image for view in plan.views]
    _same_shape([_image_size(data, path)
                 for data, path in zip(images, image_paths)],
                image_paths, "image")
    cameras = [formats.parse_cam_text(view.cam.read_text(), str(view.cam))
               for view in plan.views]
    example = {
        "scene": plan.scene,
        "view_ids": np.asarray(view_ids, np.int32),
        "images": images,
        "intrinsics": np.stack(
            [camera.intrinsics for camera in cameras]).astype(np.float32),
        "cam_from_world": np.stack(
            [camera.cam_from_world for camera in cameras]).astype(np.float32),
        "depth_range": np.asarray(
            [depth_range(camera) for camera in cameras], np.float32),
        "pairs": table,
        "scores": scores,
        **plan.extra,
    }
    depth_paths = [view.depth for view in plan.views]
    if all(path is not None for path in depth_paths):
        depths = [formats.parse_pfm_bytes(path.read_bytes(), str(path))
                  for path in depth_paths]
        _same_shape([d.shape for d in depths], depth_paths, "depth map")
        if depths[0].ndim != 2:
            raise ValueError(
                f"{depth_paths[0]}: expected a 1-channel (Pf) depth map, "
                f"found shape {depths[0].shape}")
        example["depths"] = np.stack(depths)
        mask_paths = [view.mask for view in plan.views]
        if all(path is not None for path in mask_paths):
            masks = [_read_mask(path) for path in mask_paths]
            _same_shape([depths[0].shape] + [m.shape[:2] for m in masks],
                        [depth_paths[0]] + mask_paths,
                        "mask (the depth map's size)")
            example["masks"] = masks
    return example


def scene_features(
    *,
    depth_units: str,
    intrinsics_doc: str,
    with_depths: bool,
    with_masks: bool,
    extra: dict | None = None,
) -> tfds.features.FeaturesDict:
    """The features of one scene example (N views).

    Args:
        depth_units: the unit of depths and translations ("mm").
        intrinsics_doc: which image grid the stored K belongs to.
        with_depths: whether the set has ground-truth depth maps.
        with_masks: whether it has validity masks.
        extra: additional named features.

    Returns:
        The FeaturesDict.
    """
    features = {
        "scene": tfds.features.Text(doc="Scene name, e.g. 'scan1'."),
        "view_ids": tfds.features.Tensor(
            shape=(None,), dtype=np.int32,
            doc="[N] int32: each view's id in the file names and pair.txt."),
        "images": tfds.features.Sequence(
            tfds.features.Image(shape=(None, None, 3)),
            doc="N x [H, W, 3] uint8 RGB, the original encoded files."),
        "intrinsics": tfds.features.Tensor(
            shape=(None, 3, 3), dtype=np.float32,
            doc=f"[N, 3, 3] float32 K in pixels: {intrinsics_doc}"),
        "cam_from_world": tfds.features.Tensor(
            shape=(None, 4, 4), dtype=np.float32,
            doc=("[N, 4, 4] float32 world-to-camera transform, OpenCV axes, "
                 f"translation in {depth_units}.")),
        "depth_range": tfds.features.Tensor(
            shape=(None, 2), dtype=np.float32,
            doc=(f"[N, 2] float32 first and last initial depth hypothesis "
                 f"of each view, in {depth_units}.")),
        "pairs": tfds.features.Tensor(
            shape=(None, MAX_SOURCES), dtype=np.int32,
            doc=(f"[N, {MAX_SOURCES}] int32 candidate sources of each view "
                 "as indices into the views, best first, -1 padded.")),
        "scores": tfds.features.Tensor(
            shape=(None, MAX_SOURCES), dtype=np.float32,
            doc=(f"[N, {MAX_SOURCES}] float32 pair.txt view-selection score "
                 "of each candidate (0 where padded).")),
    }
    if with_depths:
        features["depths"] = tfds.features.Tensor(
            shape=(None, None, None), dtype=np.float32,
            encoding=tfds.features.Encoding.ZLIB,
            doc=(f"[N, Hd, Wd] float32 ground-truth depth in {depth_units} "
                 "(camera z), 0 where unknown; ZLIB-compressed."))
    if with_masks:
        features["masks"] = tfds.features.Sequence(
            tfds.features.Image(shape=(None, None, 1)),
            doc=(f"N x [Hd, Wd, 1] uint8 validity mask on the depth grid; "
                 f"valid where > {MASK_THRESHOLD}."))
    features.update(extra or {})
    return tfds.features.FeaturesDict(features)
