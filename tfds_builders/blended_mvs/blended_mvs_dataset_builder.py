"""BlendedMVS, low-resolution set (768x576), as used by UniMVSNet.

One example is one scene with all its views; see `tfds_builders.mvs_scene`
for the shared features and ALGORITHMS.md 1.6 for the layout.
"""

import dataclasses

import tensorflow_datasets as tfds
from etils import epath

from keras_mvs.data import formats
from tfds_builders import mvs_scene

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
BlendedMVS cannot be downloaded automatically. Download the low-res set
(`BlendedMVS.zip`, "low-res set", 768x576, linked from the BlendedMVS
README at https://github.com/YoYo000/BlendedMVS and from the UniMVSNet
README) and extract it so that the manual directory (`--manual_dir`,
default ~/tensorflow_datasets/downloads/manual/) holds one folder per scene:
    <scene id>/blended_images/00000000.jpg ...
    <scene id>/cams/00000000_cam.txt ... and <scene id>/cams/pair.txt
    <scene id>/rendered_depth_maps/00000000.pfm ...
Optional: `training_list.txt` and `validation_list.txt` (one scene id per
line, as in the BlendedMVS archive and UniMVSNet's datasets/lists/blendedmvs/)
next to the scene folders define the train and validation splits. Without
them every scene found is in the train split.
"""


@dataclasses.dataclass
class BlendedMvsConfig(tfds.core.BuilderConfig):
    """A BlendedMVS variant.

    Attributes:
        num_depths: number of initial hypotheses (128 in UniMVSNet's
            BlendedMVS loader).
        interval_scale: the loader's interval multiplier.
    """

    num_depths: int = 128
    interval_scale: float = 1.06


def read_scene_list(path: epath.Path) -> list[str]:
    """Reads a scene-id list (one per line, blanks skipped)."""
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip()]


def scene_splits(manual_dir: epath.Path, found: list[str]
                 ) -> dict[str, list[str]]:
    """Assigns scenes to splits from the list files, else all to train.

    Args:
        manual_dir: the manual directory.
        found: the scene ids present (folders with blended_images/).

    Returns:
        Split name -> scene ids; empty splits are left out.

    Raises:
        mvs_scene.ManualDataError: a listed scene is not present.
    """
    splits = {}
    for split, list_name in (("train", "training_list.txt"),
                             ("validation", "validation_list.txt")):
        list_path = manual_dir / list_name
        if list_path.exists():
            scenes = read_scene_list(list_path)
            missing = sorted(set(scenes) - set(found))
            if missing:
                raise mvs_scene.ManualDataError(
                    f"Incomplete manual directory: {list_path} lists scenes "
                    f"without a <scene>/blended_images folder: {missing}"
                    f"\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
            splits[split] = scenes
    if not splits:
        splits["train"] = found
    return {name: scenes for name, scenes in splits.items() if scenes}


def _require(path: epath.Path, what: str) -> epath.Path:
    return mvs_scene.require(path, what, MANUAL_DOWNLOAD_INSTRUCTIONS)


class Builder(tfds.core.GeneratorBasedBuilder):
    """BlendedMVS low-res set: 768x576 images with rendered depth."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        BlendedMvsConfig(
            name="low_res",
            description="768x576 images, rendered depth, 128 hypotheses."),
    ]
    DEFAULT_CONFIG_NAME = "low_res"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=mvs_scene.scene_features(
                depth_units="scene units",
                intrinsics_doc="for the stored 768x576 images.",
                with_depths=True, with_masks=False),
            homepage="https://github.com/YoYo000/BlendedMVS",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = epath.Path(dl_manager.manual_dir)
        found = sorted(path.name for path in manual_dir.iterdir()
                       if (path / "blended_images").exists())
        if not found:
            raise mvs_scene.ManualDataError(
                f"Incomplete manual directory: no <scene>/blended_images "
                f"folder in {manual_dir}\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {split: self._generate_examples(
                    [self._plan(manual_dir / scene) for scene in scenes])
                for split, scenes in scene_splits(manual_dir, found).items()}

    def _depth_range(self, camera: formats.Camera) -> tuple[float, float]:
        # UniMVSNet's BlendedMVS loader reads only DEPTH_MIN and
        # DEPTH_INTERVAL: hypotheses min + k * interval * 1.06, k < 128
        # (ALGORITHMS.md 1.6), whatever NUM and MAX the line also holds.
        config = self.builder_config
        last = camera.depth_min + ((config.num_depths - 1)
                                   * camera.depth_interval
                                   * config.interval_scale)
        return camera.depth_min, last

    def _generate_examples(self, plans: list[mvs_scene.ScenePlan]):
        for plan in plans:
            yield plan.key, mvs_scene.scene_example(plan, self._depth_range)

    def _plan(self, scene_dir: epath.Path) -> mvs_scene.ScenePlan:
        """Lists and checks the files of one scene."""
        scene = scene_dir.name
        pair_file = _require(scene_dir / "cams" / "pair.txt",
                             f"the pair file of scene {scene}")
        views = tuple(
            mvs_scene.ViewFiles(
                view_id=vid,
                image=_require(scene_dir / "blended_images" / f"{vid:08d}.jpg",
                               f"the image of view {vid} of scene {scene}"),
                cam=_require(scene_dir / "cams" / f"{vid:08d}_cam.txt",
                             f"the camera of view {vid} of scene {scene}"),
                depth=_require(
                    scene_dir / "rendered_depth_maps" / f"{vid:08d}.pfm",
                    f"the depth of view {vid} of scene {scene}"))
            for vid in mvs_scene.view_order(mvs_scene.read_pairs(pair_file)))
        return mvs_scene.ScenePlan(key=scene, scene=scene,
                                   pair_file=pair_file, views=views)
