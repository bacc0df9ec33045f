"""Data specs: what `--data SPEC` names, resolved to scenes.

A spec is one of:
    ""                  the built-in synthetic benchmark (rendered once into
                        ~/.cache/keras_mvs by `synthetic.ensure_benchmark`)
    a folder            one scene in MVSNet layout (with `cams/`) or a folder
                        of such scenes
    tfds:NAME[/CONFIG]  a TFDS dataset built by `tfds_builders`

`scene_dirs` gives the scene folders of a spec, `scene_dataset` the
`tf.data` scenes that `pipeline.make_dataset` assembles view tuples from.
"""

import pathlib
from typing import Callable
from typing import List
from typing import Optional
from typing import Tuple

import tensorflow as tf

from keras_mvs.data import pipeline
from keras_mvs.data import synthetic

TFDS_PREFIX = "tfds:"


def parse_tfds(spec: str) -> Optional[Tuple[str, Optional[str]]]:
    """`(NAME, CONFIG or None)` of a `tfds:NAME[/CONFIG]` spec, else None."""
    if not spec.startswith(TFDS_PREFIX):
        return None
    name, _, config = spec[len(TFDS_PREFIX):].partition("/")
    return name, config or None


def scene_dirs(spec: str, split: str, *, height: int, width: int,
               synthetic_views: int,
               on_scene: Optional[Callable[[int, int], None]] = None,
               ) -> List[pathlib.Path]:
    """Scene folders of a spec ('' = the synthetic benchmark's `split`).

    Args:
        spec: '' or a folder (a `tfds:` spec has no folders).
        split: the synthetic benchmark split ("train", "test"); ignored for
            folders.
        height, width, synthetic_views: the synthetic benchmark's rendering
            (each combination is cached in its own folder).
        on_scene: called as `on_scene(k, n)` before each synthetic scene is
            rendered.

    Raises:
        FileNotFoundError: the folder is missing or holds no scene, naming
            `--data SPEC` and what was expected.
    """
    if not spec:
        return synthetic.ensure_benchmark(
            split, height=height, width=width, num_views=synthetic_views,
            on_scene=on_scene)
    root = pathlib.Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {spec}: not a folder (expected an MVSNet-layout scene "
            "with cams/ and images/, a folder of such scenes, or "
            "tfds:NAME[/CONFIG])")
    if (root / "cams").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "cams").is_dir())
    if not found:
        raise FileNotFoundError(
            f"--data {spec}: neither a scene (no cams/ folder) nor a folder "
            "of scenes (no subfolder has cams/)")
    return found


def missing_synthetic_splits(splits, *, height: int, width: int,
                             synthetic_views: int,
                             ) -> List[Tuple[str, pathlib.Path]]:
    """`(split, folder)` of each synthetic benchmark split not rendered yet
    (each split once, in the order given)."""
    missing = []
    for split in dict.fromkeys(splits):
        folder = synthetic.benchmark_dir(split, height=height, width=width,
                                         num_views=synthetic_views)
        if not folder.is_dir():
            missing.append((split, folder))
    return missing


def scene_dataset(spec: str, split: str, *, height: int, width: int,
                  num_views: int, require_depth: bool,
                  synthetic_views: int) -> tf.data.Dataset:
    """The scenes of a spec as a dataset of scene dicts.

    Folders (and the synthetic benchmark) are checked first: every cam and
    image header is read now, so a bad file fails here with its name, not
    inside the input pipeline after the graph is built.

    Args:
        spec, split: as for `scene_dirs` (`split` also picks the TFDS
            split).
        height, width: folder scenes are resized to this.
        num_views: views per tuple, reference included (checked against
            each scene's pairs).
        require_depth: every view must have ground-truth depth.
        synthetic_views: views per synthetic benchmark scene.

    Raises:
        ValueError, FileNotFoundError: naming the bad file or spec.
    """
    tfds_spec = parse_tfds(spec)
    if tfds_spec is not None:
        from keras_mvs.data import tfds_source

        name, config = tfds_spec
        return tfds_source.scenes_from_tfds(name, split, config=config)
    dirs = scene_dirs(spec, split, height=height, width=width,
                      synthetic_views=synthetic_views)
    pipeline.check_folders(dirs, num_views=num_views,
                           require_depth=require_depth)
    return pipeline.scene_dicts_from_folders(dirs, height=height, width=width)
