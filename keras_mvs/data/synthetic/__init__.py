"""Synthetic multi-view stereo scenes with exact geometry (numpy only).

This package renders DTU-like scenes: a textured ground and back wall with
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

One module per job, the public names re-exported here:

* `scene_config`: `SceneConfig`, `randomized_config`, the scene kinds and
  the benchmark seeds.
* `layout`: the primitives, their materials and the cameras.
* `raycast`: exact ray-primitive intersection, normals, pixel rays.
* `shading`: procedural textures and the lighting model.
* `surface`: surface samples, their visibility, the ground-truth surface.
* `render`: `render_scene`.
* `output`: `write_scene`, `write_scenes`, the cached benchmark, `preview`.
"""

from keras_mvs.data.synthetic.output import benchmark_dir
from keras_mvs.data.synthetic.output import benchmark_seeds
from keras_mvs.data.synthetic.output import ensure_benchmark
from keras_mvs.data.synthetic.output import preview
from keras_mvs.data.synthetic.output import scene_camera
from keras_mvs.data.synthetic.output import write_scene
from keras_mvs.data.synthetic.output import write_scenes
from keras_mvs.data.synthetic.render import RENDERER_VERSION
from keras_mvs.data.synthetic.render import render_scene
from keras_mvs.data.synthetic.scene_config import BENCHMARK_NUM_VIEWS
from keras_mvs.data.synthetic.scene_config import BENCHMARK_TEST_SEEDS
from keras_mvs.data.synthetic.scene_config import BENCHMARK_TRAIN_SEEDS
from keras_mvs.data.synthetic.scene_config import CAMERA_LAYOUTS
from keras_mvs.data.synthetic.scene_config import SCENE_KINDS
from keras_mvs.data.synthetic.scene_config import SceneConfig
from keras_mvs.data.synthetic.scene_config import randomized_config
from keras_mvs.data.synthetic.surface import ground_truth_surface
