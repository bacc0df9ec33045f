"""Tests of keras_mvs.data.colmap on COLMAP models written from a synthetic
scene's exact cameras and surface points."""

import pathlib

import numpy as np
import pycolmap
import pytest
from PIL import Image

from keras_mvs.data import colmap
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib
from keras_mvs.data import synthetic

NUM_VIEWS = 6
NUM_POINTS = 3000


def write_colmap_text(scene: dict, project: pathlib.Path,
                      distortion: str = "",
                      num_points: int = NUM_POINTS) -> pathlib.Path:
    """Writes `project/images/view_XX.png` and a COLMAP text model in
    `project/sparse/0` from a rendered scene (`colmap.write_text_model`).

    A surface point is observed by a view when it projects inside the image
    onto a pixel whose rendered depth agrees within 0.5 %. With
    `distortion`, the cameras become OPENCV cameras with these four
    coefficients.
    """
    num_views = len(scene["images"])
    height, width = scene["depths"].shape[1:]
    rng = np.random.default_rng(0)
    surface = scene["surface_points"].astype(np.float64)
    points = surface[rng.choice(len(surface), num_points, replace=False)]
    visible = np.zeros((num_points, num_views), bool)
    (project / "images").mkdir(parents=True)
    for view in range(num_views):
        k, pose = scene["intrinsics"][view], scene["cam_from_world"][view]
        camera_points = points @ pose[:3, :3].T + pose[:3, 3]
        z = camera_points[:, 2]
        pixels = camera_points @ k.T
        cols = np.round(pixels[:, 0] / z).astype(int)
        rows = np.round(pixels[:, 1] / z).astype(int)
        inside = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (
            rows < height)
        depth = np.zeros_like(z)
        depth[inside] = scene["depths"][view][rows[inside], cols[inside]]
        visible[:, view] = inside & (np.abs(depth - z) < 0.005 * z)
        Image.fromarray(scene["images"][view]).save(
            project / "images" / f"view_{view:02d}.png")
    model = colmap.write_text_model(
        project / "sparse" / "0",
        [f"view_{view:02d}.png" for view in range(num_views)],
        [(height, width)] * num_views, scene["intrinsics"],
        scene["cam_from_world"], points, visible)
    if distortion:
        cameras = model / "cameras.txt"
        cameras.write_text("".join(
            line.replace("PINHOLE", "OPENCV") + f" {distortion}\n"
            for line in cameras.read_text().splitlines()))
    return model


@pytest.fixture(scope="module")
def rendered() -> dict:
    config = synthetic.SceneConfig(height=64, width=96, num_views=NUM_VIEWS,
                                   seed=5, num_pair_samples=2000)
    return synthetic.render_scene(config)


@pytest.fixture(scope="module")
def project(rendered, tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("colmap") / "project"
    write_colmap_text(rendered, root)
    return root


def test_cameras_equal_the_originals(rendered, project):
    conversion = colmap.convert(project)
    assert conversion.model_dir == project / "sparse" / "0"
    assert conversion.names == [f"view_{k:02d}.png" for k in range(NUM_VIEWS)]
    for view, camera in enumerate(conversion.cameras):
        np.testing.assert_allclose(camera.intrinsics,
                                   rendered["intrinsics"][view], atol=1e-9)
        np.testing.assert_allclose(camera.cam_from_world,
                                   rendered["cam_from_world"][view],
                                   atol=1e-9)
    assert conversion.image_sizes == [(64, 96)] * NUM_VIEWS


def test_written_model_takes_the_database_ids(rendered, tmp_path):
    # Ids as a COLMAP database may hand them out: images and cameras
    # numbered independently, not in view order.
    ids = [(3, 2), (1, 3), (2, 1)]
    points = np.array([[0.0, 0.0, 2.0], [0.1, -0.1, 2.2]])
    model = colmap.write_text_model(
        tmp_path / "model", ["a.png", "b.png", "c.png"], [(64, 96)] * 3,
        rendered["intrinsics"][:3], rendered["cam_from_world"][:3], points,
        np.array([[True, True, False], [True, False, True]]), ids=ids)
    reconstruction = pycolmap.Reconstruction(str(model))
    for view, (image_id, camera_id) in enumerate(ids):
        image = reconstruction.images[image_id]
        assert image.name == "abc"[view] + ".png"
        assert image.camera_id == camera_id
        np.testing.assert_allclose(
            reconstruction.cameras[camera_id].params[:2],
            np.diag(rendered["intrinsics"][view])[:2])
        np.testing.assert_allclose(
            image.cam_from_world().matrix(),
            rendered["cam_from_world"][view][:3], atol=1e-9)
    tracks = {point.track.elements[0].image_id
              for point in reconstruction.points3D.values()}
    assert tracks == {3}  # view 0 sees both points
    seen = sorted(sorted(e.image_id for e in point.track.elements)
                  for point in reconstruction.points3D.values())
    assert seen == [[1, 3], [2, 3]]
    with pytest.raises(ValueError, match="expected 3 ids"):
        colmap.write_text_model(
            tmp_path / "other", ["a.png", "b.png", "c.png"], [(64, 96)] * 3,
            rendered["intrinsics"][:3], rendered["cam_from_world"][:3],
            points, np.ones([2, 3], bool), ids=ids[:2])


def _check_brackets(rendered: dict, conversion: colmap.ColmapConversion,
                    min_inside: float) -> None:
    for view, camera in enumerate(conversion.cameras):
        depths = rendered["depths"][view][rendered["masks"][view]]
        first, last = camera.depth_range()
        inside = np.mean((depths >= first) & (depths <= last))
        assert inside >= min_inside, (view, first, last)
        # Not absurdly wide: the 0.75 / 1.25 margins (x 1.06 x 191 / 192
        # on the far side, Camera.depth_range) stay within 40 %.
        assert first > 0.6 * depths.min() and last < 1.4 * depths.max()


def test_depth_range_brackets_the_true_depths(tmp_path):
    """Without occluders the 0.75 x P1 .. 1.25 x P99 range of the sparse
    depths holds every rendered depth."""
    config = synthetic.SceneConfig(height=64, width=96, num_views=NUM_VIEWS,
                                   seed=6, num_pair_samples=2000,
                                   occluders=False)
    rendered = synthetic.render_scene(config)
    write_colmap_text(rendered, tmp_path / "p")
    _check_brackets(rendered, colmap.convert(tmp_path / "p"), 1.0)


def test_depth_range_with_thin_occluders(rendered, project):
    """Thin poles near a camera carry few sparse points, so the percentile
    rule can cut them off: at least 98 % of the rendered pixels (all of them
    in most views) lie inside the range."""
    _check_brackets(rendered, colmap.convert(project), 0.98)


def test_pair_ranking_agrees_with_the_dense_scores(rendered, project):
    """Sparse-point scores rank sources like the renderer's dense surface
    samples: each view's best source is among the dense top 2, and the score
    rows correlate (Spearman rho > 0.7)."""
    conversion = colmap.convert(project)
    dense = rendered["pair_scores"]
    for ref, sources in conversion.pairs:
        assert len(sources) == NUM_VIEWS - 1
        dense_order = [v for v in np.argsort(-dense[ref]) if v != ref]
        assert sources[0][0] in dense_order[:2], (ref, sources, dense_order)
        sparse_row = dict(sources)
        others = [v for v in range(NUM_VIEWS) if v != ref]
        rank_sparse = np.argsort(np.argsort([sparse_row[v] for v in others]))
        rank_dense = np.argsort(np.argsort([dense[ref, v] for v in others]))
        assert np.corrcoef(rank_sparse, rank_dense)[0, 1] > 0.7


def test_binary_model_gives_the_same_conversion(project, tmp_path):
    binary = tmp_path / "sparse"
    binary.mkdir()
    pycolmap.Reconstruction(str(project / "sparse" / "0")).write_binary(
        str(binary))
    text = colmap.convert(project)
    converted = colmap.convert(binary, project / "images")
    assert converted.names == text.names
    assert converted.pairs == text.pairs
    for a, b in zip(converted.cameras, text.cameras):
        np.testing.assert_allclose(a.intrinsics, b.intrinsics, atol=1e-9)
        assert (a.depth_min, a.depth_max) == pytest.approx(
            (b.depth_min, b.depth_max))


def test_write_mvsnet_folder_opens_as_a_scene(rendered, project, tmp_path):
    conversion = colmap.convert(project)
    out = colmap.write_mvsnet_folder(conversion, tmp_path / "mvs")
    scene = scene_lib.MVSScene(out)
    assert scene.view_ids == list(range(NUM_VIEWS))
    np.testing.assert_array_equal(scene.image(0), rendered["images"][0])
    camera = scene.camera(3)
    np.testing.assert_allclose(camera.intrinsics, rendered["intrinsics"][3],
                               atol=1e-9)
    assert camera.depth_line == "min_interval_num_max"
    assert formats.read_pair_file(out / "pair.txt") == conversion.pairs
    names = (out / "image_names.txt").read_text().split("\n")
    assert names[0] == "0 view_00.png"
    with pytest.raises(FileExistsError):
        colmap.write_mvsnet_folder(conversion, out)
    linked = colmap.write_mvsnet_folder(conversion, out, overwrite=True,
                                        link_images=True)
    assert (linked / "images" / "00000000.png").is_symlink()
    assert not list(tmp_path.glob(".mvs*"))


def test_distorted_model_is_refused(rendered, tmp_path):
    write_colmap_text(rendered, tmp_path / "p", "0.1 0 0 0", num_points=200)
    with pytest.raises(colmap.ColmapError,
                       match="OPENCV model.*image_undistorter"):
        colmap.convert(tmp_path / "p")


def test_zero_distortion_model_is_a_pinhole(rendered, tmp_path):
    write_colmap_text(rendered, tmp_path / "p", "0 0 0 0", num_points=300)
    conversion = colmap.convert(tmp_path / "p")
    np.testing.assert_allclose(conversion.cameras[0].intrinsics,
                               rendered["intrinsics"][0], atol=1e-9)


def test_missing_and_mismatched_images(rendered, project, tmp_path):
    with pytest.raises(colmap.ColmapError, match="no COLMAP model"):
        colmap.convert(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(colmap.ColmapError,
                       match=r"6 of the model's 6 images are missing"):
        colmap.convert(project, empty)
    small = tmp_path / "small"
    small.mkdir()
    for view in range(NUM_VIEWS):
        Image.fromarray(rendered["images"][view][:32, :48]).save(
            small / f"view_{view:02d}.png")
    with pytest.raises(colmap.ColmapError, match="48x32 but COLMAP camera"):
        colmap.convert(project, small)


def test_find_model_dir_layouts(project, tmp_path):
    assert colmap.find_model_dir(project) == project / "sparse" / "0"
    assert colmap.find_model_dir(project / "sparse") == (
        project / "sparse" / "0")
    assert colmap.find_model_dir(tmp_path) is None
    assert colmap.find_images_dir(project / "sparse" / "0") == (
        project / "images")


def test_unregistered_images_are_named(project, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in (project / "images").iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    (images / "left_out.png").write_bytes(
        (project / "images" / "view_00.png").read_bytes())
    with pytest.warns(UserWarning, match=r"1 image\(s\) are not registered "
                      r"in the model and get no view: left_out\.png"):
        conversion = colmap.convert(project / "sparse" / "0", images)
    assert conversion.unregistered == ["left_out.png"]
    assert len(conversion.names) == NUM_VIEWS


def test_no_warning_when_every_image_is_registered(project):
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not registered.*")
        assert colmap.convert(project).unregistered == []
