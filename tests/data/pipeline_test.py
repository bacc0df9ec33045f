"""Tests for keras_mvs.data.pipeline and keras_mvs.data.folders: folder
scenes to batches, crop, SCC/ICC, bad data."""

import logging
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mvs.data import folders
from keras_mvs.data import formats
from keras_mvs.data import pipeline

FOCAL = 50.0


def _pixel_codes(view: int, height: int, width: int) -> np.ndarray:
    """Image whose R channel is 10 * view, G the row and B the column."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([np.full_like(rows, 10 * view), rows, cols],
                    axis=-1).astype(np.uint8)


def _depth_codes(view: int, height: int, width: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return (100.0 + view + 0.01 * rows + 0.0001 * cols).astype(np.float32)


def _write_scene(root: pathlib.Path, name: str, *, num_views: int = 6,
                 height: int = 32, width: int = 64, pairs=None,
                 depth_line=(425.0, 2.5)) -> pathlib.Path:
    """A tiny MVSNet folder whose pixels encode view, row and column."""
    scene = root / name
    for folder in ("images", "cams", "depths", "masks"):
        (scene / folder).mkdir(parents=True)
    if pairs is None:
        # Candidates sorted by distance in view index, nearest first.
        pairs = [(v, sorted((u for u in range(num_views) if u != v),
                            key=lambda u: (abs(u - v), u)))
                 for v in range(num_views)]
    for view in range(num_views):
        Image.fromarray(_pixel_codes(view, height, width)).save(
            scene / "images" / f"{view:08d}.png")
        cam_from_world = np.eye(4)
        cam_from_world[0, 3] = view  # identifies the view in batches
        intrinsics = [[FOCAL, 0, width / 2], [0, FOCAL, height / 2], [0, 0, 1]]
        formats.write_cam_file(
            scene / "cams" / f"{view:08d}_cam.txt",
            formats.Camera(intrinsics, cam_from_world, *depth_line))
        formats.write_pfm(scene / "depths" / f"{view:08d}.pfm",
                          _depth_codes(view, height, width))
        Image.fromarray(np.full((height, width), 255, np.uint8)).save(
            scene / "masks" / f"{view:08d}.png")
    formats.write_pair_file(
        scene / "pair.txt",
        [(v, [(u, 10.0 - i) for i, u in enumerate(us)]) for v, us in pairs])
    return scene


def _view_of(images: np.ndarray) -> np.ndarray:
    """`[..., H, W, 3]` float images -> view index encoded in R."""
    return np.round(images[..., 0, 0, 0] * 255 / 10).astype(int)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return _write_scene(tmp_path_factory.mktemp("scenes"), "tiny")


# === Folder scenes to batches ===


def test_folder_batches_follow_the_contract(scene_dir):
    scenes = folders.scene_dicts_from_folders([scene_dir])
    dataset = pipeline.make_dataset(
        scenes, num_views=3, batch_size=2, seed=5, crop=(32, 32),
        shuffle=False, repeat=False)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 3  # 6 references, batch 2, drop_remainder
    batch = batches[0]
    assert sorted(batch) == ["cam_from_world", "depth", "depth_range",
                             "images", "intrinsics", "mask"]
    assert batch["images"].shape == (2, 3, 32, 32, 3)
    assert batch["images"].dtype == np.float32
    assert batch["intrinsics"].shape == (2, 3, 3, 3)
    assert batch["cam_from_world"].shape == (2, 3, 4, 4)
    assert batch["depth_range"].shape == (2, 2)
    assert batch["depth"].shape == batch["mask"].shape == (2, 32, 32)
    images = np.concatenate([b["images"] for b in batches])
    assert images.min() >= 0 and images.max() <= 1
    # Views: reference then its two nearest views (pair order).
    views = _view_of(images)
    np.testing.assert_array_equal(
        views, [[0, 1, 2], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, 5],
                [5, 4, 3]])
    cams = np.concatenate([b["cam_from_world"] for b in batches])
    np.testing.assert_array_equal(cams[..., 0, 3], views)
    # 425 + 191 * 2.5 * 1.06 (ALGORITHMS.md 1.9).
    np.testing.assert_allclose(batch["depth_range"][0], [425.0, 931.15],
                               rtol=1e-6)
    for b in batches:
        for example in range(2):
            top = int(round(b["images"][example, 0, 0, 0, 1] * 255))
            left = int(round(b["images"][example, 0, 0, 0, 2] * 255))
            # Training crops at a random column; the principal point and
            # the depth follow the window.
            assert top == 0 and 0 <= left <= 32
            np.testing.assert_allclose(
                b["intrinsics"][example, :, 0, 2], 32.0 - left)
            np.testing.assert_allclose(b["intrinsics"][example, :, 1, 2], 16.0)
            view = _view_of(b["images"][example])[0]
            np.testing.assert_allclose(
                b["depth"][example],
                _depth_codes(view, 32, 64)[:, left:left + 32])
    np.testing.assert_array_equal(
        np.concatenate([b["mask"] for b in batches]), 1.0)


def test_random_crop_varies_and_eval_centres(scene_dir):
    scenes = folders.scene_dicts_from_folders([scene_dir])
    dataset = pipeline.make_dataset(
        scenes, num_views=2, batch_size=6, seed=1, crop=(32, 32),
        shuffle=False, repeat=False)
    batch = next(dataset.as_numpy_iterator())
    lefts = np.round(batch["images"][:, :, 0, 0, 2] * 255)
    # The same window for every view of an example, not for every example.
    np.testing.assert_array_equal(lefts[:, 0], lefts[:, 1])
    assert len(set(lefts[:, 0])) > 1
    evaluation = pipeline.make_eval_dataset(scenes, 3, batch_size=4,
                                            crop=(32, 32))
    batches = list(evaluation.as_numpy_iterator())
    assert [len(b["ref_id"]) for b in batches] == [4, 2]
    np.testing.assert_array_equal(
        np.concatenate([b["ref_id"] for b in batches]), range(6))
    np.testing.assert_array_equal(batches[0]["scene_index"], 0)
    assert batches[0]["scene_name"][0] == b"tiny"
    np.testing.assert_array_equal(
        np.round(batches[0]["images"][:, :, 0, 0, 2] * 255), 16)
    np.testing.assert_allclose(batches[0]["intrinsics"][..., 0, 2], 16.0)


def test_same_seed_same_batches(scene_dir, tmp_path):
    other = _write_scene(tmp_path, "other", num_views=5)
    scenes = folders.scene_dicts_from_folders([scene_dir, other])

    def first_batches(seed, branches=("regular", "icc", "scc")):
        dataset = pipeline.make_dataset(
            scenes, num_views=3, batch_size=2, seed=seed, crop=(32, 32),
            branches=branches)
        return list(dataset.take(6).as_numpy_iterator())

    first, again = first_batches(3), first_batches(3)
    different = first_batches(4, ("regular",))
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert any(not np.array_equal(a["images"], b["images"])
               for a, b in zip(first, different))


def test_scc_and_icc_views(scene_dir):
    scenes = folders.scene_dicts_from_folders([scene_dir])
    dataset = pipeline.make_dataset(
        scenes, num_views=4, batch_size=6, seed=9, crop=(32, 64),
        branches=("regular", "icc", "scc"), repeat=False)
    batch = next(dataset.as_numpy_iterator())
    regular = _view_of(batch["images"])
    scc = _view_of(batch["scc_images"])
    np.testing.assert_array_equal(scc[:, 0], regular[:, 0])
    np.testing.assert_array_equal(batch["scc_cam_from_world"][..., 0, 3], scc)
    np.testing.assert_allclose(batch["scc_intrinsics"][..., 0, 2], 32.0)
    for views in scc:
        assert len(set(views)) == 4  # reference first, three distinct sources
    # Sources are not always the top three.
    assert any(set(s[1:]) != set(r[1:]) for s, r in zip(scc, regular))
    icc = batch["icc_images"]
    assert icc.shape == batch["images"].shape and icc.dtype == np.float32
    assert icc.min() >= 0 and icc.max() <= 1
    assert np.abs(icc - batch["images"]).mean() > 0.02


def test_resize_scales_intrinsics_and_subsamples_depth(tmp_path):
    root = _write_scene(tmp_path, "big", num_views=3, height=64, width=128)
    scenes = folders.scene_dicts_from_folders([root], height=32, width=64)
    scene = next(scenes.as_numpy_iterator())
    assert scene["images"].shape == (3, 32, 64, 3)
    np.testing.assert_allclose(
        scene["intrinsics"][1], [[25.0, 0, 32.0], [0, 25.0, 16.0], [0, 0, 1]])
    np.testing.assert_allclose(scene["depths"][2],
                               _depth_codes(2, 64, 128)[::2, ::2])
    assert scene["name"] == b"big"
    np.testing.assert_array_equal(scene["view_ids"], [0, 1, 2])
    assert list(scene["problems"]) == [b""] * 3
    # Non-integer factor: nearest with source index floor(i * H / H').
    scenes = folders.scene_dicts_from_folders([root], height=24, width=96)
    scene = next(scenes.as_numpy_iterator())
    rows, cols = (np.arange(24) * 64) // 24, (np.arange(96) * 128) // 96
    np.testing.assert_allclose(scene["depths"][0],
                               _depth_codes(0, 64, 128)[rows][:, cols])
    np.testing.assert_allclose(scene["intrinsics"][0, 0, 2], 48.0)


# === Bad data ===


def _corrupt_depth(scene: pathlib.Path, view: int) -> None:
    formats.write_pfm(scene / "depths" / f"{view:08d}.pfm",
                      np.ones((8, 8), np.float32))


def test_bad_view_stops_with_scene_and_view(tmp_path):
    root = _write_scene(tmp_path, "broken", num_views=4)
    _corrupt_depth(root, 2)
    scenes = folders.scene_dicts_from_folders([root])
    dataset = pipeline.make_dataset(scenes, num_views=2, batch_size=1, seed=0,
                                    repeat=False, shuffle=False)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"scene broken: reference view 2 uses view 2: "
                             r".*depths/00000002.pfm: expected a single-channel"
                             r" depth map of the image size \(32, 64\), found "
                             r"\(8, 8\); reference view 3 uses view 2"):
        list(dataset)


@pytest.mark.parametrize("damage,expected", [
    ("missing_image", r"view 3: missing image images/00000003"),
    # The cam reader already rejects a negative interval, naming the line.
    ("inverted_range", r"view 3: .*cams/00000003_cam.txt, line 12: expected "
                       r"DEPTH_INTERVAL > 0"),
    ("nan_depth", r"view 3: depths/00000003.pfm has non-finite values"),
])
def test_bad_data_kinds_are_named(tmp_path, damage, expected):
    root = _write_scene(tmp_path, "scan", num_views=4)
    if damage == "missing_image":
        (root / "images" / "00000003.png").unlink()
        with pytest.warns(UserWarning, match="3 \\(no image\\)"):
            scenes = folders.scene_dicts_from_folders([root])
    elif damage == "inverted_range":
        cam = root / "cams" / "00000003_cam.txt"
        cam.write_text(cam.read_text().replace("425.0 2.5", "425.0 -2.5"))
    else:
        depth = _depth_codes(3, 32, 64)
        depth[5, 5] = np.nan
        formats.write_pfm(root / "depths" / "00000003.pfm", depth)
    if damage != "missing_image":
        scenes = folders.scene_dicts_from_folders([root])
    dataset = pipeline.make_eval_dataset(scenes, 3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"scene scan: reference view 2 uses " + expected):
        list(dataset)


def test_skip_bad_counts_skipped_tuples(tmp_path, caplog):
    root = _write_scene(tmp_path, "broken", num_views=5)
    _corrupt_depth(root, 4)
    scenes = folders.scene_dicts_from_folders([root])
    dataset = pipeline.make_dataset(
        scenes, num_views=3, batch_size=1, seed=0, repeat=False,
        shuffle=False, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="keras_mvs.data.pipeline"):
        examples = list(dataset.as_numpy_iterator())
    # View 4 is a reference and a top-2 source of view 3 ([3, 2, 4]).
    assert sorted(_view_of(e["images"])[0, 0] for e in examples) == [0, 1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "skipping 2 reference view(s) of scene broken (2 skipped so far)" \
        in messages[0]
    assert "reference view 3 uses view 4" in messages[0]
    assert "reference view 4 uses view 4" in messages[0]


def test_in_memory_scene_dict_checks(tmp_path):
    """A TFDS-style scene dict without names: runtime checks still name it."""
    images = np.stack([_pixel_codes(v, 32, 32) for v in range(3)])
    intrinsics = np.tile(np.eye(3, dtype=np.float32), (3, 1, 1))
    intrinsics[1, 0, 2] = np.nan
    scene = {
        "images": images,
        "intrinsics": intrinsics,
        "cam_from_world": np.tile(np.eye(4, dtype=np.float32), (3, 1, 1)),
        "depth_range": np.float32([[1, 2], [1, 2], [3, 1]]),
        "pairs": np.int32([[1, 2, -1], [0, -1, -1], [0, 1, -1]]),
    }
    scenes = tf.data.Dataset.from_tensors(scene)
    dataset = pipeline.make_eval_dataset(scenes, 2)
    with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"scene #0: reference view 0 uses view 1: camera has "
                  r"non-finite values; .*reference view 2 uses view 2: depth "
                  r"range \(3, 1\) is not 0 < first < last \(3 bad"):
        list(dataset)
    with pytest.raises(ValueError, match="require_depth"):
        pipeline.make_dataset(scenes, num_views=2, batch_size=1, seed=0,
                              require_depth=True)


def test_size_must_be_a_multiple_of_32(tmp_path):
    root = _write_scene(tmp_path, "odd", num_views=3, height=40, width=64)
    scenes = folders.scene_dicts_from_folders([root])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"scene odd: images are 40x64; height and "
                             "width must be multiples of 32"):
        list(pipeline.make_eval_dataset(scenes, 2))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"scene odd: images are 40x64, smaller than "
                             "the crop 64x64"):
        list(pipeline.make_eval_dataset(scenes, 2, crop=(64, 64)))
    with pytest.raises(ValueError, match="multiples of 32"):
        pipeline.make_dataset(scenes, num_views=2, batch_size=1, seed=0,
                              crop=(40, 64))
    # Cropping to a multiple of 32 makes it usable.
    batch = next(pipeline.make_eval_dataset(
        scenes, 2, crop=(32, 64)).as_numpy_iterator())
    assert batch["images"].shape == (1, 2, 32, 64, 3)
    np.testing.assert_allclose(batch["intrinsics"][0, 0, 1, 2], 20.0 - 4)


def test_odd_sized_view_is_resized_with_a_warning(tmp_path, caplog):
    root = _write_scene(tmp_path, "mixed", num_views=2, height=32, width=64)
    Image.fromarray(_pixel_codes(1, 64, 128)).save(
        root / "images" / "00000001.png")
    formats.write_cam_file(
        root / "cams" / "00000001_cam.txt",
        formats.Camera([[2 * FOCAL, 0, 64], [0, 2 * FOCAL, 32], [0, 0, 1]],
                       np.eye(4), 425.0, 2.5))
    formats.write_pfm(root / "depths" / "00000001.pfm",
                      _depth_codes(1, 64, 128))
    Image.fromarray(np.full((64, 128), 255, np.uint8)).save(
        root / "masks" / "00000001.png")
    with caplog.at_level(logging.WARNING, logger="keras_mvs.data.folders"):
        scene = next(folders.scene_dicts_from_folders([root])
                     .as_numpy_iterator())
    assert "view 1: image is 64x128, the first view's 32x64" in caplog.text
    np.testing.assert_allclose(scene["intrinsics"][1],
                               scene["intrinsics"][0])
    np.testing.assert_allclose(scene["depths"][1],
                               _depth_codes(1, 64, 128)[::2, ::2])


def test_pipeline_still_offers_the_folder_readers():
    assert pipeline.scene_dicts_from_folders is (
        folders.scene_dicts_from_folders)
    assert pipeline.check_folders is folders.check_folders
