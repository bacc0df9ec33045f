"""Copies the small real-data fixtures the tests need into tests/fixtures/.

The tests must run on a fresh clone without `../shared` beside it, so the
few views of the real scenes they read are copied here, trimmed:

    python tools/make_test_fixtures.py [--shared ../shared]

* `tests/fixtures/reference_outputs/`: the official code's outputs
  (`../shared/reference_outputs/*.npz`, `manifest.json`), byte for byte.
* `tests/fixtures/scenes/<scene>/`: the reference view and the sources that
  the parity tests load (images, cams and masks byte for byte), with a
  `pair.txt` that lists only the reference's entry, cut to those sources in
  their original order and with their original scores.
* `tests/fixtures/mvs_data/`: every scene of `../shared/mvs_data` in the same
  layout, small enough for the repository, for the real-data tests
  (`real_data_dir` in tests/conftest.py):
  * `mvsnet_format/<scene>/`: every view. `pair.txt` byte for byte. Images
    point-sampled every `step`-th pixel on both axes (step 8 for DTU and
    office_room, 4 for the 640x480 Middlebury rings; `ceil(size / step)`
    pixels), so fixture pixel (j, i) is the original pixel (step j, step i);
    the cam files are the originals with K's rows 0 and 1 divided by `step`,
    which is exactly that resampling under the MVSNet plain-scaling
    convention (no half-pixel shift, DESIGN.md). Extrinsic and depth lines
    are kept byte for byte. DTU scan24 keeps its masks, point-sampled the
    same way, and every third of its sparse points (`xyz`, `reproj_error`,
    `track_len`, in file order).
  * `raw/office_room_rcv/`: cams, pair.txt and the GPL-3.0 licence text,
    byte for byte (a few kB each).
  * `README.md`: this reduction, then `../shared/mvs_data/README.md` (the
    sources and licences of the data) as is.

Run it again after `../shared` changes; it rewrites the fixtures.
"""

import argparse
import math
import pathlib
import shutil

import numpy as np
from PIL import Image

_REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = _REPO / "tests" / "fixtures"

# scene -> (reference view, the sources kept, in pair.txt order).
# DTU scan24 view 0 and office_room view 0 with their first four sources:
# the views of `loader_general_eval.npz`.
SCENES = {
    "dtu_scan24": (0, (10, 1, 9, 12)),
    "office_room": (0, (28, 1, 11, 33)),
}


def _pair_entry(pair_file: pathlib.Path, ref: int, keep) -> str:
    lines = pair_file.read_text().split("\n")
    for index in range(1, len(lines) - 1, 2):
        if lines[index].strip() == str(ref):
            tokens = lines[index + 1].split()[1:]
            scores = dict(zip(map(int, tokens[0::2]), tokens[1::2]))
            missing = [v for v in keep if v not in scores]
            if missing:
                raise ValueError(f"{pair_file}: view {ref} does not list "
                                 f"sources {missing}")
            body = " ".join(f"{v} {scores[v]}" for v in keep)
            return f"1\n{ref}\n{len(keep)} {body}\n"
    raise ValueError(f"{pair_file}: no entry for view {ref}")


def copy_scene(source: pathlib.Path, target: pathlib.Path, ref: int,
               sources) -> None:
    if target.exists():
        shutil.rmtree(target)
    views = (ref,) + tuple(sources)
    for folder, pattern in (("images", "{:08d}.jpg"),
                            ("cams", "{:08d}_cam.txt"),
                            ("masks", "{:08d}.png")):
        if not (source / folder).is_dir():
            continue
        (target / folder).mkdir(parents=True)
        for view in views:
            shutil.copyfile(source / folder / pattern.format(view),
                            target / folder / pattern.format(view))
    (target / "pair.txt").write_text(
        _pair_entry(source / "pair.txt", ref, sources))


# scene -> point-sampling step of the real-data fixture (see the docstring).
REAL_DATA_STEPS = {
    "dtu_scan24": 8,
    "dtu_scan37": 8,
    "office_room": 8,
    "temple_sparse_ring": 4,
    "dino_sparse_ring": 4,
}
# Scenes whose masks the real-data tests read (the DTU camera check).
REAL_DATA_MASKS = ("dtu_scan24",)
SPARSE_POINTS = "sparse_points_dtu_frame.npz"
SPARSE_POINTS_STEP = 3
RAW_OFFICE_ROOM = ("cams", "pair.txt", "LICENSE.GPL-3.0.txt")


def scale_cam_text(text: str, step: int) -> str:
    """A cam file's text with K's first two rows divided by `step`.

    Every other line (extrinsic, blank lines, depth line) is kept as is;
    the scaled numbers are written in Python's shortest exact form.
    """
    lines = text.split("\n")
    start = [line.strip() for line in lines].index("intrinsic") + 1
    for row in (start, start + 1):
        values = [float(v) / step for v in lines[row].split()]
        lines[row] = " ".join(repr(v) for v in values)
    return "\n".join(lines)


def point_sample(source: pathlib.Path, target: pathlib.Path,
                 step: int) -> None:
    """Writes pixels (step j, step i) of an image or mask file to `target`
    (JPEG quality 90 for .jpg, PNG otherwise)."""
    with Image.open(source) as image:
        pixels = np.asarray(image)[::step, ::step]
    if target.suffix.lower() == ".jpg":
        Image.fromarray(pixels).save(target, quality=90)
    else:
        Image.fromarray(pixels).save(target, optimize=True)


def copy_real_scene(source: pathlib.Path, target: pathlib.Path, step: int,
                    masks: bool) -> None:
    if target.exists():
        shutil.rmtree(target)
    for folder in ("images", "cams") + (("masks",) if masks else ()):
        (target / folder).mkdir(parents=True)
    for path in sorted((source / "images").iterdir()):
        point_sample(path, target / "images" / path.name, step)
        with Image.open(path) as image:
            width, height = image.size
        with Image.open(target / "images" / path.name) as image:
            assert image.size == (math.ceil(width / step),
                                  math.ceil(height / step)), path
    for path in sorted((source / "cams").iterdir()):
        (target / "cams" / path.name).write_text(
            scale_cam_text(path.read_text(), step))
    if masks:
        for path in sorted((source / "masks").iterdir()):
            point_sample(path, target / "masks" / path.name, step)
    shutil.copyfile(source / "pair.txt", target / "pair.txt")
    if (source / SPARSE_POINTS).is_file():
        with np.load(source / SPARSE_POINTS) as points:
            np.savez_compressed(
                target / SPARSE_POINTS,
                **{key: points[key][::SPARSE_POINTS_STEP]
                   for key in ("xyz", "reproj_error", "track_len")})


_README_HEAD = """\
# Small copy of ../shared/mvs_data for the real-data tests

Written by tools/make_test_fixtures.py (its docstring says how each file is
reduced): every view of every scene; images, DTU scan24 masks and K
point-sampled every {steps}; a third of scan24's sparse points; raw
office_room cams and pair.txt byte for byte. Test data only, never shipped in
the package. The shared data's README follows (its sizes are those of the
full data).

"""


def copy_real_data(mvs_data: pathlib.Path, target: pathlib.Path) -> None:
    scenes = sorted(p.name for p in (mvs_data / "mvsnet_format").iterdir()
                    if p.is_dir())
    if scenes != sorted(REAL_DATA_STEPS):
        raise ValueError(f"{mvs_data}/mvsnet_format holds {scenes}; "
                         f"REAL_DATA_STEPS covers {sorted(REAL_DATA_STEPS)}")
    for scene, step in REAL_DATA_STEPS.items():
        copy_real_scene(mvs_data / "mvsnet_format" / scene,
                        target / "mvsnet_format" / scene, step,
                        scene in REAL_DATA_MASKS)
    steps = ", ".join(f"{step} px ({scene})"
                      for scene, step in REAL_DATA_STEPS.items())
    (target / "README.md").write_text(
        _README_HEAD.format(steps=steps)
        + (mvs_data / "README.md").read_text())
    raw = target / "raw" / "office_room_rcv"
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    for name in RAW_OFFICE_ROOM:
        source = mvs_data / "raw" / "office_room_rcv" / name
        if source.is_dir():
            shutil.copytree(source, raw / name)
        else:
            shutil.copyfile(source, raw / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=pathlib.Path,
                        default=_REPO.parent / "shared")
    args = parser.parse_args()
    outputs = FIXTURES / "reference_outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    reference = args.shared / "reference_outputs"
    for path in sorted(reference.glob("*.npz")) + [reference /
                                                   "manifest.json"]:
        shutil.copyfile(path, outputs / path.name)
    for scene, (ref, sources) in SCENES.items():
        copy_scene(args.shared / "mvs_data" / "mvsnet_format" / scene,
                   FIXTURES / "scenes" / scene, ref, sources)
    copy_real_data(args.shared / "mvs_data", FIXTURES / "mvs_data")
    print(f"wrote {FIXTURES}")


if __name__ == "__main__":
    main()
