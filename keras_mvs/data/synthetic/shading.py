"""Textures and shading: procedural albedo (value noise, stripes, checkers)
on each object's local coordinates, Lambertian light with cast shadows and
an optional Blinn-Phong highlight (the only view-dependent term)."""

import numpy as np

from keras_mvs.data.synthetic import layout
from keras_mvs.data.synthetic import raycast

# Direction towards the fixed light (unit vector, world frame).
_LIGHT_DIRECTION = np.array([-0.3, -0.5, 0.8]) / np.linalg.norm(
    [-0.3, -0.5, 0.8])
_LIGHT_DIRECTION.setflags(write=False)
_AMBIENT = 0.25
_BACKGROUND_GREY = 0.05
# Shadow rays start this far (mm) off the surface so that they do not hit
# the surface they leave.
_SHADOW_OFFSET = 1e-3


class ValueNoise:
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


def _surface_uv(primitive: layout.Primitive, points: np.ndarray,
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


def _albedo(primitive: layout.Primitive, noise: ValueNoise, points: np.ndarray,
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


def shade(primitives: list[layout.Primitive], noise: ValueNoise,
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
    normals = raycast.facing_normals(primitives, origin, directions, t,
                                     surface_id)
    hit = surface_id >= 0
    points = origin + np.where(hit, t, 0.0)[:, None] * directions
    albedo = np.zeros((len(t), 3))
    specular_scale = np.zeros(len(t))
    shininess = np.ones(len(t))
    index = surface_id // raycast.PARTS_PER_PRIMITIVE
    for number, primitive in enumerate(primitives):
        rows = np.flatnonzero(index == number)
        if len(rows) == 0:
            continue
        part = (surface_id[rows] % raycast.PARTS_PER_PRIMITIVE).astype(np.int64)
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
        blocker_t, _ = raycast.cast(
            primitives, shadow_origins,
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
