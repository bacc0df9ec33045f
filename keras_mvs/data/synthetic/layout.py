"""Scene construction: the analytic primitives (ground, back wall, objects,
occluders) with their materials, and the cameras placed around them.

Every draw comes from the generators `render_scene` passes in, in a fixed
order, so one seed gives one scene.
"""

import dataclasses
from typing import Optional

import numpy as np

from keras_mvs.data.synthetic import scene_config

# Scene layout in millimetres. The objects stand in a disc around the world
# origin; the ground and the back wall are large enough to fill the views of
# the default camera cap.
_GROUND_HALF_X = 420.0
_GROUND_Y_RANGE = (-420.0, 300.0)
_WALL_HEIGHT = 450.0


@dataclasses.dataclass(frozen=True)
class Material:
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
class Primitive:
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
    material: Material


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _random_material(rng: np.random.Generator, pattern: str) -> Material:
    """Draws colours and pattern parameters; the draw count is fixed."""
    colour_a = rng.uniform(0.25, 0.9, size=3)
    colour_b = np.clip(
        colour_a * rng.uniform(0.25, 0.6) + rng.uniform(-0.08, 0.08, size=3),
        0.02, 1.0)
    periods = {"noise": rng.uniform(18.0, 40.0),
               "stripes": rng.uniform(8.0, 18.0),
               "checker": rng.uniform(10.0, 24.0)}
    return Material(
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


def build_scene(config: scene_config.SceneConfig, rng: np.random.Generator,
                extra: np.random.Generator) -> list[Primitive]:
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
        distance = rng.uniform(0.0, scene_config.OBJECT_REGION_RADIUS, size=2)
        ground_material = dataclasses.replace(
            ground_material,
            blank_patches=np.stack([distance * np.cos(angle),
                                    distance * np.sin(angle), radius], -1))
    y_low, y_high = _GROUND_Y_RANGE
    primitives.append(Primitive(
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
        primitives.append(Primitive(
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
            radius = scene_config.OBJECT_REGION_RADIUS * np.sqrt(rng.random())
            angle = rng.uniform(0.0, 2.0 * np.pi)
            x, y = radius * np.cos(angle), radius * np.sin(angle)
            if all(np.hypot(x - px, y - py) > footprint + pf + 5.0
                   for px, py, pf in placed):
                break
        placed.append((x, y, footprint))
        primitives.append(Primitive(kind, rotation, np.array([x, y, height]),
                                    half_size, material))

    if config.occluders:
        # Poles on the camera side of the object region: each hides part of
        # the objects from some views and not from others.
        for _ in range(2):
            angle = -0.5 * np.pi + rng.uniform(-1.0, 1.0)
            distance = rng.uniform(140.0, 190.0)
            radius, half_height = rng.uniform([5.0, 90.0], [9.0, 140.0])
            primitives.append(Primitive(
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


def _camera_directions(config: scene_config.SceneConfig,
                       extra: np.random.Generator) -> np.ndarray:
    """Unit directions `[V, 3]` from the look-at point to each camera.

    "cap": a Fibonacci spiral on the spherical cap (near-uniform spacing for
    any view count); "ring": evenly spaced azimuths on a full circle at the
    cap's elevation, jittered by up to a quarter step and 3 degrees in
    elevation; "forward": every camera on the cap's axis (the grid offsets
    are added in `make_cameras`).
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


def make_cameras(config: scene_config.SceneConfig, rng: np.random.Generator,
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
