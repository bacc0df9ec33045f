"""Scene dicts read from MVSNet-layout folders, and the check of those
folders before training.

`scene_dicts_from_folders` turns scene folders (images/, cams/, pair.txt,
optional depths/ and masks/, read with `keras_mvs.data.scene.MVSScene`)
into the scene dicts the input pipeline consumes (`keras_mvs.data.pipeline`
documents the structure). Views named in pair.txt that lack files, or whose
files are bad, are kept with a problem text so the pipeline can name them.
`check_folders` reads what is cheap to read up front and refuses bad data
before training starts.
"""

import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Optional
from typing import Union

import numpy as np
import tensorflow as tf

from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib
from keras_mvs.data import transforms
from keras_mvs.data import view_tuples

_LOG = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


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
        kept = view_tuples.MAX_CANDIDATES
        pairs = np.full((count, kept), -1, np.int32)
        for ref, sources in self.file_pairs:
            row = [index_of[view] for view, _ in sources[:kept]]
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
        out["images"][index], out["intrinsics"][index] = (
            transforms.resize_view(image, camera.intrinsics, height, width))
        out["cam_from_world"][index] = camera.cam_from_world
        first, last = camera.depth_range(num_depths, interval_scale)
        out["depth_range"][index] = (first, last)
        rows, cols = transforms.nearest_rows_cols(image_height, image_width,
                                                  height, width)
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
    are resized to it). Images and intrinsics are resized together by
    `transforms.resize_view`: bilinearly with half-pixel centres
    (cv2.INTER_LINEAR, as the reference test loaders), intrinsics rows 0
    and 1 scaled by width / W and height / H (no half-pixel shift,
    ALGORITHMS.md 1.8).
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
        "pairs": tf.TensorSpec((None, view_tuples.MAX_CANDIDATES), tf.int32),
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
