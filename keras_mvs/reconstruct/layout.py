"""The output folder of a reconstruction and its re-reading.

    depth/{id:08d}.pfm                 final depth (depth units)
    confidence/{id:08d}.pfm            final confidence in [0, 1]
    confidence/{id:08d}_stage{s}.pfm   stage s = 1, 2 confidence,
                                       nearest-upsampled (Keras models)
    previews/{id:08d}_depth.png        coloured depth
    previews/{id:08d}_confidence.png   coloured confidence
    cams/{id:08d}_cam.txt              K at the depth-map resolution, the
                                       pose, the swept range as `min max`
    images/{id:08d}.png                the reference image as the network saw
                                       it (the colours of the fused points)
    fused.ply                          the fused cloud
    summary.json                       written last: a folder with it is a
                                       complete run

`OutputViews` reads the per-view files back as `fusion.FusionView`s, so
fusion runs from the folder, not from memory.
"""

import collections
import pathlib
import shutil
from typing import Dict
from typing import List
from typing import Mapping
from typing import Sequence

import numpy as np
from PIL import Image

from keras_mvs import fusion
from keras_mvs.data import formats

PathLike = formats.PathLike

# Decoded views kept by the view caches of inference and fusion: one
# reference and its sources at a time, plus reuse between neighbouring
# references.
CACHED_VIEWS = 16
# The per-view subfolders.
VIEW_FOLDERS = ("depth", "confidence", "previews", "cams", "images")
# What a reconstruction writes into its folder (the inputs it derived,
# sfm/ and mvsnet_scene/, are not among them): what a rerun replaces.
RESULT_NAMES = ("summary.json", "fused.ply", *VIEW_FOLDERS)


def output_paths(out_dir: PathLike, view_id: int) -> Dict[str, pathlib.Path]:
    """The files of one view: keys `depth`, `confidence`, `stage1`,
    `stage2`, `depth_png`, `confidence_png`, `cam` and `image`."""
    out_dir = pathlib.Path(out_dir)
    name = f"{view_id:08d}"
    return {
        "depth": out_dir / "depth" / f"{name}.pfm",
        "confidence": out_dir / "confidence" / f"{name}.pfm",
        "stage1": out_dir / "confidence" / f"{name}_stage1.pfm",
        "stage2": out_dir / "confidence" / f"{name}_stage2.pfm",
        "depth_png": out_dir / "previews" / f"{name}_depth.png",
        "confidence_png": out_dir / "previews" / f"{name}_confidence.png",
        "cam": out_dir / "cams" / f"{name}_cam.txt",
        "image": out_dir / "images" / f"{name}.png",
    }


def prepare_output_dir(out_dir: PathLike) -> None:
    """Creates the per-view subfolders and drops a stale `summary.json`
    (its presence marks a complete run)."""
    out_dir = pathlib.Path(out_dir)
    for sub in VIEW_FOLDERS:
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").unlink(missing_ok=True)


def previous_results(out_dir: PathLike) -> List[pathlib.Path]:
    """The result files and folders of an earlier run in `out_dir`."""
    out_dir = pathlib.Path(out_dir)
    return [out_dir / name for name in RESULT_NAMES
            if (out_dir / name).exists()]


def remove_results(paths: Sequence[pathlib.Path]) -> None:
    """Deletes `previous_results`, so that a failed rerun never leaves an
    old `fused.ply` looking like its result."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


class OutputViews(Mapping):
    """Fusion views read back lazily from a reconstruction's output folder.

    `views[view_id]` is a `fusion.FusionView` built from `depth/`,
    `confidence/` (with the stage maps when present), the K of `cams/` and
    the network-resolution image of `images/`; a small cache keeps the
    views of the current reference and its sources decoded.

    Args:
        out_dir: the output folder.
        view_ids: the views with outputs.
    """

    def __init__(self, out_dir: PathLike, view_ids: Sequence[int]):
        self._out_dir = pathlib.Path(out_dir)
        self._view_ids = list(view_ids)
        self._cache: "collections.OrderedDict[int, fusion.FusionView]" = (
            collections.OrderedDict())

    def __getitem__(self, view_id: int) -> fusion.FusionView:
        if view_id not in self._view_ids:
            raise KeyError(view_id)
        if view_id in self._cache:
            self._cache.move_to_end(view_id)
            return self._cache[view_id]
        paths = output_paths(self._out_dir, view_id)
        depth = formats.read_pfm(paths["depth"])
        camera = formats.read_cam_file(paths["cam"])
        with Image.open(paths["image"]) as image:
            colours = np.asarray(image.convert("RGB"))
        stages = [formats.read_pfm(paths[key]) for key in ("stage1", "stage2")
                  if paths[key].is_file()]
        confidence = formats.read_pfm(paths["confidence"])
        view = fusion.FusionView(
            depth=depth, confidence=confidence,
            intrinsics=camera.intrinsics, cam_from_world=camera.cam_from_world,
            image=colours,
            stage_confidences=[*stages, confidence] if stages else ())
        self._cache[view_id] = view
        if len(self._cache) > CACHED_VIEWS:
            self._cache.popitem(last=False)
        return view

    def __iter__(self):
        return iter(self._view_ids)

    def __len__(self) -> int:
        return len(self._view_ids)

