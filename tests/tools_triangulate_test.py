"""tools/triangulate_sparse_points.py: sparse points from known cameras."""

import importlib.util
import pathlib

import numpy as np

from bench import sparse_depth_error
from keras_mvs.data import synthetic
from keras_mvs.data.scene import MVSScene

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "triangulate_sparse_points",
        REPO / "tools" / "triangulate_sparse_points.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_points_lie_on_the_rendered_surface(tmp_path):
    # Fine texture, no highlights or occluders: SIFT finds features to
    # match (the default textures give a few dozen points).
    scene = synthetic.render_scene(synthetic.SceneConfig(
        height=240, width=320, num_views=6, seed=3, num_pair_samples=2000,
        low_texture=False, specular=0.0, occluders=False, supersample=2,
        cap_angle_deg=15.0, texture_scale=0.25))
    folder = synthetic.write_scene(scene, tmp_path / "scene")
    tool = _tool()
    points = tool.triangulate(folder, tmp_path / "work")
    good = (points["reproj_error"] < 1.0) & (points["track_len"] >= 3)
    assert good.sum() >= 100, good.sum()
    # Each good point, seen from view 0, at the rendered depth there
    # (scored as bench/sparse_depth_error scores depth maps). The bounds
    # are fractions of the nearest depth, so no looser than the same
    # fractions of each point's own depth.
    errors = sparse_depth_error.view_errors(
        scene["depths"][0], MVSScene(folder).camera(0),
        points["xyz"][good].astype(np.float64), None)
    nearest = float(scene["depth_min"][0])
    assert errors.size >= 50, errors.size
    # Measured: median 0.05 % of the depth, 99 % within 1 % (a pixel is
    # about 0.3 % here); points at depth edges make the tail.
    assert np.median(errors) < 0.002 * nearest, np.median(errors)
    assert np.mean(errors < 0.01 * nearest) > 0.9, np.mean(
        errors < 0.01 * nearest)


def _camera():
    from keras_mvs.data import formats

    k = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    return formats.Camera(intrinsics=k, cam_from_world=np.eye(4),
                          depth_min=1.0, depth_interval=0.1)


def test_point_sets_compared_along_the_rays():
    # Points on a plane at depth 10 and the same rays 0.5 farther: where
    # both meet at a pixel they differ by exactly 0.5 along the ray.
    camera = _camera()
    rng = np.random.default_rng(0)
    pixels = np.stack([rng.integers(0, 64, 200), rng.integers(0, 48, 200)],
                      axis=1).astype(float)
    rays = np.concatenate([(pixels - [32, 24]) / 100.0, np.ones((200, 1))],
                          axis=1)
    near, far = 10.0 * rays, 10.5 * rays
    image = sparse_depth_error.sparse_depth_image(camera, far, (48, 64))
    assert (image > 0).sum() == len(np.unique(pixels, axis=0))
    errors = sparse_depth_error.view_errors(image, camera, near, None)
    np.testing.assert_allclose(errors, 0.5, atol=1e-9)
    # A pixel keeps its nearest point, and pixels no point reaches score
    # nothing.
    both = np.concatenate([far, 12.0 * rays[:5]])
    image = sparse_depth_error.sparse_depth_image(camera, both, (48, 64))
    np.testing.assert_allclose(
        sparse_depth_error.view_errors(image, camera, near, None), 0.5,
        atol=1e-9)
    lone = sparse_depth_error.sparse_depth_image(
        camera, np.array([[0.0, 0.0, 10.0]]), (48, 64))  # pixel (32, 24)
    elsewhere = np.array([[1.0, 1.0, 10.0]])  # pixel (42, 34)
    assert sparse_depth_error.view_errors(lone, camera, elsewhere,
                                          None).size == 0
