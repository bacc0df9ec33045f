"""Malformed input across the entry points and readers: each case asserts a
non-zero exit (or the reader's exception), one message naming the culprit
and what was expected, and that nothing looking complete was written.

The commands run in-process through their `main(argv)`; the files are made
small (a copy of the office_room fixture scene, a tiny saved network), so
the whole suite takes well under a minute and trains nothing.
"""

import json
import pathlib
import shutil
import struct

import numpy as np
import pytest

from experiments import convert_checkpoint
from experiments import convert_colmap
from experiments import evaluate
from experiments import export
from experiments import make_synthetic
from experiments import train_clmvs
from keras_mvs import checkpoints
from keras_mvs import data
from keras_mvs import files
from keras_mvs import inference
from keras_mvs.data import colmap

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


@pytest.fixture()
def scene(tmp_path):
    """A writable copy of the 5-view office_room fixture scene."""
    return pathlib.Path(shutil.copytree(FIXTURES / "scenes" / "office_room",
                                        tmp_path / "office"))


def _replace_line(path: pathlib.Path, index: int, text: str) -> None:
    lines = path.read_text().split("\n")
    lines[index] = text
    path.write_text("\n".join(lines))


def _run(main, argv, capsys):
    """Runs an entry point; returns (status, stderr lines)."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


def _assert_one_line(status, err, *needles):
    assert status not in (0, None), err
    joined = "\n".join(err)
    for needle in needles:
        assert needle in joined, (needle, err)
    assert "Traceback" not in joined


# === Readers: cam, pair and PFM files ===


CAM_CASES = [
    (0, "extrinsics", "line 1"),
    (2, "1 0 0", "line 3: expected 4 numbers"),
    (3, "0 0 1 nan", "line 4"),
    (6, "intrinsics", "line 7"),
    (8, "0 905.6 abc", "line 9: expected 3 numbers"),
    (11, "", "depth line"),
    (11, "4.3 -1", "line 12"),
]


@pytest.mark.parametrize("line, text, where", CAM_CASES)
def test_cam_file(scene, line, text, where):
    cam = scene / "cams" / "00000001_cam.txt"
    _replace_line(cam, line, text)
    with pytest.raises(data.FormatError) as error:
        data.read_cam_file(cam)
    assert "00000001_cam.txt" in str(error.value)
    assert where in str(error.value)


def test_cam_file_truncated(scene):
    cam = scene / "cams" / "00000001_cam.txt"
    cam.write_text("\n".join(cam.read_text().split("\n")[:5]))
    with pytest.raises(data.FormatError, match="00000001_cam.txt"):
        data.read_cam_file(cam)


PAIR_CASES = [
    ("x\n", "line 1"),
    ("1\n0\n1 1 abc\n", "line 3"),
    ("1\nzero\n1 1 9.0\n", "line 2"),
]


@pytest.mark.parametrize("text, where", PAIR_CASES)
def test_pair_file(scene, text, where):
    path = scene / "pair.txt"
    path.write_text(text)
    with pytest.raises(data.FormatError) as error:
        data.read_pair_file(path)
    assert "pair.txt" in str(error.value) and where in str(error.value)


@pytest.mark.parametrize("text, expected", [
    # Real-world variants DESIGN.md 7 absorbs: a header that disagrees with
    # the body (the body wins), a source count that disagrees with the
    # pairs on its line (the pairs win).
    ("2\n0\n1 1 9.0\n", [(0, [(1, 9.0)])]),
    ("1\n0\n2 1 9.0\n", [(0, [(1, 9.0)])]),
    ("1\n0\n1 1\n", [(0, [])]),
])
def test_pair_file_variants(scene, text, expected):
    path = scene / "pair.txt"
    path.write_text(text)
    with pytest.warns(data.FormatWarning, match="pair.txt"):
        assert data.read_pair_file(path) == expected


PFM_CASES = [
    (b"PX\n2 2\n-1\n" + b"\0" * 16, "line 1"),
    (b"Pf\n2 x\n-1\n" + b"\0" * 16, "line 2"),
    (b"Pf\n2 2\nabc\n" + b"\0" * 16, "line 3"),
    (b"Pf\n2 2\n-1\n" + b"\0" * 10, "16 bytes"),
]


@pytest.mark.parametrize("content, where", PFM_CASES)
def test_pfm_file(tmp_path, content, where):
    path = tmp_path / "depth.pfm"
    path.write_bytes(content)
    with pytest.raises(data.FormatError) as error:
        data.read_pfm(path)
    assert "depth.pfm" in str(error.value)


# === Scene folders ===


def test_unreadable_image(scene):
    (scene / "images" / "00000001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(data.FormatError, match=r"view 1: .*00000001\.jpg"):
        data.MVSScene(scene).image(1)


def test_missing_pair_file(scene):
    (scene / "pair.txt").unlink()
    with pytest.raises(FileNotFoundError, match="pair.txt"):
        data.MVSScene(scene)


def test_missing_cams_folder(scene):
    shutil.rmtree(scene / "cams")
    with pytest.raises(FileNotFoundError, match="no cams/ folder"):
        data.MVSScene(scene)


# === Training entry point (nothing is trained: all fail before) ===


TRAIN_CASES = [
    (["--config.train.stepz=3"], "--config.train.stepz: no such field"),
    (["--config.trainn.steps=3"], "no section 'trainn'"),
    (["--config.data.batch_size=abc"], "--config.data.batch_size='abc': "
     "expected a value of type int"),
    (["--config.data.batch_size=0"], "--config.data.batch_size=0: expected"),
    (["--config.data.num_views=1"], "--config.data.num_views=1: expected"),
    (["--config.train.steps=-5"], "--config.train.steps=-5: expected"),
    (["--config.train.max_minutes=-1"], "max_minutes=-1.0: expected"),
    (["--config.data.width=100"], "data.width=100: expected a multiple"),
    (["--config", "missing_config.py"], "missing_config.py"),
    (["--init", "no_such_model"], "no_such_model"),
]


@pytest.mark.parametrize("argv, needle", TRAIN_CASES)
def test_train_config_errors(tmp_path, capsys, argv, needle):
    workdir = tmp_path / "run"
    status, err = _run(train_clmvs.main,
                       ["--smoke", "--workdir", str(workdir)] + argv, capsys)
    _assert_one_line(status, err, needle)
    assert len(err) == 1
    assert not workdir.exists()


def test_train_data_errors(tmp_path, capsys, scene):
    _replace_line(scene / "cams" / "00000028_cam.txt", 8, "0 905.6 abc")
    workdir = tmp_path / "run"
    status, err = _run(train_clmvs.main,
                       ["--smoke", "--workdir", str(workdir), "--data",
                        str(scene)], capsys)
    _assert_one_line(status, err, "00000028_cam.txt, line 9")
    assert not (workdir / "model.keras").exists()
    assert not (workdir / "checkpoints").exists()


def test_train_missing_data_folder(tmp_path, capsys):
    status, err = _run(train_clmvs.main,
                       ["--smoke", "--workdir", str(tmp_path / "run"),
                        "--data", str(tmp_path / "nowhere")], capsys)
    _assert_one_line(status, err, "nowhere: not a folder")


def test_train_single_view_folder(tmp_path, capsys, scene):
    (scene / "pair.txt").write_text("1\n0\n0\n")
    status, err = _run(train_clmvs.main,
                       ["--smoke", "--workdir", str(tmp_path / "run"),
                        "--data", str(scene)], capsys)
    _assert_one_line(status, err, "has a source view")


# === Models: evaluate, export, convert ===


@pytest.fixture()
def bad_files(tmp_path):
    files = {"text.keras": b"garbage", "text.npz": b"text",
             "empty.keras": b""}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    good = FIXTURES / "reference_outputs" / "fusion.npz"
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:200])
    return tmp_path


@pytest.mark.parametrize("name", ["text.keras", "empty.keras"])
def test_corrupt_keras_model(bad_files, capsys, name):
    status, err = _run(evaluate.main,
                       ["depth", "--model", str(bad_files / name)], capsys)
    _assert_one_line(status, err, name, "not a .keras model")
    assert "File not found" not in "\n".join(err)


def test_missing_model(tmp_path, capsys):
    status, err = _run(evaluate.main,
                       ["depth", "--model", str(tmp_path / "none")], capsys)
    _assert_one_line(status, err, "none", "expected a preset name")


def test_evaluate_needs_two_views(bad_files, capsys):
    status, err = _run(evaluate.main,
                       ["depth", "--model", "x", "--views", "1"], capsys)
    _assert_one_line(status, err, "--views", "integer >= 2")


def test_evaluate_pointcloud_not_a_ply(bad_files, capsys):
    status, err = _run(evaluate.main,
                       ["pointcloud", "--pred", str(bad_files / "text.npz"),
                        "--gt", str(bad_files / "text.npz")], capsys)
    _assert_one_line(status, err, "text.npz", "not a readable PLY")


def test_export_corrupt_model(bad_files, capsys, tmp_path):
    out = tmp_path / "saved" / "1"
    status, err = _run(export.main,
                       ["--model", str(bad_files / "text.keras"),
                        "--out", str(out)], capsys)
    _assert_one_line(status, err, "text.keras")
    assert not out.exists()


def test_export_bad_version_folder(tmp_path, capsys):
    status, err = _run(export.main,
                       ["--model", "x", "--out", str(tmp_path / "v1")],
                       capsys)
    _assert_one_line(status, err, "v1")


@pytest.mark.parametrize("name, found", [
    ("text.npz", "found a text file"),
    ("truncated.npz", "truncated or damaged zip"),
])
def test_convert_unreadable_state_dict(bad_files, capsys, name, found):
    out = bad_files / "out.keras"
    status, err = _run(convert_checkpoint.main,
                       ["--state-dict", str(bad_files / name),
                        "--out", str(out)], capsys)
    _assert_one_line(status, err, name, found)
    assert "pickled" not in "\n".join(err)
    assert not out.exists()


def test_convert_wrong_suffix(bad_files, capsys):
    status, err = _run(convert_checkpoint.main,
                       ["--state-dict", str(bad_files / "text.npz"),
                        "--out", str(bad_files / "model.h5")], capsys)
    _assert_one_line(status, err, "--out must end in .keras")


def test_load_state_dict_unknown_extension(bad_files):
    with pytest.raises(ValueError, match=r"text.keras.*expected a PyTorch"):
        checkpoints.load_state_dict(bad_files / "text.keras")


def test_load_model_names_the_file(bad_files):
    with pytest.raises(ValueError, match="text.keras"):
        inference.load_model(bad_files / "text.keras")


# === Point clouds ===


@pytest.mark.parametrize("content", [b"", b"ply\nformat ascii 1.0\n",
                                     b"PLY garbage"])
def test_read_ply(tmp_path, content):
    path = tmp_path / "cloud.ply"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cloud.ply"):
        files.read_ply(str(path))


# === COLMAP models ===


def _cameras_bin(path: pathlib.Path, truncate: int = 0) -> None:
    record = struct.pack("<iiQQ", 1, 1, 640, 480) + struct.pack(
        "<4d", 500.0, 500.0, 320.0, 240.0)
    content = struct.pack("<Q", 1) + record
    path.write_bytes(content[:len(content) - truncate])


def test_truncated_cameras_bin_is_named(tmp_path):
    model = tmp_path / "sparse"
    model.mkdir()
    _cameras_bin(model / "cameras.bin", truncate=10)
    (model / "images.bin").write_bytes(struct.pack("<Q", 0))
    (model / "points3D.bin").write_bytes(struct.pack("<Q", 0))
    message = colmap.damaged_binary_file(model)
    assert "cameras.bin: truncated" in message and "camera 0" in message
    _cameras_bin(model / "cameras.bin")
    assert colmap.damaged_binary_file(model) is None


def test_convert_colmap_reports_the_damaged_file(tmp_path, capsys):
    model = tmp_path / "sparse"
    model.mkdir()
    _cameras_bin(model / "cameras.bin", truncate=10)
    (model / "images.bin").write_bytes(struct.pack("<Q", 0))
    (model / "points3D.bin").write_bytes(struct.pack("<Q", 0))
    (tmp_path / "images").mkdir()
    out = tmp_path / "out"
    status, err = _run(convert_colmap.main,
                       ["--colmap", str(model), "--images",
                        str(tmp_path / "images"), "--out", str(out)], capsys)
    _assert_one_line(status, err, "cameras.bin: truncated")
    assert not out.exists()


def test_convert_colmap_without_a_model(tmp_path, capsys):
    status, err = _run(convert_colmap.main,
                       ["--colmap", str(tmp_path), "--out",
                        str(tmp_path / "out")], capsys)
    _assert_one_line(status, err, "no COLMAP model")


# === make_synthetic ===


@pytest.mark.parametrize("argv, needle", [
    (["--scenes", "0"], "--scenes must be >= 1"),
    (["--height", "4"], "height"),
    (["--views", "1"], "num_views"),
])
def test_make_synthetic_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "synthetic"
    try:
        make_synthetic.main(["--out", str(out)] + argv)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    message = str(status) + capsys.readouterr().err
    assert status not in (0, None) and needle in message
    assert not out.exists() or not any(out.iterdir())


def test_reader_messages_are_json_free(scene):
    # The scene's own files pass every reader (the cases above are the
    # only faults).
    opened = data.MVSScene(scene)
    for view in opened.view_ids:
        opened.camera(view)
    assert json.dumps(opened.pairs)
    assert np.isfinite(opened.camera(0).intrinsics).all()


# === reconstruct: checked before the model is loaded ===


def _reconstruct(argv, capsys):
    from experiments import reconstruct

    return _run(reconstruct.main, argv, capsys)


def test_reconstruct_out_is_a_file(tmp_path, capsys, scene):
    out = tmp_path / "out.txt"
    out.write_text("x")
    status, err = _reconstruct(["--scene", str(scene), "--model", "none",
                                "--out", str(out)], capsys)
    _assert_one_line(status, err, "out.txt: a file, not a folder")


def test_reconstruct_refuses_to_mix_with_a_previous_run(tmp_path, capsys,
                                                        scene):
    out = tmp_path / "out"
    out.mkdir()
    (out / "fused.ply").write_text("old")
    status, err = _reconstruct(["--scene", str(scene), "--model", "none",
                                "--out", str(out)], capsys)
    _assert_one_line(status, err, "previous reconstruction (fused.ply)",
                     "--overwrite")
    assert (out / "fused.ply").read_text() == "old"


def test_reconstruct_reads_every_view_before_inference(tmp_path, capsys,
                                                       scene):
    # A bad cam in the last view fails before the model is even loaded
    # (the model path does not exist), and nothing is written.
    _replace_line(scene / "cams" / "00000033_cam.txt", 2, "1 0 0")
    out = tmp_path / "out"
    status, err = _reconstruct(["--scene", str(scene), "--model",
                                str(tmp_path / "no_model"), "--out",
                                str(out)], capsys)
    _assert_one_line(status, err, "00000033_cam.txt, line 3")
    assert not (out / "summary.json").exists()
    assert not (out / "fused.ply").exists()


def test_reconstruct_overwrite_removes_the_old_result_first(tmp_path, capsys,
                                                            scene):
    _replace_line(scene / "cams" / "00000033_cam.txt", 2, "1 0 0")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fused.ply").write_text("old")
    (out / "summary.json").write_text("{}")
    status, err = _reconstruct(["--scene", str(scene), "--model", "none",
                                "--out", str(out), "--overwrite"], capsys)
    _assert_one_line(status, err, "00000033_cam.txt")
    assert not (out / "fused.ply").exists()
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--filter", "nonsense"], "--filter/--conf: Unknown filter preset"),
    (["--conf", "0.5,0.5"], "--conf: expected one confidence threshold"),
    (["--num-depths", "48,32"], "three multiples of 8"),
    (["--views", "0"], "--views: expected a positive integer"),
    (["--render-size", "640"], "--render-size: expected WIDTHxHEIGHT"),
    (["--memory-budget-gb", "0"], "--memory-budget-gb must be positive"),
    (["--gt-ply", "missing.ply"], "--gt-ply missing.ply: no such file"),
])
def test_reconstruct_arguments(tmp_path, capsys, scene, argv, needle):
    out = tmp_path / "out"
    status, err = _reconstruct(["--scene", str(scene), "--model", "none",
                                "--out", str(out), *argv], capsys)
    assert status == 2
    _assert_one_line(status, err, needle)
    assert not out.exists()


# === render ===


def test_render_arguments(tmp_path, capsys):
    from experiments import render

    cloud = tmp_path / "cloud.ply"
    out = tmp_path / "view.png"
    for argv, needle in (
            ([str(cloud)], "cloud.ply: no such point cloud"),
            ([str(cloud), "--size", "8x8"], "--size: expected WIDTHxHEIGHT"),
    ):
        status, err = _run(render.main, [*argv, "--out", str(out)], capsys)
        assert status == 2
        _assert_one_line(status, err, needle)
    files.write_ply(str(cloud), np.zeros((0, 3), np.float32))
    status, err = _run(render.main, [str(cloud), "--out", str(out)], capsys)
    _assert_one_line(status, err, "cloud.ply: the cloud has no points")
    files.write_ply(str(cloud), np.ones((4, 3), np.float32))
    status, err = _run(render.main, [str(cloud), "--out", str(out),
                                     "--camera", str(tmp_path / "x_cam.txt")],
                       capsys)
    _assert_one_line(status, err, "--camera", "x_cam.txt: no such cam file")
    assert not out.exists()
