"""Tests of keras_mvs.data.sfm: bad photo sets, and camera accuracy of
structure from motion on a rendered scene with exact cameras."""

import dataclasses
import pathlib

import numpy as np
import pytest
from PIL import Image

from keras_mvs import fusion
from keras_mvs.data import colmap
from keras_mvs.data import sfm
from keras_mvs.data import synthetic


def _write_noise(path: pathlib.Path, height: int, width: int,
                 seed: int) -> None:
    """Blocky random texture: many SIFT features, unrelated across seeds."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 4, width // 4, 3), np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((4, 4, 1), np.uint8))).save(path)


def test_fewer_than_three_images(tmp_path):
    for index in range(2):
        _write_noise(tmp_path / f"p{index}.png", 48, 64, index)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(sfm.SfmError, match=r"2 image\(s\).*at least 3"):
        sfm.run_sfm(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreadable_file_is_named(tmp_path):
    for index in range(3):
        _write_noise(tmp_path / f"p{index}.png", 48, 64, index)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(sfm.SfmError, match=r"broken\.jpg: cannot be read"):
        sfm.check_images(tmp_path)


def test_mixed_sizes_are_named(tmp_path):
    for index in range(3):
        _write_noise(tmp_path / f"p{index}.png", 48, 64, index)
    _write_noise(tmp_path / "odd.png", 60, 80, 9)
    with pytest.raises(sfm.SfmError,
                       match=r"3 are 64x48 but odd\.png is 80x60"):
        sfm.check_images(tmp_path)


def test_check_images_accepts_one_size(tmp_path):
    for index in range(3):
        _write_noise(tmp_path / f"p{index}.jpg", 48, 64, index)
    assert sfm.check_images(tmp_path) == (["p0.jpg", "p1.jpg", "p2.jpg"],
                                          (48, 64))


def test_no_overlap_at_all(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        _write_noise(images / f"p{index}.png", 160, 200, 100 + index)
    lines = []
    with pytest.raises(sfm.SfmError, match="no overlap at all"):
        sfm.run_sfm(images, tmp_path / "sfm", log=lines.append)
    assert lines[0].startswith("sfm: 3 images of 200x160")
    assert any(line.startswith("features: 3 images") for line in lines)
    assert not (tmp_path / "sfm" / "sfm.json").exists()


def test_options_are_checked():
    with pytest.raises(ValueError, match="SfmOptions.matcher"):
        sfm.SfmOptions(matcher="vocab")
    with pytest.raises(ValueError, match="init_image_names"):
        sfm.SfmOptions(init_image_names=("a.png", "a.png"))


def test_similarity_fit_recovers_a_similarity():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(10, 3))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                         [np.sin(angle), np.cos(angle), 0.0],
                         [0.0, 0.0, 1.0]])
    target = 2.5 * source @ rotation.T + [1.0, -2.0, 3.0]
    scale, fitted, translation = sfm.similarity_fit(source, target)
    np.testing.assert_allclose(scale, 2.5, rtol=1e-9)
    np.testing.assert_allclose(fitted, rotation, atol=1e-9)
    np.testing.assert_allclose(translation, [1.0, -2.0, 3.0], atol=1e-9)


# A scene SfM can handle: 12 views of 320x240 on the default cap, strong
# texture, no thin occluders or highlights, and one pinhole camera (the
# renderer's per-view principal-point jitter, up to 6 px here, moves the
# SfM centres by up to 4 % of the cap radius: SfM does not estimate
# principal points).
_SCENE = synthetic.SceneConfig(
    height=240, width=320, num_views=12, seed=3, num_pair_samples=2000,
    occluders=False, repetitive=False, low_texture=False, specular=0.0,
    intrinsics_jitter=False)
# Camera-centre error bound after the similarity fit, as a fraction of the
# mean distance of the true centres from their centroid (the cap radius,
# ~330 mm): 1 %.
_CENTRE_BOUND = 0.01


@pytest.fixture(scope="module")
def sfm_run(tmp_path_factory):
    """The rendered scene, its photos and the SfM result (default
    options)."""
    scene = synthetic.render_scene(_SCENE)
    root = tmp_path_factory.mktemp("sfm")
    (root / "images").mkdir()
    for view, image in enumerate(scene["images"]):
        Image.fromarray(image).save(root / "images" / f"view_{view:02d}.png")
    result = sfm.run_sfm(root / "images", root / "sfm")
    return scene, result


def _true_centres(scene: dict) -> np.ndarray:
    poses = scene["cam_from_world"]
    return -np.einsum("vji,vj->vi", poses[:, :3, :3], poses[:, :3, 3])


def _centre_errors(scene: dict, result) -> np.ndarray:
    """Each view's SfM camera centre, moved into the true frame by the
    similarity fitted to all centres, against the true one, as a fraction
    of the mean distance of the true centres from their centroid."""
    estimated = sfm.camera_centres(result.model_dir)
    source = np.stack([estimated[f"view_{view:02d}.png"]
                       for view in range(len(scene["images"]))])
    target = _true_centres(scene)
    scale, rotation, translation = sfm.similarity_fit(source, target)
    aligned = scale * source @ rotation.T + translation
    radius = np.mean(np.linalg.norm(target - target.mean(0), axis=1))
    return np.linalg.norm(aligned - target, axis=1) / radius


@pytest.mark.large
def test_sfm_camera_centres_match_the_true_ones(sfm_run):
    scene, result = sfm_run
    assert result.unregistered == []
    assert (result.sfm_dir / "sfm.json").is_file()
    errors = _centre_errors(scene, result)
    assert errors.max() < _CENTRE_BOUND, errors


def _fused_clouds(scene: dict, result) -> tuple:
    """The exact depth maps fused once with the true cameras and once with
    the SfM cameras (moved into the true frame by the similarity fitted to
    the centres), over the SfM pair lists.

    Returns:
        `(true points [N, 3], SfM points [M, 3])`, mm.
    """
    conversion = colmap.convert(result.model_dir, result.images_dir)
    views = [int(name[5:7]) for name in conversion.names]
    source = np.stack([-c.cam_from_world[:3, :3].T @ c.cam_from_world[:3, 3]
                       for c in conversion.cameras])
    scale, rotation, translation = sfm.similarity_fit(
        source, _true_centres(scene)[views])

    def fusion_views(use_sfm: bool) -> dict:
        out = {}
        for index, view in enumerate(views):
            if use_sfm:
                camera = conversion.cameras[index]
                pose = np.eye(4)
                pose[:3, :3] = camera.cam_from_world[:3, :3] @ rotation.T
                pose[:3, 3] = (scale * camera.cam_from_world[:3, 3]
                               - pose[:3, :3] @ translation)
                intrinsics = camera.intrinsics
            else:
                pose = scene["cam_from_world"][view]
                intrinsics = scene["intrinsics"][view]
            depth = scene["depths"][view]
            out[index] = fusion.FusionView(
                depth=depth, confidence=np.ones_like(depth),
                intrinsics=intrinsics, cam_from_world=pose,
                image=scene["images"][view])
        return out

    config = fusion.FilterConfig.preset("casmvsnet")
    return tuple(
        fusion.fuse_views(fusion_views(use_sfm), conversion.pairs,
                          config).points for use_sfm in (False, True))


@pytest.mark.large
def test_fused_cloud_from_sfm_cameras_matches_true_cameras(sfm_run):
    from scipy.spatial import cKDTree

    true_points, sfm_points = _fused_clouds(*sfm_run)
    # The SfM cameras keep at least 80 % of the points the exact ones keep
    # (the filter's 1 px / 1 % checks reject inconsistent cameras) and the
    # points lie within 1 mm of the true-camera cloud on average (0.17 %
    # of the 600 mm viewing distance).
    assert sfm_points.shape[0] >= 0.8 * true_points.shape[0]
    distances, _ = cKDTree(true_points).query(sfm_points)
    assert np.mean(distances) < 1.0, np.mean(distances)


def test_model_disagreement():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 3))
    names = [f"v{k}.png" for k in range(6)]
    first = dict(zip(names, centres))
    # The same cameras in another frame: no disagreement.
    moved = dict(zip(names, 3.0 * centres[:, ::-1] * [1, 1, -1] + 5.0))
    assert sfm.model_disagreement(first, moved) == pytest.approx(0, abs=1e-9)
    # One camera moved by the mean spread: a large disagreement.
    spread = np.mean(np.linalg.norm(centres - centres.mean(0), axis=1))
    shifted = dict(first)
    shifted["v2.png"] = centres[2] + [spread, 0.0, 0.0]
    assert sfm.model_disagreement(first, shifted) > sfm.MAX_DISAGREEMENT
    # Fewer than 3 common images: undefined.
    assert sfm.model_disagreement(first, {"v0.png": centres[0],
                                          "v1.png": centres[1]}) is None


@pytest.mark.large
def test_known_intrinsics_are_kept(tmp_path):
    """`camera_params`: the principal point stays where it was given (the
    COLMAP convention, +0.5 px), the centres match the true ones."""
    config = dataclasses.replace(_SCENE, seed=5)
    scene = synthetic.render_scene(config)
    (tmp_path / "images").mkdir()
    for view, image in enumerate(scene["images"]):
        Image.fromarray(image).save(
            tmp_path / "images" / f"view_{view:02d}.png")
    k = scene["intrinsics"][0]
    given = (k[0, 0], k[0, 2] + 0.5, k[1, 2] + 0.5)
    result = sfm.run_sfm(tmp_path / "images", tmp_path / "sfm",
                         sfm.SfmOptions(camera_params=given))
    assert result.unregistered == []
    conversion = colmap.convert(result.model_dir, result.images_dir)
    intrinsics = conversion.cameras[0].intrinsics
    np.testing.assert_allclose(intrinsics[:2, 2], k[:2, 2], atol=1e-6)
    assert abs(intrinsics[0, 0] / k[0, 0] - 1) < 0.02
    errors = _centre_errors(scene, result)
    assert errors.max() < _CENTRE_BOUND, errors
