"""Photos to cloud on a Middlebury ring, scored against its calibration.

    python -m bench.photo_rings --out OUT
        --ring ../shared/mvs_data/raw/middlebury/dinoSparseRing
        [reconstruct flags, e.g. --max-height 256 --max-width 320]

Runs `experiments.reconstruct --images RING --out OUT ...` in a subprocess
(structure from motion from the raw photos; the calibration is not used),
then scores it with the ring's own files: the camera centres of
`RING/*_par.txt` (one line per image: name, K row-major, R row-major, t;
centre = -R^T t) and the tight bounding box in `RING/README.txt`. Printed:
registered images, SfM seconds, the camera-centre error after a similarity
fit of the SfM centres to the calibrated ones (mean / median / max, as a
percentage of the mean distance of the calibrated centres from their
centroid, the "ring radius"), the fused points and the share of them inside
the bounding box grown by 5 % of its size on every side (after the same
similarity), the wall time and the subprocess's peak resident memory.
"""

import argparse
import json
import pathlib
import re
import resource
import subprocess
import sys
import time

import numpy as np

from keras_mvs import files
from keras_mvs.data import sfm

BOX_MARGIN = 0.05


def read_calibration(ring: pathlib.Path) -> dict:
    """`{image name: [3] camera centre}` from the ring's `*_par.txt`."""
    paths = sorted(ring.glob("*_par.txt"))
    if len(paths) != 1:
        raise FileNotFoundError(f"{ring}: expected one *_par.txt; found "
                                f"{[p.name for p in paths]}")
    lines = paths[0].read_text().split("\n")
    centres = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 22:
            raise ValueError(f"{paths[0]}, line {number}: expected 22 fields "
                             f"(name, K, R, t); found {len(fields)}")
        values = np.array(fields[1:], np.float64)
        rotation, translation = values[9:18].reshape(3, 3), values[18:]
        centres[fields[0]] = -rotation.T @ translation
    return centres


def read_bounding_box(ring: pathlib.Path) -> np.ndarray:
    """[2, 3] corners of the tight bounding box given in RING/README.txt."""
    text = (ring / "README.txt").read_text()
    corners = re.findall(r"\(\s*([-\d.eE]+)\s+([-\d.eE]+)\s+([-\d.eE]+)\s*\)",
                         text[text.find("bounding box"):])
    if len(corners) < 2:
        raise ValueError(f"{ring / 'README.txt'}: expected a bounding box "
                         "as two '(x y z)' corners after 'bounding box'")
    return np.array(corners[:2], np.float64)


def score(out: pathlib.Path, ring: pathlib.Path) -> dict:
    """Scores a finished `reconstruct --images RING --out OUT` run."""
    record = json.loads((out / "sfm" / "sfm.json").read_text())
    truth = read_calibration(ring)
    estimated = sfm.camera_centres(out / "sfm" / "dense" / "sparse")
    names = sorted(set(truth) & set(estimated))
    source = np.stack([estimated[name] for name in names])
    target = np.stack([truth[name] for name in names])
    scale, rotation, translation = sfm.similarity_fit(source, target)
    all_truth = np.stack(list(truth.values()))
    radius = np.mean(np.linalg.norm(all_truth - all_truth.mean(0), axis=1))
    errors = 100 * np.linalg.norm(
        scale * source @ rotation.T + translation - target, axis=1) / radius
    points, _, _ = files.read_ply(out / "fused.ply")
    aligned = scale * points.astype(np.float64) @ rotation.T + translation
    box = read_bounding_box(ring)
    margin = BOX_MARGIN * (box[1] - box[0])
    inside = np.all((aligned >= box[0] - margin)
                    & (aligned <= box[1] + margin), axis=1)
    return {
        "registered": f"{record['num_registered']} / {record['num_images']}",
        "mapper": record["mapper"],
        "mapping_attempts": record.get("mapping_attempts"),
        "consensus": record.get("consensus"),
        "sfm_seconds": record["timing"]["total_seconds"],
        "centre_error_percent": {"mean": float(errors.mean()),
                                 "median": float(np.median(errors)),
                                 "max": float(errors.max())},
        "fused_points": int(len(points)),
        "inside_box": float(inside.mean()) if len(points) else 0.0,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ring", required=True, type=pathlib.Path,
                        help="raw Middlebury ring folder (photos, *_par.txt, "
                        "README.txt)")
    parser.add_argument("--out", required=True, type=pathlib.Path)
    args, reconstruct_args = parser.parse_known_args(argv)
    command = [sys.executable, "-m", "experiments.reconstruct",
               "--images", str(args.ring), "--out", str(args.out),
               "--overwrite", *reconstruct_args]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = score(args.out, args.ring)
    result.update(wall_seconds=wall, peak_rss_mb=peak_mb)
    errors = result["centre_error_percent"]
    consensus = result["consensus"]
    kept = ("" if not consensus else
            f", kept attempt {consensus['kept_attempt']} of the complete "
            f"{consensus['complete_models']}")
    print(f"{args.ring.name}: registered {result['registered']} "
          f"({result['mapper']}, {result['mapping_attempts']} attempt(s)"
          f"{kept}), "
          f"SfM {result['sfm_seconds']:.0f} s; camera-centre error "
          f"{errors['mean']:.2f} / {errors['median']:.2f} / "
          f"{errors['max']:.2f} % of the ring radius (mean / median / max); "
          f"{result['fused_points']} fused points, "
          f"{100 * result['inside_box']:.1f} % inside the bounding box "
          f"(+{100 * BOX_MARGIN:.0f} %); {wall:.0f} s wall, peak RSS "
          f"{peak_mb:.0f} MB")
    files.write_json(args.out / "ring_score.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
