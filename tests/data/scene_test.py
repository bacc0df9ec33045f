"""Tests of keras_mvs.data.scene: MVSScene and fit_to_max_size."""

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from keras_mvs import data
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib

_HEIGHT, _WIDTH = 24, 32


def _camera(focal=30.0, cx=16.0, cy=12.0, tx=0.0):
    cam_from_world = np.eye(4)
    cam_from_world[0, 3] = tx
    return data.Camera(
        np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]]),
        cam_from_world, depth_min=1.0, depth_interval=0.01)


def _image(view_id, height=_HEIGHT, width=_WIDTH):
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows * 7 % 256, cols * 5 % 256,
                     np.full_like(rows, 10 * view_id)], -1).astype(np.uint8)


def _make_scene(root, num_views=4, pairs=None):
    """Writes a lossless PNG scene whose views see each other in id order."""
    for sub in ("images", "cams"):
        (root / sub).mkdir(parents=True)
    for view_id in range(num_views):
        Image.fromarray(_image(view_id)).save(
            root / "images" / f"{view_id:08d}.png")
        data.write_cam_file(root / "cams" / f"{view_id:08d}_cam.txt",
                            _camera(tx=float(view_id)))
    if pairs is None:
        pairs = [(ref, [(src, 10.0 - abs(src - ref)) for src in
                        range(num_views) if src != ref])
                 for ref in range(num_views)]
    data.write_pair_file(root / "pair.txt", pairs)
    return root


@pytest.fixture
def strict_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_basic_scene(tmp_path, strict_warnings):
    scene = data.MVSScene(_make_scene(tmp_path / "scan7"))
    assert scene.name == "scan7"
    assert scene.view_ids == [0, 1, 2, 3]
    assert scene.pairs[1] == (1, [(0, 9.0), (2, 9.0), (3, 8.0)])
    image = scene.image(2)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, _image(2))
    assert scene.image_size(2) == (_HEIGHT, _WIDTH)
    camera = scene.camera(3)
    assert camera.cam_from_world[0, 3] == 3.0
    camera.intrinsics[0, 0] = -1.0  # a copy: the scene's stays intact
    assert scene.camera(3).intrinsics[0, 0] == 30.0
    assert scene.mask(0) is None and scene.depth(0) is None
    assert "4 views" in repr(scene)


def test_missing_views_are_skipped_with_one_warning(tmp_path):
    root = _make_scene(tmp_path / "scan", num_views=5, pairs=[
        (0, [(0, 5.0), (2, 4.0), (1, 3.0), (7, 2.0), (3, 1.0)]),
        (2, [(0, 1.0)]),
        (3, [(0, 1.0)]),
        (4, [(1, 1.0)])])
    (root / "images" / "00000002.png").unlink()
    (root / "cams" / "00000003_cam.txt").unlink()
    with pytest.warns(scene_lib.SceneWarning) as record:
        scene = data.MVSScene(root)
    assert len(record) == 1
    assert str(record[0].message) == (
        "scene scan: skipping views without both an image and a camera: "
        "2 (no image), 3 (no cam), 7 (no image or cam)")
    assert scene.view_ids == [0, 1, 4]
    # The reference listed among its own sources is dropped too.
    assert scene.pairs == [(0, [(1, 3.0)]), (4, [(1, 1.0)])]
    with pytest.raises(KeyError, match="scene scan: view 2 is not available"):
        scene.image(2)


def test_source_views_truncate_and_pad(tmp_path, strict_warnings):
    scene = data.MVSScene(_make_scene(tmp_path / "s", num_views=4, pairs=[
        (0, [(2, 3.0), (1, 2.0), (3, 1.0)]), (1, [(3, 1.0)]), (2, []),
        (3, [(2, 1.0), (0, 0.5)])]))
    assert scene.source_views(0, 2) == [2, 1]
    assert scene.source_views(0, 3) == [2, 1, 3]
    # Fewer than asked: repeat the first source (UniMVSNet general_eval).
    assert scene.source_views(3, 4) == [2, 0, 2, 2]
    assert scene.source_views(1, 2) == [3, 3]
    with pytest.raises(ValueError, match="reference view 2 has no available"):
        scene.source_views(2, 2)
    with pytest.raises(ValueError, match="num >= 1"):
        scene.source_views(0, 0)


def test_view_without_pair_block(tmp_path, strict_warnings):
    scene = data.MVSScene(_make_scene(tmp_path / "s", num_views=3, pairs=[
        (0, [(1, 1.0)])]))
    assert scene.view_ids == [0, 1, 2]
    with pytest.raises(KeyError, match="view 2 has no entry in pair.txt"):
        scene.source_views(2, 1)


def test_images_post_and_suffix_priority(tmp_path, strict_warnings):
    root = _make_scene(tmp_path / "s", num_views=2)
    (root / "images_post").mkdir()
    Image.fromarray(np.full((_HEIGHT, _WIDTH, 3), 200, np.uint8)).save(
        root / "images_post" / "00000001.png")
    Image.fromarray(np.full((_HEIGHT, _WIDTH, 3), 77, np.uint8)).save(
        root / "images" / "00000000.jpg", quality=100)
    scene = data.MVSScene(root)
    assert scene.image_path(1).parent.name == "images_post"
    assert np.all(scene.image(1) == 200)
    # 00000000.jpg and 00000000.png: the .jpg wins, as general_eval reads.
    assert scene.image_path(0).name == "00000000.jpg"
    assert np.all(np.abs(scene.image(0).astype(int) - 77) <= 1)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_images_become_rgb(tmp_path, strict_warnings, mode):
    root = _make_scene(tmp_path / "s", num_views=2)
    rgb = _image(1)
    Image.fromarray(rgb).convert(mode).save(root / "images" / "00000001.png")
    image = data.MVSScene(root).image(1)
    assert image.shape == (_HEIGHT, _WIDTH, 3) and image.dtype == np.uint8
    expected = np.asarray(Image.fromarray(rgb).convert(mode).convert("RGB"))
    np.testing.assert_array_equal(image, expected)
    if mode in ("L", "LA"):
        assert np.all(image[..., 0] == image[..., 2])
    if mode == "RGBA":
        np.testing.assert_array_equal(image, rgb)


def test_sixteen_bit_image_is_rejected(tmp_path, strict_warnings):
    root = _make_scene(tmp_path / "s", num_views=2)
    Image.fromarray(np.full((_HEIGHT, _WIDTH), 4000, np.uint16)).save(
        root / "images" / "00000001.png")
    with pytest.raises(data.FormatError,
                       match=r"scene s, view 1: .*00000001\.png: expected a "
                       r"readable 8-bit JPEG or PNG image, found image mode"):
        data.MVSScene(root).image(1)


def test_intrinsics_for_a_larger_image_are_rescaled(tmp_path):
    root = _make_scene(tmp_path / "s", num_views=2)
    # K written for the 4x larger original (cx = 64 for 128 px wide), and
    # no other view written for that size: the factor is snapped.
    data.write_cam_file(root / "cams" / "00000001_cam.txt",
                        _camera(focal=120.0, cx=64.2, cy=47.6))
    scene = data.MVSScene(root)
    with pytest.warns(scene_lib.SceneWarning,
                      match=r"scene s, view 1: 00000001_cam.txt does not fit "
                      r"the 32x24 image \(its principal point is not near "
                      r"the image centre: principal point \(64.2, 47.6\)\); "
                      r"scaling the intrinsics by 0.25"):
        camera = scene.camera(1)
    np.testing.assert_allclose(
        camera.intrinsics, [[30.0, 0.0, 16.05], [0.0, 30.0, 11.9],
                            [0.0, 0.0, 1.0]], rtol=0, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per view
        scene.camera(1)
        scene.camera(0)


@pytest.mark.parametrize("factor", [0.75, 1.5, 0.5])
def test_an_image_resized_alone_rescales_its_intrinsics_exactly(tmp_path,
                                                                factor):
    # Four views, one of whose images was stored at another size with its
    # cam left as is: the other views say which size the cams describe, so
    # K is scaled by the exact size ratio per axis (the principal point
    # alone would not tell 0.75x).
    root = _make_scene(tmp_path / "s", num_views=4)
    width, height = round(_WIDTH * factor), round(_HEIGHT * factor)
    Image.fromarray(_image(2)).resize((width, height)).save(
        root / "images" / "00000002.png")
    scene = data.MVSScene(root)
    original = data.read_cam_file(root / "cams" / "00000002_cam.txt")
    with pytest.warns(scene_lib.SceneWarning,
                      match=r"view 2: 00000002_cam.txt does not fit the "
                      rf"{width}x{height} image \(the scene's other cams are "
                      rf"for {_WIDTH}x{_HEIGHT} images"):
        camera = scene.camera(2)
    expected = original.intrinsics.copy()
    expected[0] *= width / _WIDTH
    expected[1] *= height / _HEIGHT
    np.testing.assert_allclose(camera.intrinsics, expected, rtol=0,
                               atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene.camera(1)  # the others are untouched


def test_a_whole_scene_resized_by_one_and_a_half_is_rescaled(tmp_path):
    root = _make_scene(tmp_path / "s", num_views=2)
    for view in (0, 1):
        data.write_cam_file(root / "cams" / f"{view:08d}_cam.txt",
                            _camera(cx=24.0, cy=18.0))  # for 48x36 images
    with pytest.warns(scene_lib.SceneWarning, match="by 0.666667"):
        camera = data.MVSScene(root).camera(1)
    assert camera.intrinsics[0, 2] == pytest.approx(16.0)


def test_principal_point_off_centre_on_one_axis_is_used_as_is(
        tmp_path, strict_warnings):
    # The Middlebury dino ring's K (640x480, cx = 316.73, cy = 200.55) scaled
    # to 32x24: cy is 16 % above the centre while cx is at it. A resize
    # would move both axes alike, so this is a real camera: no rescale, no
    # warning, no error.
    root = _make_scene(tmp_path / "s", num_views=2)
    for view in (0, 1):
        data.write_cam_file(root / "cams" / f"{view:08d}_cam.txt",
                            _camera(cx=316.73 / 20, cy=200.55 / 20))
    camera = data.MVSScene(root).camera(1)
    assert camera.intrinsics[0, 2] == pytest.approx(15.8365)
    assert camera.intrinsics[1, 2] == pytest.approx(10.0275)


def test_principal_point_outside_the_image_is_not_accepted(tmp_path):
    root = _make_scene(tmp_path / "s", num_views=2)
    data.write_cam_file(root / "cams" / "00000001_cam.txt",
                        _camera(cx=16.0, cy=-3.0))
    with pytest.raises(data.FormatError, match=r"found cx = 16, cy = -3"):
        data.MVSScene(root).camera(1)


def test_intrinsics_matching_no_common_resize_are_an_error(tmp_path):
    root = _make_scene(tmp_path / "s", num_views=2)
    data.write_cam_file(root / "cams" / "00000001_cam.txt",
                        _camera(cx=19.5, cy=14.6))  # a 1.22x larger image
    with pytest.raises(data.FormatError,
                       match=r"scene s, view 1: .*00000001_cam.txt: expected "
                       r"intrinsics for the 32x24 image .* found cx = 19.5, "
                       r"cy = 14.6"):
        data.MVSScene(root).camera(1)


def test_mask_and_depth(tmp_path, strict_warnings):
    root = _make_scene(tmp_path / "s", num_views=2)
    (root / "masks").mkdir()
    (root / "depths").mkdir()
    values = np.zeros((_HEIGHT, _WIDTH), np.uint8)
    values[:, 10:] = 255
    values[0, 0], values[0, 1] = 127, 128
    Image.fromarray(values).save(root / "masks" / "00000000.png")
    depth = np.linspace(1.0, 2.0, _HEIGHT * _WIDTH, dtype=np.float32)
    depth = depth.reshape(_HEIGHT, _WIDTH)
    data.write_pfm(root / "depths" / "00000000.pfm", depth)
    scene = data.MVSScene(root)
    mask = scene.mask(0)
    assert mask.dtype == bool
    assert mask.sum() == _HEIGHT * (_WIDTH - 10) + 1
    assert not mask[0, 0] and mask[0, 1]
    np.testing.assert_array_equal(scene.depth(0), depth)
    assert scene.mask(1) is None and scene.depth(1) is None
    Image.fromarray(values[:10]).save(root / "masks" / "00000001.png")
    with pytest.raises(data.FormatError,
                       match=r"scene s, view 1: .*expected a mask of the "
                       r"image size \(24, 32\), found \(10, 32\)"):
        scene.mask(1)
    data.write_pfm(root / "depths" / "00000001.pfm", np.ones((24, 32, 3)))
    with pytest.raises(data.FormatError, match=r"found \(24, 32, 3\)"):
        scene.depth(1)


def test_missing_parts_name_the_scene(tmp_path):
    with pytest.raises(FileNotFoundError, match="scene nowhere: folder"):
        data.MVSScene(tmp_path / "nowhere")
    root = _make_scene(tmp_path / "scan9", num_views=2)
    (root / "pair.txt").unlink()
    with pytest.raises(FileNotFoundError, match="scene scan9: no pair.txt"):
        data.MVSScene(root)
    shutil.rmtree(root / "cams")
    with pytest.raises(FileNotFoundError, match="scene scan9: no cams/"):
        data.MVSScene(root)
    (root / "cams").mkdir()
    with pytest.raises(FileNotFoundError,
                       match="scene scan9: no view has both an image"):
        data.MVSScene(root)
    shutil.rmtree(root / "images")
    with pytest.raises(FileNotFoundError, match="scene scan9: no images/"):
        data.MVSScene(root)


def test_unreadable_image_names_scene_and_view(tmp_path, strict_warnings):
    root = _make_scene(tmp_path / "scan9", num_views=2)
    (root / "images" / "00000001.png").write_bytes(b"not a png")
    scene = data.MVSScene(root)
    with pytest.raises(data.FormatError,
                       match=r"^scene scan9, view 1: .*00000001\.png: "
                       r"expected a readable"):
        scene.image(1)
    with pytest.raises(data.FormatError, match=r"^scene scan9, view 1"):
        scene.camera(1)


def test_malformed_cam_propagates_format_error(tmp_path, strict_warnings):
    root = _make_scene(tmp_path / "s", num_views=2)
    (root / "cams" / "00000001_cam.txt").write_text("intrinsic\n")
    with pytest.raises(data.FormatError, match=r"00000001_cam.txt, line 1: "
                       "expected the keyword 'extrinsic'"):
        data.MVSScene(root).camera(1)


@pytest.mark.parametrize("size, maximum, expected", [
    ((1200, 1600), (864, 1152), (864, 1152)),  # DTU, Uni/Cas test size
    ((1080, 1920), (1080, 2048), (1056, 1920)),  # Tanks and Temples
    ((1080, 1920), (896, 1216), (672, 1216)),  # Panther
    ((1200, 1600), (1200, 1600), (1184, 1600)),  # no resize: floor only
    ((1200, 1600), (2000, 2000), (1184, 1600)),
    ((600, 800), (300, 800), (288, 384)),  # height-limited
])
def test_fit_to_max_size(size, maximum, expected):
    assert scene_lib.fit_to_max_size(*size, *maximum) == expected


def test_fit_to_max_size_rejects_degenerate_sizes():
    assert scene_lib.fit_to_max_size(100, 50, 64, 64, base=8) == (64, 32)
    # base 1: only the scale, floored (1080 * 1216 / 1920 = 684).
    assert scene_lib.fit_to_max_size(1080, 1920, 896, 1216, base=1) == (
        684, 1216)
    with pytest.raises(ValueError, match="smaller than base 32"):
        scene_lib.fit_to_max_size(20, 100, 64, 64)
    with pytest.raises(ValueError, match="positive sizes"):
        scene_lib.fit_to_max_size(0, 100, 64, 64)


def test_load_view_resizes_image_and_intrinsics(tmp_path, strict_warnings):
    root = _make_scene(tmp_path / "s", num_views=2)
    scene = data.MVSScene(root)
    native, intrinsics, cam_from_world = scene.load_view(1)
    assert native.dtype == np.float32 and native.shape == (24, 32, 3)
    np.testing.assert_array_equal(native, _image(1) / np.float32(255))
    np.testing.assert_array_equal(intrinsics, scene.camera(1).intrinsics)
    assert cam_from_world[0, 3] == 1.0
    # Halving with half-pixel centres averages each 2x2 block (the green
    # channel is 5 * column, so pairs of columns average to 5 * (2j + 0.5)).
    half, intrinsics, _ = scene.load_view(1, 12, 16)
    assert half.shape == (12, 16, 3)
    np.testing.assert_allclose(half[0, :, 1] * 255,
                               5 * (2 * np.arange(16) + 0.5), atol=1e-4)
    np.testing.assert_allclose(
        intrinsics, [[15.0, 0.0, 8.0], [0.0, 15.0, 6.0], [0.0, 0.0, 1.0]])
    # Anisotropic: only the column axis changes.
    wide, intrinsics, _ = scene.load_view(1, 24, 64)
    assert wide.shape == (24, 64, 3)
    assert 0.0 <= wide.min() and wide.max() <= 1.0
    np.testing.assert_allclose(
        intrinsics, [[60.0, 0.0, 32.0], [0.0, 30.0, 12.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="positive size"):
        scene.load_view(1, 0, 16)


def test_raw_office_room_layout(tmp_path, real_data_dir):
    """The raw office_room cams (K for 2400x1591, depth line 'min max') and
    its truncated pair.txt, with stand-in photos at 1/8 size."""
    raw = real_data_dir / "raw" / "office_room_rcv"
    root = tmp_path / "office_room_rcv"
    shutil.copytree(raw / "cams", root / "cams")
    shutil.copy(raw / "pair.txt", root / "pair.txt")
    (root / "images").mkdir()
    for view_id in range(40):
        Image.new("RGB", (300, 199)).save(
            root / "images" / f"{view_id:08d}.jpg")
    with pytest.warns(formats.FormatWarning) as record:
        scene = data.MVSScene(root)
    assert any("header says 40 views but the file lists 35" in str(w.message)
               for w in record)
    assert scene.view_ids == list(range(40))
    assert [ref for ref, _ in scene.pairs] == list(range(35))
    assert len(scene.pairs[0][1]) == 39  # the reference itself is dropped
    assert scene.source_views(34, 10) == [0, 3, 28, 33, 1, 12, 11, 0, 0, 0]
    with pytest.warns(scene_lib.SceneWarning, match="by 0.125"):
        camera = scene.camera(0)
    assert camera.depth_line == "min_max"
    assert camera.depth_range() == (4.336407, 8.482101)
    assert camera.intrinsics[0, 2] == 150.0
    assert camera.intrinsics[1, 2] == 795.5 / 8
    assert camera.intrinsics[0, 0] == pytest.approx(1811.340265248323 / 8)
