"""Tests of `python -m experiments.reconstruct` (called in-process)."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from experiments import convert_colmap
from experiments import reconstruct as cli
from keras_mvs import files
from keras_mvs.data import colmap
from keras_mvs.data import scene as scene_lib
from keras_mvs.data.formats import pfm


@pytest.fixture(scope="module")
def colmap_project(scene_dir, tmp_path_factory) -> pathlib.Path:
    """The synthetic scene as a COLMAP project: images/photo_K.png and a
    text model in sparse/0 whose points are 2000 ground-truth surface
    points, observed where their depth matches the rendered depth."""
    scene = scene_lib.MVSScene(scene_dir)
    project = tmp_path_factory.mktemp("colmap") / "project"
    (project / "images").mkdir(parents=True)
    points, _, _ = files.read_ply(str(scene_dir / "gt_surface.ply"))
    points = points[np.random.default_rng(0).choice(len(points), 2000,
                                                    replace=False)]
    names, visible = [], []
    for view_id in scene.view_ids:
        names.append(f"photo_{view_id}.png")
        shutil.copyfile(scene.image_path(view_id),
                        project / "images" / names[-1])
        camera, depth = scene.camera(view_id), scene.depth(view_id)
        local = points @ camera.cam_from_world[:3, :3].T + (
            camera.cam_from_world[:3, 3])
        pixels = np.round(local @ camera.intrinsics.T / local[:, 2:]
                          ).astype(int)
        inside = ((pixels[:, 0] >= 0) & (pixels[:, 0] < depth.shape[1])
                  & (pixels[:, 1] >= 0) & (pixels[:, 1] < depth.shape[0]))
        sampled = np.where(inside, depth[np.clip(pixels[:, 1], 0, 63),
                                         np.clip(pixels[:, 0], 0, 95)], 0)
        visible.append(inside & (np.abs(sampled - local[:, 2])
                                 < 0.005 * local[:, 2]))
    colmap.write_text_model(
        project / "sparse" / "0", names, [(64, 96)] * len(names),
        np.stack([scene.camera(v).intrinsics for v in scene.view_ids]),
        np.stack([scene.camera(v).cam_from_world for v in scene.view_ids]),
        points, np.stack(visible, axis=1))
    return project


def test_missing_model_says_how_to_get_one(scene_dir, tmp_path, capsys,
                                           monkeypatch):
    # An install without presets (a shipped one is used otherwise, see
    # test_missing_model_uses_the_shipped_preset).
    from keras_mvs import presets

    monkeypatch.setattr(presets, "is_preset", lambda name: False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--scene", str(scene_dir), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    for expected in ("--model is required", "experiments.train_clmvs",
                     "experiments.train_unimvs",
                     "experiments.convert_checkpoint"):
        assert expected in message
    assert not (tmp_path / "fused.ply").exists()


def test_missing_model_uses_the_shipped_preset(scene_dir, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(["--scene", str(scene_dir), "--out", str(out),
                       "--max-height", "64", "--max-width", "96",
                       "--views", "3", "--quiet"])
    assert status == 0
    assert "using the shipped preset 'synthetic_unity'" in (
        capsys.readouterr().out)
    assert (out / "summary.json").is_file()


def test_bad_scene_names_both_layouts(tmp_path, tiny_model, capsys):
    bad = tmp_path / "photos"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"")
    status = cli.main(["--scene", str(bad), "--model", str(tiny_model),
                       "--out", str(tmp_path / "out")])
    message = capsys.readouterr().err
    assert status == 2
    assert f"--scene {bad}" in message
    assert "MVSNet-layout folder" in message and "COLMAP model" in message
    assert "a.jpg" in message
    assert not (tmp_path / "out").exists()


def test_missing_model_file(scene_dir, tmp_path, capsys):
    status = cli.main(["--scene", str(scene_dir), "--model",
                       str(tmp_path / "nothing.keras"), "--out",
                       str(tmp_path / "out")])
    assert status == 2
    assert "nothing.keras" in capsys.readouterr().err


def test_memory_budget_error(scene_dir, tiny_model, tmp_path, capsys):
    status = cli.main(["--scene", str(scene_dir), "--model", str(tiny_model),
                       "--out", str(tmp_path / "out"), "--max-height",
                       "100000", "--max-width", "100000",
                       "--memory-budget-gb", "1e-6", "--quiet"])
    message = capsys.readouterr().err
    assert status == 1
    assert "GiB" in message and "lower --max-height/--max-width" in message
    assert not (tmp_path / "out").exists()


def test_num_depths_must_be_multiples_of_8(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--scene", "x", "--model", "y", "--out", str(tmp_path),
                  "--num-depths", "48,30,8"])
    assert "three multiples of 8" in capsys.readouterr().err


def test_full_run(scene_dir, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    render = tmp_path / "view.png"
    status = cli.main([
        "--scene", str(scene_dir), "--model", str(tiny_model), "--out",
        str(out), "--views", "3", "--num-depths", "16,8,8", "--filter",
        "pcd", "--conf", "0.0", "--min-consistent-views", "1", "--gt-ply",
        str(scene_dir / "gt_surface.ply"), "--threshold", "5", "--render",
        str(render), "--render-size", "160x120", "--quiet"])
    printed = capsys.readouterr().out
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["num_depths"] == [16, 8, 8]
    assert summary["settings"]["filter"]["confidence_thresholds"] == [0.0]
    assert summary["settings"]["filter"]["min_consistent_views"] == 1
    assert "model_load_seconds" in summary["timing"]
    assert {"accuracy", "completeness", "fscore"} <= set(
        summary["evaluation"])
    points, colors, _ = files.read_ply(str(out / "fused.ply"))
    assert points.shape[0] == summary["totals"]["num_points"]
    assert points.dtype == np.float32 and colors.dtype == np.uint8
    assert f"fused {points.shape[0]} points" in printed
    assert "F-score" in printed
    # The closing list names what was written, the render included.
    closing = printed[printed.index(f"Wrote to {out}/:"):]
    for name in ("depth/", "previews/", "fused.ply", "summary.json",
                 str(render)):
        assert f"\n  {name} " in closing, name
    assert 0 < render.stat().st_size < 300_000
    assert summary["render"]["bytes"] == render.stat().st_size
    for sub in ("depth", "confidence", "previews", "cams", "images"):
        assert len(list((out / sub).iterdir())) >= 6


def test_gt_points_from_npz(scene_dir, tiny_model, tmp_path, capsys):
    points, _, _ = files.read_ply(str(scene_dir / "gt_surface.ply"))
    np.savez(tmp_path / "sparse.npz", xyz=points[::10])
    status = cli.main(["--scene", str(scene_dir), "--model", str(tiny_model),
                       "--out", str(tmp_path / "out"), "--views", "2",
                       "--conf", "0", "--min-consistent-views", "1",
                       "--gt-ply", str(tmp_path / "sparse.npz"), "--quiet"])
    assert status == 0
    assert "F-score" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["evaluation"]["completeness_num_points"] == len(
        points[::10])


def test_convert_colmap_command(colmap_project, tmp_path, capsys):
    out = tmp_path / "mvs"
    status = convert_colmap.main(["--colmap", str(colmap_project),
                                  "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    assert "6 views" in printed and f"Wrote to {out}/:" in printed
    assert "\n  pair.txt  source views per view" in printed
    scene = scene_lib.MVSScene(out)
    assert scene.view_ids == list(range(6))
    assert len(scene.pairs[0][1]) == 5
    assert convert_colmap.main(["--colmap", str(colmap_project), "--out",
                                str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_convert_colmap_bad_folder(tmp_path, capsys):
    assert convert_colmap.main(["--colmap", str(tmp_path), "--out",
                                str(tmp_path / "out")]) == 2
    assert "no COLMAP model" in capsys.readouterr().err


def test_reconstruct_from_colmap(colmap_project, tiny_model, tmp_path,
                                 capsys):
    out = tmp_path / "out"
    status = cli.main(["--scene", str(colmap_project), "--model",
                       str(tiny_model), "--out", str(out), "--views", "3",
                       "--min-consistent-views", "2", "--quiet"])
    assert status == 0
    assert "COLMAP model" in capsys.readouterr().out
    assert (out / "mvsnet_scene" / "pair.txt").is_file()
    assert (out / "mvsnet_scene" / "images" / "00000000.png").is_symlink()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["num_views"] == 6
    assert len(list((out / "depth").iterdir())) == 6


def test_savedmodel(scene_dir, tiny_model, tmp_path, capsys):
    """An exported SavedModel (TF Serving base folder) reconstructs with the
    final confidence alone; --num-depths and stage thresholds are refused
    with the reason."""
    from keras_mvs import export
    from keras_mvs import inference

    network = inference.load_model(tiny_model).network
    export.export_saved_model(network, tmp_path / "served" / "1")
    base = ["--scene", str(scene_dir), "--model", str(tmp_path / "served"),
            "--views", "3", "--min-consistent-views", "2", "--quiet"]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "--num-depths",
                     "16,8,8"]) == 1
    assert "--num-depths needs a Keras model" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--filter",
                     "dypcd"]) == 1
    assert "pass a single --conf" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "c")]) == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["settings"]["model_kind"] == "saved_model"
    assert summary["settings"]["num_depths"] == [8, 8, 8]
    assert summary["settings"]["num_depths_known"]
    assert not list((tmp_path / "c" / "confidence").glob("*_stage1.pfm"))


def test_xla_warp_flag(scene_dir, tiny_model, tmp_path, capsys):
    """The default compiles the warp with XLA, plane by plane: the same
    depth maps as plain TensorFlow (`--no-xla-warp`), up to the compiled
    warp's round-off."""
    depths = {}
    for flag in ("--xla-warp", "--no-xla-warp"):
        out = tmp_path / flag
        assert cli.main(["--scene", str(scene_dir), "--model",
                         str(tiny_model), "--out", str(out), "--views", "3",
                         "--conf", "0", "--min-consistent-views", "1",
                         "--quiet", flag]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["settings"]["xla_warp"] is (flag == "--xla-warp")
        depths[flag] = [pfm.read_pfm(path) for path in
                        sorted((out / "depth").glob("*.pfm"))]
    capsys.readouterr()
    assert len(depths["--xla-warp"]) >= 6
    compiled = np.stack(depths["--xla-warp"])
    plain = np.stack(depths["--no-xla-warp"])
    assert np.isfinite(plain).all() and plain.std() > 0
    close = np.isclose(compiled, plain, rtol=1e-4, atol=1e-3)
    assert close.mean() > 0.999
