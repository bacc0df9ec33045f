"""Tests of keras_mvs.data.tfds_source on the builders' dummy data.

The DTU dummy data (tfds_builders/make_dummy_data.py) mimics the real
geometry at small size: 32x40 images, training cams for 8x10 (a quarter),
full-resolution maps of 72x92 whose halves (36x46) are centre-cropped by
(2, 3) pixels, like (44, 80) for real DTU. Its depth value encodes the
position: depth[i, j] = 500 + 10 scan + view + i + j / 128.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_mvs.data import formats
from keras_mvs.data import pipeline
from keras_mvs.data import synthetic
from keras_mvs.data import tfds_source
from tfds_builders.blended_mvs import blended_mvs_dataset_builder
from tfds_builders.dtu import dtu_dataset_builder
from tfds_builders.tanks_and_temples import tanks_and_temples_dataset_builder

BUILDERS = pathlib.Path(__file__).resolve().parents[2] / "tfds_builders"
DTU_DUMMY = BUILDERS / "dtu" / "dummy_data"


def _prepare(builder_class, config, manual_dir, data_dir):
    builder = builder_class(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for config in ("train_light3", "test"):
        _prepare(dtu_dataset_builder.Builder, config, DTU_DUMMY, root)
    _prepare(blended_mvs_dataset_builder.Builder, None,
             BUILDERS / "blended_mvs" / "dummy_data", root)
    for config in ("intermediate", "intermediate_short_range"):
        _prepare(tanks_and_temples_dataset_builder.Builder, config,
                 BUILDERS / "tanks_and_temples" / "dummy_data", root)
    return str(root)


def _first(dataset):
    return next(iter(dataset.as_numpy_iterator()))


def _by_name(dataset):
    """TFDS orders the examples of a split by a hash of their keys."""
    return {scene["name"].decode(): scene
            for scene in dataset.as_numpy_iterator()}


def test_dtu_training_scene(data_dir):
    scene = _first(tfds_source.scenes_from_tfds(
        "dtu", "train", config="train_light3", data_dir=data_dir))
    assert scene["name"] == b"scan2 light 3"
    np.testing.assert_array_equal(scene["view_ids"], [0, 1, 2])
    image_path = (DTU_DUMMY / "dtu_training" / "Rectified" / "scan2_train"
                  / "rect_002_3_r5000.png")
    np.testing.assert_array_equal(
        scene["images"][1], np.asarray(Image.open(image_path)))
    assert scene["images"].shape == (3, 32, 40, 3)
    # Training K is for 8x10; times 4 it belongs to the 32x40 images and
    # equals 1/2 K_full - (3, 2) with the dummy K_full (fx 110.4,
    # cx 45.7, cy 36.2 on the 72x92 grid): 55.2, 45.7/2 - 3, 36.2/2 - 2.
    np.testing.assert_allclose(
        scene["intrinsics"][0],
        [[55.2, 0.0, 19.85], [0.0, 55.2, 16.1], [0.0, 0.0, 1.0]], rtol=1e-6)
    # Depth (i, j) comes from full-resolution (2 (i + 2), 2 (j + 3)).
    assert scene["depths"].shape == (3, 32, 40)
    assert scene["depths"][0, 0, 0] == 500 + 20 + 0 + 4 + 6 / 128
    assert scene["depths"][1, 5, 7] == 500 + 20 + 1 + 14 + 20 / 128
    assert scene["depths"][2, 31, 39] == 500 + 20 + 2 + 66 + 84 / 128
    mask_png = np.asarray(Image.open(
        DTU_DUMMY / "dtu_training" / "Depths_raw" / "scan2"
        / "depth_visual_0001.png"))
    np.testing.assert_array_equal(
        scene["masks"][1], (mask_png[4:68:2, 6:86:2] > 10).astype(np.float32))
    assert 0 < scene["masks"].mean() < 1
    np.testing.assert_allclose(scene["depth_range"],
                               [[425.0, 425.0 + 191 * 2.5 * 1.06]] * 3,
                               rtol=1e-6)
    np.testing.assert_array_equal(scene["pairs"][:, :3],
                                  [[1, 2, -1], [0, 2, -1], [1, 0, -1]])
    assert scene["masks"].dtype == np.float32


def test_dtu_mask_threshold_is_strictly_above_10():
    values = tf.constant([[[9, 10], [11, 255]]], tf.uint8)  # [1, 2, 2]
    maps = tf.repeat(tf.repeat(values, 2, axis=1), 2, axis=2)  # [1, 4, 4]
    example = {
        "images": tf.zeros([1, 2, 2, 3], tf.uint8),
        "intrinsics": tf.eye(3, batch_shape=[1]),
        "cam_from_world": tf.eye(4, batch_shape=[1]),
        "depth_range": tf.constant([[1.0, 2.0]]),
        "pairs": -tf.ones([1, 10], tf.int32),
        "view_ids": tf.zeros([1], tf.int32),
        "scene": tf.constant("scan0"),
        "depths": tf.cast(maps, tf.float32),
        "masks": maps[..., tf.newaxis],
    }
    scene = tfds_source._scene_dict(example, "dtu", dtu_training=True)
    np.testing.assert_array_equal(scene["masks"][0], [[0, 0], [1, 1]])


def test_real_dtu_crop_offsets_and_intrinsics():
    """The real sizes: 1200x1600 maps, 512x640 images, offsets (44, 80)."""
    rows = tf.range(1200, dtype=tf.int32)[:, tf.newaxis]
    cols = tf.range(1600, dtype=tf.int32)[tf.newaxis, :]
    position = (rows * 10000 + cols)[tf.newaxis]  # [1, 1200, 1600]
    cropped = tfds_source.crop_dtu_training_maps(position, 512, 640)
    assert cropped.shape == (1, 512, 640)
    assert int(cropped[0, 0, 0]) == 88 * 10000 + 160
    assert int(cropped[0, 511, 639]) == 1110 * 10000 + 1438
    # ALGORITHMS.md 1.4: DTU view 0's training K (160x128 grid; fx, cx, cy
    # as published, fy not checked) times 4 equals half the
    # full-resolution test K minus the crop offset (80, 44).
    k_train = tf.constant([[361.54125, 0.0, 82.900625],
                           [0.0, 360.0, 66.383875], [0.0, 0.0, 1.0]])
    k_images = tfds_source.geometry.scale_intrinsics(
        k_train, tfds_source.DTU_TRAIN_CAMERA_UPSCALE)
    np.testing.assert_allclose(
        [k_images[0, 0], k_images[0, 2], k_images[1, 2]],
        [2892.33 / 2, 823.205 / 2 - 80, 619.071 / 2 - 44], rtol=1e-6)


def test_dtu_crop_rejects_maps_smaller_than_images():
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller"):
        tfds_source.crop_dtu_training_maps(tf.zeros([1, 60, 80]), 32, 41)


def test_dtu_test_scene_prefers_images_post(data_dir):
    scenes = _by_name(tfds_source.scenes_from_tfds(
        "dtu", "test", config="test", data_dir=data_dir))
    assert sorted(scenes) == ["scan1", "scan4"]
    assert "depths" not in scenes["scan1"] and "masks" not in scenes["scan1"]
    # scan4's images_post/ holds uniform grey 200 JPEGs, images/ noise.
    assert np.abs(scenes["scan4"]["images"].astype(int) - 200).max() <= 2
    assert scenes["scan1"]["images"].std() > 20
    camera = formats.parse_cam_text(
        (DTU_DUMMY / "dtu_testing" / "scan1" / "cams"
         / "00000002_cam.txt").read_text(), "cam")
    np.testing.assert_allclose(scenes["scan1"]["intrinsics"][2],
                               camera.intrinsics, rtol=1e-6)
    np.testing.assert_allclose(scenes["scan1"]["cam_from_world"][2],
                               camera.cam_from_world, rtol=1e-6)


def test_blended_mvs_mask_is_depth_at_least_depth_min(data_dir):
    scene = _first(tfds_source.scenes_from_tfds(
        "blended_mvs", "train", data_dir=data_dir))
    assert scene["depths"].shape == scene["images"].shape[:3]
    # Dummy depth: 0 in the first 4 columns, 2.5 elsewhere; depth_min 2.0.
    np.testing.assert_array_equal(scene["masks"][:, :, :4], 0.0)
    np.testing.assert_array_equal(scene["masks"][:, :, 4:], 1.0)
    # 128 hypotheses from depth_min with spacing interval * 1.06.
    np.testing.assert_allclose(scene["depth_range"][0],
                               [2.0, 2.0 + 127 * 0.01 * 1.06], rtol=1e-6)


def test_tanks_and_temples_short_range_cameras(data_dir):
    default, short = (
        _by_name(tfds_source.scenes_from_tfds(
            "tanks_and_temples", "test", config=config,
            data_dir=data_dir))["Family"]
        for config in ("intermediate", "intermediate_short_range"))
    np.testing.assert_array_equal(default["images"], short["images"])
    # Depth lines: default `0.5 0.02 192 4.34`, short range
    # `2.0 0.005 192 2.96`; general_eval rule: last = min + 191 * 1.06 *
    # (NUM * interval) / 192.
    np.testing.assert_allclose(default["depth_range"][0],
                               [0.5, 0.5 + 191 * 1.06 * 0.02], rtol=1e-6)
    np.testing.assert_allclose(short["depth_range"][0],
                               [2.0, 2.0 + 191 * 1.06 * 0.005], rtol=1e-6)
    assert "depths" not in default


def test_synthetic_scenes_are_rendered_on_first_use_and_exact(tmp_path):
    scenes = _by_name(tfds_source.scenes_from_tfds(
        "synthetic_mvs", "test", config="tiny_32x40",
        data_dir=str(tmp_path)))
    seed = synthetic.BENCHMARK_TEST_SEEDS[1]
    scene = scenes[f"synthetic_seed{seed}"]
    rendered = synthetic.render_scene(synthetic.SceneConfig(
        height=32, width=40, num_views=3, seed=seed))
    np.testing.assert_array_equal(scene["images"], rendered["images"])
    np.testing.assert_array_equal(scene["depths"], rendered["depths"])
    np.testing.assert_array_equal(scene["masks"], rendered["masks"])
    np.testing.assert_allclose(scene["intrinsics"], rendered["intrinsics"],
                               rtol=1e-6)
    # 4-field cam line (min, (max - min) / 192, 192, max): general_eval
    # gives last = min + 191 * 1.06 * (max - min) / 192.
    span = rendered["depth_max"] - rendered["depth_min"]
    np.testing.assert_allclose(
        scene["depth_range"],
        np.stack([rendered["depth_min"],
                  rendered["depth_min"] + 191 * 1.06 * span / 192], axis=1),
        rtol=1e-6)
    np.testing.assert_array_equal(
        scene["pairs"][:, :2],
        [[src for src, _ in sources] for _, sources in rendered["pairs"]])


def test_unknown_and_unprepared_datasets(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        tfds_source.scenes_from_tfds("kitti", "train")
    with pytest.raises(FileNotFoundError,
                       match="python -m tfds_builders.build dtu"):
        tfds_source.scenes_from_tfds("dtu", "train", config="train_light3",
                                     data_dir=str(tmp_path))


def test_scene_dicts_feed_the_training_pipeline(data_dir):
    scenes = tfds_source.scenes_from_tfds(
        "dtu", "train", config="train_light3", data_dir=data_dir)
    batches = pipeline.make_dataset(
        scenes, num_views=3, batch_size=3, seed=0, require_depth=True,
        repeat=False, shuffle=False, crop=(32, 32))
    batch = next(iter(batches))
    assert batch["images"].shape == (3, 3, 32, 32, 3)
    assert batch["depth"].shape == (3, 32, 32)
    # Every depth is a position-coded value of scan2 (500 + 20 + ...).
    assert float(tf.reduce_min(batch["depth"])) > 520.0
