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

Run it again after `../shared` changes; it rewrites the fixtures.
"""

import argparse
import pathlib
import shutil

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
    print(f"wrote {FIXTURES}")


if __name__ == "__main__":
    main()
