"""Tests of keras_mvs.data.formats: MVSNet cam, pair and PFM files."""

import pickle
import struct
import warnings

import numpy as np
import pytest

from keras_mvs import data
from keras_mvs.data import formats

_DTU_CAM = """extrinsic
0.9702626849 0.007479911257 0.24193878 -191.0196006
-0.01474287049 0.9994929147 0.02822341586 3.288303108
-0.2416049878 -0.03095099935 0.9698809543 22.54012006
0 0 0 1

intrinsic
2892.330458 -0.0002465256717 823.2052953
0 2883.17524 619.0708968
0 0 1

425.0 2.5
"""


def _cam_text(depth_line="425.0 2.5", extrinsic=None, intrinsic=None):
    """A cam file with replaceable rows: lines 2-5 extrinsic, 8-10 K, 12."""
    extrinsic = extrinsic or ["1 0 0 0", "0 1 0 0", "0 0 1 0", "0 0 0 1"]
    intrinsic = intrinsic or ["100 0 32", "0 100 24", "0 0 1"]
    return "\n".join(["extrinsic", *extrinsic, "", "intrinsic", *intrinsic,
                      "", depth_line]) + "\n"


# --- cam files -------------------------------------------------------------


def test_dtu_cam_values_and_range():
    camera = formats.parse_cam_text(_DTU_CAM, "dtu.txt")
    assert camera.depth_line == "min_interval"
    assert camera.intrinsics[0, 2] == 823.2052953
    assert camera.cam_from_world[0, 3] == -191.0196006
    assert camera.intrinsics.dtype == np.float64
    assert camera.num_depths is None and camera.depth_max is None
    # 425 + 191 * 2.5 * 1.06 (ALGORITHMS.md 1.9).
    assert camera.depth_range() == pytest.approx((425.0, 931.15), abs=1e-9)
    assert camera.depth_range(num_depths=3, interval_scale=1.0) == (
        pytest.approx(425.0), pytest.approx(430.0))


def test_three_field_line_uses_general_eval_rule():
    camera = formats.parse_cam_text(_cam_text("10 1 96"), "c.txt")
    assert camera.depth_line == "min_interval_num"
    assert camera.num_depths == 96 and camera.depth_max is None
    # max' = 10 + 96 * 1 = 106; interval' = 96 / 192 = 0.5 (x 1.06 = 0.53).
    assert camera.depth_range(192, 1.0) == pytest.approx((10.0, 105.5))
    assert camera.depth_range(192, 1.06) == pytest.approx((10.0, 111.23))


def test_four_field_line_ignores_max_like_general_eval():
    camera = formats.parse_cam_text(_cam_text("10 1 96 500"), "c.txt")
    assert camera.depth_line == "min_interval_num_max"
    assert (camera.num_depths, camera.depth_max) == (96, 500.0)
    assert camera.depth_range(192, 1.06) == pytest.approx((10.0, 111.23))


def test_two_fields_min_max_rule():
    camera = formats.parse_cam_text(_cam_text("4.336407 8.482101"), "c.txt")
    assert camera.depth_line == "min_max"
    assert camera.depth_max == 8.482101
    assert camera.depth_interval == pytest.approx(
        (8.482101 - 4.336407) / 192)
    assert camera.depth_range() == (4.336407, 8.482101)
    # Boundary of the rule: second <= first is an interval.
    equal = formats.parse_cam_text(_cam_text("5 5"), "c.txt")
    assert equal.depth_line == "min_interval"
    assert equal.depth_range(2, 1.0) == (5.0, 10.0)


def test_raw_office_room_cams_are_min_max(real_data_dir):
    cams = sorted((real_data_dir / "raw/office_room_rcv/cams").glob("*.txt"))
    assert len(cams) == 40
    for path in cams:
        camera = formats.read_cam_file(path)
        assert camera.depth_line == "min_max", path
        assert camera.depth_max > camera.depth_min
    first = formats.read_cam_file(cams[0])
    assert first.depth_range() == (4.336407, 8.482101)
    assert first.intrinsics[0, 2] == 1200.0


def test_converted_office_room_cam_four_fields(real_data_dir):
    camera = formats.read_cam_file(
        real_data_dir / "mvsnet_format/office_room/cams/00000000_cam.txt")
    assert camera.depth_line == "min_interval_num_max"
    assert camera.num_depths == 192
    # max' = 4.336407 + 192 * 0.021592 = 8.482071; interval' = 0.021592
    # * 1.06 = 0.02288752; last = 4.336407 + 191 * 0.02288752.
    first, last = camera.depth_range()
    assert first == 4.336407
    assert last == pytest.approx(8.70792332, abs=1e-9)


@pytest.mark.parametrize("depth_line", [
    "425.0 2.5", "4.336407 8.482101", "0.1 0.003 128", "2.5 0.01 192 4.42"])
def test_cam_round_trip_exact(tmp_path, depth_line):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    rows = [" ".join(repr(float(v)) for v in [*q[i], rng.normal() * 100])
            for i in range(3)] + ["0 0 0 1"]
    text = _cam_text(depth_line, extrinsic=rows,
                     intrinsic=["1234.5678901234567 0.001 611.1",
                                "0 1233.25 500.3333333333333", "0 0 1"])
    camera = formats.parse_cam_text(text, "c.txt")
    path = tmp_path / "00000000_cam.txt"
    formats.write_cam_file(path, camera)
    again = formats.read_cam_file(path)
    np.testing.assert_array_equal(again.intrinsics, camera.intrinsics)
    np.testing.assert_array_equal(again.cam_from_world, camera.cam_from_world)
    for field in ("depth_min", "depth_interval", "num_depths", "depth_max",
                  "depth_line"):
        assert getattr(again, field) == getattr(camera, field), field
    assert len(path.read_text().splitlines()[-1].split()) == len(
        depth_line.split())
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_camera_constructor_infers_and_checks_depth_line():
    camera = data.Camera(np.eye(3), np.eye(4), 1.0, 0.1, num_depths=64,
                         depth_max=7.4)
    assert camera.depth_line == "min_interval_num_max"
    text = formats.format_cam_text(camera)
    assert text.splitlines()[-1] == "1.0 0.1 64 7.4"
    assert data.Camera(np.eye(3), np.eye(4), 1.0, 0.1,
                       num_depths=64).depth_line == "min_interval_num"
    with pytest.raises(ValueError, match="does not match"):
        data.Camera(np.eye(3), np.eye(4), 1.0, 0.1, depth_line="min_max")
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        data.Camera(np.eye(4), np.eye(4), 1.0, 0.1)
    with pytest.raises(ValueError, match="must be positive"):
        data.Camera(np.eye(3), np.eye(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="depth_line must be one of"):
        data.Camera(np.eye(3), np.eye(4), 1.0, 0.1, depth_line="min")


_ROT_SCALED = ["2 0 0 0", "0 2 0 0", "0 0 2 0", "0 0 0 1"]
_ROT_ZERO = ["0 0 0 1", "0 0 0 2", "0 0 0 3", "0 0 0 1"]
_ROT_REFLECT = ["-1 0 0 0", "0 1 0 0", "0 0 1 0", "0 0 0 1"]
_ROT_SHEAR = ["1 0.1 0 0", "0 1 0 0", "0 0 1 0", "0 0 0 1"]

# (text, 1-based line, fragment of the expectation).
_BAD_CAMS = {
    "empty": ("", 1, "keyword 'extrinsic', found an empty file"),
    "blank": ("\n  \n", 1, "keyword 'extrinsic'"),
    "intrinsic first": (_cam_text().replace("extrinsic", "intrinsic", 1), 1,
                        "keyword 'extrinsic', found 'intrinsic'"),
    "extrinsic twice": (_cam_text().replace("intrinsic", "extrinsic"), 7,
                        "keyword 'intrinsic', found 'extrinsic'"),
    "short row": (_cam_text(extrinsic=["1 0 0", "0 1 0 0", "0 0 1 0",
                                       "0 0 0 1"]), 2,
                  "4 numbers (row 1 of the 4x4 extrinsic), found '1 0 0'"),
    "long K row": (_cam_text(intrinsic=["100 0 32 1", "0 100 24", "0 0 1"]),
                   8, "3 numbers (row 1 of the 3x3 intrinsic)"),
    "missing row": (_cam_text().replace("0 0 0 1\n", ""), 6,
                    "row 4 of the 4x4 extrinsic), found 'intrinsic'"),
    "text in K": (_cam_text(intrinsic=["100 0 32", "0 abc 24", "0 0 1"]), 9,
                  "found '0 abc 24'"),
    "nan": (_cam_text(extrinsic=["1 0 0 nan", "0 1 0 0", "0 0 1 0",
                                 "0 0 0 1"]), 2, "(finite values)"),
    "inf": (_cam_text(intrinsic=["inf 0 32", "0 100 24", "0 0 1"]), 8,
            "(finite values)"),
    "bottom row": (_cam_text(extrinsic=["1 0 0 0", "0 1 0 0", "0 0 1 0",
                                        "0 0 1 1"]), 5,
                   "last row '0 0 0 1', found '0.0 0.0 1.0 1.0'"),
    "singular": (_cam_text(extrinsic=_ROT_ZERO), 2, "det R = 0"),
    "scaled": (_cam_text(extrinsic=_ROT_SCALED), 2, "max|R^T R - I| = 3"),
    "reflection": (_cam_text(extrinsic=_ROT_REFLECT), 2, "det R = -1"),
    "shear": (_cam_text(extrinsic=_ROT_SHEAR), 2, "invertible rigid"),
    "fx zero": (_cam_text(intrinsic=["0 0 32", "0 100 24", "0 0 1"]), 8,
                "positive focal length fx (K[0][0]), found '0.0'"),
    "fy negative": (_cam_text(intrinsic=["100 0 32", "0 -100 24", "0 0 1"]),
                    9, "positive focal length fy"),
    "K last row": (_cam_text(intrinsic=["100 0 32", "0 100 24", "0 0 2"]),
                   10, "intrinsic last row '0 0 1', found '0.0 0.0 2.0'"),
    # The line after the last non-blank one (line 11 is blank here).
    "no depth line": (_cam_text().rsplit("425.0 2.5", 1)[0], 11,
                      "the depth line: 2 to 4 numbers 'DEPTH_MIN "
                      "DEPTH_INTERVAL [NUM [MAX]]', found end of file"),
    "one depth number": (_cam_text("425.0"), 12, "2 to 4 numbers"),
    "five depth numbers": (_cam_text("1 2 3 4 5"), 12, "2 to 4 numbers"),
    "depth text": (_cam_text("abc"), 12,
                   "expected 2 to 4 numbers 'DEPTH_MIN DEPTH_INTERVAL "
                   "[NUM [MAX]]', found 'abc'"),
    "zero interval": (_cam_text("425 0"), 12, "DEPTH_INTERVAL > 0"),
    "negative interval": (_cam_text("425 -2.5"), 12, "DEPTH_INTERVAL > 0"),
    "zero min": (_cam_text("0 2.5"), 12, "DEPTH_MIN > 0"),
    "fractional num": (_cam_text("425 2.5 192.5"), 12,
                       "NUM (third number of the depth line) a positive"),
    "max below min": (_cam_text("425 2.5 192 400"), 12,
                      "MAX (fourth number"),
    "K last row after blank lines": (
        _cam_text(intrinsic=["100 0 32", "0 100 24", "", "", "0 0 5"]), 12,
        "intrinsic last row '0 0 1', found '0.0 0.0 5.0'"),
    "trailing": (_cam_text() + "\n1 2 3\n", 14,
                 "end of file after the depth line, found '1 2 3'"),
}


@pytest.mark.parametrize("name", sorted(_BAD_CAMS))
def test_malformed_cam_names_file_line_and_expectation(name):
    text, line, fragment = _BAD_CAMS[name]
    with pytest.raises(data.FormatError) as info:
        formats.parse_cam_text(text, "cams/00000003_cam.txt")
    message = str(info.value)
    assert message.startswith(f"cams/00000003_cam.txt, line {line}: expected")
    assert fragment in message
    assert info.value.line == line
    assert isinstance(info.value, ValueError)


def test_read_cam_file_names_path_and_rejects_binary(tmp_path):
    path = tmp_path / "00000007_cam.txt"
    # The first 40 bytes end inside line 5 ("0 0 0 1").
    path.write_bytes(_cam_text().encode()[:40] + b"\xff\xfe")
    with pytest.raises(data.FormatError,
                       match=rf"^{path}, line 5: expected UTF-8 text, "
                       "found byte 0xff$"):
        data.read_cam_file(path)
    path.write_text(_cam_text("425 nan"))
    with pytest.raises(data.FormatError, match=rf"^{path}, line 12"):
        data.read_cam_file(str(path))


def test_format_error_pickles():
    error = data.FormatError("pair.txt", 4, "a number", "x")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == (
        "pair.txt, line 4: expected a number, found 'x'")
    assert (again.source, again.line) == ("pair.txt", 4)


# --- pair files ------------------------------------------------------------

_PAIR = """3
0
2 1 10.5 2 3.25
1
1 0 10.5
2
0
"""


def test_pair_parse_and_round_trip(tmp_path):
    pairs = formats.parse_pair_text(_PAIR, "pair.txt")
    assert pairs == [(0, [(1, 10.5), (2, 3.25)]), (1, [(0, 10.5)]), (2, [])]
    path = tmp_path / "pair.txt"
    scores = [(0, [(5, 0.1 + 0.2), (7, 1e-300)]), (5, [(0, 1234.5678)])]
    data.write_pair_file(path, scores)
    assert data.read_pair_file(path) == scores


def test_pair_header_larger_than_body_warns():
    text = _PAIR.replace("3\n", "5\n", 1)
    with pytest.warns(formats.FormatWarning,
                      match="header says 5 views but the file lists 3"):
        pairs = formats.parse_pair_text(text, "scene/pair.txt")
    assert [ref for ref, _ in pairs] == [0, 1, 2]


def test_pair_header_smaller_than_body_warns():
    with pytest.warns(formats.FormatWarning, match="says 1 views .* lists 3"):
        assert len(formats.parse_pair_text(_PAIR.replace("3\n", "1\n", 1),
                                           "pair.txt")) == 3


def test_pair_consistent_file_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        formats.parse_pair_text(_PAIR, "pair.txt")


def test_pair_truncated_last_block_keeps_complete_entries():
    text = "2\n0\n1 1 2.0\n1\n4 0 2.0 3 1.5 2 0.7"
    with pytest.warns(formats.FormatWarning) as record:
        pairs = formats.parse_pair_text(text, "pair.txt")
    # No final newline: "0.7" may be cut short, so entry 3 is dropped.
    assert pairs[1] == (1, [(0, 2.0), (3, 1.5)])
    assert "line 5: the file ends inside the source list of reference 1 " \
        "(K = 4); keeping the 2 complete entries" in str(record[0].message)
    with pytest.warns(formats.FormatWarning):
        pairs = formats.parse_pair_text(text + "\n", "pair.txt")
    assert pairs[1] == (1, [(0, 2.0), (3, 1.5), (2, 0.7)])


def test_raw_office_room_pair_file(real_data_dir):
    path = real_data_dir / "raw/office_room_rcv/pair.txt"
    with pytest.warns(formats.FormatWarning) as record:
        pairs = data.read_pair_file(path)
    messages = [str(w.message) for w in record]
    assert any("header says 40 views but the file lists 35" in m
               for m in messages), messages
    assert [ref for ref, _ in pairs] == list(range(35))
    assert all(len(sources) == 40 for _, sources in pairs[:34])
    assert pairs[0][1][0] == (28, 4371.498423)
    assert pairs[34][1][:2] == [(0, 2841.627491), (3, 2794.628845)]
    assert len(pairs[34][1]) == 7


_BAD_PAIRS = {
    "empty": ("", 1, "the number of views, found an empty file"),
    "header text": ("three\n0\n0\n", 1, "non-negative integer"),
    "ref text": ("1\nzero\n0\n", 2, "a reference view id"),
    "negative id": ("1\n0\n1 -4 1.0\n", 3, "id_1 a non-negative integer"),
    "K too large": ("2\n0\n3 1 1.0 2 2.0\n1\n1 0 1.0\n", 3,
                    "with K = 3, i.e. 7 numbers (found 5)"),
    "K too small at end": ("1\n0\n1 1 1.0 2 2.0\n", 3,
                           "with K = 1, i.e. 3 numbers (found 5)"),
    "K text": ("1\n0\nten 1 1.0\n", 3, "K a non-negative integer"),
    "score text": ("1\n0\n1 1 high\n", 3, "score_1 a number"),
    "score nan": ("1\n0\n1 1 nan\n", 3, "(finite values)"),
    "missing list": ("2\n0\n1 1 1.0\n1\n", 5, "the source list"),
    "duplicate ref": ("2\n0\n0\n0\n0\n", 4, "already listed on line 2"),
}


@pytest.mark.parametrize("name", sorted(_BAD_PAIRS))
def test_malformed_pair(name):
    text, line, fragment = _BAD_PAIRS[name]
    with pytest.raises(data.FormatError) as info:
        formats.parse_pair_text(text, "scan1/pair.txt")
    assert str(info.value).startswith(f"scan1/pair.txt, line {line}: ")
    assert fragment in str(info.value)


# --- PFM -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 6), (4, 6, 3), (1, 1)])
def test_pfm_round_trip_exact(tmp_path, shape):
    rng = np.random.default_rng(1)
    image = rng.normal(size=shape).astype(np.float32) * 1000
    image.flat[0] = np.float32(np.pi)
    path = tmp_path / "depth.pfm"
    data.write_pfm(path, image)
    again = data.read_pfm(path)
    assert again.dtype == np.float32 and again.shape == shape
    np.testing.assert_array_equal(again, image)
    header = path.read_bytes()[:16]
    expected_id = b"PF" if len(shape) == 3 else b"Pf"
    assert header.startswith(expected_id + f"\n{shape[1]} {shape[0]}\n"
                             "-1.0\n".encode())


def test_pfm_rows_bottom_to_top_and_big_endian():
    # A 2 x 3 single-channel image whose stored (bottom-up) rows are
    # [4, 5, 6] then [1, 2, 3]; positive scale means big-endian.
    payload = struct.pack(">6f", 4, 5, 6, 1, 2, 3)
    image = formats.parse_pfm_bytes(b"Pf\n3 2\n1.0\n" + payload, "d.pfm")
    np.testing.assert_array_equal(image, [[1, 2, 3], [4, 5, 6]])
    little = formats.parse_pfm_bytes(
        b"Pf\r\n3 2\r\n-2.5\r\n" + struct.pack("<6f", 4, 5, 6, 1, 2, 3),
        "d.pfm")
    np.testing.assert_array_equal(little, image)
    assert formats.serialize_pfm(image)[12:] == struct.pack(
        "<6f", 4, 5, 6, 1, 2, 3)
    assert formats.serialize_pfm(image[..., None]) == formats.serialize_pfm(
        image)


_PAYLOAD = struct.pack("<6f", *range(6))
_BAD_PFMS = {
    "empty": (b"", "d.pfm, line 1: expected 'PF' or 'Pf', found an empty"),
    "identifier": (b"P5\n3 2\n-1\n" + _PAYLOAD,
                   "d.pfm, line 1: expected 'PF' or 'Pf', found 'P5'"),
    "no newline": (b"Pf", "line 1: expected 'PF' or 'Pf' ending with a"),
    "dims text": (b"Pf\n3 x\n-1\n" + _PAYLOAD,
                  "line 2: expected 'WIDTH HEIGHT' (two positive integers)"),
    "dims zero": (b"Pf\n0 2\n-1\n", "line 2: expected 'WIDTH HEIGHT'"),
    "dims one": (b"Pf\n3\n-1\n" + _PAYLOAD, "found '3'"),
    "scale zero": (b"Pf\n3 2\n0\n" + _PAYLOAD,
                   "line 3: expected a finite non-zero scale, found '0'"),
    "scale text": (b"Pf\n3 2\nlittle\n" + _PAYLOAD, "line 3: expected a"),
    "truncated": (b"Pf\n3 2\n-1\n" + _PAYLOAD[:-3],
                  "d.pfm: expected 24 payload bytes after the header (2 rows "
                  "x 3 columns x 1 channels of float32), found 21 bytes"),
    "three channels short": (b"PF\n3 2\n-1\n" + _PAYLOAD,
                             "expected 72 payload bytes"),
    "too long": (b"Pf\n3 2\n-1\n" + _PAYLOAD + b"\0\0\0\0",
                 "found 28 bytes"),
}


@pytest.mark.parametrize("name", sorted(_BAD_PFMS))
def test_malformed_pfm(name):
    blob, fragment = _BAD_PFMS[name]
    with pytest.raises(data.FormatError) as info:
        formats.parse_pfm_bytes(blob, "d.pfm")
    assert fragment in str(info.value)


def test_read_pfm_names_path(tmp_path):
    path = tmp_path / "depth_map_0000.pfm"
    path.write_bytes(b"Pf\n3 2\n-1\n" + _PAYLOAD[:8])
    with pytest.raises(data.FormatError, match=rf"^{path}: expected 24"):
        data.read_pfm(path)


def test_write_pfm_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"received shape \(2, 2, 2\)"):
        data.write_pfm(tmp_path / "x.pfm", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="scale must be positive"):
        data.write_pfm(tmp_path / "x.pfm", np.zeros((2, 2)), scale=-1.0)
    assert not list(tmp_path.iterdir())
