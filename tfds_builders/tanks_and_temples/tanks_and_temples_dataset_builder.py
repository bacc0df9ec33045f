"""Tanks and Temples (intermediate and advanced), as preprocessed by MVSNet.

One example is one scene with all its views; see `tfds_builders.mvs_scene`
for the shared features and ALGORITHMS.md 1.7 for the layout. There is no
ground-truth depth: the benchmark scores fused point clouds online.
"""

import dataclasses

import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from keras_mvs.data import formats
from tfds_builders import mvs_scene

SCENES = {
    "intermediate": ("Family", "Francis", "Horse", "Lighthouse", "M60",
                     "Panther", "Playground", "Train"),
    "advanced": ("Auditorium", "Ballroom", "Courtroom", "Museum", "Palace",
                 "Temple"),
}

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Tanks and Temples cannot be downloaded automatically. Download the
MVSNet-preprocessed test set (`tankandtemples.zip`, "preprocessed Tanks and
Temples", linked from the MVSNet, CasMVSNet and UniMVSNet READMEs; it
includes the short-range cameras) and extract it so that the manual
directory (`--manual_dir`, default ~/tensorflow_datasets/downloads/manual/)
holds:
    intermediate/{Scene}/images/00000000.jpg ...
    intermediate/{Scene}/cams/00000000_cam.txt ...
    intermediate/{Scene}/pair.txt
    intermediate/short_range_cameras/cams_{scene lowercase}/00000000_cam.txt
        ... (config `intermediate_short_range` only)
    advanced/{Scene}/images/, cams/, pair.txt
Intermediate scenes: Family Francis Horse Lighthouse M60 Panther Playground
Train. Advanced: Auditorium Ballroom Courtroom Museum Palace Temple.
"""


@dataclasses.dataclass
class TanksAndTemplesConfig(tfds.core.BuilderConfig):
    """A Tanks and Temples variant.

    Attributes:
        group: "intermediate" or "advanced".
        short_range_cameras: read cams from
            `intermediate/short_range_cameras/cams_{scene lowercase}/`
            (tighter depth ranges; UniMVSNet's README asks for them, and
            without them its intermediate mean F-score drops from 64.36 to
            42.73, ALGORITHMS.md 1.7).
        num_depths: number of initial hypotheses the depth range spans.
        interval_scale: the reference loaders' interval multiplier.
    """

    group: str = "intermediate"
    short_range_cameras: bool = False
    num_depths: int = 192
    interval_scale: float = 1.06


def _require(path: epath.Path, what: str) -> epath.Path:
    return mvs_scene.require(path, what, MANUAL_DOWNLOAD_INSTRUCTIONS)


class Builder(tfds.core.GeneratorBasedBuilder):
    """Tanks and Temples (MVSNet preprocessed): images and cameras."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        TanksAndTemplesConfig(
            name="intermediate_short_range",
            description=("Intermediate scenes with the short-range cameras "
                         "(the UniMVSNet evaluation setting)."),
            group="intermediate", short_range_cameras=True),
        TanksAndTemplesConfig(
            name="intermediate",
            description="Intermediate scenes with the default cameras.",
            group="intermediate"),
        TanksAndTemplesConfig(
            name="advanced", description="Advanced scenes.",
            group="advanced"),
    ]
    DEFAULT_CONFIG_NAME = "intermediate_short_range"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=mvs_scene.scene_features(
                depth_units="scene units",
                intrinsics_doc="for the stored images (mostly 1920x1080).",
                with_depths=False, with_masks=False),
            homepage="https://www.tanksandtemples.org/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        group_dir = _require(epath.Path(dl_manager.manual_dir) / config.group,
                             f"the {config.group} folder")
        present = [scene for scene in SCENES[config.group]
                   if (group_dir / scene).exists()]
        if not present:
            raise mvs_scene.ManualDataError(
                f"Incomplete manual directory: none of the {config.group} "
                f"scenes {SCENES[config.group]} is in {group_dir}\n\n"
                f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        absent = sorted(set(SCENES[config.group]) - set(present))
        if absent:
            logging.warning("Tanks and Temples %s: scenes %s are not in %s; "
                            "building the %d present.", config.group, absent,
                            group_dir, len(present))
        plans = [self._plan(group_dir, scene) for scene in present]
        return {"test": self._generate_examples(plans)}

    def _depth_range(self, camera: formats.Camera) -> tuple[float, float]:
        return camera.depth_range(self.builder_config.num_depths,
                                  self.builder_config.interval_scale)

    def _generate_examples(self, plans: list[mvs_scene.ScenePlan]):
        for plan in plans:
            yield plan.key, mvs_scene.scene_example(plan, self._depth_range)

    def _plan(self, group_dir: epath.Path, scene: str
              ) -> mvs_scene.ScenePlan:
        """Lists and checks the files of one scene."""
        scene_dir = group_dir / scene
        pair_file = _require(scene_dir / "pair.txt",
                             f"the pair file of {scene}")
        if self.builder_config.short_range_cameras:
            cams_dir = _require(
                group_dir / "short_range_cameras" / f"cams_{scene.lower()}",
                f"the short-range cameras of {scene}")
        else:
            cams_dir = scene_dir / "cams"
        views = tuple(
            mvs_scene.ViewFiles(
                view_id=vid,
                image=_require(scene_dir / "images" / f"{vid:08d}.jpg",
                               f"the image of view {vid} of {scene}"),
                cam=_require(cams_dir / f"{vid:08d}_cam.txt",
                             f"the camera of view {vid} of {scene}"))
            for vid in mvs_scene.view_order(mvs_scene.read_pairs(pair_file)))
        return mvs_scene.ScenePlan(key=scene, scene=scene,
                                   pair_file=pair_file, views=views)
