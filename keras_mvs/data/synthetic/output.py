"""Writing rendered scenes in the MVSNet layout, the cached benchmark split,
and a quick-look preview."""

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Union

import numpy as np

from keras_mvs import files
from keras_mvs import visualize
from keras_mvs.data import formats
from keras_mvs.data.synthetic import render
from keras_mvs.data.synthetic import scene_config


def _config_record(config: scene_config.SceneConfig) -> dict:
    """The config as plain JSON values, with the renderer version."""
    record = {field.name: getattr(config, field.name)
              for field in dataclasses.fields(config)}
    record["renderer_version"] = render.RENDERER_VERSION
    return record


def _write_png(path: Path, array: np.ndarray) -> None:
    # Fixed encoder settings and no metadata, so the bytes depend only on
    # the pixels.
    files.write_png(path, array, compress_level=6, optimize=False)


def scene_camera(scene: dict, view: int) -> formats.Camera:
    """View `view` of a rendered scene as the Camera its cam file holds
    (intrinsics, pose and the 4-field depth line)."""
    return formats.Camera(
        intrinsics=scene["intrinsics"][view],
        cam_from_world=scene["cam_from_world"][view],
        depth_min=float(scene["depth_min"][view]),
        depth_interval=float(scene["depth_interval"][view]),
        num_depths=int(scene["num_depths"]),
        depth_max=float(scene["depth_max"][view]))


def write_scene(scene: dict, out_dir: Union[str, os.PathLike],
                overwrite: bool = False) -> Path:
    """Writes a rendered scene in the MVSNet layout.

    Files, view ids as `{id:08d}`: `images/ID.png` (8-bit RGB),
    `cams/ID_cam.txt` (4-field depth line, see `render_scene`),
    `pair.txt`, `depths/ID.pfm` (float32 depth, 0 where no surface),
    `masks/ID.png` (255 where the depth is valid), `gt_surface.ply` (float32
    x, y, z, nx, ny, nz of the ground-truth surface) and
    `scene.json` (the SceneConfig with the renderer version, and the
    analytic primitives). The folder is
    assembled under a temporary sibling name and renamed when complete, so
    a folder under the final name is never half written.

    Args:
        scene: the output of `render_scene`.
        out_dir: folder to create.
        overwrite: replace an existing `out_dir` (once the new one is
            complete); otherwise an existing non-empty folder is an error.

    Returns:
        The scene folder.

    Raises:
        FileExistsError: `out_dir` exists, is not empty and `overwrite` is
            False.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"write_scene: {out_dir} exists and is not empty; pass "
            "overwrite=True to replace it.")
    with files.staged_directory(out_dir) as staging:
        for sub in ("images", "cams", "depths", "masks"):
            (staging / sub).mkdir()
        for view in range(len(scene["images"])):
            name = f"{view:08d}"
            _write_png(staging / "images" / f"{name}.png",
                       scene["images"][view])
            _write_png(staging / "masks" / f"{name}.png",
                       np.where(scene["masks"][view], 255, 0).astype(
                           np.uint8))
            formats.write_pfm(staging / "depths" / f"{name}.pfm",
                              scene["depths"][view])
            formats.write_cam_file(staging / "cams" / f"{name}_cam.txt",
                                   scene_camera(scene, view))
        formats.write_pair_file(staging / "pair.txt", scene["pairs"])
        files.write_ply(staging / "gt_surface.ply", scene["surface_points"],
                        normals=scene["surface_normals"])
        record = {"config": _config_record(scene["config"]),
                  "primitives": scene["primitives"]}
        files.write_text(staging / "scene.json",
                         json.dumps(record, indent=1, sort_keys=True) + "\n")
    return out_dir


def write_scenes(
    configs: Sequence[scene_config.SceneConfig],
    folders: Sequence[Union[str, os.PathLike]],
    overwrite: bool = False,
    preview_path: Optional[Union[str, os.PathLike]] = None,
    on_scene: Optional[Callable[[int], None]] = None,
) -> list[Path]:
    """Renders `configs[k]` into `folders[k]` (`write_scene`), all or none.

    Existing non-empty folders are refused before anything is rendered, so
    a refused run leaves nothing half done.

    Args:
        configs: one `SceneConfig` per scene.
        folders: the scene folders, as many as `configs`.
        overwrite: replace existing folders.
        preview_path: also write `preview` of the first scene's middle view
            (a PNG) there.
        on_scene: called with k + 1 after scene k is written (progress).

    Returns:
        The scene folders.

    Raises:
        FileExistsError: a folder exists, is not empty and `overwrite` is
            False (the message names it).
        ValueError: `configs` and `folders` differ in length.
    """
    folders = [Path(folder) for folder in folders]
    if len(configs) != len(folders):
        raise ValueError(f"write_scenes: {len(configs)} configs for "
                         f"{len(folders)} folders")
    existing = [folder for folder in folders
                if folder.exists() and any(folder.iterdir())]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists and is not empty; "
                              "pass --overwrite to replace it")
    for index, (config, folder) in enumerate(zip(configs, folders,
                                                 strict=True)):
        scene = render.render_scene(config)
        write_scene(scene, folder, overwrite=overwrite)
        if index == 0 and preview_path is not None:
            files.write_png(preview_path,
                            preview(scene, view=config.num_views // 2),
                            compress_level=9)
        if on_scene is not None:
            on_scene(index + 1)
    return folders


def benchmark_seeds(split: str) -> tuple[int, ...]:
    """Seeds of the fixed benchmark split "train" or "test"."""
    seeds = {"train": scene_config.BENCHMARK_TRAIN_SEEDS,
             "test": scene_config.BENCHMARK_TEST_SEEDS}
    if split not in seeds:
        raise ValueError(
            f"Benchmark split must be 'train' or 'test'. Received: "
            f"split={split!r}")
    return seeds[split]


def benchmark_dir(split: str,
                  root: Optional[Union[str, os.PathLike]] = None,
                  height: int = 128, width: int = 160,
                  num_views: int = scene_config.BENCHMARK_NUM_VIEWS) -> Path:
    """The folder `ensure_benchmark` keeps a split in (it may not exist yet).

    Args: as `ensure_benchmark`.
    """
    root = (Path.home() / ".cache" / "keras_mvs" / "synthetic"
            if root is None else Path(root))
    version = render.RENDERER_VERSION
    return root / f"{split}-{height}x{width}-v{num_views}-r{version}"


def ensure_benchmark(split: str,
                     root: Optional[Union[str, os.PathLike]] = None,
                     height: int = 128, width: int = 160,
                     num_views: int = scene_config.BENCHMARK_NUM_VIEWS,
                     on_scene: Optional[Callable[[int, int], None]] = None,
                     ) -> list[Path]:
    """Returns the benchmark scenes of a split, rendering them on first use.

    The split is written once to `root/<key>/scene_{k:03d}` (scene k has
    seed `benchmark_seeds(split)[k]`, all other SceneConfig fields at their
    defaults), where the key encodes split, size, view count and renderer
    version, e.g. `train-128x160-v20-r2`. The split is rendered into a
    temporary folder and renamed into place, so an existing key folder is
    always complete; concurrent callers may both render, and the first
    rename wins.

    Args:
        split: "train" (16 scenes) or "test" (4 held-out scenes).
        root: cache folder; defaults to `~/.cache/keras_mvs/synthetic`.
        height: image height in pixels.
        width: image width in pixels.
        num_views: views per scene.
        on_scene: called as `on_scene(k, n)` before scene k (0-based) of
            the n to render is rendered; not called when the split exists.

    Returns:
        The scene folders, in seed order.
    """
    seeds = benchmark_seeds(split)
    split_dir = benchmark_dir(split, root, height, width, num_views)
    names = [f"scene_{index:03d}" for index in range(len(seeds))]
    if not split_dir.is_dir():
        staging = files.staging_directory(split_dir)
        try:
            for index, (name, seed) in enumerate(zip(names, seeds)):
                if on_scene is not None:
                    on_scene(index, len(seeds))
                config = scene_config.SceneConfig(
                    height=height, width=width, num_views=num_views,
                    seed=seed)
                write_scene(render.render_scene(config), staging / name)
            # Not files.publish_directory: a split another process has
            # finished meanwhile is kept, not replaced under its readers.
            staging.chmod(files.FOLDER_MODE)
            try:
                staging.rename(split_dir)
            except OSError:
                # Another process finished the same split first.
                if not split_dir.is_dir():
                    raise
                shutil.rmtree(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return [split_dir / name for name in names]


def preview(scene: dict, view: int = 0) -> np.ndarray:
    """A rendered view beside its depth in `keras_mvs.visualize`'s colour map
    (nearest valid depth dark purple, farthest yellow, no depth black),
    `[H, 2W + 8, 3]` uint8, for documentation and quick looks."""
    image = scene["images"][view]
    depth, mask = scene["depths"][view], scene["masks"][view]
    valid = depth[mask]
    near, far = ((float(valid.min()), float(valid.max())) if valid.size
                 else (None, None))
    colours = visualize.colorize_depth(depth, mask, near, far)
    gap = np.full((image.shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([image, gap, colours], axis=1)
