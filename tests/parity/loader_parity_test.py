"""The test-time scene loading against UniMVSNet's `general_eval.MVSDataset`
on the real scenes (`loader_general_eval.npz`; the five views it loads are in
tests/fixtures/scenes/)."""

import numpy as np
import official_outputs as ref
import pytest

from keras_mvs import geometry
from keras_mvs.data import scene as scene_lib
from keras_mvs.models import cas_mvsnet

# prefix -> (scene, max height, max width, interval_scale)
CASES = {
    "dtu_scan24_1600x1200": ("dtu_scan24", 1200, 1600, 1.06),
    "dtu_scan24_640x512": ("dtu_scan24", 512, 640, 1.06),
    "office_room_1152x864": ("office_room", 864, 1152, 1.0),
}
SCENES = ref.FIXTURES.parent / "scenes"


def _case(prefix):
    data = ref.load("loader_general_eval")
    name, max_height, max_width, interval_scale = CASES[prefix]
    expected = {key[len(prefix) + 1:]: value for key, value in data.items()
                if key.startswith(prefix + "_")}
    return (scene_lib.MVSScene(SCENES / name), max_height, max_width,
            interval_scale, expected)


@pytest.fixture(scope="module", params=sorted(CASES))
def loaded(request):
    scene, max_height, max_width, interval_scale, expected = _case(
        request.param)
    ref_id = int(expected["view_ids"][0])
    view_ids = [ref_id] + scene.source_views(ref_id, 4)
    height, width = scene_lib.fit_to_max_size(
        *scene.image_size(ref_id), max_height, max_width)
    views = [scene.load_view(v, height, width) for v in view_ids]
    return scene, view_ids, (height, width), views, interval_scale, expected


def test_view_selection(loaded):
    _, view_ids, _, _, _, expected = loaded
    np.testing.assert_array_equal(view_ids, expected["view_ids"])


def test_resize_target(loaded):
    _, _, size, views, _, expected = loaded
    assert tuple(size) == tuple(expected["imgs_shape"][2:])
    assert all(image.shape == size + (3,) for image, _, _ in views)


def test_resized_images(loaded):
    # cv2.resize(INTER_LINEAR) on the float image vs our half-pixel
    # bilinear resize without antialiasing. The means are taken in float64:
    # a float32 mean over 1.9 M pixels is itself off by 1e-4.
    _, _, _, views, _, expected = loaded
    images = np.stack([image for image, _, _ in views])  # [V, H, W, 3]
    np.testing.assert_allclose(
        images.astype(np.float64).mean(axis=(1, 2)),
        expected["imgs_channel_mean"], atol=2e-6)
    crop = np.moveaxis(images[:, 100:164, 100:164], -1, 1)
    np.testing.assert_allclose(crop, expected["imgs_crop_y100_x100_64"],
                               atol=1e-5)


def test_per_stage_cameras(loaded):
    # The network scales the full-size K by its stage scales (1/4, 1/2, 1);
    # the reference divides the file's K by 4, applies the resize factors,
    # then multiplies by 2 and 4.
    _, _, _, views, _, expected = loaded
    for stage, scale in enumerate(cas_mvsnet.STAGE_SCALES, start=1):
        intrinsics, cam_from_world = ref.split_cams(
            expected[f"proj_stage{stage}"])
        for index, (_, k, pose) in enumerate(views):
            np.testing.assert_allclose(
                geometry.scale_intrinsics(k, scale).numpy(),
                intrinsics[index], rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(pose, cam_from_world[index],
                                       rtol=1e-6, atol=1e-4)


def test_depth_hypotheses(loaded):
    scene, view_ids, _, _, interval_scale, expected = loaded
    first, last = scene.camera(view_ids[0]).depth_range(192, interval_scale)
    values = expected["depth_values"]
    assert first == pytest.approx(float(values[0]), rel=1e-6)
    assert last == pytest.approx(float(values[-1]), rel=1e-5)
    planes = np.linspace(first, last, 192)
    np.testing.assert_allclose(planes, values, rtol=1e-5)
