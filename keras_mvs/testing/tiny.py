"""Tiny scenes, batches and networks for the training tests.

Everything here is small enough for a 2-core CPU: 32x64 images (H and W must
be multiples of 32 and the 1/4-resolution stage divisible by 8, so 32x40 is
not a valid size for the cascade), a few views, 8-16 hypotheses per stage.
"""

from typing import Dict
from typing import Sequence

import numpy as np

TINY_HEIGHT = 32
TINY_WIDTH = 64
TINY_NUM_DEPTHS = (16, 8, 8)


def scene_batch(num_views: int = 3, height: int = TINY_HEIGHT,
                width: int = TINY_WIDTH, seed: int = 0,
                batch_size: int = 1, **scene_kwargs) -> Dict[str, np.ndarray]:
    """A training batch dict (pipeline contract) cut from one rendered scene.

    Batch element b uses view b as its reference and the next `num_views - 1`
    views (cyclically) as sources; the scene-level branch's views are the
    reference plus the following ones. Every key the three branches read is
    present: `images`, `intrinsics`, `cam_from_world`, `depth_range`, `depth`,
    `mask`, `icc_images`, `scc_images`, `scc_intrinsics`,
    `scc_cam_from_world`.

    Args:
        num_views: views per sample (reference first).
        height: image height (multiple of 32).
        width: image width (multiple of 32).
        seed: the scene's seed.
        batch_size: samples; each takes a different reference view.
        **scene_kwargs: further `synthetic.SceneConfig` fields.
    """
    from keras_mvs.data import synthetic

    total = max(2 * num_views + batch_size, 8)
    scene = synthetic.render_scene(synthetic.SceneConfig(
        height=height, width=width, num_views=total, seed=seed,
        **scene_kwargs))
    samples = []
    for b in range(batch_size):
        views = [(b + k) % total for k in range(num_views)]
        scc = [b] + [(b + num_views + k) % total
                     for k in range(num_views - 1)]
        sample = {
            "images": scene["images"][views] / 255.0,
            "intrinsics": scene["intrinsics"][views],
            "cam_from_world": scene["cam_from_world"][views],
            "depth_range": np.array([scene["depth_min"][b],
                                     scene["depth_max"][b]]),
            "depth": scene["depths"][b],
            "mask": scene["masks"][b],
            "scc_images": scene["images"][scc] / 255.0,
            "scc_intrinsics": scene["intrinsics"][scc],
            "scc_cam_from_world": scene["cam_from_world"][scc],
        }
        sample["icc_images"] = sample["images"]
        samples.append(sample)
    return {key: np.stack([s[key] for s in samples]).astype(np.float32)
            for key in samples[0]}


def tiny_network(head: str = "unity", aggregation: str = "adaptive",
                 num_depths: Sequence[int] = TINY_NUM_DEPTHS, **kwargs):
    """A `CascadeMVSNet` with few hypotheses (the default channel widths)."""
    from keras_mvs import models

    return models.CascadeMVSNet(num_depths=tuple(num_depths), head=head,
                                aggregation=aggregation, **kwargs)


def sideways_rig_inputs(num_views: int, height: int,
                        width: int) -> Dict[str, np.ndarray]:
    """Network inputs of random images (`default_rng(0)`) seen by a
    sideways rig of identical cameras (focal 0.8 W, centred principal
    point, centres 0.1 apart along x) over a 2-6 depth range: a cost and
    equivalence probe, not a scene with meaningful depth."""
    rng = np.random.default_rng(0)
    focal = 0.8 * width
    intrinsics = np.array([[focal, 0.0, width / 2.0],
                           [0.0, focal, height / 2.0],
                           [0.0, 0.0, 1.0]], np.float32)
    cam_from_world = np.tile(np.eye(4, dtype=np.float32),
                             (1, num_views, 1, 1))
    cam_from_world[0, :, 0, 3] = -0.1 * np.arange(num_views)
    return {
        "images": rng.uniform(size=(1, num_views, height, width, 3)).astype(
            np.float32),
        "intrinsics": np.tile(intrinsics, (1, num_views, 1, 1)),
        "cam_from_world": cam_from_world,
        "depth_range": np.array([[2.0, 6.0]], np.float32),
    }
