"""Tests of `python -m experiments.reconstruct --images PHOTOS` (structure
from motion first), called in-process."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from experiments import reconstruct as cli
from keras_mvs import fusion
from keras_mvs import reconstruct
from keras_mvs.data import synthetic


def _noise(path: pathlib.Path, height: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 4, width // 4, 3), np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((4, 4, 1), np.uint8))).save(path)


def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("reconstruct: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_needs_scene_or_images(tiny_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", str(tiny_model), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--images" in capsys.readouterr().err


def test_too_few_photos(tiny_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        _noise(photos / f"p{index}.jpg", 48, 64, index)
    out = tmp_path / "out"
    status = cli.main(["--images", str(photos), "--model", str(tiny_model),
                       "--out", str(out)])
    assert status == 2
    line = _error_line(capsys)
    assert str(photos) in line and "at least 3" in line
    assert not (out / "summary.json").exists()
    assert not (out / "fused.ply").exists()


def test_unreadable_photo(tiny_model, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        _noise(photos / f"p{index}.png", 48, 64, index)
    (photos / "p3.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "summary.json").write_text("{}")  # a stale run's marker
    status = cli.main(["--images", str(photos), "--model", str(tiny_model),
                       "--out", str(out)])
    assert status == 2  # a previous run's result is not replaced silently
    assert "--overwrite" in _error_line(capsys)
    assert (out / "summary.json").exists()
    status = cli.main(["--images", str(photos), "--model", str(tiny_model),
                       "--out", str(out), "--overwrite"])
    assert status == 2
    assert "p3.png: cannot be read as an image" in _error_line(capsys)
    assert not (out / "summary.json").exists()


def _sfm_flag_error(tiny_model, tmp_path, capsys, *flags) -> str:
    """Runs the command on an empty photo folder with the --sfm-* `flags`:
    it must stop with status 2 before SfM; returns the error line."""
    photos = tmp_path / "photos"
    photos.mkdir()
    status = cli.main(["--images", str(photos), "--model", str(tiny_model),
                       "--out", str(tmp_path / "out"), *flags])
    assert status == 2
    return _error_line(capsys)


def test_bad_sfm_option(tiny_model, tmp_path, capsys):
    assert "--sfm-init-pair" in _sfm_flag_error(
        tiny_model, tmp_path, capsys, "--sfm-init-pair", "a.png")


def test_fit_filter_to_pairs_lowers_the_consistent_views():
    config = fusion.FilterConfig.preset("casmvsnet")
    pairs = [(0, [(1, 2.0), (2, 1.0)]), (1, [(0, 2.0), (2, 1.0)]),
             (2, [(0, 1.0)])]
    fitted, adapted = reconstruct.fit_filter_to_pairs(config, pairs)
    assert config.min_consistent_views == 5
    assert fitted.min_consistent_views == 2
    assert adapted["min_consistent_views"]["requested"] == 5
    assert adapted["min_consistent_views"]["used"] == 2
    assert "3 registered views" in adapted["min_consistent_views"]["reason"]


def test_fit_filter_to_pairs_keeps_a_feasible_filter():
    config = fusion.FilterConfig.preset("casmvsnet")
    pairs = [(ref, [(src, 1.0) for src in range(8) if src != ref])
             for ref in range(8)]
    assert reconstruct.fit_filter_to_pairs(config, pairs) == (config, {})
    dynamic = fusion.FilterConfig.preset("unimvsnet_dypcd")
    assert reconstruct.fit_filter_to_pairs(dynamic, pairs[:2])[1] == {}


@pytest.mark.large
def test_photos_to_cloud(tiny_model, tmp_path, capsys):
    """Five rendered photos and one unrelated image: SfM registers the five,
    names the sixth, and the filter is fitted to 4 sources per view."""
    config = synthetic.SceneConfig(
        height=240, width=320, num_views=5, seed=3, num_pair_samples=2000,
        cap_angle_deg=12.0, occluders=False, repetitive=False,
        low_texture=False, specular=0.0, intrinsics_jitter=False)
    scene = synthetic.render_scene(config)
    photos = tmp_path / "photos"
    photos.mkdir()
    for view, image in enumerate(scene["images"]):
        Image.fromarray(image).save(photos / f"view_{view}.png")
    _noise(photos / "stray.png", 240, 320, 7)
    out = tmp_path / "out"
    # CasMVSNet's filter asks for 5 consistent sources (`--filter auto`
    # would ask the unity head's 3, which 4 sources satisfy).
    status = cli.main(["--images", str(photos), "--model", str(tiny_model),
                       "--out", str(out), "--quiet", "--filter", "pcd"])
    printed = capsys.readouterr().out
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sfm"]["num_images"] == 6
    assert summary["sfm"]["num_registered"] == 5
    assert summary["sfm"]["unregistered"] == ["stray.png"]
    assert "not registered: stray.png" in printed
    assert summary["adapted"]["min_consistent_views"]["used"] == 4
    assert summary["settings"]["filter"]["min_consistent_views"] == 4
    assert (out / "sfm" / "sfm.json").is_file()
    assert (out / "sfm" / "dense" / "sparse").is_dir()
    assert len(list((out / "mvsnet_scene" / "cams").iterdir())) == 5
    assert (out / "fused.ply").is_file()


@pytest.mark.parametrize("value", ["3310,317", "3310,-1,200", "f,cx,cy"])
def test_malformed_camera_params(tiny_model, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--images", str(tmp_path), "--model", str(tiny_model),
                  "--out", str(tmp_path / "out"),
                  "--sfm-camera-params", value])
    assert exit_info.value.code == 2
    assert (f"argument --sfm-camera-params: expected known intrinsics "
            f"'f,cx,cy' (SIMPLE_PINHOLE) or 'fx,fy,cx,cy' (PINHOLE), "
            f"pixels; received '{value}'") in capsys.readouterr().err


def test_camera_params_must_fit_the_model(tiny_model, tmp_path, capsys):
    assert ("4 values do not fit --sfm-camera-model SIMPLE_PINHOLE"
            in _sfm_flag_error(tiny_model, tmp_path, capsys,
                               "--sfm-camera-params", "3310,3300,317,200"))


@pytest.mark.parametrize("options, message", [
    ({"matcher": "vocab"}, "--sfm-matcher: expected one of"),
    ({"mapper": "hierarchical"}, "--sfm-mapper: expected one of"),
    ({"camera_model": "FOV"}, "--sfm-camera-model: expected one of"),
    ({"max_features": 50}, "--sfm-max-features: expected at least 100; "
     "received 50"),
    ({"mapping_attempts": 0}, "--sfm-mapping-attempts: expected at least 1"),
    ({"consensus_models": 0}, "--sfm-consensus: expected at least 1"),
    ({"init_pair": "a.png,a.png"}, "--sfm-init-pair: expected two "
     "different image names"),
    ({"camera_model": "PINHOLE", "camera_params": (1.0, 2.0, 3.0)},
     "--sfm-camera-params: 3 values do not fit --sfm-camera-model PINHOLE"),
])
def test_sfm_option_errors_name_the_flags(options, message):
    from keras_mvs.reconstruct import scenes

    with pytest.raises(ValueError) as error:
        scenes.sfm_options(**options)
    assert str(error.value).startswith(message)
    assert "SfmOptions" not in str(error.value)


def test_camera_params_reach_the_sfm_options():
    from keras_mvs.reconstruct import scenes

    options = scenes.sfm_options(camera_model="PINHOLE",
                                 camera_params=(3310.4, 3325.5, 317.2, 201.1))
    assert options.camera_params == (3310.4, 3325.5, 317.2, 201.1)
    assert scenes.sfm_options().camera_params is None
