"""keras_mvs.files: atomic writes with ordinary modes, PNG, JSON, folders."""

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from keras_mvs import files


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_writer_gives_the_ordinary_file_mode(tmp_path, umask_022):
    # tempfile.mkstemp makes 0600 files; a rename alone would keep that.
    assert files.FILE_MODE == 0o644
    files.write_bytes(tmp_path / "a.bin", b"x")
    files.write_text(tmp_path / "a.txt", "x")
    files.write_json(tmp_path / "a.json", {"x": 1})
    files.write_png(tmp_path / "a.png", np.zeros((2, 3), np.uint8))
    files.write_ply(tmp_path / "a.ply", np.zeros((4, 3), np.float32))
    with files.atomic_path(tmp_path / "model.keras") as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_bytes(b"model")
    with files.atomic_path(tmp_path / "ckpt-7.weights.h5") as temporary:
        # Keras's save_weights insists on the whole `.weights.h5`.
        assert temporary.name.endswith(".weights.h5")
        assert temporary.name.startswith(".ckpt-7.tmp-")
        temporary.write_bytes(b"weights")
    names = ["a.bin", "a.json", "a.ply", "a.png", "a.txt", "ckpt-7.weights.h5",
             "model.keras"]
    for name in names:
        assert _mode(tmp_path / name) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_write(target, "w") as stream:
            stream.write("new, half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_json_nan_becomes_null_and_numpy_values_plain(tmp_path):
    files.write_json(tmp_path / "s.json", {
        "nan": float("nan"), "inf": np.float32("inf"), "count": np.int64(3),
        "values": np.array([1.5, 2.0]), "nested": [{"x": float("-inf")}]})
    assert json.loads((tmp_path / "s.json").read_text()) == {
        "nan": None, "inf": None, "count": 3, "values": [1.5, 2.0],
        "nested": [{"x": None}]}


def test_png_round_trip_and_bad_arrays(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    files.write_png(tmp_path / "rgb.png", rgb, optimize=True)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
    with pytest.raises(ValueError, match=r"needs uint8 .* float32 \(2, 3, 3\)"):
        files.write_png(tmp_path / "bad.png", rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        files.write_png(tmp_path / "bad.png", np.zeros((2, 3, 4), np.uint8))
    assert not (tmp_path / "bad.png").exists()


def test_ply_round_trip_with_colours_and_normals(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(5, 3)).astype(np.float32)
    colors = rng.integers(0, 256, size=(5, 3)).astype(np.uint8)
    normals = rng.normal(size=(5, 3)).astype(np.float32)
    files.write_ply(tmp_path / "c.ply", points, colors, normals)
    read_points, read_colors, read_normals = files.read_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(read_points, points)
    np.testing.assert_array_equal(read_colors, colors)
    np.testing.assert_array_equal(read_normals, normals)
    with pytest.raises(ValueError, match="normals must be"):
        files.write_ply(tmp_path / "d.ply", points, normals=normals[:4])


def test_publish_directory_replaces_a_whole_folder(tmp_path, umask_022):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old run")
    staging = files.staging_directory(out)
    (staging / "fresh.txt").write_text("new run")
    files.publish_directory(staging, out)
    assert [p.name for p in out.iterdir()] == ["fresh.txt"]
    assert _mode(out) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_directory_publishes_only_a_finished_folder(tmp_path):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    with pytest.raises(RuntimeError, match="render failed"):
        with files.staged_directory(out) as staging:
            (staging / "half.txt").write_text("half")
            raise RuntimeError("render failed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["scene"]
    with files.staged_directory(out) as staging:
        (staging / "new.txt").write_text("complete")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
