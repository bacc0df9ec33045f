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
    with pytest.raises(ValueError, match="mapping_attempts: expected at "
                       "least 1; received 0"):
        sfm.SfmOptions(mapping_attempts=0)
    with pytest.raises(ValueError, match="consensus_models: expected at "
                       "least 1; received 0"):
        sfm.SfmOptions(consensus_models=0)
    with pytest.raises(ValueError, match="camera_params: 4 values do not "
                       "fit SfmOptions.camera_model SIMPLE_PINHOLE; "
                       "expected 3"):
        sfm.SfmOptions(camera_params=(3310.0, 3325.0, 317.0, 201.0))
    with pytest.raises(ValueError, match="camera_params: 3 values do not "
                       "fit SfmOptions.camera_model OPENCV"):
        sfm.SfmOptions(camera_model="OPENCV",
                       camera_params=(3310.0, 317.0, 201.0))


def test_option_errors_name_the_fields_as_asked():
    with pytest.raises(sfm.SfmOptionError) as error:
        sfm.SfmOptions(camera_params=(1.0, 2.0))
    assert error.value.field == "camera_params"
    assert error.value.describe({"camera_params": "--params",
                                 "camera_model": "--model"}).startswith(
        "--params: 2 values do not fit --model SIMPLE_PINHOLE; expected 3")


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


class _Image:
    def __init__(self, name, centre):
        self.name, self.has_pose = name, True
        self._centre = np.asarray(centre, float)

    def projection_center(self):
        return self._centre


class _Model:
    """What `_map` reads of a pycolmap.Reconstruction."""

    def __init__(self, centres):
        self.images = {k: _Image(name, centre)
                       for k, (name, centre) in enumerate(centres.items())}

    def num_reg_images(self):
        return len(self.images)

    def num_points3D(self):
        return 100


def _ring(count):
    angles = 2 * np.pi * np.arange(count) / count
    return {f"v{k:02d}.png": (np.cos(a), np.sin(a), 0.1 * k)
            for k, a in enumerate(angles)}


def _fake_mapping(monkeypatch, incremental_sizes, global_model):
    """Replaces pycolmap's matching and mappers: attempt k of the
    incremental mapper registers `incremental_sizes[k]` images of a
    16-view ring (or, for a dict, those camera centres). Returns the calls
    made, as (stage, seed)."""
    import pycolmap

    ring = _ring(16)
    calls = []

    def match(database, options, matcher, seed):
        calls.append(("match", seed))
        return 30, set(range(16))

    def incremental(database, images_dir, output, pipeline):
        calls.append(("incremental", pipeline.random_seed))
        size = incremental_sizes[sum(c[0] == "incremental" for c in calls)
                                 - 1]
        if isinstance(size, dict):  # the centres of a complete model
            return {0: _Model(size)}
        return {0: _Model(dict(list(ring.items())[:size]))}

    def global_mapping(database, images_dir, output, pipeline):
        calls.append(("global", pipeline.random_seed))
        return {} if global_model is None else {0: global_model(ring)}

    monkeypatch.setattr(sfm, "_match", match)
    monkeypatch.setattr(pycolmap, "incremental_mapping", incremental)
    monkeypatch.setattr(pycolmap, "global_mapping", global_mapping)
    monkeypatch.setattr(sfm.shutil, "copyfile", lambda source, target: (
        calls.append(("copy", f"{source.name} -> {target.name}"))))
    return calls


def _run_map(tmp_path, **options):
    ids = {f"v{k:02d}.png": k + 1 for k in range(16)}
    lines = []
    result = sfm._map(tmp_path / "database.db", tmp_path / "features.db",
                      tmp_path, tmp_path / "mapping",
                      sfm.SfmOptions(random_seed=7, **options), ids,
                      "exhaustive", lines.append)
    return result, lines


def test_mapping_retries_with_new_matches_until_all_register(
        monkeypatch, tmp_path):
    calls = _fake_mapping(monkeypatch, [10, 16, 16], None)
    (model, mapper, attempts, disagreement, _), lines = _run_map(
        tmp_path, consensus_models=1)
    assert (model.num_reg_images(), mapper, attempts) == (16, "incremental",
                                                          2)
    assert disagreement is None
    # The second attempt draws the matches again with the next seed (the
    # first attempt's matches are kept aside while it is the best); the
    # global mapper is not needed.
    assert calls == [("incremental", 7), ("copy", "database.db -> best.db"),
                     ("copy", "features.db -> database.db"), ("match", 8),
                     ("incremental", 8)]
    assert lines[0].startswith("mapping (incremental, attempt 1 of at most "
                               "6): 1 model(s) of 10 images")


def _noisy_ring(sigma, seed):
    """The 16-view ring in another frame, every centre moved by
    N(0, sigma^2) per axis (the ring's radius is 1)."""
    rng = np.random.default_rng(seed)
    return {name: 2.0 * (np.asarray(centre) + rng.normal(0, sigma, 3)) + 5.0
            for name, centre in _ring(16).items()}


def test_consensus_keeps_the_complete_model_closest_to_the_others(
        monkeypatch, tmp_path):
    # Attempts 1, 3 and 4 register every image, with camera errors of 10,
    # 1 and 3 % of the radius; attempt 2 leaves 6 out. The middle one
    # agrees best with the other two and is kept, with its matches.
    sizes = [_noisy_ring(0.10, 0), 10, _noisy_ring(0.01, 1),
             _noisy_ring(0.03, 2)]
    calls = _fake_mapping(monkeypatch, sizes, None)
    (model, mapper, attempts, disagreement, consensus), lines = _run_map(
        tmp_path)
    assert (mapper, attempts, disagreement) == ("incremental", 4, None)
    kept = {image.name: image.projection_center()
            for image in model.images.values()}
    assert kept == sizes[2]
    assert consensus["complete_models"] == [1, 3, 4]
    assert consensus["kept_attempt"] == 3
    spread = consensus["mean_disagreement"]
    assert spread[1] == min(spread) and spread[0] == max(spread)
    # Mean residuals relative to the spread: about sigma * sqrt(3) * 1.25
    # for the worst pair, far below it for the best.
    assert 0.05 < spread[0] < 0.25 and spread[1] < 0.1, spread
    copies = [c[1] for c in calls if c[0] == "copy"]
    assert copies == ["database.db -> complete_0.db",
                      "features.db -> database.db",
                      "features.db -> database.db",
                      "database.db -> complete_2.db",
                      "features.db -> database.db",
                      "complete_2.db -> database.db"]
    assert ("mapping: 3 attempts registered every image (attempts 1, 3, 4);"
            " kept attempt 3, the closest to the others") in lines[-1]


def test_consensus_only_for_small_photo_sets(monkeypatch, tmp_path):
    monkeypatch.setattr(sfm, "CONSENSUS_MAX_IMAGES", 15)
    calls = _fake_mapping(monkeypatch, [_noisy_ring(0.1, 0),
                                        _noisy_ring(0.0, 1)], None)
    (model, _, attempts, _, consensus), _ = _run_map(tmp_path)
    assert (attempts, consensus) == (1, None)
    assert [c[0] for c in calls] == ["incremental"]


def test_consensus_with_fewer_complete_models_than_wanted(
        monkeypatch, tmp_path):
    # Two of three attempts complete: the consensus of two keeps the first
    # (a tie); the incomplete attempts never replace a complete model.
    sizes = [12, _noisy_ring(0.02, 0), _noisy_ring(0.05, 1)]
    _fake_mapping(monkeypatch, sizes, None)
    (model, mapper, attempts, _, consensus), _ = _run_map(
        tmp_path, mapping_attempts=3)
    assert (model.num_reg_images(), mapper, attempts) == (16, "incremental",
                                                          3)
    assert consensus["complete_models"] == [2, 3]
    assert consensus["kept_attempt"] == 2


def test_consensus_choice():
    truth = _ring(16)
    models = [_noisy_ring(s, k) for k, s in enumerate((0.2, 0.02, 0.05))]
    index, spread = sfm.consensus_choice(models)
    assert index == 1 and spread.shape == (3,)
    # The same cameras in three frames agree exactly.
    same = [{n: f * np.asarray(c) + f for n, c in truth.items()}
            for f in (1.0, 2.0, 3.0)]
    np.testing.assert_allclose(sfm.consensus_choice(same)[1], 0, atol=1e-9)
    # A model sharing fewer than 3 cameras with the rest counts as
    # disagreeing by the whole spread.
    two = dict(list(truth.items())[:2])
    index, spread = sfm.consensus_choice([truth, same[1], two])
    assert index in (0, 1) and spread[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two or more models"):
        sfm.consensus_choice([truth])


def test_global_model_kept_only_when_it_agrees(monkeypatch, tmp_path):
    # Every attempt leaves 4 images out; the global model registers all 16
    # in the same places (up to a similarity): kept.
    def same_frame(ring):
        return _Model({n: 2.0 * np.asarray(c) + 1.0 for n, c in ring.items()})

    calls = _fake_mapping(monkeypatch, [12, 11, 12], same_frame)
    (model, mapper, attempts, disagreement, _), lines = _run_map(
        tmp_path, mapping_attempts=3)
    assert (model.num_reg_images(), mapper, attempts) == (16, "global", 3)
    assert disagreement == pytest.approx(0, abs=1e-9)
    assert [c[0] for c in calls].count("global") == 1
    # The first attempt stayed the best (12 images): its matches go back
    # into database.db before the global mapper runs on them.
    assert calls[-2:] == [("copy", "best.db -> database.db"), ("global", 7)]

    # A folded global model (half the ring mirrored): the incremental
    # model with 12 images stays, with a warning.
    def folded(ring):
        return _Model({n: np.asarray(c) * ([1, -1, 1] if k % 2 else 1)
                       for k, (n, c) in enumerate(ring.items())})

    _fake_mapping(monkeypatch, [12, 11, 12], folded)
    (model, mapper, _, disagreement, _), lines = _run_map(
        tmp_path / "b", mapping_attempts=3)
    assert (model.num_reg_images(), mapper) == (12, "incremental")
    assert disagreement > sfm.MAX_DISAGREEMENT
    assert any(line.startswith("warning: the global model registers 16 "
                               "images but places the cameras of the "
                               "incremental attempts differently")
               and "kept the largest incremental model (12 images" in line
               for line in lines)


def test_every_attempt_checks_the_global_model(monkeypatch, tmp_path):
    # Two attempts break the ring at different places: v00-v09 and
    # v06-v15. A global model folded beyond v09 agrees with the first arc;
    # the second arc rejects it.
    ring = _ring(16)
    names = list(ring)
    first = {n: ring[n] for n in names[:10]}
    second = {n: ring[n] for n in names[6:]}

    def folded_second_half(ring):
        return _Model({n: np.asarray(c) * ([1, -1, 1] if k >= 10 else 1)
                       for k, (n, c) in enumerate(ring.items())})

    assert sfm.model_disagreement(first, folded_second_half(ring)) < (
        sfm.MAX_DISAGREEMENT)
    _fake_mapping(monkeypatch, [first, second], folded_second_half)
    (model, mapper, _, disagreement, _), lines = _run_map(
        tmp_path, mapping_attempts=2)
    assert (model.num_reg_images(), mapper) == (10, "incremental")
    assert disagreement > sfm.MAX_DISAGREEMENT
    # A global model that agrees with both arcs is kept; the two arcs hold
    # all 16 images between them.
    _fake_mapping(monkeypatch, [first, second], lambda ring: _Model(ring))
    (model, mapper, _, disagreement, _), lines = _run_map(
        tmp_path / "b", mapping_attempts=2)
    assert (model.num_reg_images(), mapper) == (16, "global")
    assert "of the 2 incremental attempt(s) (16 images between them)" in (
        lines[-1])


def test_incremental_mapper_alone_never_runs_global(monkeypatch, tmp_path):
    calls = _fake_mapping(monkeypatch, [10, 9], lambda ring: _Model(ring))
    (model, mapper, attempts, _, _), _ = _run_map(
        tmp_path, mapper="incremental", mapping_attempts=2)
    assert (model.num_reg_images(), mapper, attempts) == (10, "incremental",
                                                          2)
    assert "global" not in [c[0] for c in calls]


def test_global_model_not_vouched_for_by_a_short_arc(monkeypatch, tmp_path):
    # The incremental model holds 6 of the 16 views: the global model
    # agrees with it there (the same frame), but 6 views cannot check the
    # other 10, so the incremental model stays, with a warning.
    def same_frame(ring):
        return _Model({n: 2.0 * np.asarray(c) + 1.0 for n, c in ring.items()})

    _fake_mapping(monkeypatch, [6, 5, 6], same_frame)
    (model, mapper, _, disagreement, _), lines = _run_map(
        tmp_path, mapping_attempts=3)
    assert (model.num_reg_images(), mapper) == (6, "incremental")
    assert disagreement == pytest.approx(0, abs=1e-9)
    assert any("attempts hold only 6 of the 16 between them, too few to "
               "check it" in line for line in lines)
    # 8 of 16 (half) vouch for it.
    _fake_mapping(monkeypatch, [8, 5, 6], same_frame)
    (model, mapper, _, _, _), _ = _run_map(tmp_path / "b",
                                           mapping_attempts=3)
    assert (model.num_reg_images(), mapper) == (16, "global")
