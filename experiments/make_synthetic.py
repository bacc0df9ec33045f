r"""Renders synthetic MVS scenes to disk in the MVSNet layout.

    python -m experiments.make_synthetic --out DIR --scenes N --height H \
        --width W --views V --seed S [--specular X] [--no-low-texture] \
        [--no-repetitive] [--no-occluders] [--no-shadows] \
        [--supersample K] [--randomize | --kind KIND] [--overwrite] \
        [--preview FILE.png]

writes `DIR/scene_{k:03d}` for k < N, scene k rendered from seed S + k
(`keras_mvs.data.synthetic.render_scene`). `--randomize` draws every scene's
look, lighting, cameras and kind (`synthetic.randomized_config`; domain
randomisation, the preset's training data); `--kind KIND` draws them within
one kind (low_texture, repetitive, glossy, near, far, ring, forward,
default), for evaluating a model on each; both ignore the look options.
`--preview` also saves the
middle view of the first scene beside its colour-mapped depth (the README
image: `--scenes 1 --height 256 --width 320 --views 20 --seed 1004`).
"""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional
from typing import Sequence

from experiments import console

# An entry point only: TensorFlow (imported by keras_mvs.data) without its
# log noise unless --verbose.
console.quiet_tensorflow()
from keras_mvs import files  # noqa: E402
from keras_mvs.data import synthetic  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses the command line (`argv` defaults to `sys.argv[1:]`)."""
    defaults = synthetic.SceneConfig()
    parser = argparse.ArgumentParser(
        prog="python -m experiments.make_synthetic",
        description="Render synthetic multi-view stereo scenes with exact "
        "depth, cameras, pair files and ground-truth surfaces.")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder; scenes go to OUT/scene_KKK")
    parser.add_argument("--scenes", type=int, default=1,
                        help="number of scenes (default 1)")
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--views", type=int, default=defaults.num_views,
                        help=f"views per scene (default {defaults.num_views})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the first scene; scene k uses seed+k")
    parser.add_argument("--objects", type=int, default=defaults.num_objects)
    parser.add_argument("--specular", type=float, default=defaults.specular,
                        help="highlight strength, 0 for Lambertian scenes")
    parser.add_argument("--supersample", type=int,
                        default=defaults.supersample,
                        help="anti-aliasing: rays per pixel side (1 = off)")
    for flag in ("low-texture", "repetitive", "occluders", "shadows"):
        parser.add_argument(f"--no-{flag}", action="store_true",
                            help=f"disable {flag.replace('-', ' ')}")
    variety = parser.add_mutually_exclusive_group()
    variety.add_argument("--randomize", action="store_true",
                         help="domain-randomised scenes of every kind")
    variety.add_argument("--kind", choices=synthetic.SCENE_KINDS,
                         help="domain-randomised scenes of one kind")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing scene folders")
    parser.add_argument("--preview", type=Path, default=None,
                        help="PNG file for the first scene's middle view "
                        "beside its colour-mapped depth")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error(f"--scenes must be >= 1, got {args.scenes}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> list[Path]:
    """Renders and writes the scenes; returns their folders."""
    args = parse_args(argv)
    try:
        base = synthetic.SceneConfig(
            height=args.height, width=args.width, num_views=args.views,
            seed=args.seed, num_objects=args.objects,
            specular=args.specular, low_texture=not args.no_low_texture,
            repetitive=not args.no_repetitive,
            occluders=not args.no_occluders, shadows=not args.no_shadows,
            supersample=args.supersample)
    except ValueError as error:
        sys.exit(f"make_synthetic: {error}")
    folders = [args.out / f"scene_{index:03d}" for index in range(args.scenes)]
    existing = [folder for folder in folders
                if folder.exists() and any(folder.iterdir())]
    if existing and not args.overwrite:
        # Checked before rendering so that nothing is half done.
        sys.exit(f"make_synthetic: {existing[0]} exists and is not empty; "
                 "pass --overwrite to replace it")
    status = console.StatusLine()
    for index, folder in enumerate(folders):
        if args.randomize or args.kind:
            config = synthetic.randomized_config(
                args.seed + index, args.height, args.width, args.views,
                kind=args.kind)
        else:
            config = dataclasses.replace(base, seed=args.seed + index)
        scene = synthetic.render_scene(config)
        synthetic.write_scene(scene, folder, overwrite=args.overwrite)
        if index == 0 and args.preview is not None:
            files.write_png(args.preview, synthetic.preview(
                scene, view=config.num_views // 2), compress_level=9)
        status.update(f"rendered scene {index + 1}/{args.scenes}",
                      force=True)
    status.close()
    items = [(str(folder), f"scene, seed {args.seed + index}")
             for index, folder in enumerate(folders)]
    if args.preview is not None:
        items.append((str(args.preview), "middle view beside its depth"))
    console.wrote(items)
    return folders


if __name__ == "__main__":
    main()
