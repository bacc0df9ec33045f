"""The `tf.data` input pipeline: scene dicts to training and evaluation batches.

Everything here works on *scene dicts*, one element per scene, each image
stored once (DESIGN.md 7); view tuples are assembled here, so the scene-level
contrastive branch can draw sources from a reference's full candidate list.
`scene_dicts_from_folders` produces scene dicts from MVSNet-layout folders;
the TFDS adapter produces the same structure.

Scene dict (N views of one scene, all H x W):

* `"images"`: `[N, H, W, 3]` uint8 RGB.
* `"intrinsics"`: `[N, 3, 3]` float32, pixels of these H x W images.
* `"cam_from_world"`: `[N, 4, 4]` float32 world-to-camera (OpenCV axes).
* `"depth_range"`: `[N, 2]` float32 (first, last) hypothesis depth of each
  view as a reference, in the cam files' units.
* `"pairs"`: `[N, M]` int32 (M is normally 10): row i lists view i's
  candidate source views, best first, as *indices along the N axis*, padded
  with -1. Entries out of range, equal to i or repeated are ignored.
* optional `"depths"`: `[N, H, W]` float32 ground-truth depth (0 = unknown).
* optional `"masks"`: `[N, H, W]` float32 in {0, 1}.
* optional `"name"`: `[]` string, used in error messages (default
  "scene #<position in the dataset>").
* optional `"view_ids"`: `[N]` int32, the views' ids in the source data
  (default 0..N-1); batches report `ref_id` in these ids.
* optional `"problems"`: `[N]` string, empty for a usable view, otherwise
  what is wrong with it ("view 7: image file is missing"). Readers fill it
  where they know file names; the pipeline adds its own checks.

View tuples (ALGORITHMS.md 1.2 and 4.1): every view with at least one valid
candidate is a reference. The regular tuple is the reference followed by the
first V - 1 candidates, padded by repeating the first source when fewer
(UniMVSNet `general_eval`). The scene-level (SCC) tuple is the same reference
followed by V - 1 candidates drawn without replacement from the whole
candidate list, fresh per example (padded the same way when the list has
fewer than V - 1 entries).

Bad data: a view with a problem (missing or unreadable image, depth map of
the wrong size, depth range not 0 < first < last, non-finite camera, depth
range or depth value) makes every reference tuple that may use it bad: the
reference itself, its regular sources, and with the SCC branch its whole
candidate list. A bad tuple stops the input pipeline with an error naming
the scene, the reference and the bad view, or, with `skip_bad=True`, is
skipped and counted in a logged warning.

Randomness is stateless: every random choice (scene and reference order,
SCC sources, crop offsets, ICC augmentation) derives from the `seed`
argument, the scene's visit number and the reference index, so the same seed
gives the same batches.
"""

import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Optional
from typing import Union

import numpy as np
import tensorflow as tf

from keras_mvs import geometry
from keras_mvs.data import augment
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib

_LOG = logging.getLogger(__name__)

# The reference loaders keep the first 10 pair.txt candidates.
MAX_CANDIDATES = 10
# The cascade downsamples by 4 and its 3-D U-Net by 8 more: H and W must be
# multiples of 32.
SIZE_MULTIPLE = 32
BRANCHES = ("regular", "icc", "scc")

PathLike = Union[str, os.PathLike]


# === Scene dicts from folders ===


def _nearest_rows_cols(height: int, width: int, new_height: int,
                       new_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices floor(i * H / H') of an OpenCV-style nearest resize."""
    rows = (np.arange(new_height) * height) // new_height
    cols = (np.arange(new_width) * width) // new_width
    return rows, cols


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (cv2.INTER_LINEAR), uint8."""
    resized = tf.image.resize(image.astype(np.float32), (height, width),
                              method="bilinear", antialias=False).numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


class _FolderScene:
    """Reads one MVSNet folder into a scene dict (numpy), recording problems."""

    def __init__(self, root: PathLike):
        self.scene = scene_lib.MVSScene(root)
        self.name = self.scene.name
        # MVSScene drops views that lack an image or a cam; the pipeline must
        # report those, so the pair file is read again as written.
        self.file_pairs = formats.read_pair_file(
            pathlib.Path(root) / "pair.txt")
        listed = {ref for ref, _ in self.file_pairs}
        for _, sources in self.file_pairs:
            listed.update(view for view, _ in sources)
        self.view_ids = sorted(listed | set(self.scene.view_ids))
        root = pathlib.Path(root)
        self.has_depths = any((root / "depths").glob("*.pfm"))
        self.has_masks = any((root / "masks").glob("*.png"))

    def _missing(self, view_id: int) -> str:
        """Problem text of a view MVSScene dropped (no image or no cam)."""
        root = self.scene.root
        lacks = []
        if not any(path.suffix.lower() in (".jpg", ".jpeg", ".png")
                   for folder in ("images", "images_post")
                   for path in (root / folder).glob(f"{view_id:08d}.*")):
            lacks.append(f"image images/{view_id:08d}.jpg|png")
        if not (root / "cams" / f"{view_id:08d}_cam.txt").is_file():
            lacks.append(f"camera file cams/{view_id:08d}_cam.txt")
        return f"view {view_id}: missing {' and '.join(lacks)}"

    def load(self, height: Optional[int], width: Optional[int],
             with_depths: bool, with_masks: bool, num_depths: int,
             interval_scale: float) -> dict:
        available = set(self.scene.view_ids)
        own_size = height is None
        if own_size:
            height, width = self.scene.image_size(self.scene.view_ids[0])
        count = len(self.view_ids)
        out = {
            "images": np.zeros((count, height, width, 3), np.uint8),
            "intrinsics": np.tile(np.eye(3, dtype=np.float32), (count, 1, 1)),
            "cam_from_world": np.tile(np.eye(4, dtype=np.float32),
                                      (count, 1, 1)),
            "depth_range": np.tile(np.float32([1.0, 2.0]), (count, 1)),
        }
        if with_depths:
            out["depths"] = np.zeros((count, height, width), np.float32)
        if with_masks:
            out["masks"] = np.zeros((count, height, width), np.float32)
        problems = [""] * count
        for index, view_id in enumerate(self.view_ids):
            if view_id not in available:
                problems[index] = self._missing(view_id)
                continue
            try:
                view_size = self.scene.image_size(view_id)
                if own_size and view_size != (height, width):
                    _LOG.warning(
                        "scene %s, view %d: image is %dx%d, the first view's "
                        "%dx%d; resizing it and its intrinsics to match",
                        self.name, view_id, *view_size, height, width)
                problems[index] = self._load_view(
                    out, index, view_id, height, width, num_depths,
                    interval_scale)
            except (formats.FormatError, ValueError, OSError) as error:
                problems[index] = f"view {view_id}: {error}"
        index_of = {view: i for i, view in enumerate(self.view_ids)}
        pairs = np.full((count, MAX_CANDIDATES), -1, np.int32)
        for ref, sources in self.file_pairs:
            row = [index_of[view] for view, _ in sources[:MAX_CANDIDATES]]
            pairs[index_of[ref], :len(row)] = row
        out.update(pairs=pairs, name=self.name,
                   view_ids=np.int32(self.view_ids),
                   problems=problems)
        return out

    def _load_view(self, out: dict, index: int, view_id: int, height: int,
                   width: int, num_depths: int, interval_scale: float) -> str:
        """Fills row `index` of `out`; returns a problem text or ''."""
        camera = self.scene.camera(view_id)
        image = self.scene.image(view_id)
        image_height, image_width = image.shape[:2]
        if (image_height, image_width) != (height, width):
            image = _resize_image(image, height, width)
        scale_x, scale_y = width / image_width, height / image_height
        out["images"][index] = image
        out["intrinsics"][index] = geometry.scale_intrinsics(
            camera.intrinsics, scale_x, scale_y).numpy()
        out["cam_from_world"][index] = camera.cam_from_world
        first, last = camera.depth_range(num_depths, interval_scale)
        out["depth_range"][index] = (first, last)
        rows, cols = _nearest_rows_cols(image_height, image_width, height,
                                        width)
        problem = _camera_problem(camera, first, last)
        if problem:
            return f"view {view_id}: cams/{view_id:08d}_cam.txt {problem}"
        for key, read, suffix in (("depths", self.scene.depth, "pfm"),
                                  ("masks", self.scene.mask, "png")):
            if key not in out:
                continue
            values = read(view_id)
            path = f"{key}/{view_id:08d}.{suffix}"
            if values is None:
                return f"view {view_id}: {path} is missing"
            if not np.isfinite(values).all():
                return f"view {view_id}: {path} has non-finite values"
            out[key][index] = values[rows[:, None], cols]
        return ""


def _camera_problem(camera: formats.Camera, first: float,
                    last: float) -> str:
    """What is wrong with a camera and its depth range `(first, last)` for
    the pipeline, as text after the cam file's name; '' when nothing."""
    if not (np.isfinite(camera.intrinsics).all()
            and np.isfinite(camera.cam_from_world).all()):
        return "has non-finite values"
    if not (np.isfinite([first, last]).all() and 0 < first < last):
        return (f"gives the depth range ({first:g}, {last:g}); expected "
                "0 < first < last")
    return ""


def scene_dicts_from_folders(
    dirs: Sequence[PathLike],
    height: Optional[int] = None,
    width: Optional[int] = None,
    *,
    num_depths: int = 192,
    interval_scale: float = 1.06,
) -> tf.data.Dataset:
    """Scene dicts (see the module docstring) read from MVSNet-layout folders.

    Each folder is read with `keras_mvs.data.scene.MVSScene` when the dataset
    is iterated (once per epoch, in order; `make_dataset` shuffles). Views
    named in pair.txt but lacking an image or a camera are kept with a
    problem text, so that tuples using them raise or are skipped downstream
    rather than silently changing the view selection.

    Resizing: with `height` and `width` every view is resized to that size;
    otherwise to the size of the scene's first view (views of another size
    are resized to it). Images are resized bilinearly with half-pixel
    centres (cv2.INTER_LINEAR, as the reference test loaders), intrinsics
    rows 0 and 1 scaled by width / W and height / H with
    `geometry.scale_intrinsics` (no half-pixel shift, ALGORITHMS.md 1.8).
    Depth and mask are resized by nearest neighbour taking source index
    floor(i * H / H') (cv2.INTER_NEAREST, ALGORITHMS.md 9 item 24): for an
    integer factor f that is exactly the top-left sample `x[::f, ::f]`; for a
    non-integer factor it is the sample whose block contains the top-left
    corner, never an interpolated depth.

    Depths and masks are included when every folder has `depths/*.pfm`
    (respectively `masks/*.png`); a view without one is then a bad view.

    Args:
        dirs: scene folders (images/, cams/, pair.txt, optional depths/,
            masks/).
        height: output image height in pixels, or None (see above).
        width: output image width in pixels, or None.
        num_depths: N0 used to turn cam depth lines into a range
            (`Camera.depth_range`).
        interval_scale: interval multiplier of the depth line (1.06).

    Returns:
        A dataset of scene dicts with `name`, `view_ids` and `problems`.

    Raises:
        FileNotFoundError / FormatError: a folder lacks cams/, images/ or
            pair.txt, or pair.txt is malformed (at construction).
        ValueError: `dirs` is empty, or only one of height/width is given.
    """
    dirs = [pathlib.Path(d) for d in dirs]
    if not dirs:
        raise ValueError("scene_dicts_from_folders needs at least one folder")
    if (height is None) != (width is None):
        raise ValueError(
            "scene_dicts_from_folders needs both height and width or neither; "
            f"received height={height}, width={width}")
    if height is not None and (height <= 0 or width <= 0):
        raise ValueError(
            f"scene_dicts_from_folders needs a positive size; received "
            f"{height}x{width}")
    # Opening a scene only indexes its folder; doing it now reports
    # structural errors before training starts.
    folders = [_FolderScene(d) for d in dirs]
    with_depths = all(f.has_depths for f in folders)
    with_masks = all(f.has_masks for f in folders)
    for kind, flag, attr in (("depths/*.pfm", with_depths, "has_depths"),
                             ("masks/*.png", with_masks, "has_masks")):
        having = [f.name for f in folders if getattr(f, attr)]
        if having and not flag:
            lacking = [f.name for f in folders if not getattr(f, attr)]
            _LOG.warning(
                "%s ignored: scenes %s have none (scenes with them: %s)",
                kind, lacking, having)

    def generate():
        for folder in folders:
            yield folder.load(height, width, with_depths, with_masks,
                              num_depths, interval_scale)

    spatial = (height, width)
    signature = {
        "images": tf.TensorSpec((None, *spatial, 3), tf.uint8),
        "intrinsics": tf.TensorSpec((None, 3, 3), tf.float32),
        "cam_from_world": tf.TensorSpec((None, 4, 4), tf.float32),
        "depth_range": tf.TensorSpec((None, 2), tf.float32),
        "pairs": tf.TensorSpec((None, MAX_CANDIDATES), tf.int32),
        "name": tf.TensorSpec((), tf.string),
        "view_ids": tf.TensorSpec((None,), tf.int32),
        "problems": tf.TensorSpec((None,), tf.string),
    }
    if with_depths:
        signature["depths"] = tf.TensorSpec((None, *spatial), tf.float32)
    if with_masks:
        signature["masks"] = tf.TensorSpec((None, *spatial), tf.float32)
    dataset = tf.data.Dataset.from_generator(generate,
                                             output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(dirs)))


def check_folders(dirs: Sequence[PathLike], num_views: int = 2,
                  num_depths: int = 192, interval_scale: float = 1.06,
                  require_depth: bool = False) -> None:
    """Reads every camera and image header of the scenes before training.

    A malformed cam file, an unreadable image or a bad depth range would
    otherwise surface inside the input pipeline after the first steps, and
    a folder whose views never see each other would leave the pipeline
    looking for a view tuple forever. This reads what is cheap to read
    (cam files, pair.txt, image headers, not the pixels) and raises one
    error listing what is wrong.

    Args:
        dirs: scene folders.
        num_views: views per tuple (the reference and num_views - 1
            sources; sources are repeated when a reference has fewer).
        num_depths, interval_scale: as `scene_dicts_from_folders`.
        require_depth: every usable view needs `depths/ID.pfm`.

    Raises:
        FileNotFoundError / FormatError: a folder lacks cams/, images/ or
            pair.txt, or pair.txt is malformed.
        ValueError: bad files (each named with what was expected), or no
            reference view with a source view in any scene.
    """
    if num_views < 2:
        raise ValueError(f"num_views must be at least 2; received {num_views}")
    problems, usable = [], 0
    for folder in dirs:
        scene = scene_lib.MVSScene(folder)
        good = set()
        for view_id in scene.view_ids:
            try:
                camera = scene.camera(view_id)
                scene.image_size(view_id)
                problem = _camera_problem(
                    camera, *camera.depth_range(num_depths, interval_scale))
                if problem:
                    raise ValueError(
                        f"{scene.root / 'cams' / f'{view_id:08d}_cam.txt'} "
                        f"{problem}")
                if require_depth and not (
                        scene.root / "depths" / f"{view_id:08d}.pfm"
                ).is_file():
                    raise ValueError(
                        f"{scene.root / 'depths' / f'{view_id:08d}.pfm'}: "
                        "missing (this objective trains on ground-truth "
                        "depth)")
                good.add(view_id)
            except (formats.FormatError, ValueError, OSError) as error:
                problems.append(str(error))
        usable += sum(1 for ref, sources in scene.pairs
                      if ref in good and any(s in good for s, _ in sources))
    if problems:
        shown = "; ".join(problems[:5])
        more = (f" (and {len(problems) - 5} more)" if len(problems) > 5
                else "")
        raise ValueError(f"{len(problems)} bad view(s): {shown}{more}. Fix "
                         "or remove these files.")
    if not usable:
        raise ValueError(
            f"no view of {', '.join(str(d) for d in dirs)} has a source view "
            "it sees (pair.txt): training needs scenes with at least 2 "
            "views that overlap.")


# === View selection ===


def candidate_lists(pairs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Compacts each pairs row to its valid candidates, in order.

    A candidate is valid when it is in [0, N), differs from its row's view
    and does not repeat an earlier entry of the row.

    Args:
        pairs: `[N, M]` int32 candidate indices, -1 padded.

    Returns:
        `(candidates [N, M] int32, counts [N] int32)`: row i holds view i's
        valid candidates first (order kept), then -1.
    """
    pairs = tf.convert_to_tensor(pairs, tf.int32)
    count, width = tf.shape(pairs)[0], tf.shape(pairs)[1]
    own = tf.range(count)[:, tf.newaxis]
    same = tf.equal(pairs[:, :, tf.newaxis], pairs[:, tf.newaxis, :])
    earlier = tf.linalg.band_part(tf.ones([width, width], tf.bool), -1, 0)
    earlier = tf.logical_and(earlier, tf.logical_not(tf.eye(width,
                                                            dtype=tf.bool)))
    repeated = tf.reduce_any(tf.logical_and(same, earlier), axis=-1)
    valid = ((pairs >= 0) & (pairs < count) & (pairs != own)
             & tf.logical_not(repeated))
    # Stable sort on "invalid" moves valid entries to the front in order.
    order = tf.argsort(tf.cast(tf.logical_not(valid), tf.int32), axis=-1,
                       stable=True)
    candidates = tf.where(tf.gather(valid, order, batch_dims=1),
                          tf.gather(pairs, order, batch_dims=1), -1)
    return candidates, tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1)


def _pad_sources(sources: tf.Tensor, counts: tf.Tensor,
                 num_sources: int) -> tf.Tensor:
    """Replaces entries at positions >= count by the first source."""
    positions = tf.range(num_sources)
    return tf.where(positions < counts[..., tf.newaxis], sources,
                    sources[..., :1])


def reference_tuples(pairs: tf.Tensor,
                     num_views: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Regular view tuples: every view with a candidate, with its top sources.

    Args:
        pairs: `[N, M]` int32 candidate indices, -1 padded.
        num_views: V >= 2, reference included.

    Returns:
        `(refs [R] int32, views [R, V] int32)`: view indices, reference
        first, then the first V - 1 valid candidates, padded by repeating
        the first source.
    """
    return _regular_tuples(*candidate_lists(pairs), num_views)


def _regular_tuples(candidates: tf.Tensor, counts: tf.Tensor,
                    num_views: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`reference_tuples` from the output of `candidate_lists`."""
    refs = tf.cast(tf.where(counts > 0)[:, 0], tf.int32)
    num_sources = num_views - 1
    # Rows may be narrower than V - 1; pad with -1 before slicing.
    candidates = tf.pad(candidates, [[0, 0], [0, num_sources]],
                        constant_values=-1)
    sources = _pad_sources(tf.gather(candidates, refs)[:, :num_sources],
                           tf.gather(counts, refs), num_sources)
    views = tf.concat([refs[:, tf.newaxis], sources], axis=1)
    return refs, tf.ensure_shape(views, [None, num_views])


def random_source_views(ref: tf.Tensor, candidates: tf.Tensor,
                        count: tf.Tensor, num_views: int,
                        seed: tf.Tensor) -> tf.Tensor:
    """SCC tuple: the reference plus V - 1 random candidates, no repeats.

    Args:
        ref: scalar int32 reference index.
        candidates: `[M]` int32, the reference's valid candidates first
            (`candidate_lists`), then -1.
        count: scalar int32, number of valid candidates (>= 1).
        num_views: V >= 2.
        seed: `[2]` int64 stateless seed.

    Returns:
        `[V]` int32 view indices, reference first. With fewer than V - 1
        candidates all are used and the first drawn one repeats.
    """
    num_sources = num_views - 1
    width = tf.shape(candidates)[0]
    keys = tf.random.stateless_uniform([width], seed)
    # Invalid slots get keys above every valid one, so they sort last.
    keys = tf.where(tf.range(width) < count, keys, 2.0)
    drawn = tf.gather(candidates, tf.argsort(keys))
    drawn = tf.pad(drawn, [[0, num_sources]], constant_values=-1)
    sources = _pad_sources(drawn[:num_sources], count, num_sources)
    return tf.ensure_shape(tf.concat([[ref], sources], axis=0), [num_views])


# === Crop ===


def crop_intrinsics(intrinsics: tf.Tensor, offset_y: tf.Tensor,
                    offset_x: tf.Tensor) -> tf.Tensor:
    """Intrinsics of a crop whose top-left pixel is (offset_y, offset_x).

    Pixel (i, j) of the crop is pixel (i + offset_y, j + offset_x) of the
    image, so the principal point moves by minus the offset; focal lengths
    are unchanged.

    Args:
        intrinsics: `[..., 3, 3]` float32, pixels of the uncropped image.
        offset_y: scalar, rows removed at the top.
        offset_x: scalar, columns removed at the left.

    Returns:
        `[..., 3, 3]` float32 intrinsics of the crop.
    """
    intrinsics = tf.convert_to_tensor(intrinsics, tf.float32)
    shift = tf.stack([tf.cast(offset_x, tf.float32),
                      tf.cast(offset_y, tf.float32), 0.0])
    # Subtracting shift * K[2, :] from rows 0 and 1 is exact for any K whose
    # last row is (0, 0, 1).
    row_shift = tf.concat([shift[:2, tf.newaxis] * intrinsics[..., 2:3, :],
                           tf.zeros_like(intrinsics[..., 2:3, :])], axis=-2)
    return intrinsics - row_shift


def _crop_offset(height: tf.Tensor, width: tf.Tensor, crop: tuple[int, int],
                 seed: Optional[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """Random (seeded) or centre crop offset."""
    spare_y, spare_x = height - crop[0], width - crop[1]
    if seed is None:
        return spare_y // 2, spare_x // 2
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    offset_y = tf.random.stateless_uniform(
        [], seeds[0], minval=0, maxval=spare_y + 1, dtype=tf.int32)
    offset_x = tf.random.stateless_uniform(
        [], seeds[1], minval=0, maxval=spare_x + 1, dtype=tf.int32)
    return offset_y, offset_x


# === Per-scene assembly ===


def _no_autograph(function):
    """Marks a dataset function as plain TF code.

    The pipeline's functions have no tensor-dependent Python control flow, so
    autograph's source conversion would only add tracing time.
    """
    return tf.autograph.experimental.do_not_convert(function)


def _as_string(values: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(values, precision=6, shortest=True)


def _complete_scene(scene_index: tf.Tensor, scene: dict) -> dict:
    """Adds default `name`/`view_ids` and merges the runtime data checks."""
    scene = dict(scene)
    count = tf.shape(scene["images"])[0]
    if "name" not in scene:
        scene["name"] = tf.strings.join(
            ["scene #", tf.strings.as_string(scene_index)])
    if "view_ids" not in scene:
        scene["view_ids"] = tf.range(count)
    view_ids = tf.strings.as_string(scene["view_ids"])
    first, last = scene["depth_range"][:, 0], scene["depth_range"][:, 1]
    finite_camera = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(scene["intrinsics"]), axis=[1, 2]),
        tf.reduce_all(tf.math.is_finite(scene["cam_from_world"]),
                      axis=[1, 2]))
    good_range = (tf.math.is_finite(first) & tf.math.is_finite(last)
                  & (first > 0) & (last > first))
    found = tf.fill([count], "")
    if "depths" in scene:
        finite_depth = tf.reduce_all(tf.math.is_finite(scene["depths"]),
                                     axis=[1, 2])
        found = tf.where(finite_depth, found, tf.strings.join(
            ["view ", view_ids, ": depth map has non-finite values"]))
    found = tf.where(good_range, found, tf.strings.join(
        ["view ", view_ids, ": depth range (", _as_string(first), ", ",
         _as_string(last), ") is not 0 < first < last"]))
    found = tf.where(finite_camera, found, tf.strings.join(
        ["view ", view_ids, ": camera has non-finite values"]))
    given = scene.get("problems", found)
    scene["problems"] = tf.where(tf.strings.length(given) > 0, given, found)
    return scene


def _check_size(scene: dict, crop: Optional[tuple[int, int]]) -> tf.Operation:
    """Asserts that the scene fits the crop, or is a multiple of 32."""
    height, width = tf.shape(scene["images"])[1], tf.shape(scene["images"])[2]
    size = tf.strings.join([tf.strings.as_string(height), "x",
                            tf.strings.as_string(width)])
    checks = []
    for key in ("depths", "masks"):
        if key in scene:
            other = tf.shape(scene[key])[1:3]
            checks.append(tf.debugging.Assert(
                tf.reduce_all(other == tf.shape(scene["images"])[1:3]),
                [tf.strings.join([
                    "scene ", scene["name"], ": ", key, " are ",
                    tf.strings.as_string(other[0]), "x",
                    tf.strings.as_string(other[1]), ", images are ", size])]))
    if crop is None:
        checks.append(tf.debugging.Assert(
            (height % SIZE_MULTIPLE == 0) & (width % SIZE_MULTIPLE == 0),
            [tf.strings.join([
                "scene ", scene["name"], ": images are ", size,
                f"; height and width must be multiples of {SIZE_MULTIPLE} "
                "(pass crop=(h, w) or resize the scene)"])]))
    else:
        checks.append(tf.debugging.Assert(
            (height >= crop[0]) & (width >= crop[1]),
            [tf.strings.join([
                "scene ", scene["name"], ": images are ", size,
                f", smaller than the crop {crop[0]}x{crop[1]}"])]))
    return tf.group(checks)


class _BadTupleReport:
    """Logs skipped reference tuples with a running count (via py_function)."""

    def __init__(self):
        self.skipped = 0

    def __call__(self, name: tf.Tensor, messages: tf.Tensor) -> np.int32:
        messages = [m.decode() for m in messages.numpy()]
        self.skipped += len(messages)
        _LOG.warning(
            "skip_bad: skipping %d reference view(s) of scene %s "
            "(%d skipped so far): %s", len(messages), name.numpy().decode(),
            self.skipped, "; ".join(messages))
        return np.int32(len(messages))


def _good_tuples(scene: dict, refs: tf.Tensor, used: tf.Tensor,
                 skip_bad: bool, report: _BadTupleReport) -> tf.Tensor:
    """Filters (or asserts on) reference tuples that use a bad view.

    Args:
        scene: completed scene dict.
        refs: `[R]` int32 reference indices.
        used: `[R, U]` int32 view indices each tuple may use (-1 = none).
        skip_bad: skip with a logged count instead of failing.
        report: the logger of skipped tuples.

    Returns:
        `[R']` int32 references whose tuples are usable.
    """
    problems = tf.gather(scene["problems"], tf.maximum(used, 0))
    problems = tf.where(used >= 0, problems, "")
    bad_views = tf.strings.length(problems) > 0  # [R, U]
    bad = tf.reduce_any(bad_views, axis=1)
    first_bad = tf.gather(problems, tf.argmax(tf.cast(bad_views, tf.int32),
                                              axis=1, output_type=tf.int32),
                          batch_dims=1)
    messages = tf.strings.join([
        "reference view ",
        tf.strings.as_string(tf.gather(scene["view_ids"], refs)), " uses ",
        first_bad])
    bad_messages = tf.boolean_mask(messages, bad)
    if skip_bad:
        logged = tf.cond(
            tf.reduce_any(bad),
            lambda: tf.py_function(report, [scene["name"], bad_messages],
                                   tf.int32),
            lambda: tf.constant(0))
        with tf.control_dependencies([logged]):
            return tf.boolean_mask(refs, tf.logical_not(bad))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [tf.strings.join([
            "scene ", scene["name"], ": ",
            tf.strings.reduce_join(bad_messages[:3], separator="; "),
            " (", tf.strings.as_string(tf.size(bad_messages)),
            " bad reference tuple(s) in this scene; pass skip_bad=True to "
            "skip them with a counted warning)"])])
    with tf.control_dependencies([check]):
        return tf.identity(refs)


def _scene_examples(
    visit: tf.Tensor,
    scene_index: tf.Tensor,
    scene: dict,
    *,
    num_views: int,
    seed: int,
    with_scc: bool,
    shuffle: bool,
    crop: Optional[tuple[int, int]],
    skip_bad: bool,
    report: _BadTupleReport,
) -> tf.data.Dataset:
    """One scene visit -> dataset of uint8 view tuples, one per reference."""
    scene = _complete_scene(scene_index, scene)
    size_check = _check_size(scene, crop)
    candidates, counts = candidate_lists(scene["pairs"])
    refs, views = _regular_tuples(candidates, counts, num_views)
    used = views
    if with_scc:
        used = tf.concat([views, tf.gather(candidates, refs)], axis=1)
    good = _good_tuples(scene, refs, used, skip_bad, report)
    with tf.control_dependencies([size_check]):
        good = tf.identity(good)
    visit_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 0], tf.int64), visit)
    if shuffle:
        good = tf.random.experimental.stateless_shuffle(good, visit_seed)
    view_table = tf.scatter_nd(refs[:, tf.newaxis], views,
                               [tf.shape(counts)[0], num_views])

    def example(ref: tf.Tensor) -> dict:
        example_seed = tf.random.experimental.stateless_fold_in(
            visit_seed, tf.cast(ref, tf.int64))
        indices = view_table[ref]
        out = {
            "images": tf.gather(scene["images"], indices),
            "intrinsics": tf.gather(scene["intrinsics"], indices),
            "cam_from_world": tf.gather(scene["cam_from_world"], indices),
            "depth_range": scene["depth_range"][ref],
            "ref_id": scene["view_ids"][ref],
            "scene_index": scene_index,
            "scene_name": scene["name"],
            "seed": example_seed,
        }
        if "depths" in scene:
            out["depth"] = scene["depths"][ref]
            out["mask"] = (scene["masks"][ref] if "masks" in scene else
                           tf.cast(scene["depths"][ref] > 0, tf.float32))
        elif "masks" in scene:
            out["mask"] = scene["masks"][ref]
        if with_scc:
            scc_views = random_source_views(
                ref, candidates[ref], counts[ref], num_views,
                tf.random.experimental.stateless_fold_in(example_seed, 1))
            out["scc_images"] = tf.gather(scene["images"], scc_views)
            out["scc_intrinsics"] = tf.gather(scene["intrinsics"], scc_views)
            out["scc_cam_from_world"] = tf.gather(scene["cam_from_world"],
                                                  scc_views)
        return out

    return tf.data.Dataset.from_tensor_slices(good).map(
        _no_autograph(example))


def _finish_example(example: dict, *, crop: Optional[tuple[int, int]],
                    random_crop: bool, with_icc: bool,
                    keep: Sequence[str]) -> dict:
    """Crop, float conversion and ICC augmentation of one view tuple."""
    example = dict(example)
    image_keys = [k for k in ("images", "scc_images") if k in example]
    if crop is not None:
        shape = tf.shape(example["images"])
        crop_seed = (tf.random.experimental.stateless_fold_in(
            example["seed"], 2) if random_crop else None)
        top, left = _crop_offset(shape[1], shape[2], crop, crop_seed)
        for key in image_keys:
            example[key] = example[key][:, top:top + crop[0],
                                        left:left + crop[1]]
        for key in ("depth", "mask"):
            if key in example:
                example[key] = example[key][top:top + crop[0],
                                            left:left + crop[1]]
        for key in ("intrinsics", "scc_intrinsics"):
            if key in example:
                example[key] = crop_intrinsics(example[key], top, left)
    for key in image_keys:
        example[key] = tf.image.convert_image_dtype(example[key], tf.float32)
    if with_icc:
        example["icc_images"] = augment.augment_views(
            example["images"],
            tf.random.experimental.stateless_fold_in(example["seed"], 3))
    if crop is not None:
        for key in image_keys + ["icc_images"]:
            if key in example:
                example[key] = tf.ensure_shape(
                    example[key], [None, crop[0], crop[1], 3])
        for key in ("depth", "mask"):
            if key in example:
                example[key] = tf.ensure_shape(example[key], crop)
    return {k: v for k, v in example.items() if k in keep}


def _check_arguments(num_views: int, batch_size: int,
                     crop: Optional[tuple[int, int]]) -> None:
    if num_views < 2:
        raise ValueError(f"num_views must be at least 2; received {num_views}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; received {batch_size}")
    if crop is not None:
        if (len(crop) != 2 or min(crop) <= 0
                or crop[0] % SIZE_MULTIPLE or crop[1] % SIZE_MULTIPLE):
            raise ValueError(
                f"crop must be (height, width), positive multiples of "
                f"{SIZE_MULTIPLE}; received {crop}")


def _tuples(scenes: tf.data.Dataset, *, num_views: int, seed: int,
            with_scc: bool, shuffle: bool, repeat: bool,
            crop: Optional[tuple[int, int]], skip_bad: bool,
            scene_cycle: int) -> tf.data.Dataset:
    """Scenes -> (uint8) view tuples, with seeded scene and reference order."""
    num_scenes = int(scenes.cardinality())
    if num_scenes > 0:
        # More would load the same scene several times at once.
        scene_cycle = min(scene_cycle, num_scenes)
    visits = scenes.enumerate()
    if shuffle:
        visits = visits.shuffle(scene_cycle, seed=seed,
                                reshuffle_each_iteration=True)
    if repeat:
        visits = visits.repeat()
    report = _BadTupleReport()

    def per_scene(visit, indexed):
        scene_index, scene = indexed
        return _scene_examples(
            visit, scene_index, scene, num_views=num_views, seed=seed,
            with_scc=with_scc, shuffle=shuffle, crop=crop, skip_bad=skip_bad,
            report=report)

    # Interleaving a few scenes mixes references of different scenes while
    # holding at most 2 * `scene_cycle` decoded scenes in memory (shuffle
    # buffer and interleave cycle).
    return visits.enumerate().interleave(
        _no_autograph(per_scene), cycle_length=scene_cycle if shuffle else 1,
        block_length=1)


def make_dataset(
    scenes: tf.data.Dataset,
    *,
    num_views: int,
    batch_size: int,
    seed: int,
    training: bool = True,
    branches: Sequence[str] = ("regular",),
    require_depth: bool = False,
    crop: Optional[tuple[int, int]] = None,
    shuffle: bool = True,
    repeat: bool = True,
    skip_bad: bool = False,
    shuffle_buffer: int = 16,
    scene_cycle: int = 4,
) -> tf.data.Dataset:
    """Training batches from a dataset of scene dicts.

    Each scene visit is expanded into one view tuple per reference (module
    docstring); references are shuffled within the scene, `scene_cycle`
    scenes are interleaved, and a `shuffle_buffer` of tuples mixes them
    further. The crop window is random in training and centred otherwise,
    the same for every view (and branch) of one example.

    Args:
        scenes: scene dicts (module docstring), e.g. from
            `scene_dicts_from_folders` or the TFDS adapter.
        num_views: V, reference included.
        batch_size: B; in training the last partial batch is dropped.
        seed: the seed of every random choice.
        training: random crop and `drop_remainder`; False centres the crop.
        branches: "regular" plus optionally "icc" and "scc".
        require_depth: raise if the scenes carry no "depths".
        crop: optional (height, width), multiples of 32.
        shuffle: shuffle scenes and references.
        repeat: repeat the scenes forever (each pass reshuffled).
        skip_bad: skip bad reference tuples with a counted warning instead of
            failing.
        shuffle_buffer: tuples in the shuffle buffer (each holds V or 2V
            uint8 images).
        scene_cycle: scenes interleaved at a time, and the size of the
            scene shuffle buffer (capped at the number of scenes when the
            dataset's cardinality is known); up to twice this many decoded
            scenes are held in memory. Scenes are re-read on every pass:
            pass `scenes.cache()` when they fit in memory.

    Returns:
        A dataset of dicts (B, V, H, W as above):

        * `"images"`: `[B, V, H, W, 3]` float32 in [0, 1], reference first.
        * `"intrinsics"`: `[B, V, 3, 3]` float32 for H x W.
        * `"cam_from_world"`: `[B, V, 4, 4]` float32.
        * `"depth_range"`: `[B, 2]` float32, the reference view's.
        * with depths: `"depth"` `[B, H, W]` float32 and `"mask"` `[B, H, W]`
          float32 of the reference (the scene's mask, else depth > 0).
        * with "scc": `"scc_images"`, `"scc_intrinsics"`,
          `"scc_cam_from_world"`, shaped like the regular ones.
        * with "icc": `"icc_images"` `[B, V, H, W, 3]` float32 in [0, 1],
          `augment.augment_views` of `"images"`.

    Raises:
        ValueError: bad arguments, or `require_depth` without depths.
        tf.errors.InvalidArgumentError (while iterating): a bad tuple without
            `skip_bad`, or a scene whose size does not fit (message names
            the scene, reference and view).
    """
    _check_arguments(num_views, batch_size, crop)
    unknown = set(branches) - set(BRANCHES)
    if "regular" not in branches or unknown:
        raise ValueError(
            f"branches must include 'regular' and only {BRANCHES}; received "
            f"{tuple(branches)}")
    if require_depth and "depths" not in scenes.element_spec:
        raise ValueError(
            "require_depth=True but the scene dicts have no 'depths' (keys: "
            f"{sorted(scenes.element_spec)})")
    with_scc, with_icc = "scc" in branches, "icc" in branches
    keep = ["images", "intrinsics", "cam_from_world", "depth_range", "depth",
            "mask"]
    if with_scc:
        keep += ["scc_images", "scc_intrinsics", "scc_cam_from_world"]
    if with_icc:
        keep.append("icc_images")
    dataset = _tuples(scenes, num_views=num_views, seed=seed,
                      with_scc=with_scc, shuffle=shuffle, repeat=repeat,
                      crop=crop, skip_bad=skip_bad, scene_cycle=scene_cycle)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.map(
        _no_autograph(lambda example: _finish_example(
            example, crop=crop, random_crop=training, with_icc=with_icc,
            keep=keep)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    scenes: tf.data.Dataset,
    num_views: int,
    *,
    batch_size: int = 1,
    crop: Optional[tuple[int, int]] = None,
    skip_bad: bool = False,
) -> tf.data.Dataset:
    """Every reference of every scene once, in order, without augmentation.

    Args:
        scenes: scene dicts (module docstring).
        num_views: V, reference included.
        batch_size: B; the last batch may be smaller.
        crop: optional centre crop (height, width), multiples of 32.
        skip_bad: skip bad reference tuples with a counted warning.

    Returns:
        Batches with the regular keys of `make_dataset` (images, intrinsics,
        cam_from_world, depth_range, and depth/mask when present) plus
        `"ref_id"` `[B]` int32 (the view id), `"scene_index"` `[B]` int64
        (position of the scene in `scenes`) and `"scene_name"` `[B]` string.
    """
    _check_arguments(num_views, batch_size, crop)
    keep = ["images", "intrinsics", "cam_from_world", "depth_range", "depth",
            "mask", "ref_id", "scene_index", "scene_name"]
    dataset = _tuples(scenes, num_views=num_views, seed=0, with_scc=False,
                      shuffle=False, repeat=False, crop=crop,
                      skip_bad=skip_bad, scene_cycle=1)
    dataset = dataset.map(
        _no_autograph(lambda example: _finish_example(
            example, crop=crop, random_crop=False, with_icc=False,
            keep=keep)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
