"""Writes every builder's `dummy_data/`: tiny, deterministic scenes in each
dataset's real directory layout, for the builder tests.

Run from the repository root: `python -m tfds_builders.make_dummy_data`.
Each folder is deleted and rewritten, so the output only depends on this
file. Two scenes of three views each per dataset, images of a few dozen
pixels; the whole output stays well under 1 MB.
"""

import io
import pathlib
import shutil

import numpy as np
from PIL import Image

from keras_mvs.data import formats

BUILDERS_DIR = pathlib.Path(__file__).parent

NUM_VIEWS = 3

# DTU training layout, scaled down from 640x512 images, a 160x128 camera
# grid and 1600x1200 depth. The depth grid is chosen so that the reference
# preparation (halve, then centre-crop to the image size) crops rows
# DTU_CROP[0] and columns DTU_CROP[1] off each side, like (44, 80) for real
# DTU, so that the crop arithmetic is exercised with non-zero offsets.
DTU_IMAGE_SIZE = (32, 40)
DTU_CROP = (2, 3)
DTU_DEPTH_SIZE = (2 * (DTU_IMAGE_SIZE[0] + 2 * DTU_CROP[0]),
                  2 * (DTU_IMAGE_SIZE[1] + 2 * DTU_CROP[1]))
DTU_TRAIN_SCANS = (1, 2)  # scan1 is a test scan, scan2 a training scan.
DTU_TEST_SCANS = (1, 4)
DTU_TEST_IMAGE_SIZE = (48, 64)

BLENDED_SCENES = ("5a00000000000000000000aa", "5b00000000000000000000bb")
BLENDED_IMAGE_SIZE = (24, 32)

TNT_IMAGE_SIZE = (24, 40)
TNT_SCENES = {"intermediate": ("Family", "Horse"),
              "advanced": ("Auditorium", "Ballroom")}


def _rotation_y(angle: float) -> np.ndarray:
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])


def _cam_from_world(view: int, distance: float) -> np.ndarray:
    """A camera on a small arc around the origin, looking at it."""
    extrinsic = np.eye(4)
    extrinsic[:3, :3] = _rotation_y(0.1 * (view - 1))
    extrinsic[:3, 3] = [0.05 * distance * (view - 1), 0.0, distance]
    return extrinsic


def _intrinsics(height: int, width: int) -> np.ndarray:
    return np.array([[1.2 * width, 0.0, width / 2 - 0.3],
                     [0.0, 1.2 * width, height / 2 + 0.2],
                     [0.0, 0.0, 1.0]])


def _image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth gradient plus a little noise: `[H, W, 3]` uint8."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    base = np.stack([rows * 200 / height, cols * 200 / width,
                     np.full((height, width), 40.0 + seed % 100)], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_image(path: pathlib.Path, pixels: np.ndarray, image_format: str
                 ) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def _write_text(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _pairs() -> formats.Pairs:
    """Every view lists the other two, nearer first."""
    return [(ref, [(src, 10.0 - abs(src - ref)) for src in
                   sorted(set(range(NUM_VIEWS)) - {ref},
                          key=lambda src: (abs(src - ref), src))])
            for ref in range(NUM_VIEWS)]


def _camera(intrinsics: np.ndarray, view: int, depth_line: list[float],
            distance: float) -> formats.Camera:
    fields = {"depth_min": depth_line[0], "depth_interval": depth_line[1]}
    if len(depth_line) == 4:
        fields.update(num_depths=int(depth_line[2]), depth_max=depth_line[3])
    return formats.Camera(intrinsics=intrinsics,
                          cam_from_world=_cam_from_world(view, distance),
                          **fields)


def dtu_train_intrinsics(full: np.ndarray) -> np.ndarray:
    """K of the DTU training cameras from the full-resolution K:
    `K_train = 1/4 (1/2 K_full - crop offset)` (ALGORITHMS.md 1.4)."""
    train = full.copy()
    train[:2] *= 0.5
    train[0, 2] -= DTU_CROP[1]
    train[1, 2] -= DTU_CROP[0]
    train[:2] *= 0.25
    return train


def dtu_depth(scan: int, view: int) -> np.ndarray:
    """Full-resolution dummy depth whose value encodes its position:
    `depth[i, j] = 500 + 10 scan + view + i + j / 128` (exact in float32)."""
    rows, cols = np.mgrid[0:DTU_DEPTH_SIZE[0], 0:DTU_DEPTH_SIZE[1]]
    return (500.0 + 10 * scan + view + rows + cols / 128.0).astype(np.float32)


def dtu_mask(view: int) -> np.ndarray:
    """Mask values sweep 0..255, so that both sides of the > 10 threshold
    occur."""
    rows, cols = np.mgrid[0:DTU_DEPTH_SIZE[0], 0:DTU_DEPTH_SIZE[1]]
    return ((rows * 7 + cols * 3 + 5 * view) % 256).astype(np.uint8)


def write_dtu(root: pathlib.Path) -> None:
    """MVSNet dtu_training + Depths_raw, and dtu_testing."""
    training = root / "dtu_training"
    full = _intrinsics(*DTU_DEPTH_SIZE)
    _write_text(training / "Cameras" / "pair.txt",
                formats.format_pair_text(_pairs()))
    for view in range(NUM_VIEWS):
        camera = _camera(dtu_train_intrinsics(full), view, [425.0, 2.5], 600.0)
        _write_text(training / "Cameras" / "train" / f"{view:08d}_cam.txt",
                    formats.format_cam_text(camera))
    for scan in DTU_TRAIN_SCANS:
        for view in range(NUM_VIEWS):
            for light in range(7):
                _write_image(
                    training / "Rectified" / f"scan{scan}_train"
                    / f"rect_{view + 1:03d}_{light}_r5000.png",
                    _image(*DTU_IMAGE_SIZE, seed=100 * scan + 10 * view
                           + light), "PNG")
            depths = training / "Depths_raw" / f"scan{scan}"
            depths.mkdir(parents=True, exist_ok=True)
            (depths / f"depth_map_{view:04d}.pfm").write_bytes(
                formats.serialize_pfm(dtu_depth(scan, view)))
            _write_image(depths / f"depth_visual_{view:04d}.png",
                         dtu_mask(view), "PNG")
    testing = root / "dtu_testing"
    test_intrinsics = _intrinsics(*DTU_TEST_IMAGE_SIZE)
    for scan in DTU_TEST_SCANS:
        scan_dir = testing / f"scan{scan}"
        _write_text(scan_dir / "pair.txt", formats.format_pair_text(_pairs()))
        for view in range(NUM_VIEWS):
            _write_text(scan_dir / "cams" / f"{view:08d}_cam.txt",
                        formats.format_cam_text(_camera(
                            test_intrinsics, view, [425.0, 2.5], 600.0)))
            _write_image(scan_dir / "images" / f"{view:08d}.jpg",
                         _image(*DTU_TEST_IMAGE_SIZE, seed=scan + view),
                         "JPEG")
    # scan4 also has images_post/, which the reference loader prefers:
    # uniform grey, so a test can tell which folder was read.
    for view in range(NUM_VIEWS):
        _write_image(testing / "scan4" / "images_post" / f"{view:08d}.jpg",
                     np.full(DTU_TEST_IMAGE_SIZE + (3,), 200, np.uint8),
                     "JPEG")


def write_blended_mvs(root: pathlib.Path) -> None:
    """BlendedMVS low-res layout, with the training/validation lists."""
    intrinsics = _intrinsics(*BLENDED_IMAGE_SIZE)
    for number, scene in enumerate(BLENDED_SCENES):
        scene_dir = root / scene
        _write_text(scene_dir / "cams" / "pair.txt",
                    formats.format_pair_text(_pairs()))
        for view in range(NUM_VIEWS):
            _write_text(scene_dir / "cams" / f"{view:08d}_cam.txt",
                        formats.format_cam_text(_camera(
                            intrinsics, view, [2.0, 0.01, 128, 3.27], 2.5)))
            pixels = _image(*BLENDED_IMAGE_SIZE, seed=7 * number + view)
            _write_image(scene_dir / "blended_images" / f"{view:08d}.jpg",
                         pixels, "JPEG")
            _write_image(scene_dir / "blended_images"
                         / f"{view:08d}_masked.jpg", pixels // 2, "JPEG")
            depth = np.full(BLENDED_IMAGE_SIZE, 2.5, np.float32)
            depth[:, :4] = 0.0  # Background: no depth, below depth_min.
            (scene_dir / "rendered_depth_maps").mkdir(parents=True,
                                                      exist_ok=True)
            (scene_dir / "rendered_depth_maps" / f"{view:08d}.pfm"
             ).write_bytes(formats.serialize_pfm(depth))
    _write_text(root / "training_list.txt", BLENDED_SCENES[0] + "\n")
    _write_text(root / "validation_list.txt", BLENDED_SCENES[1] + "\n")
    _write_text(root / "all_list.txt", "\n".join(BLENDED_SCENES) + "\n")


def write_tanks_and_temples(root: pathlib.Path) -> None:
    """MVSNet-preprocessed Tanks and Temples, with short-range cameras."""
    intrinsics = _intrinsics(*TNT_IMAGE_SIZE)
    for group, scenes in TNT_SCENES.items():
        for number, scene in enumerate(scenes):
            scene_dir = root / group / scene
            _write_text(scene_dir / "pair.txt",
                        formats.format_pair_text(_pairs()))
            for view in range(NUM_VIEWS):
                _write_text(scene_dir / "cams" / f"{view:08d}_cam.txt",
                            formats.format_cam_text(_camera(
                                intrinsics, view, [0.5, 0.02, 192, 4.34],
                                3.0)))
                _write_image(scene_dir / "images" / f"{view:08d}.jpg",
                             _image(*TNT_IMAGE_SIZE, seed=3 * number + view),
                             "JPEG")
                if group == "intermediate":
                    _write_text(
                        root / group / "short_range_cameras"
                        / f"cams_{scene.lower()}" / f"{view:08d}_cam.txt",
                        formats.format_cam_text(_camera(
                            intrinsics, view, [2.0, 0.005, 192, 2.96], 3.0)))


def write_synthetic(root: pathlib.Path) -> None:
    """The synthetic builder renders its scenes and reads no files; the
    test harness still expects the folder."""
    _write_text(root / "README.txt",
                "synthetic_mvs renders its scenes; it reads no files.\n")


def main() -> None:
    writers = {"dtu": write_dtu, "blended_mvs": write_blended_mvs,
               "tanks_and_temples": write_tanks_and_temples,
               "synthetic_mvs": write_synthetic}
    for name, write in writers.items():
        root = BUILDERS_DIR / name / "dummy_data"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        write(root)
        total = sum(path.stat().st_size for path in root.rglob("*")
                    if path.is_file())
        print(f"{root}: {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
