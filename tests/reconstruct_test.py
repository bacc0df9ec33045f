"""Tests of keras_mvs.reconstruct on a tiny synthetic scene."""

import argparse
import dataclasses
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mvs import evaluation
from keras_mvs import files
from keras_mvs import fusion
from keras_mvs import inference
from keras_mvs import reconstruct
from keras_mvs import visualize
from keras_mvs.data import formats
from keras_mvs.data import scene as scene_lib
from keras_mvs.reconstruct import cli
from keras_mvs.reconstruct import layout
from keras_mvs.testing import tiny

HEIGHT, WIDTH, NUM_VIEWS = 64, 96, 6



class GroundTruthPredictor:
    """Stands in for a network: returns the scene's true depth of the
    reference view (found by its pose), resized by nearest neighbour."""

    kind = "ground_truth"
    network = None

    def __init__(self, scene: scene_lib.MVSScene):
        self.path = scene.root
        self._scene = scene

    def __call__(self, inputs):
        pose = np.asarray(inputs["cam_from_world"])[0, 0]
        for view_id in self._scene.view_ids:
            if np.allclose(self._scene.camera(view_id).cam_from_world, pose,
                           atol=1e-5):
                depth = self._scene.depth(view_id)
                break
        height, width = np.asarray(inputs["images"]).shape[2:4]
        rows = np.arange(height) * depth.shape[0] // height
        cols = np.arange(width) * depth.shape[1] // width
        depth = depth[rows[:, None], cols[None, :]]
        return {"depth": depth[None], "confidence": np.ones_like(depth)[None]}


def test_estimate_cost_volume_bytes_formula():
    sizes = reconstruct.estimate_cost_volume_bytes(
        64, 96, 5, (48, 32, 8), (32, 16, 8))
    assert sizes == [4 * 48 * 16 * 24 * 32 * 4, 4 * 32 * 32 * 48 * 16 * 4,
                     4 * 8 * 64 * 96 * 8 * 4]


def test_check_memory_names_the_knobs():
    shape = reconstruct.NetworkShape((48, 32, 8), (32, 16, 8), 192, True)
    with pytest.raises(reconstruct.InsufficientMemoryError,
                       match="--max-height.*--views.*--num-depths"):
        reconstruct.check_memory(1184, 1600, 5, shape, budget_bytes=2**30)
    assert len(reconstruct.check_memory(64, 96, 3, shape, 2**30)) == 3


def test_ground_truth_depths_fuse_onto_the_surface(scene_dir, tmp_path):
    """The driver (inference records, files, read-back, fusion) is exact
    when the "prediction" is the true depth: every fused point lies on the
    surface. Bounds: accuracy (mean distance to the ground-truth sample,
    voxel-thinned at the 3.1 mm pixel footprint) below 1.5 mm, 95 % of
    points within 3 mm; completeness below 3 mm."""
    scene = scene_lib.MVSScene(scene_dir)
    config = fusion.FilterConfig.preset("casmvsnet", min_consistent_views=2)
    summary = reconstruct.reconstruct(
        scene, GroundTruthPredictor(scene), tmp_path, num_views=3,
        filter_config=config, verbose=0)
    points, colors, _ = files.read_ply(str(tmp_path / "fused.ply"))
    gt, _, _ = files.read_ply(str(scene_dir / "gt_surface.ply"))
    metrics = evaluation.accuracy_completeness(points, gt, max_distance=20.0)
    scores = evaluation.precision_recall_fscore(points, gt, threshold=3.0)
    assert summary["totals"]["num_points"] == points.shape[0] > 10000
    assert colors.dtype == np.uint8
    assert metrics["accuracy"] < 1.5
    assert metrics["completeness"] < 3.0
    assert scores["precision"] > 0.95
    assert summary["diagnosis"] == []
    # Synthetic masks mark the pixels with a surface: every point is inside.
    assert summary["masks"]["masked_views"] == NUM_VIEWS
    assert summary["masks"]["hull_fraction"] == 1.0


def test_resource_error_before_any_output(scene_dir, tmp_path):
    scene = scene_lib.MVSScene(scene_dir)
    with pytest.raises(reconstruct.InsufficientMemoryError,
                       match="GiB.*lower --max-height"):
        reconstruct.reconstruct(
            scene, GroundTruthPredictor(scene), tmp_path / "out",
            max_height=100000, max_width=100000, memory_budget_bytes=1000,
            verbose=0)
    assert not (tmp_path / "out").exists()


def test_out_of_memory_during_inference_is_explained(scene_dir, tmp_path):
    scene = scene_lib.MVSScene(scene_dir)

    class ExhaustedPredictor(GroundTruthPredictor):
        def __call__(self, inputs):
            raise tf.errors.ResourceExhaustedError(
                None, None, "OOM when allocating tensor")

    with pytest.raises(reconstruct.InsufficientMemoryError,
                       match="out of memory on view 0 at 64x96 with 3 views: "
                       "lower --max-height"):
        reconstruct.reconstruct(scene, ExhaustedPredictor(scene), tmp_path,
                                num_views=3, memory_budget_bytes=None,
                                verbose=0)
    assert not (tmp_path / "summary.json").exists()


def test_filter_that_cannot_pass_is_refused(scene_dir, tmp_path):
    scene = scene_lib.MVSScene(scene_dir)
    config = fusion.FilterConfig.preset("casmvsnet", min_consistent_views=9)
    with pytest.raises(reconstruct.ReconstructionError,
                       match="at most 5.*--min-consistent-views"):
        reconstruct.reconstruct(scene, GroundTruthPredictor(scene), tmp_path,
                                filter_config=config, verbose=0)
    stages = fusion.FilterConfig.preset("unimvsnet_dypcd")
    with pytest.raises(reconstruct.ReconstructionError,
                       match="single --conf"):
        reconstruct.reconstruct(scene, GroundTruthPredictor(scene), tmp_path,
                                filter_config=stages, verbose=0)


def test_tiny_network_outputs(scene_dir, tiny_model, tmp_path):
    """An untrained network with a 64x64 maximum: the 64x96 images go in at
    32x64 (ALGORITHMS.md 1.8.1: s = 64 / 96, floored to multiples of 32, K
    rows scaled by 64 / 96 and 32 / 64); every file exists with the right
    shape, dtype and K."""
    scene = scene_lib.MVSScene(scene_dir)
    predictor = inference.load_model(tiny_model)
    config = fusion.FilterConfig.preset(
        "unimvsnet_pcd", min_consistent_views=2)
    summary = reconstruct.reconstruct(
        scene, predictor, tmp_path, num_views=3, max_height=64,
        max_width=64, filter_config=config, verbose=0)
    for view_id in scene.view_ids:
        name = f"{view_id:08d}"
        depth = formats.read_pfm(tmp_path / "depth" / f"{name}.pfm")
        confidence = formats.read_pfm(tmp_path / "confidence" / f"{name}.pfm")
        stage1 = formats.read_pfm(
            tmp_path / "confidence" / f"{name}_stage1.pfm")
        assert depth.shape == confidence.shape == stage1.shape == (32, 64)
        assert depth.dtype == np.float32
        assert np.all((confidence >= 0) & (confidence <= 1))
        camera = formats.read_cam_file(tmp_path / "cams" / f"{name}_cam.txt")
        expected = scene.camera(view_id).intrinsics.copy()
        expected[0] *= 64 / WIDTH
        expected[1] *= 32 / HEIGHT
        np.testing.assert_allclose(camera.intrinsics, expected, rtol=1e-12)
        with Image.open(tmp_path / "images" / f"{name}.png") as png:
            assert png.size == (64, 32) and png.mode == "RGB"
        expected_previews = {
            "depth": visualize.colorize_depth(
                depth, vmin=camera.depth_min, vmax=camera.depth_max),
            "confidence": visualize.colorize_confidence(confidence)}
        for kind, expected_map in expected_previews.items():
            preview = tmp_path / "previews" / f"{name}_{kind}.png"
            with Image.open(preview) as png:
                # The map at its size, a colour-bar legend on its right.
                assert png.mode == "RGB"
                assert png.size[0] > 64 and png.size[1] >= 32
                pixels = np.asarray(png)
            difference = np.abs(pixels[:32, :64].astype(int) - expected_map)
            assert difference.max() <= 1, kind
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["totals"]["num_views"] == NUM_VIEWS
    assert written["settings"]["num_depths"] == [8, 8, 8]
    view = written["views"][0]
    for key in ("view_id", "points_kept", "photometric_rejection",
                "geometric_rejection", "depth_range", "inference_seconds"):
        assert key in view
    assert set(written["timing"]) >= {"inference_seconds", "fusion_seconds",
                                      "total_seconds"}
    # The cloud, the totals and the per-view counts agree, and a pixel is
    # fused only when it passes both filters.
    points, _, _ = files.read_ply(str(tmp_path / "fused.ply"))
    views = written["views"]
    assert points.shape[0] == written["totals"]["num_points"] == sum(
        v["points_kept"] for v in views) == summary["totals"]["num_points"]
    for view in views:
        assert view["pixels"] == 32 * 64
        assert view["points_kept"] <= min(view["photometric_kept"],
                                          view["geometric_kept"])
    # The diagnosis names exactly the filters that removed over 90 % of
    # the pixels (an untrained network is rarely confident, so usually the
    # photometric one), and an empty cloud is never left unexplained.
    totals = written["totals"]
    hints = " ".join(written["diagnosis"])
    assert ("photometric filter removed" in hints) == (
        totals["photometric_rejection"] > 0.9)
    assert ("geometric filter removed" in hints) == (
        totals["geometric_rejection"] > 0.9)
    assert points.shape[0] > 0 or written["diagnosis"]


def test_with_num_depths_keeps_the_weights(tiny_model):
    predictor = inference.load_model(tiny_model)
    rebuilt = reconstruct.with_num_depths(predictor, (16, 8, 8))
    assert rebuilt.network.num_depths == (16, 8, 8)
    for old, new in zip(predictor.network.weights, rebuilt.network.weights):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_with_num_depths_refuses_a_savedmodel(tmp_path):
    predictor = inference.Predictor(tmp_path, "saved_model",
                                    signature=lambda **inputs: inputs)
    with pytest.raises(reconstruct.ReconstructionError,
                       match="needs a Keras model.*SavedModel"):
        reconstruct.with_num_depths(predictor, (16, 8, 8))


def test_mask_agreement_counts_points_outside_the_masks(scene_dir,
                                                       tmp_path):
    """Points built from known pixels of view 0 (its exact synthetic depth,
    lifted through K and the pose) land on those pixels again. With view
    0's mask cut to its left half and every other mask full, exactly the
    points built from the right half leave the visual hull."""
    copy = shutil.copytree(scene_dir, tmp_path / "s")
    half = np.zeros((HEIGHT, WIDTH), np.uint8)
    half[:, :WIDTH // 2] = 255
    Image.fromarray(half).save(copy / "masks" / "00000000.png")
    full = np.full((HEIGHT, WIDTH), 255, np.uint8)
    for view_id in range(1, NUM_VIEWS):
        Image.fromarray(full).save(copy / "masks" / f"{view_id:08d}.png")
    scene = scene_lib.MVSScene(copy)

    camera = scene.camera(0)
    depth = scene.depth(0).astype(np.float64)
    rows, cols = np.nonzero(depth > 0)
    rays = np.linalg.solve(camera.intrinsics, np.stack(
        [cols, rows, np.ones_like(cols)]).astype(np.float64))  # [3, N]
    points_cam = rays * depth[rows, cols]
    world_from_cam = np.linalg.inv(camera.cam_from_world)
    points = (world_from_cam[:3, :3] @ points_cam).T + world_from_cam[:3, 3]
    # And one point behind view 0, which its mask must not count.
    behind = world_from_cam[:3, 3] - 100.0 * world_from_cam[:3, 2]
    result = reconstruct.mask_agreement(np.vstack([points, behind]), scene,
                                        [0])

    right = cols >= WIDTH // 2
    assert 0 < right.sum() < len(cols)
    assert result["masked_views"] == 1
    assert result["projected_points"] == len(cols)
    assert result["projection_fraction"] == pytest.approx(1.0 - right.mean())
    assert result["hull_fraction"] == pytest.approx(1.0 - right.mean())
    everywhere = reconstruct.mask_agreement(points, scene, scene.view_ids)
    assert everywhere["masked_views"] == NUM_VIEWS
    assert everywhere["hull_fraction"] == pytest.approx(1.0 - right.mean())
    assert reconstruct.mask_agreement(
        points, scene_lib.MVSScene(scene_dir), []) is None


def test_network_shape_of_a_savedmodel_config(tmp_path):
    stored = {"config": {"num_depths": [32, 16, 8], "base_channels": 4}}
    predictor = inference.Predictor(tmp_path, "saved_model",
                                    signature=lambda **inputs: inputs,
                                    network_config=stored)
    shape = reconstruct.network_shape(predictor)
    assert shape == reconstruct.NetworkShape((32, 16, 8), (16, 8, 4), 192,
                                             True)
    bare = inference.Predictor(tmp_path, "saved_model",
                               signature=lambda **inputs: inputs)
    assert not reconstruct.network_shape(bare).known


def test_diagnosis_names_the_photometric_filter():
    stats = [{"pixels": 100, "photometric_kept": 1, "geometric_kept": 80,
              "points_kept": 0}]
    hints = reconstruct.diagnose(stats, 0, fusion.FilterConfig())
    assert hints and "photometric filter removed 99 %" in hints[0]
    assert "lower --conf" in hints[0]


def test_comma_tuple_parses_and_names_what_it_expected():
    parse = cli.comma_tuple(
        int, (3,), "three multiples of 8", valid=lambda v: v % 8 == 0)
    assert parse("48,32,8") == (48, 32, 8)
    for text in ("48,32", "48,30,8", "a,b,c", ""):
        with pytest.raises(argparse.ArgumentTypeError,
                           match=f"expected three multiples of 8; "
                           f"received '{text}'"):
            parse(text)
    either = cli.comma_tuple(float, (1, 3), "one or three")
    assert either("0.5") == (0.5,)
    assert either("0.1,0.15,0.9") == (0.1, 0.15, 0.9)


def test_size_and_positive_int_arguments():
    size = cli.image_size(16)
    assert size("640x480") == size("640X480") == (640, 480)
    for text in ("15x480", "640", "axb", "640x480x3"):
        with pytest.raises(argparse.ArgumentTypeError,
                           match="WIDTHxHEIGHT such as 640x480"):
            size(text)
    assert cli.positive_int("3") == 3
    for text in ("0", "-2", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive"):
            cli.positive_int(text)


def test_evaluate_against_reads_ply_and_npz(tmp_path):
    # Ground truth on a 1 mm grid; the cloud is the same grid moved 0.5 mm
    # off the plane: every distance is exactly 0.5.
    grid = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)),
                    -1).reshape(-1, 2)
    truth = np.concatenate([grid, np.zeros((100, 1))], 1).astype(np.float32)
    cloud = truth + np.float32([0.0, 0.0, 0.5])
    files.write_ply(str(tmp_path / "gt.ply"), truth)
    np.savez(tmp_path / "gt.npz", xyz=truth)
    for name in ("gt.ply", "gt.npz"):
        metrics = reconstruct.evaluate_against(cloud, tmp_path / name,
                                               threshold=1.0)
        assert metrics["accuracy"] == pytest.approx(0.5)
        assert metrics["completeness"] == pytest.approx(0.5)
        assert metrics["precision"] == metrics["recall"] == 1.0
        assert reconstruct.evaluate_against(
            cloud, tmp_path / name, threshold=0.4)["fscore"] == 0.0
    np.savez(tmp_path / "bad.npz", points=truth)
    with pytest.raises(ValueError, match="bad.npz: expected an array 'xyz'"):
        reconstruct.evaluate_against(cloud, tmp_path / "bad.npz", 1.0)


TINY_SHAPE = reconstruct.NetworkShape((48, 32, 8), (32, 16, 8), 192, True)


def test_working_memory_model_bounds_the_bench():
    # The bench figures the model was fitted to (planning.FIT_POINTS): an
    # upper bound of each, within 2 % (measured: within 0.5 %).
    points = reconstruct.planning.FIT_POINTS
    assert len(points) == 3
    for (height, width), megabytes in points.items():
        estimate = reconstruct.estimate_working_bytes(
            height, width, 5, TINY_SHAPE) / 2**20
        assert megabytes <= estimate <= 1.02 * megabytes, (height, estimate)


def test_the_xla_model_bounds_the_xla_bench():
    # The compiled warp's working memory in the same bench run
    # (planning.XLA_CHECK_POINTS, 128x160 to 1152x1600): under the XLA
    # estimate, and over the plain estimate up to 512x640 (so the overhead
    # is needed), within 30 %.
    xla_shape = dataclasses.replace(TINY_SHAPE, xla_warp=True)
    exceeded = 0
    for (height, width), megabytes in (
            reconstruct.planning.XLA_CHECK_POINTS.items()):
        estimate = reconstruct.estimate_working_bytes(
            height, width, 5, xla_shape) / 2**20
        assert megabytes <= estimate <= 1.3 * megabytes, (height, estimate)
        exceeded += megabytes > reconstruct.estimate_working_bytes(
            height, width, 5, TINY_SHAPE) / 2**20
    assert exceeded == 3


def test_the_tiled_model_bounds_the_tiled_bench():
    # bench/model_bench.py --memory-budget-gb 2 at 1152x1600: 4 windows of
    # 800x1024, 1879 MB working (planning.TILING_OVERHEAD_BYTES).
    tiles = reconstruct.plan_tiles(1152, 1600, 5, TINY_SHAPE, 2 * 2**30)
    assert [tile.window for tile in tiles] == [
        (0, 800, 0, 1024), (0, 800, 576, 1600), (352, 1152, 0, 1024),
        (352, 1152, 576, 1600)]
    estimate = reconstruct.estimate_working_bytes(
        1152, 1600, 5, TINY_SHAPE, (800, 1024)) / 2**20
    assert 1879 <= estimate <= 1.02 * 1879


def test_views_that_fit_run_in_one_call():
    budget = reconstruct.estimate_working_bytes(512, 640, 5, TINY_SHAPE)
    assert reconstruct.plan_tiles(512, 640, 5, TINY_SHAPE, budget) == [
        reconstruct.Tile((0, 512, 0, 640), (0, 512, 0, 640))]
    assert len(reconstruct.plan_tiles(1152, 1600, 5, TINY_SHAPE, None)) == 1


# With 224 pixels of context per side, a window is at least 480 pixels
# wide unless it meets the image edge, and a tiled call costs
# TILING_OVERHEAD_BYTES more: tiles do not pay at 512x640. Since the cascade
# builds no cost volume, the whole images' features and that overhead are
# most of a small window's estimate, so the smallest tiles need over half
# the untiled estimate at 1152x1600 and three quarters at 864x1152.
@pytest.mark.parametrize("size, fraction", [
    ((1152, 1600), 0.6), ((864, 1152), 0.8), ((2048, 2560), 0.5)])
def test_tiles_fit_the_budget_and_cover_the_view_once(size, fraction):
    height, width = size
    budget = int(reconstruct.estimate_working_bytes(
        height, width, 5, TINY_SHAPE) * fraction)
    tiles = reconstruct.plan_tiles(height, width, 5, TINY_SHAPE, budget)
    assert len(tiles) > 1
    covered = np.zeros(size, int)
    for tile in tiles:
        y0, y1, x0, x1 = tile.window
        assert reconstruct.estimate_working_bytes(
            height, width, 5, TINY_SHAPE, (y1 - y0, x1 - x0)) <= budget
        assert all(v % 32 == 0 for v in tile.window + tile.core)
        cy0, cy1, cx0, cx1 = tile.core
        # TILE_MARGIN of context on every side that is not an image edge.
        assert y0 == max(0, cy0 - reconstruct.TILE_MARGIN)
        assert y1 == min(height, cy1 + reconstruct.TILE_MARGIN)
        assert x0 == max(0, cx0 - reconstruct.TILE_MARGIN)
        assert x1 == min(width, cx1 + reconstruct.TILE_MARGIN)
        covered[cy0:cy1, cx0:cx1] += 1
    assert np.all(covered == 1)


def test_no_tiling_fits_names_the_knobs():
    with pytest.raises(reconstruct.InsufficientMemoryError,
                       match="smallest tiles.*lower --max-height"):
        reconstruct.plan_tiles(1152, 1600, 5, TINY_SHAPE, 2**20)
    with pytest.raises(reconstruct.InsufficientMemoryError,
                       match="SavedModel cannot be run in tiles"):
        reconstruct.plan_tiles(1152, 1600, 5, TINY_SHAPE, 2**30,
                               tileable=False)


def test_a_view_over_the_budget_is_tiled_with_the_untiled_maps(
        tmp_path_factory, monkeypatch):
    """reconstruct with a budget one byte short of a 64x768 view: two
    tiles per view, the depth and confidence maps those of the untiled run
    up to round-off (tests/models/cas_mvsnet_tiling_test.py states it).
    The measured tiling overhead (hundreds of MB at 1152x1600) is zeroed so
    that a view this small can be tiled."""
    monkeypatch.setattr(reconstruct.planning, "TILING_OVERHEAD_BYTES", 0)
    from keras_mvs.data import synthetic
    from keras_mvs.models import CascadeMVSNet

    scene = scene_lib.MVSScene(synthetic.write_scene(
        synthetic.render_scene(synthetic.SceneConfig(
            height=64, width=768, num_views=3, seed=5,
            num_pair_samples=500)),
        tmp_path_factory.mktemp("wide") / "s"))
    network = CascadeMVSNet(num_depths=(8, 8, 8), base_channels=4,
                            aggregation="variance")
    network.build()
    predictor = inference.Predictor(scene.root, "keras", network=network)
    shape = reconstruct.network_shape(predictor)
    budget = reconstruct.estimate_working_bytes(64, 768, 3, shape) - 1
    runs = {}
    for name, limit in (("whole", None), ("tiled", budget)):
        out = tmp_path_factory.mktemp(name)
        summary = reconstruct.reconstruct(
            scene, predictor, out, num_views=3, max_width=768,
            filter_config=fusion.FilterConfig.preset(
                "casmvsnet", min_consistent_views=1),
            memory_budget_bytes=limit, verbose=0)
        runs[name] = (out, summary)
    assert runs["whole"][1]["settings"]["max_tiles_per_view"] == 1
    assert runs["tiled"][1]["settings"]["max_tiles_per_view"] == 2
    for view in range(3):
        for key in ("depth", "confidence"):
            whole, tiled = (formats.read_pfm(
                layout.output_paths(runs[name][0], view)[key])
                for name in ("whole", "tiled"))
            np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_auto_filter_follows_the_head():
    """`--filter auto`: UniMVSNet's DTU settings (confidence > 0.3, 3
    views) for the unity head, CasMVSNet's (> 0.9, 5 views) otherwise."""
    import types

    from keras_mvs.reconstruct import driver

    def predictor(network=None, network_config=None):
        return types.SimpleNamespace(network=network,
                                     network_config=network_config)

    assert driver.auto_filter(predictor(tiny.tiny_network("unity"))) == (
        "unimvsnet_dtu")
    assert driver.auto_filter(predictor(tiny.tiny_network("regression"))) == (
        "casmvsnet")
    # A SavedModel written by keras_mvs.export carries the network config;
    # one from elsewhere does not.
    assert driver.auto_filter(predictor(network_config={
        "config": {"head": "unity"}})) == "unimvsnet_dtu"
    assert driver.auto_filter(predictor()) == "casmvsnet"
    config = driver.filter_from_flags("unimvsnet_dtu")
    assert (config.method, config.confidence_thresholds,
            config.min_consistent_views, config.max_pixel_error,
            config.max_relative_depth_error) == ("pcd", (0.3,), 3, 1.0, 0.01)
    # --conf and --min-consistent-views still override it.
    config = driver.filter_from_flags("unimvsnet_dtu", [0.5], 2)
    assert (config.confidence_thresholds, config.min_consistent_views) == (
        (0.5,), 2)


def test_predictor_returns_the_network_maps_only(tiny_model):
    # The stage volumes stay in the graph (freed after the heads): a
    # Predictor hands on the final and per-stage depth and confidence.
    predictor = inference.load_model(tiny_model)
    inputs = {key: tf.constant(value) for key, value in
              tiny.sideways_rig_inputs(3, 32, 64).items()}
    outputs = predictor(inputs)
    direct = predictor.network(inputs, training=False)
    assert sorted(outputs) == ["confidence", "depth", "stages"]
    assert len(outputs["stages"]) == 3
    for ours, full in zip(outputs["stages"], direct["stages"]):
        assert sorted(ours) == ["confidence", "depth"]
        np.testing.assert_allclose(ours["depth"], full["depth"], rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_allclose(outputs["depth"], direct["depth"], rtol=1e-5,
                               atol=1e-5)
