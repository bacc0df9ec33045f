"""What a synthetic scene is made of: `SceneConfig`, its checks, and the
domain-randomised configs of `randomized_config` (with the scene kinds and
the fixed benchmark split's seeds)."""

import dataclasses
from typing import Optional

import numpy as np

# The fixed benchmark split: scenes are identified by their seed alone.
BENCHMARK_TRAIN_SEEDS = tuple(range(1000, 1016))
BENCHMARK_TEST_SEEDS = tuple(range(2000, 2004))
BENCHMARK_NUM_VIEWS = 20

# The objects stand in a disc of this radius (mm) around the world origin
# (`layout`); cameras must stand outside it.
OBJECT_REGION_RADIUS = 120.0
CAMERA_LAYOUTS = ("cap", "ring", "forward")
# Scene kinds of `randomized_config`: what each one stresses.
SCENE_KINDS = ("default", "low_texture", "repetitive", "glossy", "near",
               "far", "ring", "forward")


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
        if not self.camera_distance > 2.0 * OBJECT_REGION_RADIUS:
            raise ValueError(
                "SceneConfig.camera_distance must exceed "
                f"{2.0 * OBJECT_REGION_RADIUS} mm (the object region). "
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
