r"""Renders synthetic MVS scenes to disk in the MVSNet layout.

    python -m experiments.make_synthetic --out DIR --scenes N --height H \
        --width W --views V --seed S [--specular X] [--no-low-texture] \
        [--no-repetitive] [--no-occluders] [--no-shadows] \
        [--supersample K] [--randomize | --kind KIND] [--overwrite] \
        [--preview FILE.png]

writes `DIR/scene_{k:03d}`, scene k rendered from seed S + k
(`keras_mvs.data.synthetic.write_scenes`). `--randomize` draws every scene's
look, lighting, cameras and kind (domain randomisation, the preset's
training data); `--kind KIND` draws them within one kind; both ignore the
look options. `--preview` also saves the first scene's middle view beside
its colour-mapped depth (the README image: `--scenes 1 --height 256
--width 320 --views 20 --seed 1004`).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from keras_mvs import console

console.quiet_tensorflow()  # before keras_mvs.data imports TensorFlow
from keras_mvs.data import synthetic  # noqa: E402


def main(argv=None) -> list[Path]:
    """Renders and writes the scenes; returns their folders."""
    defaults = synthetic.SceneConfig()
    parser = argparse.ArgumentParser(
        prog="python -m experiments.make_synthetic",
        description="Render synthetic multi-view stereo scenes with exact "
        "depth, cameras, pair files and ground-truth surfaces.")
    add = parser.add_argument
    add("--out", required=True, type=Path, help="scenes go to OUT/scene_KKK")
    add("--scenes", type=int, default=1, help="number of scenes (default 1)")
    add("--height", type=int, default=defaults.height)
    add("--width", type=int, default=defaults.width)
    add("--views", type=int, default=defaults.num_views)
    add("--seed", type=int, default=0, help="scene k uses seed + k")
    add("--objects", type=int, default=defaults.num_objects)
    add("--specular", type=float, default=defaults.specular,
        help="highlight strength, 0 for Lambertian scenes")
    add("--supersample", type=int, default=defaults.supersample,
        help="anti-aliasing: rays per pixel side (1 = off)")
    for flag in ("low-texture", "repetitive", "occluders", "shadows"):
        add(f"--no-{flag}", action="store_true")
    variety = parser.add_mutually_exclusive_group()
    variety.add_argument("--randomize", action="store_true",
                         help="domain-randomised scenes of every kind")
    variety.add_argument("--kind", choices=synthetic.SCENE_KINDS,
                         help="domain-randomised scenes of one kind")
    add("--overwrite", action="store_true", help="replace existing scenes")
    add("--preview", type=Path, help="PNG of the first scene's middle view "
        "beside its colour-mapped depth")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error(f"--scenes must be >= 1, got {args.scenes}")
    seeds = [args.seed + index for index in range(args.scenes)]
    try:
        base = synthetic.SceneConfig(
            height=args.height, width=args.width, num_views=args.views,
            num_objects=args.objects, specular=args.specular,
            low_texture=not args.no_low_texture,
            repetitive=not args.no_repetitive,
            occluders=not args.no_occluders, shadows=not args.no_shadows,
            supersample=args.supersample)
        configs = [synthetic.randomized_config(
            seed, args.height, args.width, args.views, kind=args.kind)
            if args.randomize or args.kind
            else dataclasses.replace(base, seed=seed) for seed in seeds]
        status = console.StatusLine()
        folders = synthetic.write_scenes(
            configs, [args.out / f"scene_{k:03d}" for k in range(args.scenes)],
            overwrite=args.overwrite, preview_path=args.preview,
            on_scene=lambda done: status.update(
                f"rendered scene {done}/{args.scenes}", force=True))
    except (ValueError, FileExistsError) as error:
        sys.exit(f"make_synthetic: {error}")
    status.close()
    console.wrote([(str(folder), f"scene, seed {seed}")
                   for folder, seed in zip(folders, seeds, strict=True)]
                  + ([(str(args.preview), "middle view beside its depth")]
                     if args.preview else []))
    return folders


if __name__ == "__main__":
    main()
