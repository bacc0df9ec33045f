"""Synthetic multi-view stereo scenes rendered by `keras_mvs.data.synthetic`.

Nothing is downloaded: each example is rendered from its seed (exact depth,
exact cameras, MVSNet view selection), so the whole TFDS path can run
without any external data. One example is one scene with all its views, in
the feature layout of the other builders (`tfds_builders.mvs_scene`).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from keras_mvs.data import synthetic
from tfds_builders import mvs_scene

MASK_VALID = 255


@dataclasses.dataclass
class SyntheticMvsConfig(tfds.core.BuilderConfig):
    """A resolution and scene set.

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        num_views: views per scene.
        train_seeds: the seeds of the train split's scenes.
        test_seeds: the seeds of the test split's scenes.
        num_depths: number of initial hypotheses the depth range spans.
        interval_scale: the reference loaders' interval multiplier.
    """

    height: int = 128
    width: int = 160
    num_views: int = synthetic.BENCHMARK_NUM_VIEWS
    train_seeds: tuple[int, ...] = synthetic.BENCHMARK_TRAIN_SEEDS
    test_seeds: tuple[int, ...] = synthetic.BENCHMARK_TEST_SEEDS
    num_depths: int = 192
    interval_scale: float = 1.06


def _benchmark(height: int, width: int) -> SyntheticMvsConfig:
    return SyntheticMvsConfig(
        name=f"benchmark_{height}x{width}",
        description=(
            f"The keras_mvs synthetic benchmark at {height}x{width}: "
            f"{len(synthetic.BENCHMARK_TRAIN_SEEDS)} train and "
            f"{len(synthetic.BENCHMARK_TEST_SEEDS)} test scenes of "
            f"{synthetic.BENCHMARK_NUM_VIEWS} views (the scenes of "
            "synthetic.ensure_benchmark)."),
        height=height, width=width)


class Builder(tfds.core.GeneratorBasedBuilder):
    """Synthetic scenes with exact depth; rendered, never downloaded."""

    # The patch number is the renderer version, so that data prepared by
    # another renderer is never reused.
    VERSION = tfds.core.Version(f"1.0.{synthetic.RENDERER_VERSION}")
    RELEASE_NOTES = {
        str(VERSION): f"Renderer version {synthetic.RENDERER_VERSION}."}
    BUILDER_CONFIGS = [
        _benchmark(128, 160),
        _benchmark(512, 640),
        SyntheticMvsConfig(
            name="tiny_32x40",
            description="Tests: 2 + 2 scenes of 3 views at 32x40.",
            height=32, width=40, num_views=3,
            train_seeds=synthetic.BENCHMARK_TRAIN_SEEDS[:2],
            test_seeds=synthetic.BENCHMARK_TEST_SEEDS[:2]),
    ]
    DEFAULT_CONFIG_NAME = "benchmark_128x160"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=mvs_scene.scene_features(
                depth_units="mm", intrinsics_doc="for the stored images.",
                with_depths=True, with_masks=True,
                extra={"seed": tfds.features.Scalar(
                    dtype=np.int32, doc="The scene's render seed.")}),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Rendered, not downloaded.
        return {"train": self._generate_examples(self.builder_config
                                                 .train_seeds),
                "test": self._generate_examples(self.builder_config
                                                .test_seeds)}

    def _generate_examples(self, seeds: tuple[int, ...]):
        for seed in seeds:
            yield f"seed{seed}", self._example(seed)

    def _example(self, seed: int) -> dict:
        """Renders one scene into a `scene_features` example."""
        config = self.builder_config
        scene = synthetic.render_scene(synthetic.SceneConfig(
            height=config.height, width=config.width,
            num_views=config.num_views, seed=seed,
            num_depths=config.num_depths))
        view_ids = list(range(config.num_views))
        pairs, scores = mvs_scene.pair_table(scene["pairs"], view_ids)
        # The same Camera (and so the same range) a reader of the scene's
        # written cam files builds (synthetic.write_scene).
        depth_range = [
            synthetic.scene_camera(scene, view).depth_range(
                config.num_depths, config.interval_scale)
            for view in view_ids]
        masks = np.where(scene["masks"], MASK_VALID, 0).astype(np.uint8)
        return {
            "scene": f"synthetic_seed{seed}",
            "seed": seed,
            "view_ids": np.asarray(view_ids, np.int32),
            "images": list(scene["images"]),
            "intrinsics": scene["intrinsics"].astype(np.float32),
            "cam_from_world": scene["cam_from_world"].astype(np.float32),
            "depth_range": np.asarray(depth_range, np.float32),
            "pairs": pairs,
            "scores": scores,
            "depths": scene["depths"].astype(np.float32),
            "masks": list(masks[..., None]),
        }
