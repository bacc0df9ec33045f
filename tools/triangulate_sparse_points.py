"""Sparse points of a calibrated MVSNet scene, triangulated with its cameras.

    python tools/triangulate_sparse_points.py --scene SCENE --out POINTS.npz \
        [--work DIR] [--max-features 8192] [--max-reproj-error 1]
        [--min-track-length 3]

For scenes with calibrated cameras but no points to score depth maps against
(DTU scan37 in ../shared/mvs_data has masks only): pycolmap extracts SIFT
features of `SCENE/images`, matches every pair, and triangulates the matches
with the scene's own cameras, kept fixed (`pycolmap.triangulate_points`), so
the points are in the scene's frame and units with no similarity fit. Writes
the npz that `bench/sparse_depth_error.py --points` and `reconstruct --gt-ply`
read: `xyz` `[N, 3]` float32, `reproj_error` (mean, pixels) and `track_len`
per point, of the points seen by at least 3 views within 1 pixel.
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np

from keras_mvs.data import colmap
from keras_mvs.data.scene import MVSScene


def _matched(database: pathlib.Path, names) -> bool:
    """Whether `database` holds these images, matched (from an earlier run
    with the same --work)."""
    import pycolmap

    if not database.is_file():
        return False
    with pycolmap.Database.open(database) as db:
        return ({image.name for image in db.read_all_images()} == set(names)
                and db.num_verified_image_pairs() > 0)


def triangulate(scene_dir: pathlib.Path, work: pathlib.Path,
                max_features: int = 8192) -> dict:
    """Features, exhaustive matches and fixed-camera triangulation.

    Returns:
        `xyz`, `reproj_error` and `track_len` arrays of the points.
    """
    import pycolmap

    scene = MVSScene(scene_dir)
    views = list(scene.view_ids)
    paths = [scene.image_path(view) for view in views]
    image_dir = paths[0].parent
    if any(path.parent != image_dir for path in paths):
        raise ValueError(f"{scene_dir}: the images are not in one folder")
    names = [path.name for path in paths]
    cameras = [scene.camera(view) for view in views]
    sizes = [scene.image_size(view) for view in views]

    work.mkdir(parents=True, exist_ok=True)
    database = work / "database.db"
    if not _matched(database, names):
        if database.exists():
            database.unlink()
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.sift.max_num_features = max_features
        start = time.monotonic()
        pycolmap.extract_features(
            database, image_dir, image_names=names,
            camera_mode=pycolmap.CameraMode.PER_IMAGE,
            extraction_options=extraction, device=pycolmap.Device.cpu)
        print(f"features: {time.monotonic() - start:.0f} s")
        start = time.monotonic()
        pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
        print(f"matching: {time.monotonic() - start:.0f} s")
    with pycolmap.Database.open(database) as db:
        images = {image.name: image for image in db.read_all_images()}
        ids = [(images[name].image_id, images[name].camera_id)
               for name in names]
        known = pycolmap.Reconstruction(colmap.write_text_model(
            work / "known_cameras", names, sizes,
            np.stack([camera.intrinsics for camera in cameras]),
            np.stack([camera.cam_from_world for camera in cameras]),
            np.zeros([0, 3]), np.zeros([0, len(names)], bool), ids=ids))
        # The triangulator requires the database's cameras to be the
        # model's (extraction guessed SIMPLE_RADIAL ones).
        for camera in known.cameras.values():
            db.update_camera(camera)
    start = time.monotonic()
    reconstruction = pycolmap.triangulate_points(
        known, database, image_dir, work / "triangulated")
    print(f"triangulation: {time.monotonic() - start:.0f} s")
    points = list(reconstruction.points3D.values())
    return {
        "xyz": np.array([p.xyz for p in points], np.float32).reshape(-1, 3),
        "reproj_error": np.array([p.error for p in points], np.float32),
        "track_len": np.array([p.track.length() for p in points], np.int32),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--work", type=pathlib.Path, default=None,
                        help="folder for the database and models "
                             "(default: a temporary one)")
    parser.add_argument("--max-features", type=int, default=8192)
    parser.add_argument("--max-reproj-error", type=float, default=1.0,
                        help="keep points below this mean reprojection "
                             "error, pixels")
    parser.add_argument("--min-track-length", type=int, default=3,
                        help="keep points seen by at least this many views")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or pathlib.Path(temporary)
        points = triangulate(args.scene, work, args.max_features)
    good = ((points["reproj_error"] < args.max_reproj_error)
            & (points["track_len"] >= args.min_track_length))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **{key: value[good] for key, value in points.items()})
    print(f"wrote {args.out}: {good.sum()} of {good.size} triangulated "
          f"points (reprojection error < {args.max_reproj_error} px, "
          f"{args.min_track_length} or more views)")


if __name__ == "__main__":
    main()
