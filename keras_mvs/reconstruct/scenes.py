"""The scene a reconstruction runs on: `--scene` (an MVSNet folder or a
COLMAP model) or `--images` (photos, through structure from motion).

A COLMAP model, or the model structure from motion makes, is converted
(`keras_mvs.data.colmap`) into OUT/mvsnet_scene/, which holds the cams,
depth ranges and pair.txt used; structure from motion itself
(`keras_mvs.data.sfm`) runs into OUT/sfm/.
"""

import pathlib
from typing import List
from typing import Optional
from typing import Tuple

from keras_mvs.data import colmap
from keras_mvs.data import scene as scene_lib
from keras_mvs.data import sfm

# Depth-range multipliers of the 1st / 99th percentile of the sparse-point
# depths for scenes made by structure from motion. colmap2mvsnet's 0.75 /
# 1.25 (keras_mvs.data.colmap) span 2.8x the depth extent of the Middlebury
# dino's bounding box, and with the phase-1 unity model at 320x224 the pcd
# filter then kept 5 k points on the dino and 11 k on the temple; 0.9 / 1.1
# still covers both rings' bounding boxes and kept 105 k and 48 k.
SFM_NEAR_FACTOR = 0.9
SFM_FAR_FACTOR = 1.1


def open_scene(scene_dir: pathlib.Path, images: Optional[str],
               out_dir: pathlib.Path) -> scene_lib.MVSScene:
    """An MVSScene for `--scene`: the folder itself, or the conversion of a
    COLMAP model written to OUT/mvsnet_scene.

    Args:
        scene_dir: an MVSNet-layout folder or a COLMAP model folder (the
            model in it, its sparse/ or sparse/0/).
        images: a COLMAP model's undistorted images (default: images/
            beside the model); refused for MVSNet folders.
        out_dir: the reconstruction's output folder.

    Raises:
        ValueError: the folder is neither layout (message lists both).
    """
    if not scene_dir.is_dir():
        raise ValueError(f"--scene {scene_dir}: no such folder")
    if (scene_dir / "cams").is_dir() and (scene_dir / "pair.txt").is_file():
        if images:
            raise ValueError(
                f"--images is for COLMAP models; {scene_dir} is an MVSNet "
                "folder, whose images/ is used")
        return scene_lib.MVSScene(scene_dir)
    model_dir = colmap.find_model_dir(scene_dir)
    if model_dir is None:
        found = sorted(p.name for p in scene_dir.iterdir())[:8]
        raise ValueError(
            f"--scene {scene_dir}: expected an MVSNet-layout folder (cams/, "
            "images/, pair.txt) or a COLMAP model (cameras, images and "
            "points3D .bin or .txt in the folder, its sparse/ or "
            f"sparse/0/); found {found}")
    conversion = colmap.convert(model_dir, images)
    target = colmap.write_mvsnet_folder(conversion, out_dir / "mvsnet_scene",
                                        link_images=True, overwrite=True)
    print(f"COLMAP model {model_dir}: {len(conversion.names)} views "
          f"converted to {target}")
    return scene_lib.MVSScene(target)


def sfm_options(matcher: str = "auto", mapper: str = "auto",
                camera_model: str = "SIMPLE_PINHOLE",
                max_features: int = 8192,
                init_pair: Optional[str] = None,
                camera_params: Optional[Tuple[float, ...]] = None,
                mapping_attempts: int = 6,
                consensus_models: int = 3,
                ) -> sfm.SfmOptions:
    """The SfmOptions of the --sfm-* flags (`init_pair` is the text of
    `--sfm-init-pair`, two image names separated by a comma;
    `camera_params` the values of `--sfm-camera-params`,
    `mapping_attempts` of `--sfm-mapping-attempts`, `consensus_models` of
    `--sfm-consensus`).

    Raises:
        ValueError: an invalid value (the message names the flag).
    """
    init = None
    if init_pair:
        init = tuple(name.strip() for name in init_pair.split(","))
        if len(init) != 2:
            raise ValueError(
                f"--sfm-init-pair: expected two image names separated by a "
                f"comma; received {init_pair!r}")
    try:
        return sfm.SfmOptions(
            matcher=matcher, mapper=mapper, camera_model=camera_model,
            max_num_features=max_features, init_image_names=init,
            camera_params=camera_params, mapping_attempts=mapping_attempts,
            consensus_models=consensus_models)
    except sfm.SfmOptionError as error:
        raise ValueError(error.describe(_SFM_FLAGS)) from None


# The --sfm-* flag of each SfmOptions field this function sets.
_SFM_FLAGS = {"matcher": "--sfm-matcher", "mapper": "--sfm-mapper",
              "camera_model": "--sfm-camera-model",
              "camera_params": "--sfm-camera-params",
              "max_num_features": "--sfm-max-features",
              "init_image_names": "--sfm-init-pair",
              "mapping_attempts": "--sfm-mapping-attempts",
              "consensus_models": "--sfm-consensus"}


def scene_from_photos(
    images: pathlib.Path, out_dir: pathlib.Path, options: sfm.SfmOptions,
) -> Tuple[scene_lib.MVSScene, dict]:
    """Structure from motion on a folder of photos into OUT/sfm, converted
    to OUT/mvsnet_scene.

    Returns:
        `(MVSScene, sfm record)`: the record is `SfmResult.to_json()` plus
        `views_without_sources`, registered images no other view shares
        points with (they get no depth map).

    Raises:
        ValueError: a bad photo set or a failed conversion (`SfmError`,
            `ColmapError`; the message names the file or the problem).
    """
    try:
        result = sfm.run_sfm(images, out_dir / "sfm", options)
    except RuntimeError as error:  # pycolmap's own failures
        raise ValueError(
            f"structure from motion on {images} failed: {error}") from None
    conversion = colmap.convert(result.model_dir, result.images_dir,
                                near_factor=SFM_NEAR_FACTOR,
                                far_factor=SFM_FAR_FACTOR)
    target = colmap.write_mvsnet_folder(conversion, out_dir / "mvsnet_scene",
                                        link_images=True, overwrite=True)
    print(f"conversion: {len(conversion.names)} views with depth ranges "
          f"({SFM_NEAR_FACTOR} x 1st to {SFM_FAR_FACTOR} x 99th percentile "
          f"of the sparse depths) and pairs in {target}")
    record = result.to_json()
    record["views_without_sources"] = [
        conversion.names[ref] for ref, sources in conversion.pairs
        if not sources]
    return scene_lib.MVSScene(target), record


def convert_colmap(
    colmap_dir: pathlib.Path, images: Optional[str], out: pathlib.Path, *,
    link: bool = False, overwrite: bool = False, near_factor: float = 0.75,
    far_factor: float = 1.25, num_sources: int = 10,
) -> Tuple[colmap.ColmapConversion, pathlib.Path]:
    """A COLMAP model and its images written as an MVSNet scene folder
    (`python -m experiments.convert_colmap`; `keras_mvs.data.colmap`).

    Returns:
        `(conversion, folder written)`.

    Raises:
        ValueError: no model, a damaged or distorted one (`ColmapError`).
        FileExistsError: `out` exists and `overwrite` is False.
    """
    conversion = colmap.convert(colmap_dir, images, near_factor=near_factor,
                                far_factor=far_factor,
                                num_sources=num_sources)
    folder = colmap.write_mvsnet_folder(conversion, pathlib.Path(out),
                                        link_images=link,
                                        overwrite=overwrite)
    return conversion, folder


def conversion_table(conversion: colmap.ColmapConversion) -> str:
    """Per view: sparse points seen, depth range and best three sources."""
    lines = [f"{conversion.model_dir}: {len(conversion.names)} views",
             f"{'view':>6} {'points':>7} {'depth_min':>11} "
             f"{'depth_max':>11}  best sources"]
    for view, (camera, count, (_, sources)) in enumerate(zip(
            conversion.cameras, conversion.num_points, conversion.pairs)):
        best = " ".join(str(s) for s, _ in sources[:3])
        lines.append(f"{view:>6} {count:>7} {camera.depth_min:>11.4g} "
                     f"{camera.depth_max:>11.4g}  {best}")
    return "\n".join(lines)


def scene_folder_outputs(folder: pathlib.Path,
                         linked: bool) -> List[Tuple[str, str]]:
    """`(path, what it is)` of an MVSNet folder written from COLMAP."""
    return [(str(folder / name), what) for name, what in (
        ("cams", "cameras with depth ranges (MVSNet cam files)"),
        ("images", "the undistorted images" + (" (links)" if linked
                                               else "")),
        ("pair.txt", "source views per view"))]
