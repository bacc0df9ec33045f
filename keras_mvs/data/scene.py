"""One scene folder in the MVSNet test layout (ALGORITHMS.md 1.5, DESIGN.md 7).

Layout, view ids written as `{id:08d}`:

    images/00000000.jpg        RGB photo (.jpg, .jpeg or .png); a file in
    images_post/               takes priority, as in `general_eval`
    cams/00000000_cam.txt      camera (keras_mvs.data.formats)
    pair.txt                   view selection
    masks/00000000.png         optional, 255 = valid / object
    depths/00000000.pfm        optional ground-truth depth (synthetic scenes)

`MVSScene` reads the folder lazily (a 49-view DTU scan opens in
milliseconds; an image is decoded only when asked for) and absorbs the
real-world variants of DESIGN.md 7: views missing their image or cam,
pair files that disagree with the folder, intrinsics written for another
image size, grayscale or RGBA photos.

The module stays a little over ~500 lines as one job: it is the `MVSScene`
class, and most of its length is the handling of those variants.
"""

import dataclasses
import fractions
import math
import pathlib
import re
import warnings

import numpy as np
from PIL import Image

from keras_mvs.data import formats
from keras_mvs.data import transforms

# File names: group 1 is the view id; for images, group 2 the suffix, whose
# position in _IMAGE_SUFFIXES decides between 00000001.jpg and .png.
_IMAGE_SUFFIXES = ("jpg", "jpeg", "png")
_IMAGE_NAME = re.compile(r"^(\d{8})\.(jpg|jpeg|png)$", re.IGNORECASE)
_CAM_NAME = re.compile(r"^(\d{8})_cam\.txt$")

# Intrinsics fit an image when the principal point lies inside it and puts
# the image's implied size (2 cx, 2 cy) within this fraction of its real size
# on at least one axis. A K written for an image 0.75x or 1.5x the size is off
# by 25 % or more on both axes alike (a resize scales cx and cy together),
# whereas real principal points can sit well off-centre on one axis (DTU's
# cropped training cams: 3.6 %; the Middlebury dino ring: cy 16 % above the
# centre, cx at it).
_SIZE_TOLERANCE = 0.15
# Resize factors a K is snapped to when no other view of the scene tells the
# size it was written for, and how close (relative) the estimate must be.
_SNAP_FACTORS = (1 / 16, 1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 4 / 3,
                 3 / 2, 2.0, 3.0, 4.0, 8.0, 16.0)
_SNAP_TOLERANCE = 0.05


class SceneWarning(UserWarning):
    """A scene folder inconsistency that the reader worked around."""


def fit_to_max_size(
    height: int, width: int, max_height: int, max_width: int, base: int = 32
) -> tuple[int, int]:
    """Test-time resize target of `general_eval::scale_mvs_input`.

    ALGORITHMS.md 1.8.1: if the image exceeds the maximum, s = max_h / h,
    replaced by max_w / w when s * w > max_w; the new size is
    (floor(s * h / base) * base, floor(s * w / base) * base). Otherwise the
    size is only floored to multiples of `base`. Computed with exact
    fractions, so that a product such as (864 / 1200) * 1600 is exactly 1152
    and not a float just below it.

    Args:
        height, width: the image size in pixels.
        max_height, max_width: the largest allowed size.
        base: the size multiple the network needs (32 for the cascade).

    Returns:
        `(new_height, new_width)`, both positive multiples of `base`.

    Raises:
        ValueError: for non-positive sizes, or when the result would be
            empty (an image smaller than `base` along an axis).

    Example:
        >>> fit_to_max_size(1200, 1600, 864, 1152)
        (864, 1152)
    """
    if min(height, width, max_height, max_width, base) <= 0:
        raise ValueError(
            "fit_to_max_size needs positive sizes; received height="
            f"{height}, width={width}, max_height={max_height}, "
            f"max_width={max_width}, base={base}")
    if height > max_height or width > max_width:
        scale = fractions.Fraction(max_height, height)
        if scale * width > max_width:
            scale = fractions.Fraction(max_width, width)
    else:
        scale = fractions.Fraction(1)
    new_height = math.floor(scale * height / base) * base
    new_width = math.floor(scale * width / base) * base
    if new_height == 0 or new_width == 0:
        raise ValueError(
            f"fit_to_max_size: {height}x{width} scaled to fit "
            f"{max_height}x{max_width} is smaller than base {base}")
    return new_height, new_width


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Converts any 8-bit PIL mode to `(H, W, 3)` uint8 RGB.

    Grayscale is replicated to three channels; alpha is dropped (not
    composited), so an RGBA photo keeps its colour values.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise ValueError(
            f"image mode {image.mode} (more than 8 bits per sample) is not "
            "supported; expected an 8-bit photo")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


class MVSScene:
    """A scene folder in MVSNet layout.

    Opening the scene indexes the file names and reads pair.txt; cameras and
    image headers are read on first use and cached, images decoded per call.
    Views that lack an image or a cam file (whether listed in pair.txt or
    present in only one folder) are left out, with one `SceneWarning`
    listing them all.

    Attributes:
        root: the scene folder.
        name: its base name, used in every message.
        view_ids: sorted ids of the views with both an image and a cam.
        pairs: pair.txt restricted to `view_ids`:
            `[(ref_id, [(src_id, score), ...]), ...]` in file order, with
            unavailable views and the reference itself removed from each
            source list.

    Args:
        root: the scene folder (holding `images/`, `cams/`, `pair.txt`).

    Raises:
        FileNotFoundError: the folder, `cams/`, the image folder or
            `pair.txt` is missing, or no view has both an image and a cam.
        FormatError: `pair.txt` is malformed.

    Example:
        >>> scene = MVSScene("mvs_data/mvsnet_format/dtu_scan24")
        >>> ref = scene.view_ids[0]
        >>> views = [ref] + scene.source_views(ref, 4)
        >>> image, intrinsics, cam_from_world = scene.load_view(ref, 864, 1152)
    """

    def __init__(self, root: formats.PathLike):
        self.root = pathlib.Path(root)
        self.name = self.root.name
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"scene {self.name}: folder {self.root} does not exist")
        cams_dir = self.root / "cams"
        if not cams_dir.is_dir():
            raise FileNotFoundError(
                f"scene {self.name}: no cams/ folder in {self.root}")
        self._cam_paths = _index_files(cams_dir, _CAM_NAME)
        self._image_sizes: dict[int, tuple[int, int]] = {}
        self._cameras: dict[int, formats.Camera] = {}
        self._image_paths = self._find_images()
        both = sorted(set(self._cam_paths) & set(self._image_paths))
        if not both:
            raise FileNotFoundError(
                f"scene {self.name}: no view has both an image "
                f"(images/XXXXXXXX.jpg|png) and a camera "
                f"(cams/XXXXXXXX_cam.txt) in {self.root}")
        self.view_ids: list[int] = both
        self.pairs = self._read_pairs()

    # === Folder index ===

    def _find_images(self) -> dict[int, pathlib.Path]:
        images_dir = self.root / "images"
        post_dir = self.root / "images_post"
        if not images_dir.is_dir() and not post_dir.is_dir():
            raise FileNotFoundError(
                f"scene {self.name}: no images/ (or images_post/) folder in "
                f"{self.root}")
        paths: dict[int, pathlib.Path] = {}
        if images_dir.is_dir():
            paths.update(_index_files(images_dir, _IMAGE_NAME))
        if post_dir.is_dir():
            # general_eval reads images_post/ first when the file exists.
            paths.update(_index_files(post_dir, _IMAGE_NAME))
        return paths

    def _read_pairs(self) -> list[tuple[int, list[tuple[int, float]]]]:
        pair_path = self.root / "pair.txt"
        if not pair_path.is_file():
            raise FileNotFoundError(
                f"scene {self.name}: no pair.txt in {self.root}")
        available = set(self.view_ids)
        missing = set()
        pairs = []
        for ref_id, sources in formats.read_pair_file(pair_path):
            missing.update(v for v, _ in sources if v not in available)
            if ref_id not in available:
                missing.add(ref_id)
                continue
            kept = [(v, score) for v, score in sources
                    if v in available and v != ref_id]
            pairs.append((ref_id, kept))
        missing |= (set(self._cam_paths) | set(self._image_paths)) - available
        if missing:
            details = []
            for view_id in sorted(missing):
                lacks = [kind for kind, index in (
                    ("image", self._image_paths), ("cam", self._cam_paths))
                    if view_id not in index]
                details.append(f"{view_id} (no {' or '.join(lacks)})")
            warnings.warn(
                f"scene {self.name}: skipping views without both an image "
                f"and a camera: {', '.join(details)}", SceneWarning,
                stacklevel=3)
        return pairs

    def _check_view(self, view_id: int) -> None:
        if view_id not in self._cam_paths or view_id not in self._image_paths:
            raise KeyError(
                f"scene {self.name}: view {view_id} is not available "
                f"(views with an image and a camera: {self.view_ids[0]}.."
                f"{self.view_ids[-1]}, {len(self.view_ids)} in all)")

    # === Per-view access ===

    def image_path(self, view_id: int) -> pathlib.Path:
        """The image file of a view (images_post/ first)."""
        self._check_view(view_id)
        return self._image_paths[view_id]

    def image_size(self, view_id: int) -> tuple[int, int]:
        """`(height, width)` of a view's image, read from its header only."""
        if view_id in self._image_sizes:
            return self._image_sizes[view_id]
        path = self.image_path(view_id)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, ValueError) as error:
            raise formats.FormatError(
                f"scene {self.name}, view {view_id}: {path}", None,
                "a readable JPEG or PNG image", str(error),
                quote=False) from None
        self._image_sizes[view_id] = (height, width)
        return height, width

    def image(self, view_id: int) -> np.ndarray:
        """A view's photo.

        Args:
            view_id: the view.

        Returns:
            `(H, W, 3)` uint8 RGB; grayscale and palette images are expanded,
            an alpha channel is dropped.

        Raises:
            FormatError: the file cannot be decoded (names scene and view).
        """
        path = self.image_path(view_id)
        try:
            with Image.open(path) as image:
                return _to_rgb(image)
        except (OSError, ValueError) as error:
            raise formats.FormatError(
                f"scene {self.name}, view {view_id}: {path}", None,
                "a readable 8-bit JPEG or PNG image", str(error),
                quote=False) from None

    def camera(self, view_id: int) -> formats.Camera:
        """A view's camera, with K matched to the view's image size.

        Detection: K fits an image when the size its principal point implies,
        (2 cx, 2 cy), is within 15 % of the image's size on both axes. Real
        principal points sit within a few percent of the centre, while a K
        written for an image 0.75x, 1.5x or 2x as large is off by 25 % or
        more (raw office_room: cx = 1200, cy = 795.5 for photos stored at
        1200x796).

        Rescale (DESIGN.md 7), with a `SceneWarning`: when the scene's other
        views tell the size the cam files were written for (the most common
        image size among views whose K fits their image) and this K fits
        that size, K's rows 0 and 1 are scaled by exactly the image's size
        over that size, per axis. Otherwise the factor is estimated from the
        principal point (it must agree on both axes within 5 %) and snapped
        to the nearest common resize factor (powers of two, 1/3, 2/3, 3/4,
        4/3, 3/2, 3) within 5 %; anything else is an error rather than a
        guess. No half-pixel shift (ALGORITHMS.md 1.8.2).

        Args:
            view_id: the view.

        Returns:
            The Camera (a copy: callers may modify it). Read once per view;
            the rescale warning is given once per view.

        Raises:
            FormatError: malformed cam file, or intrinsics that match neither
                the image size nor a rescale of it.
        """
        if view_id not in self._cameras:
            self._cameras[view_id] = self._read_camera(view_id)
        return dataclasses.replace(self._cameras[view_id])

    def _reference_size(self) -> tuple[int, int] | None:
        """The most common image size among views whose K fits their image
        (the size the scene's cam files were written for), or None."""
        if not hasattr(self, "_reference"):
            counts: dict[tuple[int, int], int] = {}
            for view_id in self.view_ids:
                try:
                    camera = formats.read_cam_file(self._cam_paths[view_id])
                    size = self.image_size(view_id)
                except (ValueError, OSError):
                    continue  # reported when that view itself is read
                if _fits(camera.intrinsics, *size):
                    counts[size] = counts.get(size, 0) + 1
            self._reference = (max(counts, key=counts.get) if counts
                               else None)
        return self._reference

    def _read_camera(self, view_id: int) -> formats.Camera:
        self._check_view(view_id)
        path = self._cam_paths[view_id]
        camera = formats.read_cam_file(path)
        height, width = self.image_size(view_id)
        if _fits(camera.intrinsics, height, width):
            return camera
        cx, cy = camera.intrinsics[0, 2], camera.intrinsics[1, 2]
        reference = self._reference_size()
        if (reference is not None and reference != (height, width)
                and _fits(camera.intrinsics, *reference)):
            scale_x, scale_y = width / reference[1], height / reference[0]
            reason = (f"the scene's other cams are for "
                      f"{reference[1]}x{reference[0]} images")
        else:
            factor_x = width / (2 * cx) if cx > 0 else float("nan")
            factor_y = height / (2 * cy) if cy > 0 else float("nan")
            estimate = 0.5 * (factor_x + factor_y)
            snapped = min(_SNAP_FACTORS, key=lambda f: abs(estimate / f - 1))
            if not (abs(factor_x / factor_y - 1) <= _SNAP_TOLERANCE
                    and abs(estimate / snapped - 1) <= _SNAP_TOLERANCE):
                raise formats.FormatError(
                    f"scene {self.name}, view {view_id}: {path}", None,
                    f"intrinsics for the {width}x{height} image (principal "
                    "point near the centre) or for a common resize of it "
                    "(2x, 1.5x, 0.75x, ...)", f"cx = {cx:g}, cy = {cy:g}",
                    quote=False)
            scale_x = scale_y = snapped
            reason = "its principal point is not near the image centre"
        warnings.warn(
            f"scene {self.name}, view {view_id}: {path.name} does not fit "
            f"the {width}x{height} image ({reason}: principal point "
            f"({cx:g}, {cy:g})); scaling the intrinsics by "
            f"{_factor_text(scale_x, scale_y)}", SceneWarning, stacklevel=3)
        intrinsics = camera.intrinsics.copy()
        intrinsics[0] *= scale_x
        intrinsics[1] *= scale_y
        camera.intrinsics = intrinsics
        return camera

    def mask(self, view_id: int) -> np.ndarray | None:
        """A view's mask (`masks/{id:08d}.png`), or None when absent.

        Returns:
            `(H, W)` bool, True where the PNG value is at least 128 (255 =
            valid / object, 0 = invalid; the midpoint also splits
            anti-aliased edges evenly).

        Raises:
            FormatError: unreadable file, or a size other than the image's.
        """
        self._check_view(view_id)
        path = self.root / "masks" / f"{view_id:08d}.png"
        if not path.is_file():
            return None
        try:
            with Image.open(path) as image:
                values = np.asarray(image.convert("L"))
        except (OSError, ValueError) as error:
            raise formats.FormatError(
                f"scene {self.name}, view {view_id}: {path}", None,
                "a readable PNG mask", str(error), quote=False) from None
        if values.shape != self.image_size(view_id):
            raise formats.FormatError(
                f"scene {self.name}, view {view_id}: {path}", None,
                f"a mask of the image size {self.image_size(view_id)}",
                f"{values.shape}", quote=False)
        return values >= 128

    def depth(self, view_id: int) -> np.ndarray | None:
        """A view's ground-truth depth (`depths/{id:08d}.pfm`), or None.

        Returns:
            `(H, W)` float32 camera-frame depth in the cam file's units.

        Raises:
            FormatError: malformed PFM, or a shape other than the image's.
        """
        self._check_view(view_id)
        path = self.root / "depths" / f"{view_id:08d}.pfm"
        if not path.is_file():
            return None
        depth = formats.read_pfm(path)
        if depth.shape != self.image_size(view_id):
            raise formats.FormatError(
                f"scene {self.name}, view {view_id}: {path}", None,
                f"a single-channel depth map of the image size "
                f"{self.image_size(view_id)}", f"{depth.shape}", quote=False)
        return depth

    def source_views(self, ref_id: int, num: int) -> list[int]:
        """The `num` best source views of a reference, from pair.txt.

        Sources are taken in file order (best first) after dropping missing
        views and the reference itself. With fewer than `num`, the list is
        padded by repeating the first source, as UniMVSNet's `general_eval`
        pads to V - 1 sources (ALGORITHMS.md 1.2 FLAG; CasMVSNet pads to V,
        which only matters for its off-by-one and is not reproduced).

        Args:
            ref_id: the reference view.
            num: how many source views (V - 1).

        Returns:
            `num` view ids.

        Raises:
            KeyError: the reference has no block in pair.txt.
            ValueError: the reference has no usable source view (the
                reference loaders skip such views), or `num` < 1.
        """
        if num < 1:
            raise ValueError(f"source_views needs num >= 1; received {num}")
        for pair_ref, sources in self.pairs:
            if pair_ref == ref_id:
                if not sources:
                    raise ValueError(
                        f"scene {self.name}: reference view {ref_id} has no "
                        "available source view in pair.txt")
                ids = [view_id for view_id, _ in sources[:num]]
                return ids + [ids[0]] * (num - len(ids))
        raise KeyError(
            f"scene {self.name}: view {ref_id} has no entry in pair.txt "
            "among the available views")

    def load_view(
        self, view_id: int, height: int | None = None,
        width: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A view's image and camera at a given size, ready for the network.

        Image and K are resized together by `transforms.resize_view`:
        bilinearly with half-pixel centres and no antialiasing, as
        cv2.INTER_LINEAR does in the reference loaders; K rows 0 and 1
        multiplied by `width / W` and `height / H` (ALGORITHMS.md 1.8.1; the
        factors may differ).

        Args:
            view_id: the view.
            height, width: the target size; None keeps the image's own.

        Returns:
            `(image, intrinsics, cam_from_world)`: `[height, width, 3]`
            float32 RGB in [0, 1], `(3, 3)` float64 K in pixels of the
            returned image, `(4, 4)` float64 world-to-camera transform.
        """
        image = self.image(view_id)
        original_height, original_width = image.shape[:2]
        height = original_height if height is None else height
        width = original_width if width is None else width
        if height <= 0 or width <= 0:
            raise ValueError(
                f"load_view needs a positive size; received {height}x{width}")
        camera = self.camera(view_id)
        pixels, intrinsics = transforms.resize_view(
            image.astype(np.float32) / 255.0, camera.intrinsics, height,
            width)
        return pixels, intrinsics, camera.cam_from_world.copy()

    def __repr__(self) -> str:
        return (f"MVSScene({str(self.root)!r}: {len(self.view_ids)} views, "
                f"{len(self.pairs)} with pairs)")


def _fits(intrinsics: np.ndarray, height: int, width: int) -> bool:
    """Whether K's principal point lies inside a `width x height` image and
    its implied size (2 cx, 2 cy) is within `_SIZE_TOLERANCE` of the real
    one on at least one axis (so no resize of both axes explains it)."""
    cx, cy = intrinsics[0, 2], intrinsics[1, 2]
    if not (0 < cx < width and 0 < cy < height):
        return False
    return (abs(2 * cx / width - 1) <= _SIZE_TOLERANCE
            or abs(2 * cy / height - 1) <= _SIZE_TOLERANCE)


def _factor_text(scale_x: float, scale_y: float) -> str:
    if scale_x == scale_y:
        return f"{scale_x:g}"
    return f"{scale_x:g} (x) and {scale_y:g} (y)"


def _index_files(
    folder: pathlib.Path, pattern: re.Pattern
) -> dict[int, pathlib.Path]:
    """Maps view id to file for the names in `folder` that `pattern` matches.

    When several images share an id (00000001.jpg and 00000001.png), the
    suffix listed first in `_IMAGE_SUFFIXES` wins.
    """
    found: dict[int, pathlib.Path] = {}
    priority: dict[int, int] = {}
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if not match or not path.is_file():
            continue
        view_id = int(match.group(1))
        rank = (_IMAGE_SUFFIXES.index(match.group(2).lower())
                if pattern.groups > 1 else 0)
        if view_id not in found or rank < priority[view_id]:
            found[view_id], priority[view_id] = path, rank
    return found
