"""DTU multi-view stereo, as preprocessed by MVSNet (training and test sets).

One example is one scan (training configs: one scan under one lighting
condition) with all its views; see `tfds_builders.mvs_scene` for the shared
features and ALGORITHMS.md 1.4 and 1.5 for the layouts.
"""

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from keras_mvs.data import formats
from tfds_builders import mvs_scene

# The 22 evaluation scans of the MVSNet family (ALGORITHMS.md 1.4).
TEST_SCANS = (1, 4, 9, 10, 11, 12, 13, 15, 23, 24, 29, 32, 33, 34, 48, 49,
              62, 75, 77, 110, 114, 118)

NUM_LIGHTS = 7

# Cameras/train/*_cam.txt hold K for 160x128, a quarter of the 640x512
# rectified images (ALGORITHMS.md 1.4); stored as they are.
TRAIN_CAMERA_DOWNSCALE = 4

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
DTU cannot be downloaded automatically. Put the MVSNet-preprocessed archives
in the manual directory (`--manual_dir`, default
~/tensorflow_datasets/downloads/manual/) as follows.

Training configs (`train_light3`, `train_all_lights`):
  1. `dtu_training.rar` ("preprocessed DTU training data", MVSNet README,
     also linked from the CasMVSNet and UniMVSNet READMEs) -> extract its
     `Cameras/` and `Rectified/` folders into `<manual_dir>/dtu_training/`.
  2. `Depths_raw.zip` (full-resolution 1600x1200 depth, linked from the
     CasMVSNet and UniMVSNet READMEs) -> extract so that
     `<manual_dir>/dtu_training/Depths_raw/scan1/depth_map_0000.pfm` exists.
  Resulting files:
     dtu_training/Cameras/pair.txt
     dtu_training/Cameras/train/00000000_cam.txt ... 00000048_cam.txt
     dtu_training/Rectified/scan{N}_train/rect_{001..049}_{0..6}_r5000.png
     dtu_training/Depths_raw/scan{N}/depth_map_{0000..0048}.pfm
     dtu_training/Depths_raw/scan{N}/depth_visual_{0000..0048}.png
  Optional: `<manual_dir>/lists/train.txt` and `lists/val.txt` (one scan per
  line, `scan3` or `3`; e.g. CasMVSNet's `lists/dtu/`) define the train and
  validation splits. Without them, train is every scan found minus the 22
  test scans, and there is no validation split.

Test config (`test`):
  3. `dtu_testing` ("preprocessed DTU testing data", MVSNet README) ->
     extract so that `<manual_dir>/dtu_testing/scan1/pair.txt`,
     `.../scan1/cams/00000000_cam.txt` and `.../scan1/images/00000000.jpg`
     exist (`images_post/`, when present, is used instead of `images/`).
"""


@dataclasses.dataclass
class DtuConfig(tfds.core.BuilderConfig):
    """A DTU variant.

    Attributes:
        layout: "training" (MVSNet dtu_training + Depths_raw: 640x512
            images, full-resolution depth and masks) or "testing" (MVSNet
            dtu_testing: 1600x1200 images, no depth).
        lights: the lighting conditions (0..6) stored, one example per scan
            and light; empty for the testing layout, which has one.
        num_depths: number of initial hypotheses the depth range spans.
        interval_scale: the reference loaders' interval multiplier.
    """

    layout: str = "training"
    lights: tuple[int, ...] = (3,)
    num_depths: int = 192
    interval_scale: float = 1.06


def _scan_number(name: str, source: str) -> int:
    """Parses `scan12` or `12` from a list file or folder name."""
    match = re.fullmatch(r"(?:scan)?(\d+)", name.strip())
    if match is None:
        raise ValueError(f"{source}: expected a scan name like 'scan12' or "
                         f"'12', found {name.strip()!r}")
    return int(match.group(1))


def read_scan_list(path: epath.Path) -> list[int]:
    """Reads a scan list (one `scanN` or `N` per line, blanks skipped)."""
    return [_scan_number(line, str(path))
            for line in path.read_text().splitlines() if line.strip()]


def training_splits(
    manual_dir: epath.Path, found: list[int]
) -> dict[str, list[int]]:
    """Assigns the scans of the training layout to splits.

    `lists/train.txt` and `lists/val.txt` in the manual directory, when
    present, give train and validation; otherwise train is every scan found
    minus TEST_SCANS. The test split is the TEST_SCANS found (Uni and CL
    validate on them, ALGORITHMS.md 1.4).

    Args:
        manual_dir: the manual directory.
        found: the scan numbers present under Rectified/.

    Returns:
        Split name -> sorted scan numbers; empty splits are left out.

    Raises:
        mvs_scene.ManualDataError: a listed scan is not present.
    """
    splits = {}
    for split, list_name in (("train", "train.txt"), ("validation",
                                                       "val.txt")):
        list_path = manual_dir / "lists" / list_name
        if list_path.exists():
            scans = read_scan_list(list_path)
            missing = sorted(set(scans) - set(found))
            if missing:
                raise mvs_scene.ManualDataError(
                    f"Incomplete manual directory: {list_path} lists scans "
                    f"{missing} that have no "
                    f"dtu_training/Rectified/scan{{N}}_train folder.\n\n"
                    f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
            splits[split] = sorted(scans)
    if "train" not in splits:
        splits["train"] = sorted(set(found) - set(TEST_SCANS))
    splits["test"] = sorted(set(found) & set(TEST_SCANS))
    return {name: scans for name, scans in splits.items() if scans}


def _require(path: epath.Path, what: str) -> epath.Path:
    return mvs_scene.require(path, what, MANUAL_DOWNLOAD_INSTRUCTIONS)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DTU (MVSNet preprocessed): training set with full-resolution depth, and
    the test set."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS = [
        DtuConfig(
            name="train_light3",
            description=("Training layout, lighting condition 3: 49 views "
                         "of 640x512, 1600x1200 depth and masks."),
            layout="training", lights=(3,)),
        DtuConfig(
            name="train_all_lights",
            description=("Training layout, all 7 lighting conditions (one "
                         "example per scan and light)."),
            layout="training", lights=tuple(range(NUM_LIGHTS))),
        DtuConfig(
            name="test",
            description="Test layout: 49 views of 1600x1200, no depth.",
            layout="testing", lights=()),
    ]
    DEFAULT_CONFIG_NAME = "train_light3"

    def _info(self) -> tfds.core.DatasetInfo:
        training = self.builder_config.layout == "training"
        extra = {}
        if training:
            extra["light"] = tfds.features.Scalar(
                dtype=np.int32, doc="Lighting condition, 0..6.")
            intrinsics_doc = (
                "as in Cameras/train: for the 160x128 grid, a quarter of the "
                "stored 640x512 images (multiply rows 0-1 by 4 for them).")
        else:
            intrinsics_doc = "for the stored 1600x1200 images."
        return self.dataset_info_from_configs(
            features=mvs_scene.scene_features(
                depth_units="mm", intrinsics_doc=intrinsics_doc,
                with_depths=training, with_masks=training, extra=extra),
            homepage="https://roboimagedata.compute.dtu.dk/?page_id=36",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = epath.Path(dl_manager.manual_dir)
        if self.builder_config.layout == "training":
            plans = self._training_plans(manual_dir)
        else:
            plans = {"test": self._testing_plans(manual_dir)}
        return {split: self._generate_examples(split_plans)
                for split, split_plans in plans.items()}

    def _depth_range(self, camera: formats.Camera) -> tuple[float, float]:
        return camera.depth_range(self.builder_config.num_depths,
                                  self.builder_config.interval_scale)

    def _generate_examples(self, plans: list[mvs_scene.ScenePlan]):
        for plan in plans:
            yield plan.key, mvs_scene.scene_example(plan, self._depth_range)

    def _training_plans(
        self, manual_dir: epath.Path
    ) -> dict[str, list[mvs_scene.ScenePlan]]:
        """Lists and checks every file of the training configs."""
        root = _require(manual_dir / "dtu_training", "the dtu_training folder")
        pair_file = _require(root / "Cameras" / "pair.txt",
                             "the shared pair file")
        view_ids = mvs_scene.view_order(mvs_scene.read_pairs(pair_file))
        rectified = _require(root / "Rectified", "the Rectified folder")
        found = sorted(
            _scan_number(path.name[:-len("_train")], str(path))
            for path in rectified.iterdir()
            if path.is_dir() and path.name.endswith("_train"))
        if not found:
            raise mvs_scene.ManualDataError(
                f"Incomplete manual directory: no scan{{N}}_train folders in "
                f"{rectified}\n\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        plans = {}
        for split, scans in training_splits(manual_dir, found).items():
            plans[split] = [
                self._training_plan(root, pair_file, view_ids, scan, light)
                for scan in scans for light in self.builder_config.lights]
        return plans

    def _training_plan(
        self, root: epath.Path, pair_file: epath.Path, view_ids: list[int],
        scan: int, light: int,
    ) -> mvs_scene.ScenePlan:
        images = root / "Rectified" / f"scan{scan}_train"
        depths = root / "Depths_raw" / f"scan{scan}"
        views = tuple(
            mvs_scene.ViewFiles(
                view_id=vid,
                image=_require(
                    images / f"rect_{vid + 1:03d}_{light}_r5000.png",
                    f"the scan{scan} image of view {vid}, light {light}"),
                cam=_require(root / "Cameras" / "train" / f"{vid:08d}_cam.txt",
                             f"the training camera of view {vid}"),
                depth=_require(depths / f"depth_map_{vid:04d}.pfm",
                               f"the scan{scan} Depths_raw depth of view "
                               f"{vid}"),
                mask=_require(depths / f"depth_visual_{vid:04d}.png",
                              f"the scan{scan} Depths_raw mask of view {vid}"),
            ) for vid in view_ids)
        return mvs_scene.ScenePlan(
            key=f"scan{scan}_light{light}", scene=f"scan{scan}",
            pair_file=pair_file, views=views, extra={"light": light})

    def _testing_plans(
        self, manual_dir: epath.Path
    ) -> list[mvs_scene.ScenePlan]:
        """Lists and checks every file of the test config."""
        root = _require(manual_dir / "dtu_testing", "the dtu_testing folder")
        present = [scan for scan in TEST_SCANS
                   if (root / f"scan{scan}").exists()]
        if not present:
            raise mvs_scene.ManualDataError(
                f"Incomplete manual directory: none of the test scans "
                f"scan{TEST_SCANS[0]}..scan{TEST_SCANS[-1]} is in {root}\n\n"
                f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        absent = sorted(set(TEST_SCANS) - set(present))
        if absent:
            logging.warning("DTU test: scans %s are not in %s; building the "
                            "%d present.", absent, root, len(present))
        plans = []
        for scan in present:
            scan_dir = root / f"scan{scan}"
            pair_file = _require(scan_dir / "pair.txt",
                                 f"the scan{scan} pair file")
            # The reference test loader prefers images_post/ (ALGORITHMS.md
            # 1.5).
            image_dir = scan_dir / "images_post"
            if not image_dir.exists():
                image_dir = scan_dir / "images"
            views = tuple(
                mvs_scene.ViewFiles(
                    view_id=vid,
                    image=_require(image_dir / f"{vid:08d}.jpg",
                                   f"the scan{scan} image of view {vid}"),
                    cam=_require(scan_dir / "cams" / f"{vid:08d}_cam.txt",
                                 f"the scan{scan} camera of view {vid}"))
                for vid in mvs_scene.view_order(
                    mvs_scene.read_pairs(pair_file)))
            plans.append(mvs_scene.ScenePlan(
                key=f"scan{scan}", scene=f"scan{scan}", pair_file=pair_file,
                views=views))
        return plans
