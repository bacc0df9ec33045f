"""Synthetic multi-view stereo scenes with exact geometry (numpy only).

This module renders DTU-like scenes: a textured ground and back wall with
boxes, spheres, cylinders and slanted panels on it, seen by cameras on a
spherical cap. It is the default data of the entry points, the test fixture
and a quality benchmark, so everything it produces is exact and reproducible:

* Depth is computed by exact ray casting against the analytic primitives in
  float64 and stored as float32. The ray of pixel (row i, column j) passes
  through x = j, y = i (the `keras_mvs.geometry` convention), and its
  direction is `R^T K^-1 [j, i, 1]`, whose camera-frame z is 1, so the ray
  parameter of the first hit is the camera-frame depth itself.
* Cameras use `cam_from_world` with OpenCV axes (x right, y down, z forward);
  the world is right-handed with z up. Lengths are millimetres, like DTU.
* Textures are procedural functions of each object's local 3-D coordinates
  (value noise, stripes, checkers), so a surface point has the same albedo
  in every view. Shading is Lambertian from one fixed directional light with
  cast shadows, plus an optional Blinn-Phong highlight, the only
  view-dependent term.
* Randomness comes only from `np.random.default_rng(config.seed)`, and PNGs
  are written by Pillow with fixed settings, so one seed gives
  byte-identical files on one platform.

Each scene also carries a ground-truth surface for point-cloud evaluation
(the union of the exact depth maps, thinned on a voxel grid) and MVSNet
view-selection pairs scored on surface points seen by exact ray casting.
`write_scene` writes the MVSNet layout read by `keras_mvs.data.scene`:
`images/`, `cams/` (4-field depth line), `pair.txt`, `depths/` (PFM),
`masks/` and `gt_surface.ply`. `ensure_benchmark` renders the fixed
benchmark split once into a cache folder.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Callable
from typing import Optional
from typing import Union

import numpy as np

from keras_mvs import files
from keras_mvs import visualize
from keras_mvs.data import formats
from keras_mvs.data import view_selection

# Bumped whenever the rendered output changes, so that cached benchmark
# scenes made by an older renderer are not reused.
RENDERER_VERSION = 3

# The fixed benchmark split: scenes are identified by their seed alone.
BENCHMARK_TRAIN_SEEDS = tuple(range(1000, 1016))
BENCHMARK_TEST_SEEDS = tuple(range(2000, 2004))
BENCHMARK_NUM_VIEWS = 20

# Scene layout in millimetres. The objects stand in a disc around the world
# origin; the ground and the back wall are large enough to fill the views of
# the default camera cap.
_OBJECT_REGION_RADIUS = 120.0
_GROUND_HALF_X = 420.0
_GROUND_Y_RANGE = (-420.0, 300.0)
_WALL_HEIGHT = 450.0
# Direction towards the fixed light (unit vector, world frame).
_LIGHT_DIRECTION = np.array([-0.3, -0.5, 0.8]) / np.linalg.norm(
    [-0.3, -0.5, 0.8])
_LIGHT_DIRECTION.setflags(write=False)
_AMBIENT = 0.25
_BACKGROUND_GREY = 0.05
# Shadow rays start this far (mm) off the surface so that they do not hit
# the surface they leave.
_SHADOW_OFFSET = 1e-3
# Relative tolerance of the surface-sample visibility test: a sample is seen
# from a camera if no surface is hit before (1 - tol) of the way to it.
_VISIBILITY_TOLERANCE = 1e-6
CAMERA_LAYOUTS = ("cap", "ring", "forward")
# Scene kinds of `randomized_config`: what each one stresses.
SCENE_KINDS = ("default", "low_texture", "repetitive", "glossy", "near",
               "far", "ring", "forward")

# Surface ids are `primitive_index * _PARTS_PER_PRIMITIVE + part`, a part
# being one smooth piece of a primitive's surface (a box face, a cylinder
# cap); no primitive has more than 6 parts.
_PARTS_PER_PRIMITIVE = 8
# Rays cast and shaded together.
_RAY_BLOCK = 16384


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """What to render. Every field has a usable default.

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        num_views: number of cameras on the spherical cap (DTU has 49).
        seed: seed of `np.random.default_rng`; the only source of
            randomness.
        num_objects: number of objects (boxes, spheres, cylinders, slanted
            panels) on the ground, occluders not counted.
        specular: strength of the view-dependent Blinn-Phong highlight, in
            image intensity units (0 gives a purely Lambertian scene).
        low_texture: give one object an almost uniform albedo and blank
            out a few patches of the ground texture.
        repetitive: give the back wall a regular checker and one object
            regular stripes (ambiguous matches).
        occluders: add thin poles between the cameras and the objects.
        shadows: cast shadows from the light.
        supersample: anti-aliasing; each pixel's colour is the mean of
            supersample x supersample rays on a regular grid over the pixel
            (1: the centre ray alone). Depth, normals and surface ids always
            come from the centre ray.
        camera_distance: distance of the cameras from the look-at point, mm.
        cap_elevation_deg: elevation above the ground of the cap's axis.
        cap_angle_deg: half-angle of the spherical cap of camera directions.
        focal_scale: focal length in units of the image width (DTU's
            160x128 cameras have about 2.26).
        intrinsics_jitter: perturb each camera's focal lengths (1 %) and
            principal point (2 % of the size), as real rigs are; False
            gives all cameras one K with the principal point at the image
            centre (a single pinhole camera, as structure from motion
            assumes). The random draws are the same either way.
        num_pair_samples: surface points drawn area-uniformly over all
            surfaces to score the view pairs (those seen by no camera
            drop out).
        gt_voxel_size: voxel edge (mm) that thins the ground-truth
            surface; None uses the pixel footprint at the look-at distance,
            `camera_distance / (focal_scale * width)`.
        num_depths: the DEPTH_NUM field written to the cam files.
        depth_margin: fraction of each view's depth span added below and
            above it before the depth range is written.
        camera_layout: "cap" (a spherical cap of directions converging on
            the objects, DTU-like), "ring" (a full circle around them at
            `cap_elevation_deg`, Middlebury-like; the back wall is left
            out) or "forward" (a planar grid of nearly parallel cameras
            facing the scene, as hand-held captures of a room).
        forward_baseline: "forward" layout: grid spacing as a fraction of
            `camera_distance`.
        light_direction: direction towards the directional light (world
            frame, z up; normalised; must point above the ground).
        ambient: ambient share of the shading, in [0, 1].
        texture_scale: multiplies every texture period (< 1 finer, > 1
            coarser, i.e. less texture per pixel).
        flat_fraction: probability that each further object gets an almost
            uniform (low-texture) albedo.
        exposure_jitter: each view's colours are multiplied by a gain drawn
            in [1 - j, 1 + j] (photos of one scene differ in exposure).

    The last seven fields at their defaults render exactly what the renderer
    rendered before they existed: their random draws come from a second
    generator, `np.random.default_rng([seed, 1])`. `randomized_config`
    draws them (domain randomisation).
    """

    height: int = 128
    width: int = 160
    num_views: int = 49
    seed: int = 0
    num_objects: int = 5
    specular: float = 0.25
    low_texture: bool = True
    repetitive: bool = True
    occluders: bool = True
    shadows: bool = True
    supersample: int = 1
    camera_distance: float = 600.0
    cap_elevation_deg: float = 50.0
    cap_angle_deg: float = 30.0
    focal_scale: float = 2.0
    intrinsics_jitter: bool = True
    num_pair_samples: int = 40000
    gt_voxel_size: Optional[float] = None
    num_depths: int = 192
    depth_margin: float = 0.02
    camera_layout: str = "cap"
    forward_baseline: float = 0.06
    light_direction: tuple = (-0.3, -0.5, 0.8)
    ambient: float = 0.25
    texture_scale: float = 1.0
    flat_fraction: float = 0.0
    exposure_jitter: float = 0.0

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 8:
                raise ValueError(
                    f"SceneConfig.{name} must be an int >= 8. "
                    f"Received: {name}={value!r}")
        for name, minimum in (("num_views", 2), ("num_objects", 0),
                              ("supersample", 1),
                              ("num_pair_samples", 100),
                              ("num_depths", 2), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(
                    f"SceneConfig.{name} must be an int >= {minimum}. "
                    f"Received: {name}={value!r}")
        if not self.specular >= 0.0:
            raise ValueError("SceneConfig.specular must be >= 0. "
                             f"Received: specular={self.specular!r}")
        if not self.camera_distance > 2.0 * _OBJECT_REGION_RADIUS:
            raise ValueError(
                "SceneConfig.camera_distance must exceed "
                f"{2.0 * _OBJECT_REGION_RADIUS} mm (the object region). "
                f"Received: camera_distance={self.camera_distance!r}")
        if self.camera_layout not in CAMERA_LAYOUTS:
            raise ValueError(
                f"SceneConfig.camera_layout must be one of {CAMERA_LAYOUTS}. "
                f"Received: camera_layout={self.camera_layout!r}")
        light = np.asarray(self.light_direction, float)
        if light.shape != (3,) or not np.all(np.isfinite(light)) or not (
                light[2] > 0.0):
            raise ValueError(
                "SceneConfig.light_direction must be 3 finite numbers with a "
                "positive z (a light above the ground). Received: "
                f"light_direction={self.light_direction!r}")
        for name, low, high in (("ambient", 0.0, 1.0),
                                ("flat_fraction", 0.0, 1.0),
                                ("exposure_jitter", 0.0, 0.5),
                                ("forward_baseline", 0.0, 1.0)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(
                    f"SceneConfig.{name} must be in [{low}, {high}]. "
                    f"Received: {name}={value!r}")
        if not self.texture_scale > 0.0:
            raise ValueError(
                "SceneConfig.texture_scale must be > 0. Received: "
                f"texture_scale={self.texture_scale!r}")
        if self.camera_layout != "cap":
            if not 0.0 < self.cap_elevation_deg < 89.0:
                raise ValueError(
                    "SceneConfig.cap_elevation_deg must be in (0, 89) "
                    "degrees. Received: "
                    f"cap_elevation_deg={self.cap_elevation_deg!r}")
        elif not 0.0 < self.cap_angle_deg < self.cap_elevation_deg:
            raise ValueError(
                "SceneConfig.cap_angle_deg must be in (0, cap_elevation_deg) "
                "so that no camera sits at or below the ground. Received: "
                f"cap_angle_deg={self.cap_angle_deg!r}, "
                f"cap_elevation_deg={self.cap_elevation_deg!r}")
        if self.camera_layout == "cap" and not (
                self.cap_elevation_deg + self.cap_angle_deg < 89.0):
            raise ValueError(
                "SceneConfig.cap_elevation_deg + cap_angle_deg must be below "
                "89 degrees (a camera looking straight down has no defined "
                f"image 'up'). Received: {self.cap_elevation_deg!r} + "
                f"{self.cap_angle_deg!r}")
        if not self.focal_scale > 0.0:
            raise ValueError("SceneConfig.focal_scale must be > 0. "
                             f"Received: focal_scale={self.focal_scale!r}")
        if self.gt_voxel_size is not None and not self.gt_voxel_size > 0:
            raise ValueError(
                "SceneConfig.gt_voxel_size must be > 0 or None. "
                f"Received: gt_voxel_size={self.gt_voxel_size!r}")
        if not 0.0 <= self.depth_margin < 0.5:
            raise ValueError(
                "SceneConfig.depth_margin must be in [0, 0.5). "
                f"Received: depth_margin={self.depth_margin!r}")


@dataclasses.dataclass(frozen=True)
class _Material:
    """Procedural albedo and specular response of one primitive.

    `pattern` is "noise" (multi-scale value noise), "stripes", "checker" or
    "flat" (almost uniform). `period` is the noise base scale or the
    stripe/checker period in mm. `pure` patterns carry no noise modulation
    (the repetitive ones).
    """

    pattern: str
    colour_a: np.ndarray
    colour_b: np.ndarray
    period: float
    angle: float
    noise_offset: np.ndarray
    specular_scale: float
    shininess: float
    pure: bool = False
    # Discs of the (local) surface whose texture is blanked: [K, 3] rows of
    # (x, y, radius) in mm.
    blank_patches: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class _Primitive:
    """An analytic surface in its local frame, placed in the world.

    Local shapes: "rect" is the rectangle |x| <= a, |y| <= b in the plane
    z = 0 (two-sided); "box" is |x| <= a, |y| <= b, |z| <= c; "sphere" has
    radius a; "cylinder" has radius a and |z| <= c, with both caps.
    `half_size` holds (a, b, c).
    """

    kind: str
    rotation: np.ndarray  # [3, 3] world_from_local rotation.
    centre: np.ndarray  # [3] world position of the local origin, mm.
    half_size: np.ndarray  # [3] mm.
    material: _Material


class _ValueNoise:
    """Smooth 3-D value noise on the integer lattice, seeded from `rng`."""

    def __init__(self, rng: np.random.Generator):
        permutation = rng.permutation(256)
        # Doubled so that perm[perm[i] + j] never needs a second wrap.
        self._perm = np.concatenate([permutation, permutation])
        self._values = rng.random(256)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Evaluates the noise.

        Args:
            points: `[N, 3]` float64 lattice coordinates.

        Returns:
            `[N]` float64 values in [0, 1].
        """
        base = np.floor(points)
        frac = points - base
        weights = frac * frac * (3.0 - 2.0 * frac)  # smoothstep
        cell = base.astype(np.int64) & 255
        result = np.zeros(len(points))
        for dx in (0, 1):
            wx = weights[:, 0] if dx else 1.0 - weights[:, 0]
            hx = self._perm[(cell[:, 0] + dx) & 255]
            for dy in (0, 1):
                wy = weights[:, 1] if dy else 1.0 - weights[:, 1]
                hy = self._perm[hx + ((cell[:, 1] + dy) & 255)]
                for dz in (0, 1):
                    wz = weights[:, 2] if dz else 1.0 - weights[:, 2]
                    hz = self._perm[hy + ((cell[:, 2] + dz) & 255)]
                    result += wx * wy * wz * self._values[hz]
        return result

    def fractal(self, points: np.ndarray, octaves: int = 5) -> np.ndarray:
        """Multi-scale sum of octaves (halving amplitude, doubling frequency).

        Args:
            points: `[N, 3]` float64 lattice coordinates of the base octave.
            octaves: number of octaves.

        Returns:
            `[N]` float64 values in [0, 1].
        """
        total = np.zeros(len(points))
        amplitude_sum = 0.0
        for octave in range(octaves):
            amplitude = 0.5**octave
            # Shift every octave so that lattice points do not line up.
            total += amplitude * self(points * 2.0**octave + 17.3 * octave)
            amplitude_sum += amplitude
        return total / amplitude_sum


# --------------------------------------------------------------------------
# Scene construction


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _random_material(rng: np.random.Generator, pattern: str) -> _Material:
    """Draws colours and pattern parameters; the draw count is fixed."""
    colour_a = rng.uniform(0.25, 0.9, size=3)
    colour_b = np.clip(
        colour_a * rng.uniform(0.25, 0.6) + rng.uniform(-0.08, 0.08, size=3),
        0.02, 1.0)
    periods = {"noise": rng.uniform(18.0, 40.0),
               "stripes": rng.uniform(8.0, 18.0),
               "checker": rng.uniform(10.0, 24.0)}
    return _Material(
        pattern=pattern,
        colour_a=colour_a,
        colour_b=colour_b,
        period=periods.get(pattern, periods["noise"]),
        angle=rng.uniform(0.0, np.pi),
        noise_offset=rng.uniform(0.0, 200.0, size=3),
        specular_scale=rng.uniform(0.4, 1.0),
        shininess=rng.uniform(15.0, 80.0),
    )


def _random_object(rng: np.random.Generator,
                   kind: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Draws the shape of one object standing on the ground.

    Returns:
        `(rotation [3, 3], half_size [3], height_of_centre, footprint)`,
        mm; the footprint is the radius of a disc holding the object's
        ground projection.
    """
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    if kind == "box":
        half = rng.uniform([15.0, 15.0, 15.0], [50.0, 50.0, 45.0])
        return _rotation_z(yaw), half, half[2], float(np.hypot(*half[:2]))
    if kind == "sphere":
        radius = rng.uniform(22.0, 50.0)
        return np.eye(3), np.full(3, radius), radius, radius
    if kind == "cylinder":
        radius, half_height = rng.uniform([15.0, 20.0], [40.0, 60.0])
        if rng.random() < 0.3:  # Lying on its side.
            rotation = _rotation_z(yaw) @ _rotation_x(np.pi / 2.0)
            return (rotation, np.array([radius, radius, half_height]),
                    radius, float(np.hypot(radius, half_height)))
        return (np.eye(3), np.array([radius, radius, half_height]),
                half_height, radius)
    # A slanted panel, tilted about its local x axis and raised off the
    # ground so that its lower edge floats a little.
    half = rng.uniform([35.0, 25.0], [70.0, 50.0])
    tilt = rng.uniform(np.radians(25.0), np.radians(65.0))
    lift = rng.uniform(5.0, 30.0)
    rotation = _rotation_z(yaw) @ _rotation_x(tilt)
    return (rotation, np.array([half[0], half[1], 0.0]),
            half[1] * np.sin(tilt) + lift, float(np.hypot(*half)))


def _build_scene(config: SceneConfig, rng: np.random.Generator,
                 extra: np.random.Generator) -> list[_Primitive]:
    """Places the ground, the back wall, the objects and the occluders.

    `rng` draws what the renderer always drew; `extra` the domain
    randomisation of the fields added later (see SceneConfig).
    """
    primitives = []
    ground_material = dataclasses.replace(
        _random_material(rng, "noise"),
        colour_a=rng.uniform(0.55, 0.85, size=3),
        period=40.0,
        specular_scale=0.3,
    )
    if config.low_texture:
        # Blank discs on the ground near the objects (local = world x, y).
        radius = rng.uniform(25.0, 55.0, size=2)
        angle = rng.uniform(0.0, 2.0 * np.pi, size=2)
        distance = rng.uniform(0.0, _OBJECT_REGION_RADIUS, size=2)
        ground_material = dataclasses.replace(
            ground_material,
            blank_patches=np.stack([distance * np.cos(angle),
                                    distance * np.sin(angle), radius], -1))
    y_low, y_high = _GROUND_Y_RANGE
    primitives.append(_Primitive(
        "rect", np.eye(3), np.array([0.0, 0.5 * (y_low + y_high), 0.0]),
        np.array([_GROUND_HALF_X, 0.5 * (y_high - y_low), 0.0]),
        ground_material))

    wall_material = _random_material(rng, "noise")
    if config.repetitive:
        wall_material = dataclasses.replace(
            wall_material, pattern="checker", period=12.0, pure=True)
    # The wall's local z is its normal (-y, towards the cameras), its local
    # x is world x and its local y is world z.
    wall_rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0],
                              [0.0, 1.0, 0.0]])
    if config.camera_layout != "ring":  # a ring would see it from behind
        primitives.append(_Primitive(
            "rect", wall_rotation,
            np.array([0.0, y_high, 0.5 * _WALL_HEIGHT]),
            np.array([_GROUND_HALF_X, 0.5 * _WALL_HEIGHT, 0.0]),
            wall_material))
    num_fixed = len(primitives)

    kinds = ("box", "sphere", "cylinder", "rect")
    patterns = ("noise", "noise", "stripes", "checker")
    placed = []  # (x, y, footprint) of the objects so far.
    for index in range(config.num_objects):
        kind = kinds[rng.integers(len(kinds))]
        material = _random_material(rng, patterns[rng.integers(4)])
        if config.low_texture and index == 0:
            material = dataclasses.replace(material, pattern="flat")
        if config.repetitive and index == 1:
            material = dataclasses.replace(material, pattern="stripes",
                                           period=9.0, pure=True)
        rotation, half_size, height, footprint = _random_object(rng, kind)
        # Rejection sampling keeps objects apart; after a few tries an
        # overlap is accepted (interpenetrating solids still render
        # exactly).
        for _ in range(30):
            radius = _OBJECT_REGION_RADIUS * np.sqrt(rng.random())
            angle = rng.uniform(0.0, 2.0 * np.pi)
            x, y = radius * np.cos(angle), radius * np.sin(angle)
            if all(np.hypot(x - px, y - py) > footprint + pf + 5.0
                   for px, py, pf in placed):
                break
        placed.append((x, y, footprint))
        primitives.append(_Primitive(kind, rotation, np.array([x, y, height]),
                                     half_size, material))

    if config.occluders:
        # Poles on the camera side of the object region: each hides part of
        # the objects from some views and not from others.
        for _ in range(2):
            angle = -0.5 * np.pi + rng.uniform(-1.0, 1.0)
            distance = rng.uniform(140.0, 190.0)
            radius, half_height = rng.uniform([5.0, 90.0], [9.0, 140.0])
            primitives.append(_Primitive(
                "cylinder", np.eye(3),
                np.array([distance * np.cos(angle), distance * np.sin(angle),
                          half_height]),
                np.array([radius, radius, half_height]),
                _random_material(rng, "stripes")))
    if config.flat_fraction > 0.0:
        for index in range(num_fixed, num_fixed + config.num_objects):
            if extra.random() < config.flat_fraction:
                primitive = primitives[index]
                primitives[index] = dataclasses.replace(
                    primitive, material=dataclasses.replace(
                        primitive.material, pattern="flat"))
    if config.texture_scale != 1.0:
        primitives = [dataclasses.replace(p, material=dataclasses.replace(
            p.material, period=p.material.period * config.texture_scale))
            for p in primitives]
    return primitives


def _camera_directions(config: SceneConfig,
                        extra: np.random.Generator) -> np.ndarray:
    """Unit directions `[V, 3]` from the look-at point to each camera.

    "cap": a Fibonacci spiral on the spherical cap (near-uniform spacing for
    any view count); "ring": evenly spaced azimuths on a full circle at the
    cap's elevation, jittered by up to a quarter step and 3 degrees in
    elevation; "forward": every camera on the cap's axis (the grid offsets
    are added in `_make_cameras`).
    """
    num_views = config.num_views
    elevation = np.radians(config.cap_elevation_deg)
    axis = np.array([0.0, -np.cos(elevation), np.sin(elevation)])
    if config.camera_layout == "forward":
        return np.tile(axis, (num_views, 1))
    if config.camera_layout == "ring":
        step = 2.0 * np.pi / num_views
        azimuth = (-0.5 * np.pi + step * np.arange(num_views)
                   + extra.uniform(-0.25, 0.25, num_views) * step)
        tilt = elevation + np.radians(extra.uniform(-3.0, 3.0, num_views))
        return np.stack([np.cos(tilt) * np.cos(azimuth),
                         np.cos(tilt) * np.sin(azimuth), np.sin(tilt)], -1)
    # Orthonormal frame (e1, e2, axis) around the cap axis.
    e1 = np.array([1.0, 0.0, 0.0])
    e2 = np.cross(axis, e1)
    index = np.arange(num_views) + 0.5
    cos_polar = 1.0 - index / num_views * (
        1.0 - np.cos(np.radians(config.cap_angle_deg)))
    sin_polar = np.sqrt(1.0 - cos_polar**2)
    azimuth = np.pi * (3.0 - np.sqrt(5.0)) * index  # golden angle steps
    return (cos_polar[:, None] * axis
            + sin_polar[:, None] * (np.cos(azimuth)[:, None] * e1
                                    + np.sin(azimuth)[:, None] * e2))


def _make_cameras(config: SceneConfig, rng: np.random.Generator,
                  extra: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Places the cameras (`config.camera_layout`) looking at the objects.

    Directions come from `_camera_directions`; distance, look-at point,
    roll and intrinsics get small random perturbations, as real rigs have.
    In the "forward" layout the cameras sit on a square-ish grid across the
    axis, `forward_baseline * camera_distance` apart, and each looks at the
    look-at point shifted by its own offset, so the views are parallel.

    Returns:
        `(intrinsics [V, 3, 3], cam_from_world [V, 4, 4])`, float64, pixels
        and mm.
    """
    num_views = config.num_views
    directions = _camera_directions(config, extra)

    distance = config.camera_distance * rng.uniform(0.97, 1.03, num_views)
    targets = rng.uniform(-10.0, 10.0, size=(num_views, 3)) + [0, 0, 20.0]
    roll = np.radians(rng.uniform(-3.0, 3.0, num_views))
    focal_jitter = rng.uniform(0.99, 1.01, size=(num_views, 2))
    centre_jitter = rng.uniform(-0.02, 0.02, size=(num_views, 2))
    if not config.intrinsics_jitter:
        focal_jitter = np.ones_like(focal_jitter)
        centre_jitter = np.zeros_like(centre_jitter)

    if config.camera_layout == "forward":
        columns = int(np.ceil(np.sqrt(num_views)))
        grid = np.stack([np.arange(num_views) % columns,
                         np.arange(num_views) // columns], -1).astype(float)
        grid -= grid.mean(axis=0)
        spacing = config.forward_baseline * config.camera_distance
        elevation = np.radians(config.cap_elevation_deg)
        across = np.array([1.0, 0.0, 0.0])
        up = np.array([0.0, np.sin(elevation), np.cos(elevation)])
        offsets = spacing * (grid[:, :1] * across + grid[:, 1:] * up)
        targets = targets + offsets
    centres = targets + distance[:, None] * directions
    forward = targets - centres
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    # Roll about the optical axis.
    cos_r, sin_r = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right, down = cos_r * right + sin_r * down, cos_r * down - sin_r * right
    rotation = np.stack([right, down, forward], axis=1)  # [V, 3, 3]
    cam_from_world = np.tile(np.eye(4), (num_views, 1, 1))
    cam_from_world[:, :3, :3] = rotation
    cam_from_world[:, :3, 3] = -np.einsum("vij,vj->vi", rotation, centres)

    height, width = config.height, config.width
    intrinsics = np.tile(np.eye(3), (num_views, 1, 1))
    intrinsics[:, 0, 0] = config.focal_scale * width * focal_jitter[:, 0]
    intrinsics[:, 1, 1] = config.focal_scale * width * focal_jitter[:, 1]
    intrinsics[:, 0, 2] = (width - 1) / 2.0 + centre_jitter[:, 0] * width
    intrinsics[:, 1, 2] = (height - 1) / 2.0 + centre_jitter[:, 1] * height
    return intrinsics, cam_from_world


# --------------------------------------------------------------------------
# Ray casting


def _intersect(primitive: _Primitive, origins: np.ndarray,
               directions: np.ndarray, t_min: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Intersects rays with one primitive.

    Args:
        primitive: the surface.
        origins: `[N, 3]` or `[3]` ray origins, world frame, mm.
        directions: `[N, 3]` ray directions (any length), world frame.
        t_min: hits at ray parameters <= t_min are ignored.

    Returns:
        `(t [N], part [N] int64)`: ray parameter of the first hit beyond
        t_min (inf for none) and which part of the surface it hit.
    """
    # Rows times R equals R^T applied to each row: world -> local.
    local_origins = (origins - primitive.centre) @ primitive.rotation
    local_dirs = directions @ primitive.rotation
    local_origins = np.broadcast_to(local_origins, local_dirs.shape)
    a, b, c = primitive.half_size
    count = len(local_dirs)
    part = np.zeros(count, dtype=np.int64)
    ox, oy, oz = local_origins.T
    dx, dy, dz = local_dirs.T
    with np.errstate(divide="ignore", invalid="ignore"):
        if primitive.kind == "rect":
            t = -oz / dz
            inside = (np.abs(ox + t * dx) <= a) & (np.abs(oy + t * dy) <= b)
            t = np.where(inside & (t > t_min), t, np.inf)
        elif primitive.kind == "sphere":
            qa = np.einsum("nc,nc->n", local_dirs, local_dirs)
            qb = np.einsum("nc,nc->n", local_origins, local_dirs)
            qc = np.einsum("nc,nc->n", local_origins, local_origins) - a * a
            root = np.sqrt(qb * qb - qa * qc)  # NaN where the ray misses.
            near, far = (-qb - root) / qa, (-qb + root) / qa
            t = np.where(near > t_min, near, np.where(far > t_min, far,
                                                      np.inf))
            t = np.where(np.isnan(t), np.inf, t)
        elif primitive.kind == "box":
            # Slab test. Entering through a face on `axis`, a ray moving
            # towards +axis meets the -axis face (even part number).
            safe = np.where(local_dirs == 0.0, 1e-300, local_dirs)
            t_low = (-primitive.half_size - local_origins) / safe
            t_high = (primitive.half_size - local_origins) / safe
            t_near_axes = np.minimum(t_low, t_high)
            t_far_axes = np.maximum(t_low, t_high)
            t_enter = t_near_axes.max(axis=1)
            t_exit = t_far_axes.min(axis=1)
            hit = t_enter <= t_exit
            entering = hit & (t_enter > t_min)
            t = np.where(entering, t_enter,
                         np.where(hit & (t_exit > t_min), t_exit, np.inf))
            rows = np.arange(count)
            enter_axis = t_near_axes.argmax(axis=1)
            exit_axis = t_far_axes.argmin(axis=1)
            # Parts 0..5: faces -x, +x, -y, +y, -z, +z.
            part = np.where(
                entering,
                2 * enter_axis + (local_dirs[rows, enter_axis] < 0.0),
                2 * exit_axis + (local_dirs[rows, exit_axis] > 0.0))
        else:  # cylinder
            qa = dx * dx + dy * dy
            qb = ox * dx + oy * dy
            qc = ox * ox + oy * oy - a * a
            root = np.sqrt(qb * qb - qa * qc)
            side = np.inf
            for candidate in ((-qb - root) / qa, (-qb + root) / qa):
                valid = (candidate > t_min) & (np.abs(oz + candidate * dz)
                                               <= c)
                side = np.minimum(side, np.where(valid, candidate, np.inf))
            t = side
            for cap_part, cap_z in ((1, c), (2, -c)):
                t_cap = (cap_z - oz) / dz
                cap_x, cap_y = ox + t_cap * dx, oy + t_cap * dy
                valid = (t_cap > t_min) & (cap_x * cap_x + cap_y * cap_y
                                           <= a * a)
                t_cap = np.where(valid, t_cap, np.inf)
                part = np.where(t_cap < t, cap_part, part)
                t = np.minimum(t, t_cap)
    return t, part


def _cast(primitives: list[_Primitive], origins: np.ndarray,
          directions: np.ndarray, t_min: float = 0.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """Finds the first hit of every ray among all primitives.

    Args:
        primitives: the scene.
        origins: `[N, 3]` or `[3]`, world frame, mm.
        directions: `[N, 3]` (any length).
        t_min: hits at ray parameters <= t_min are ignored.

    Returns:
        `(t [N], surface_id [N] int32)`: ray parameter of the first hit (inf
        where nothing is hit) and `primitive * 8 + part` (-1 for no hit).
    """
    best_t = np.full(len(directions), np.inf)
    surface_id = np.full(len(directions), -1, dtype=np.int32)
    length = np.sqrt(np.einsum("nc,nc->n", directions, directions))
    unit = directions / length[:, None]
    # Terms of the bounding-sphere test that do not depend on the primitive:
    # distances along the unit ray are `unit . c - unit . o`, squared
    # distances from the centre `|c|^2 - 2 o . c + |o|^2 - along^2`.
    if origins.ndim == 1:
        unit_dot_origin = unit @ origins
        origin_squared = origins @ origins
    else:
        unit_dot_origin = np.einsum("nc,nc->n", unit, origins)
        origin_squared = np.einsum("nc,nc->n", origins, origins)
    for index, primitive in enumerate(primitives):
        # Cull with the bounding sphere first: only rays passing within its
        # radius of the centre, and not yet blocked before reaching it, are
        # intersected exactly. The slack keeps rounding from culling a ray
        # that touches the sphere.
        centre = primitive.centre
        radius = _bounding_radius(primitive) * (1.0 + 1e-9) + 1e-6
        along = unit @ centre - unit_dot_origin
        miss_squared = (centre @ centre - 2.0 * (origins @ centre)
                        + origin_squared - along * along)
        rows = np.flatnonzero((miss_squared <= radius * radius)
                              & (along + radius > t_min * length)
                              & (along - radius < best_t * length))
        if len(rows) == 0:
            continue
        t, part = _intersect(
            primitive, origins if origins.ndim == 1 else origins[rows],
            directions[rows], t_min)
        closer = t < best_t[rows]
        rows = rows[closer]
        best_t[rows] = t[closer]
        surface_id[rows] = index * _PARTS_PER_PRIMITIVE + part[closer]
    return best_t, surface_id


def _bounding_radius(primitive: _Primitive) -> float:
    """Radius (mm) of a sphere about the centre that holds the primitive."""
    a, b, c = primitive.half_size
    if primitive.kind == "sphere":
        return float(a)
    if primitive.kind == "cylinder":
        return float(np.hypot(a, c))
    return float(np.sqrt(a * a + b * b + c * c))


def _local_normals(kind: str, points: np.ndarray,
                   part: np.ndarray) -> np.ndarray:
    """Outward unit normals `[N, 3]` at local surface points `[N, 3]`."""
    normals = np.zeros_like(points)
    if kind == "rect":
        normals[:, 2] = 1.0
    elif kind == "sphere":
        normals = points / np.linalg.norm(points, axis=1, keepdims=True)
    elif kind == "box":
        rows = np.arange(len(points))
        normals[rows, part // 2] = np.where(part % 2 == 1, 1.0, -1.0)
    else:
        side = part == 0
        radial = points[:, :2] / np.linalg.norm(
            points[:, :2], axis=1, keepdims=True).clip(1e-12)
        normals[:, :2] = np.where(side[:, None], radial, 0.0)
        normals[:, 2] = np.where(part == 1, 1.0,
                                 np.where(part == 2, -1.0, 0.0))
    return normals


def _surface_uv(primitive: _Primitive, points: np.ndarray,
                part: np.ndarray) -> np.ndarray:
    """2-D surface coordinates `[N, 2]` (mm) for stripes and checkers."""
    x, y, z = points.T
    if primitive.kind == "rect":
        return np.stack([x, y], -1)
    radius = primitive.half_size[0]
    if primitive.kind == "sphere":
        return np.stack([radius * np.arctan2(y, x),
                         radius * np.arcsin(np.clip(z / radius, -1, 1))], -1)
    if primitive.kind == "box":
        # Drop the coordinate along the face normal.
        axis = part // 2
        u = np.where(axis == 0, y, x)
        v = np.where(axis == 2, y, z)
        return np.stack([u, v], -1)
    side = part == 0
    return np.stack([np.where(side, radius * np.arctan2(y, x), x),
                     np.where(side, z, y)], -1)


def _albedo(primitive: _Primitive, noise: _ValueNoise, points: np.ndarray,
            part: np.ndarray) -> np.ndarray:
    """Procedural albedo `[N, 3]` in [0, 1] at local surface points."""
    material = primitive.material
    lattice = (points + material.noise_offset) / material.period
    if material.pattern == "noise":
        # Stretch the fractal's mid range so the texture has contrast.
        mix = np.clip(1.6 * (noise.fractal(lattice) - 0.5) + 0.5, 0.0, 1.0)
    elif material.pattern == "flat":
        mix = 0.5 + 0.03 * (noise.fractal(lattice) - 0.5)
    else:
        uv = _surface_uv(primitive, points, part)
        cos_a, sin_a = np.cos(material.angle), np.sin(material.angle)
        u = cos_a * uv[:, 0] + sin_a * uv[:, 1]
        v = -sin_a * uv[:, 0] + cos_a * uv[:, 1]
        phase = np.pi / material.period
        # tanh of a sine: square waves with soft (about 1/8 period) edges.
        if material.pattern == "stripes":
            wave = np.tanh(4.0 * np.sin(2.0 * phase * u))
        else:
            wave = np.tanh(4.0 * np.sin(phase * u)) * np.tanh(
                4.0 * np.sin(phase * v))
        mix = 0.5 + 0.5 * wave / np.tanh(4.0)
        if not material.pure:
            mix = mix * (0.75 + 0.25 * noise.fractal(lattice / 3.0))
    if material.blank_patches is not None:
        for px, py, radius in material.blank_patches:
            distance = np.hypot(points[:, 0] - px, points[:, 1] - py)
            # Smooth edge, 8 mm wide, so the patch has no outline to match.
            keep = np.clip((distance - radius) / 8.0 + 0.5, 0.0, 1.0)
            mix = 0.5 + keep * (mix - 0.5)
    mix = mix[:, None]
    return (1.0 - mix) * material.colour_a + mix * material.colour_b


def _facing_normals(primitives: list[_Primitive], origin: np.ndarray,
                    directions: np.ndarray, t: np.ndarray,
                    surface_id: np.ndarray) -> np.ndarray:
    """World-frame unit normals `[N, 3]` at the hits of rays from `origin`,
    on the side facing the origin (the outward normal of a solid; the seen
    side of a two-sided rectangle); zero where nothing is hit."""
    normals = np.zeros((len(t), 3))
    index = surface_id // _PARTS_PER_PRIMITIVE
    for number, primitive in enumerate(primitives):
        rows = np.flatnonzero(index == number)
        if len(rows) == 0:
            continue
        part = (surface_id[rows] % _PARTS_PER_PRIMITIVE).astype(np.int64)
        points = origin + t[rows, None] * directions[rows]
        local = (points - primitive.centre) @ primitive.rotation
        normals[rows] = _local_normals(primitive.kind, local,
                                       part) @ primitive.rotation.T
    towards_ray = np.einsum("nc,nc->n", normals, directions) > 0.0
    return np.where(towards_ray[:, None], -normals, normals)


def _shade(primitives: list[_Primitive], noise: _ValueNoise,
           origin: np.ndarray, directions: np.ndarray, t: np.ndarray,
           surface_id: np.ndarray, specular: float, shadows: bool,
           light: np.ndarray = _LIGHT_DIRECTION, ambient: float = _AMBIENT
           ) -> tuple[np.ndarray, np.ndarray]:
    """Colours the hits of one view's rays.

    Args:
        primitives: the scene.
        noise: the scene's value noise.
        origin: `[3]` camera centre, mm.
        directions: `[N, 3]` ray directions.
        t: `[N]` hit parameters (inf for none).
        surface_id: `[N]` int32 ids (-1 for none).
        specular: highlight strength.
        shadows: whether to cast shadow rays.
        light: `[3]` unit direction towards the light.
        ambient: ambient share of the shading.

    Returns:
        `(colour [N, 3] float64 in [0, 1], normals [N, 3])`: world-frame
        unit normals on the side facing the camera (the outward normal of a
        solid; either side of a two-sided rectangle), zero where nothing is
        hit.
    """
    colour = np.full((len(t), 3), _BACKGROUND_GREY)
    normals = _facing_normals(primitives, origin, directions, t, surface_id)
    hit = surface_id >= 0
    points = origin + np.where(hit, t, 0.0)[:, None] * directions
    albedo = np.zeros((len(t), 3))
    specular_scale = np.zeros(len(t))
    shininess = np.ones(len(t))
    index = surface_id // _PARTS_PER_PRIMITIVE
    for number, primitive in enumerate(primitives):
        rows = np.flatnonzero(index == number)
        if len(rows) == 0:
            continue
        part = (surface_id[rows] % _PARTS_PER_PRIMITIVE).astype(np.int64)
        local = (points[rows] - primitive.centre) @ primitive.rotation
        albedo[rows] = _albedo(primitive, noise, local, part)
        specular_scale[rows] = primitive.material.specular_scale
        shininess[rows] = primitive.material.shininess

    rows = np.flatnonzero(hit)
    view = -directions[rows] / np.linalg.norm(directions[rows], axis=1,
                                              keepdims=True)
    facing = normals[rows]
    lambert = np.clip(facing @ light, 0.0, None)
    lit = lambert > 0.0
    if shadows and lit.any():
        lit_rows = np.flatnonzero(lit)
        shadow_origins = (points[rows[lit_rows]]
                          + _SHADOW_OFFSET * facing[lit_rows])
        blocker_t, _ = _cast(primitives, shadow_origins,
                             np.broadcast_to(light, shadow_origins.shape))
        lit[lit_rows] = np.isinf(blocker_t)
    lambert = np.where(lit, lambert, 0.0)
    shaded = albedo[rows] * (ambient + (1.0 - ambient) * lambert)[:, None]
    if specular > 0.0:
        halfway = view + light
        halfway /= np.linalg.norm(halfway, axis=1, keepdims=True)
        cos_h = np.clip(np.einsum("nc,nc->n", facing, halfway), 0.0, None)
        highlight = specular * specular_scale[rows] * cos_h**shininess[rows]
        shaded += np.where(lit, highlight, 0.0)[:, None]
    colour[rows] = np.clip(shaded, 0.0, 1.0)
    return colour, normals


def _pixel_rays(intrinsics: np.ndarray, cam_from_world: np.ndarray,
                rows: np.ndarray, cols: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres (row i, column j) at x = j, y = i.

    Args:
        intrinsics: `[3, 3]` K.
        cam_from_world: `[4, 4]`.
        rows: `[N]` pixel rows i (float64; fractional for sub-pixel rays).
        cols: `[N]` pixel columns j.

    Returns:
        `(origin [3], directions [N, 3])` in the world frame; each
        direction has camera-frame z = 1, so a hit's ray parameter is its
        depth.
    """
    inverse = np.linalg.inv(intrinsics)
    rays_cam = (cols[:, None] * inverse[:, 0] + rows[:, None] * inverse[:, 1]
                + inverse[:, 2])
    rays_cam /= rays_cam[:, 2:3]  # exactly 1, whatever the rounding of inv
    rotation = cam_from_world[:3, :3]
    origin = -rotation.T @ cam_from_world[:3, 3]
    return origin, rays_cam @ rotation


# --------------------------------------------------------------------------
# Ground-truth surface and view selection


def _surface_area(primitive: _Primitive) -> np.ndarray:
    """Areas `[P]` (mm^2) of the parts of a primitive, by part index."""
    a, b, c = primitive.half_size
    if primitive.kind == "rect":
        return np.array([4.0 * a * b])
    if primitive.kind == "sphere":
        return np.array([4.0 * np.pi * a * a])
    if primitive.kind == "box":
        return np.repeat([4.0 * b * c, 4.0 * a * c, 4.0 * a * b], 2)
    return np.array([4.0 * np.pi * a * c, np.pi * a * a, np.pi * a * a])


def _sample_part(rng: np.random.Generator, primitive: _Primitive, part: int,
                 count: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform local points and normals `[count, 3]` on one part."""
    a, b, c = primitive.half_size
    if primitive.kind == "rect":
        points = np.stack([rng.uniform(-a, a, count),
                           rng.uniform(-b, b, count), np.zeros(count)], -1)
    elif primitive.kind == "sphere":
        points = rng.normal(size=(count, 3))
        points *= a / np.linalg.norm(points, axis=1, keepdims=True)
    elif primitive.kind == "box":
        points = rng.uniform(-primitive.half_size, primitive.half_size,
                             size=(count, 3))
        axis = part // 2
        points[:, axis] = primitive.half_size[axis] * (1 if part % 2 else -1)
    elif part == 0:
        angle = rng.uniform(0.0, 2.0 * np.pi, count)
        points = np.stack([a * np.cos(angle), a * np.sin(angle),
                           rng.uniform(-c, c, count)], -1)
    else:
        radius = a * np.sqrt(rng.random(count))
        angle = rng.uniform(0.0, 2.0 * np.pi, count)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle),
                           np.full(count, c if part == 1 else -c)], -1)
    parts = np.full(count, part, dtype=np.int64)
    return points, _local_normals(primitive.kind, points, parts)


def _sample_surface(rng: np.random.Generator, primitives: list[_Primitive],
                    count: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws `count` points area-uniformly over all surfaces.

    Returns:
        `(points [count, 3], normals [count, 3])`, world frame, float64.
    """
    areas = [_surface_area(primitive) for primitive in primitives]
    flat_areas = np.concatenate(areas)
    counts = rng.multinomial(count, flat_areas / flat_areas.sum())
    points, normals = [], []
    offset = 0
    for primitive, part_areas in zip(primitives, areas):
        for part in range(len(part_areas)):
            local_points, local_normals = _sample_part(
                rng, primitive, part, int(counts[offset + part]))
            points.append(local_points @ primitive.rotation.T
                          + primitive.centre)
            normals.append(local_normals @ primitive.rotation.T)
        offset += len(part_areas)
    return np.concatenate(points), np.concatenate(normals)


def _visibility(primitives: list[_Primitive], points: np.ndarray,
                intrinsics: np.ndarray, cam_from_world: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """Which surface points each camera sees.

    A point is seen by a view when it projects inside the image (between
    the first and last pixel centres) in front of the camera and the
    segment from the camera centre to it hits no surface before it
    (exact ray casting, no depth-map lookup).

    Returns:
        `[N, V]` bool.
    """
    visible = np.zeros((len(points), len(intrinsics)), dtype=bool)
    for view, (k, e) in enumerate(zip(intrinsics, cam_from_world)):
        points_cam = points @ e[:3, :3].T + e[:3, 3]
        z = points_cam[:, 2]
        in_front = z > 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            pixels = points_cam @ k.T
            x, y = pixels[:, 0] / z, pixels[:, 1] / z
        candidates = np.flatnonzero(in_front & (x >= 0.0) & (x <= width - 1)
                                    & (y >= 0.0) & (y <= height - 1))
        origin = -e[:3, :3].T @ e[:3, 3]
        t, _ = _cast(primitives, origin, points[candidates] - origin)
        visible[candidates, view] = t >= 1.0 - _VISIBILITY_TOLERANCE
    return visible


def ground_truth_surface(depths: np.ndarray, normals: np.ndarray,
                         intrinsics: np.ndarray, cam_from_world: np.ndarray,
                         voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """The surface seen by the cameras, as points thinned on a voxel grid.

    Every pixel with a surface is lifted to the world with its exact depth
    (each point lies on a surface to float32 rounding); the union over all
    views is thinned to one point per cubic voxel of edge `voxel_size`,
    keeping the first in view-then-raster order, so the density is about
    one point per `voxel_size^2` wherever some view resolves that finely.

    Args:
        depths: `[V, H, W]` depth, mm, 0 where there is no surface.
        normals: `[V, H, W, 3]` world-frame unit normals.
        intrinsics: `[V, 3, 3]`.
        cam_from_world: `[V, 4, 4]`.
        voxel_size: voxel edge, mm.

    Returns:
        `(points [N, 3], normals [N, 3])`, float32, world frame, mm.
    """
    kept_keys = np.zeros(0, dtype=np.int64)  # sorted
    points, point_normals = [], []
    # Views are merged one at a time so that memory follows the thinned
    # surface, not the V * H * W pixels.
    for depth, normal, k, extrinsic in zip(depths, normals, intrinsics,
                                           cam_from_world):
        rows, cols = np.nonzero(depth > 0)
        origin, directions = _pixel_rays(k, extrinsic, rows.astype(float),
                                         cols.astype(float))
        view_points = origin + depth[rows, cols, None] * directions
        cells = np.floor(view_points / voxel_size)
        # One integer per cell: 21 bits per axis, cells offset by 2**20.
        if np.abs(cells).max() >= 2**20:
            raise ValueError(
                f"ground_truth_surface: voxel_size={voxel_size} mm is too "
                "small for the scene's extent (over 2**20 voxels from the "
                "origin along an axis).")
        cells = cells.astype(np.int64) + 2**20
        keys = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
        keys, first = np.unique(keys, return_index=True)
        # Both key arrays are sorted and unique: look the new ones up by
        # bisection and merge by sorting.
        position = np.searchsorted(kept_keys, keys).clip(
            max=max(len(kept_keys) - 1, 0))
        new = (kept_keys[position] != keys if len(kept_keys)
               else np.ones(len(keys), dtype=bool))
        first = np.sort(first[new])  # raster order within the view
        points.append(view_points[first])
        point_normals.append(normal[rows[first], cols[first]])
        kept_keys = np.sort(np.concatenate([kept_keys, keys[new]]))
    return (np.concatenate(points).astype(np.float32),
            np.concatenate(point_normals).astype(np.float32))


# --------------------------------------------------------------------------
# Public API


def _describe(primitive: _Primitive) -> dict:
    """The geometry of a primitive as plain values.

    Keys: `kind` ("rect", "box", "sphere" or "cylinder", shapes as in
    `_Primitive`), `rotation` (3x3 world_from_local, nested lists),
    `centre` (3, mm) and `half_size` (3, mm). A world point X has local
    coordinates `rotation^T (X - centre)`.
    """
    return {"kind": primitive.kind,
            "rotation": primitive.rotation.tolist(),
            "centre": primitive.centre.tolist(),
            "half_size": primitive.half_size.tolist()}


def render_scene(config: SceneConfig) -> dict:
    """Renders one scene.

    The depth range of each view is the span [d0, d1] of its rendered depths
    widened by `config.depth_margin * (d1 - d0)` on both sides, giving
    `depth_min` and `depth_max`; the cam file's 4-field line is
    `depth_min, depth_interval = (depth_max - depth_min) / num_depths,
    num_depths, depth_max`. Readers following the PyTorch `general_eval`
    rule (or the 2-field DTU rule, `depth_min + k * 1.06 * interval` for
    k < 192) then sweep from `depth_min` to `depth_min + 191 * 1.06 *
    (depth_max - depth_min) / 192`, which is about 5 % beyond `depth_max`,
    so every visible surface lies inside the swept range.

    Args:
        config: what to render.

    Returns:
        A dict (V views, N ground-truth points):
        * `images`: `[V, H, W, 3]` uint8 RGB.
        * `depths`: `[V, H, W]` float32 camera z, mm; 0 where no surface.
        * `masks`: `[V, H, W]` bool, where a surface is hit.
        * `surface_ids`: `[V, H, W]` int32, `primitive * 8 + part`; -1
          where nothing is hit.
        * `normals`: `[V, H, W, 3]` float32 world-frame unit normals facing
          the camera; 0 where nothing is hit.
        * `intrinsics`: `[V, 3, 3]` and `cam_from_world`: `[V, 4, 4]`,
          float64.
        * `depth_min`, `depth_max`, `depth_interval`: `[V]` float64, mm;
          `num_depths`: int (the cam files' depth line).
        * `pairs`: list of `(ref_id, [(src_id, score), ...])`, best first;
          `pair_scores`: `[V, V]` float64.
        * `surface_points`, `surface_normals`: `[N, 3]` float32, world
          frame, the ground-truth surface (see `ground_truth_surface`).
        * `primitives`: list of dicts with `kind`, `rotation` (3x3
          world_from_local), `centre` and `half_size` (mm) describing the
          analytic surfaces, in surface-id order.
        * `config`: the SceneConfig.
    """
    rng = np.random.default_rng(config.seed)
    extra = np.random.default_rng([config.seed, 1])
    noise = _ValueNoise(rng)
    primitives = _build_scene(config, rng, extra)
    intrinsics, cam_from_world = _make_cameras(config, rng, extra)
    light = np.asarray(config.light_direction, float)
    light = light / np.linalg.norm(light)
    shading = dict(specular=config.specular, shadows=config.shadows,
                   light=light, ambient=config.ambient)
    gains = 1.0 + extra.uniform(-config.exposure_jitter,
                                config.exposure_jitter, config.num_views)
    height, width, num_views = config.height, config.width, config.num_views

    images = np.zeros((num_views, height, width, 3), dtype=np.uint8)
    depths = np.zeros((num_views, height, width), dtype=np.float32)
    surface_ids = np.zeros((num_views, height, width), dtype=np.int32)
    normals = np.zeros((num_views, height, width, 3), dtype=np.float32)
    pixel_rows = np.repeat(np.arange(height, dtype=np.float64), width)
    pixel_cols = np.tile(np.arange(width, dtype=np.float64), height)
    for view in range(num_views):
        # Sub-pixel offsets (dx, dy) move a ray by K^-1 [dx, dy, 0] in the
        # camera frame (z stays 1), rotated into the world.
        offsets = (np.arange(config.supersample) + 0.5) / config.supersample
        pixel_shifts = [
            (np.linalg.inv(intrinsics[view]) @ [dx - 0.5, dy - 0.5, 0.0])
            @ cam_from_world[view][:3, :3]
            for dy in offsets for dx in offsets]
        # Rays go in blocks that keep the temporaries cache-sized; whole
        # 640x512 views run about twice as slow.
        for start in range(0, height * width, _RAY_BLOCK):
            block = slice(start, start + _RAY_BLOCK)
            origin, directions = _pixel_rays(
                intrinsics[view], cam_from_world[view], pixel_rows[block],
                pixel_cols[block])
            t, surface_id = _cast(primitives, origin, directions)
            if config.supersample == 1:
                colour, block_normals = _shade(
                    primitives, noise, origin, directions, t, surface_id,
                    **shading)
            else:
                block_normals = _facing_normals(
                    primitives, origin, directions, t, surface_id)
                colour = np.zeros((len(t), 3))
                for shift in pixel_shifts:
                    sub_directions = directions + shift
                    sub_t, sub_id = _cast(primitives, origin, sub_directions)
                    colour += _shade(primitives, noise, origin,
                                     sub_directions, sub_t, sub_id,
                                     **shading)[0]
                colour /= len(pixel_shifts)
            if config.exposure_jitter:
                colour = np.clip(colour * gains[view], 0.0, 1.0)
            images[view].reshape(-1, 3)[block] = np.round(
                colour * 255.0).astype(np.uint8)
            depths[view].reshape(-1)[block] = np.where(np.isfinite(t), t,
                                                       0.0)
            surface_ids[view].reshape(-1)[block] = surface_id
            normals[view].reshape(-1, 3)[block] = block_normals
    masks = depths > 0.0

    depth_min = np.zeros(num_views)
    depth_max = np.zeros(num_views)
    for view in range(num_views):
        if not masks[view].any():
            raise ValueError(
                f"View {view} of seed {config.seed} sees no surface; the "
                "camera settings (camera_distance, cap_*) point the cameras "
                "away from the scene.")
        near = float(depths[view][masks[view]].min())
        far = float(depths[view][masks[view]].max())
        margin = config.depth_margin * (far - near)
        depth_min[view], depth_max[view] = near - margin, far + margin

    points, _ = _sample_surface(rng, primitives, config.num_pair_samples)
    visible = _visibility(primitives, points, intrinsics, cam_from_world,
                          height, width)
    seen = visible.any(axis=1)
    voxel_size = (config.camera_distance / (config.focal_scale * width)
                  if config.gt_voxel_size is None else config.gt_voxel_size)
    surface_points, surface_normals = ground_truth_surface(
        depths, normals, intrinsics, cam_from_world, voxel_size)
    centres = -np.einsum("vji,vj->vi", cam_from_world[:, :3, :3],
                         cam_from_world[:, :3, 3])
    scores = view_selection.scores_from_visibility(points[seen],
                                                   visible[seen], centres)
    return {
        "images": images,
        "depths": depths,
        "masks": masks,
        "surface_ids": surface_ids,
        "normals": normals,
        "intrinsics": intrinsics,
        "cam_from_world": cam_from_world,
        "depth_min": depth_min,
        "depth_max": depth_max,
        "depth_interval": (depth_max - depth_min) / config.num_depths,
        "num_depths": config.num_depths,
        "pairs": view_selection.select_pairs(scores, positive_only=False),
        "pair_scores": scores,
        "surface_points": surface_points,
        "surface_normals": surface_normals,
        "primitives": [_describe(primitive) for primitive in primitives],
        "config": config,
    }


def _config_record(config: SceneConfig) -> dict:
    """The config as plain JSON values, with the renderer version."""
    record = {field.name: getattr(config, field.name)
              for field in dataclasses.fields(config)}
    record["renderer_version"] = RENDERER_VERSION
    return record


def _write_png(path: Path, array: np.ndarray) -> None:
    # Fixed encoder settings and no metadata, so the bytes depend only on
    # the pixels.
    files.write_png(path, array, compress_level=6, optimize=False)


def write_scene(scene: dict, out_dir: Union[str, os.PathLike],
                overwrite: bool = False) -> Path:
    """Writes a rendered scene in the MVSNet layout.

    Files, view ids as `{id:08d}`: `images/ID.png` (8-bit RGB),
    `cams/ID_cam.txt` (4-field depth line, see `render_scene`),
    `pair.txt`, `depths/ID.pfm` (float32 depth, 0 where no surface),
    `masks/ID.png` (255 where the depth is valid), `gt_surface.ply` (float32
    x, y, z, nx, ny, nz of the ground-truth surface) and
    `scene.json` (the SceneConfig with the renderer version, and the
    analytic primitives). The folder is
    assembled under a temporary sibling name and renamed when complete, so
    a folder under the final name is never half written.

    Args:
        scene: the output of `render_scene`.
        out_dir: folder to create.
        overwrite: replace an existing `out_dir` (once the new one is
            complete); otherwise an existing non-empty folder is an error.

    Returns:
        The scene folder.

    Raises:
        FileExistsError: `out_dir` exists, is not empty and `overwrite` is
            False.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"write_scene: {out_dir} exists and is not empty; pass "
            "overwrite=True to replace it.")
    staging = files.staging_directory(out_dir)
    try:
        for sub in ("images", "cams", "depths", "masks"):
            (staging / sub).mkdir()
        for view in range(len(scene["images"])):
            name = f"{view:08d}"
            _write_png(staging / "images" / f"{name}.png",
                       scene["images"][view])
            _write_png(staging / "masks" / f"{name}.png",
                       np.where(scene["masks"][view], 255, 0).astype(
                           np.uint8))
            formats.write_pfm(staging / "depths" / f"{name}.pfm",
                              scene["depths"][view])
            formats.write_cam_file(
                staging / "cams" / f"{name}_cam.txt",
                formats.Camera(
                    intrinsics=scene["intrinsics"][view],
                    cam_from_world=scene["cam_from_world"][view],
                    depth_min=float(scene["depth_min"][view]),
                    depth_interval=float(scene["depth_interval"][view]),
                    num_depths=int(scene["num_depths"]),
                    depth_max=float(scene["depth_max"][view])))
        formats.write_pair_file(staging / "pair.txt", scene["pairs"])
        files.write_ply(staging / "gt_surface.ply", scene["surface_points"],
                        normals=scene["surface_normals"])
        record = {"config": _config_record(scene["config"]),
                  "primitives": scene["primitives"]}
        files.write_text(staging / "scene.json",
                         json.dumps(record, indent=1, sort_keys=True) + "\n")
        files.publish_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def randomized_config(seed: int, height: int = 128, width: int = 160,
                      num_views: int = BENCHMARK_NUM_VIEWS,
                      kind: Optional[str] = None) -> SceneConfig:
    """A domain-randomised SceneConfig: scenes that do not all look alike.

    Every scene draws its lighting (direction over the upper hemisphere,
    ambient 0.15-0.45), texture scale (0.5-2x, log-uniform), specular
    strength, object count (3-8), share of low-texture objects, exposure
    jitter between views (up to 8 %), camera distance, cap size and focal
    length. `kind` then stresses one thing real scenes have and the default
    scenes lack (None draws it uniformly from `SCENE_KINDS`):

    * "default": moderate values of everything;
    * "low_texture": most objects nearly uniform, coarse textures;
    * "repetitive": the checker wall and striped objects, fine textures;
    * "glossy": strong, sharp highlights (view-dependent colour);
    * "near": cameras close to the objects (a large depth range relative
      to the distance); "far": far away with a long focal length (a thin
      range);
    * "ring": cameras all around the objects (Middlebury-like);
    * "forward": a grid of parallel cameras facing the scene.

    Args:
        seed: the scene's seed (also seeds these draws).
        height, width, num_views: image size and views.
        kind: one of `SCENE_KINDS`, or None.

    Returns:
        The SceneConfig.
    """
    rng = np.random.default_rng([seed, 2])
    if kind is None:
        kind = SCENE_KINDS[rng.integers(len(SCENE_KINDS))]
    if kind not in SCENE_KINDS:
        raise ValueError(f"kind must be one of {SCENE_KINDS} or None. "
                         f"Received: kind={kind!r}")
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = rng.uniform(np.radians(25.0), np.radians(80.0))
    settings = dict(
        height=height, width=width, num_views=num_views, seed=seed,
        num_objects=int(rng.integers(3, 9)),
        light_direction=(float(np.cos(elevation) * np.cos(azimuth)),
                         float(np.cos(elevation) * np.sin(azimuth)),
                         float(np.sin(elevation))),
        ambient=float(rng.uniform(0.15, 0.45)),
        texture_scale=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        specular=float(rng.uniform(0.0, 0.5)),
        flat_fraction=float(rng.uniform(0.0, 0.3)),
        exposure_jitter=float(rng.uniform(0.0, 0.08)),
        camera_distance=float(rng.uniform(450.0, 900.0)),
        cap_elevation_deg=float(rng.uniform(35.0, 60.0)),
        cap_angle_deg=float(rng.uniform(15.0, 28.0)),
        focal_scale=float(rng.uniform(1.6, 2.6)),
        low_texture=bool(rng.random() < 0.5),
        repetitive=bool(rng.random() < 0.5),
        occluders=bool(rng.random() < 0.6),
    )
    if kind == "low_texture":
        settings.update(low_texture=True, flat_fraction=0.7,
                        texture_scale=float(rng.uniform(1.5, 3.0)))
    elif kind == "repetitive":
        settings.update(repetitive=True,
                        texture_scale=float(rng.uniform(0.4, 0.8)))
    elif kind == "glossy":
        settings.update(specular=float(rng.uniform(0.8, 1.5)))
    elif kind == "near":
        settings.update(camera_distance=float(rng.uniform(300.0, 380.0)),
                        focal_scale=float(rng.uniform(1.1, 1.5)))
    elif kind == "far":
        settings.update(camera_distance=float(rng.uniform(1300.0, 2000.0)),
                        focal_scale=float(rng.uniform(3.5, 5.0)))
    elif kind == "ring":
        settings.update(camera_layout="ring",
                        cap_elevation_deg=float(rng.uniform(20.0, 45.0)))
    elif kind == "forward":
        settings.update(camera_layout="forward",
                        cap_elevation_deg=float(rng.uniform(15.0, 35.0)),
                        forward_baseline=float(rng.uniform(0.04, 0.08)))
    return SceneConfig(**settings)


def benchmark_seeds(split: str) -> tuple[int, ...]:
    """Seeds of the fixed benchmark split "train" or "test"."""
    seeds = {"train": BENCHMARK_TRAIN_SEEDS, "test": BENCHMARK_TEST_SEEDS}
    if split not in seeds:
        raise ValueError(
            f"Benchmark split must be 'train' or 'test'. Received: "
            f"split={split!r}")
    return seeds[split]


def benchmark_dir(split: str,
                  root: Optional[Union[str, os.PathLike]] = None,
                  height: int = 128, width: int = 160,
                  num_views: int = BENCHMARK_NUM_VIEWS) -> Path:
    """The folder `ensure_benchmark` keeps a split in (it may not exist yet).

    Args: as `ensure_benchmark`.
    """
    root = (Path.home() / ".cache" / "keras_mvs" / "synthetic"
            if root is None else Path(root))
    return root / f"{split}-{height}x{width}-v{num_views}-r{RENDERER_VERSION}"


def ensure_benchmark(split: str,
                     root: Optional[Union[str, os.PathLike]] = None,
                     height: int = 128, width: int = 160,
                     num_views: int = BENCHMARK_NUM_VIEWS,
                     on_scene: Optional[Callable[[int, int], None]] = None,
                     ) -> list[Path]:
    """Returns the benchmark scenes of a split, rendering them on first use.

    The split is written once to `root/<key>/scene_{k:03d}` (scene k has
    seed `benchmark_seeds(split)[k]`, all other SceneConfig fields at their
    defaults), where the key encodes split, size, view count and renderer
    version, e.g. `train-128x160-v20-r2`. The split is rendered into a
    temporary folder and renamed into place, so an existing key folder is
    always complete; concurrent callers may both render, and the first
    rename wins.

    Args:
        split: "train" (16 scenes) or "test" (4 held-out scenes).
        root: cache folder; defaults to `~/.cache/keras_mvs/synthetic`.
        height: image height in pixels.
        width: image width in pixels.
        num_views: views per scene.
        on_scene: called as `on_scene(k, n)` before scene k (0-based) of
            the n to render is rendered; not called when the split exists.

    Returns:
        The scene folders, in seed order.
    """
    seeds = benchmark_seeds(split)
    split_dir = benchmark_dir(split, root, height, width, num_views)
    names = [f"scene_{index:03d}" for index in range(len(seeds))]
    if not split_dir.is_dir():
        staging = files.staging_directory(split_dir)
        try:
            for index, (name, seed) in enumerate(zip(names, seeds)):
                if on_scene is not None:
                    on_scene(index, len(seeds))
                config = SceneConfig(height=height, width=width,
                                     num_views=num_views, seed=seed)
                write_scene(render_scene(config), staging / name)
            # Not files.publish_directory: a split another process has
            # finished meanwhile is kept, not replaced under its readers.
            staging.chmod(files.FOLDER_MODE)
            try:
                staging.rename(split_dir)
            except OSError:
                # Another process finished the same split first.
                if not split_dir.is_dir():
                    raise
                shutil.rmtree(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return [split_dir / name for name in names]


def preview(scene: dict, view: int = 0) -> np.ndarray:
    """A rendered view beside its depth in `keras_mvs.visualize`'s colour map
    (nearest valid depth dark purple, farthest yellow, no depth black),
    `[H, 2W + 8, 3]` uint8, for documentation and quick looks."""
    image = scene["images"][view]
    depth, mask = scene["depths"][view], scene["masks"][view]
    valid = depth[mask]
    near, far = ((float(valid.min()), float(valid.max())) if valid.size
                 else (None, None))
    colours = visualize.colorize_depth(depth, mask, near, far)
    gap = np.full((image.shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([image, gap, colours], axis=1)
