"""Tests of the apache-beam-free build entry point on the dummy data."""

import pathlib
import shutil

import pytest

from tfds_builders import build

DTU_DUMMY = pathlib.Path(__file__).parent / "dtu" / "dummy_data"


def test_builds_and_reports_time_and_size(tmp_path, capsys):
    status = build.main(["dtu", "--config", "test", "--manual_dir",
                         str(DTU_DUMMY), "--data_dir", str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    folder = tmp_path / "dtu" / "test" / "1.0.0"
    assert f"Built {folder} in " in out
    size = sum(path.stat().st_size for path in folder.iterdir())
    assert f"({size} bytes)" in out
    assert any(path.name.startswith("dtu-test.tfrecord")
               for path in folder.iterdir())


def test_missing_file_is_named_with_instructions(tmp_path, capsys):
    manual = tmp_path / "manual"
    shutil.copytree(DTU_DUMMY, manual)
    missing = (manual / "dtu_training" / "Depths_raw" / "scan2"
               / "depth_visual_0002.png")
    missing.unlink()
    status = build.main(["dtu", "--manual_dir", str(manual), "--data_dir",
                         str(tmp_path / "data")])
    assert status == 1
    err = capsys.readouterr().err
    assert f"is missing: {missing}" in err
    assert "Depths_raw.zip" in err  # The download instructions follow.


def test_unknown_config_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build.main(["tanks_and_temples", "--config", "expert"])
    assert exit_info.value.code == 2
    assert "Unknown config 'expert' of tanks_and_temples" in (
        capsys.readouterr().err)
