"""Reconstruct a scene: depth maps, filtering and fusion to a coloured PLY.

    python -m experiments.reconstruct --images PHOTOS --model PATH --out DIR
        [--sfm-matcher auto|exhaustive|sequential]
        [--sfm-mapper auto|incremental|global] [--sfm-camera-model M]
        [--sfm-max-features N] [--sfm-init-pair A.jpg,B.jpg] [...]
    python -m experiments.reconstruct --scene DIR --model PATH --out DIR
        [--max-height H] [--max-width W] [--views V] [--num-depths 48,32,8]
        [--filter pcd|dypcd|PRESET] [--conf C | --conf C1,C2,C3]
        [--min-consistent-views N] [--images DIR] [--memory-budget-gb G]
        [--gt-ply GT.ply|POINTS.npz [--threshold T] [--max-distance D]]
        [--render VIEW.png]

`--scene` is a folder in MVSNet layout (images/, cams/, pair.txt) or a
COLMAP model (cameras, images and points3D as .bin or .txt, in DIR,
DIR/sparse or DIR/sparse/0) with its undistorted images (`--images`, or an
`images/` folder beside the model, as COLMAP's image_undistorter writes it).
A COLMAP model is converted first (`keras_mvs.data.colmap`) into
OUT/mvsnet_scene/, which holds the cams, depth ranges and pair.txt used.

Without `--scene`, `--images` is a folder of photos: structure from motion
(`keras_mvs.data.sfm`: features, matching, mapping, undistortion) runs into
OUT/sfm/, its model is converted into OUT/mvsnet_scene/, and the scene is
reconstructed from there. Images that did not register are named in the
log and in summary.json (`sfm`); with few registered views the pcd
filter's consistent-source count is lowered to what the pair lists hold
(`adapted` in summary.json) unless `--min-consistent-views` is given.

`--model` is a preset name (`keras_mvs.presets`; the default is the shipped
`synthetic_unity`), a training work directory, a `.keras` file or an
exported SavedModel. Outputs under OUT: `depth/`, `confidence/`, `previews/`,
`cams/` (K at the depth-map resolution), `images/` (the network-size
reference images), `fused.ply` and `summary.json` (written last).
`--num-depths` rebuilds a Keras network with other hypotheses per stage and
the same weights (not possible for SavedModels).

Filters (ALGORITHMS.md 6.3): `pcd` is CasMVSNet's (final confidence > 0.9,
1 px, 1 %, 5 consistent sources), `dypcd` UniMVSNet's dynamic check (stage
confidences > 0.1, 0.15, 0.9); any `keras_mvs.fusion.FilterConfig` preset
name works too. `--conf` replaces the confidence thresholds.
"""

import argparse
import dataclasses
import pathlib
import shutil
import sys
import time
from typing import Optional
from typing import Sequence

# What the user should do when no model is given (DESIGN.md 10).
NO_MODEL_MESSAGE = (
    "--model is required: a training work directory, a .keras file or an "
    "exported SavedModel. Without trained weights the cloud would be "
    "meaningless. Get one by training, e.g. `python -m "
    "experiments.train_clmvs --workdir runs/clmvs --data SCENE_ROOT` "
    "(unsupervised: needs only images and cameras) or `python -m "
    "experiments.train_unimvs --workdir runs/unimvs` (supervised), or by "
    "converting an official PyTorch checkpoint with `python -m "
    "experiments.convert_checkpoint --state-dict FILE --out model.keras`.")

# Depth-range multipliers of the 1st / 99th percentile of the sparse-point
# depths for scenes made by structure from motion. colmap2mvsnet's 0.75 /
# 1.25 (keras_mvs.data.colmap) span 2.8x the depth extent of the Middlebury
# dino's bounding box, and with the phase-1 unity model at 320x224 the pcd
# filter then kept 5 k points on the dino and 11 k on the temple; 0.9 / 1.1
# still covers both rings' bounding boxes and kept 105 k and 48 k.
SFM_NEAR_FACTOR = 0.9
SFM_FAR_FACTOR = 1.1

# What a reconstruction writes into --out (sfm/ and mvsnet_scene/, the
# inputs it derived, are kept): a rerun with --overwrite removes these first.
RESULT_NAMES = ("summary.json", "fused.ply", "depth", "confidence",
                "previews", "cams", "images")

# --filter shorthands for the FilterConfig presets.
FILTER_ALIASES = {"pcd": "casmvsnet", "dypcd": "unimvsnet_dypcd"}


def _num_depths(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 8 or v % 8 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected three multiples of 8 such as 48,32,8; received "
            f"{text!r}")
    return values


def _thresholds(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3) or any(not 0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected one confidence threshold in [0, 1) or three (stages "
            f"1, 2, 3) such as 0.1,0.15,0.9; received {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer; received {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (DESIGN.md 11)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reconstruct",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene",
                        help="MVSNet-layout folder or COLMAP model folder "
                        "(omit to run structure from motion on --images)")
    parser.add_argument("--model",
                        help="preset name, work directory, .keras file or "
                        "SavedModel (default: the synthetic_unity preset)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the reconstruction already in --out")
    parser.add_argument("--images",
                        help="with --scene COLMAP: the undistorted images "
                        "folder; without --scene: the photos to run "
                        "structure from motion on")
    parser.add_argument("--sfm-matcher", default="auto",
                        choices=("auto", "exhaustive", "sequential"),
                        help="feature matching (auto: exhaustive up to 100 "
                        "images, else sequential in name order)")
    parser.add_argument("--sfm-mapper", default="auto",
                        choices=("auto", "incremental", "global"),
                        help="mapping (auto: incremental, plus global when "
                        "images are left out; the model registering most "
                        "images is kept)")
    parser.add_argument("--sfm-camera-model", default="SIMPLE_PINHOLE",
                        help="COLMAP camera model shared by the photos "
                        "(SIMPLE_RADIAL or OPENCV for lenses with visible "
                        "distortion)")
    parser.add_argument("--sfm-max-features", type=_positive_int,
                        default=8192, help="SIFT features per image")
    parser.add_argument("--sfm-init-pair",
                        help="two image names to start the incremental "
                        "mapper from, comma-separated")
    parser.add_argument("--max-height", type=_positive_int, default=864,
                        help="largest network input height (default 864)")
    parser.add_argument("--max-width", type=_positive_int, default=1152,
                        help="largest network input width (default 1152)")
    parser.add_argument("--views", type=_positive_int, default=5,
                        help="views per inference, reference included "
                        "(default 5)")
    parser.add_argument("--num-depths", type=_num_depths,
                        help="hypotheses per stage, e.g. 48,32,8 (Keras "
                        "models only)")
    parser.add_argument("--filter", default="pcd",
                        help="pcd (default), dypcd or a FilterConfig preset "
                        "name")
    parser.add_argument("--conf", type=_thresholds,
                        help="confidence threshold(s): one for the final "
                        "confidence or three for the stages")
    parser.add_argument("--min-consistent-views", type=_positive_int,
                        help="pcd: consistent sources a pixel needs")
    parser.add_argument("--memory-budget-gb", type=float,
                        help="memory the largest cost volume may take "
                        "(default: available RAM on CPU, unchecked on GPU)")
    parser.add_argument("--gt-ply", help="ground-truth points (PLY, or .npz "
                        "with xyz) to evaluate the fused cloud against")
    parser.add_argument("--threshold", type=float, default=1.0,
                        help="precision/recall distance, depth units")
    parser.add_argument("--max-distance", type=float, default=20.0,
                        help="accuracy/completeness cut-off, depth units")
    parser.add_argument("--render", help="write a rendered view of the "
                        "fused cloud to this PNG")
    parser.add_argument("--render-size", default="640x480",
                        help="render WIDTHxHEIGHT")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's log messages")
    return parser


def filter_config(name: str, conf: Optional[tuple],
                  min_views: Optional[int]):
    """The FilterConfig of `--filter`, `--conf` and
    `--min-consistent-views`."""
    from keras_mvs import fusion

    overrides = {}
    if conf is not None:
        overrides["confidence_thresholds"] = conf
    if min_views is not None:
        overrides["min_consistent_views"] = min_views
    return fusion.FilterConfig.preset(FILTER_ALIASES.get(name, name),
                                      **overrides)


def open_scene(scene_dir: pathlib.Path, images: Optional[str],
               out_dir: pathlib.Path):
    """An MVSScene for `--scene`: the folder itself, or the conversion of a
    COLMAP model written to OUT/mvsnet_scene.

    Raises:
        ValueError: the folder is neither layout (message lists both).
    """
    from keras_mvs.data import colmap
    from keras_mvs.data import scene as scene_lib

    if not scene_dir.is_dir():
        raise ValueError(f"--scene {scene_dir}: no such folder")
    if (scene_dir / "cams").is_dir() and (scene_dir / "pair.txt").is_file():
        if images:
            raise ValueError(
                f"--images is for COLMAP models; {scene_dir} is an MVSNet "
                "folder, whose images/ is used")
        return scene_lib.MVSScene(scene_dir)
    model_dir = colmap.find_model_dir(scene_dir)
    if model_dir is None:
        found = sorted(p.name for p in scene_dir.iterdir())[:8]
        raise ValueError(
            f"--scene {scene_dir}: expected an MVSNet-layout folder (cams/, "
            "images/, pair.txt) or a COLMAP model (cameras, images and "
            "points3D .bin or .txt in the folder, its sparse/ or "
            f"sparse/0/); found {found}")
    conversion = colmap.convert(model_dir, images)
    target = colmap.write_mvsnet_folder(conversion, out_dir / "mvsnet_scene",
                                        link_images=True, overwrite=True)
    print(f"COLMAP model {model_dir}: {len(conversion.names)} views "
          f"converted to {target}")
    return scene_lib.MVSScene(target)


def sfm_options(args: argparse.Namespace):
    """The SfmOptions of the --sfm-* flags.

    Raises:
        ValueError: an invalid value (the message names the flag).
    """
    from keras_mvs.data import sfm

    init = None
    if args.sfm_init_pair:
        init = tuple(name.strip() for name in args.sfm_init_pair.split(","))
        if len(init) != 2:
            raise ValueError(
                f"--sfm-init-pair: expected two image names separated by a "
                f"comma; received {args.sfm_init_pair!r}")
    if args.sfm_camera_model not in sfm.CAMERA_MODELS:
        raise ValueError(
            f"--sfm-camera-model: expected one of {sfm.CAMERA_MODELS}; "
            f"received {args.sfm_camera_model!r}")
    return sfm.SfmOptions(
        matcher=args.sfm_matcher, mapper=args.sfm_mapper,
        camera_model=args.sfm_camera_model,
        max_num_features=args.sfm_max_features, init_image_names=init)


def scene_from_photos(images: pathlib.Path, out_dir: pathlib.Path, options):
    """Structure from motion on a folder of photos into OUT/sfm, converted
    to OUT/mvsnet_scene.

    Returns:
        `(MVSScene, sfm record)`: the record is `SfmResult.to_json()` plus
        `views_without_sources`, registered images no other view shares
        points with (they get no depth map).

    Raises:
        ValueError: a bad photo set or a failed conversion (`SfmError`,
            `ColmapError`; the message names the file or the problem).
    """
    from keras_mvs.data import colmap
    from keras_mvs.data import scene as scene_lib
    from keras_mvs.data import sfm

    try:
        result = sfm.run_sfm(images, out_dir / "sfm", options)
    except RuntimeError as error:  # pycolmap's own failures
        raise ValueError(
            f"structure from motion on {images} failed: {error}") from None
    conversion = colmap.convert(result.model_dir, result.images_dir,
                                near_factor=SFM_NEAR_FACTOR,
                                far_factor=SFM_FAR_FACTOR)
    target = colmap.write_mvsnet_folder(conversion, out_dir / "mvsnet_scene",
                                        link_images=True, overwrite=True)
    print(f"conversion: {len(conversion.names)} views with depth ranges "
          f"({SFM_NEAR_FACTOR} x 1st to {SFM_FAR_FACTOR} x 99th percentile "
          f"of the sparse depths) and pairs in {target}")
    record = result.to_json()
    record["views_without_sources"] = [
        conversion.names[ref] for ref, sources in conversion.pairs
        if not sources]
    return scene_lib.MVSScene(target), record


def fit_filter_to_pairs(config, pairs) -> tuple:
    """Lowers the pcd filter's consistent-source count to the most sources
    any pair list holds (few registered views give short lists).

    Args:
        config: the `fusion.FilterConfig`.
        pairs: the scene's `[(ref, [(src, score), ...]), ...]`.

    Returns:
        `(config, adapted)`: `adapted` maps each changed field to
        `{"requested", "used", "reason"}` (empty when nothing changed).
    """
    available = max((len(sources) for _, sources in pairs), default=0)
    if config.max_source_views is not None:
        available = min(available, config.max_source_views)
    if (config.method != "pcd" or available < 1
            or config.min_consistent_views <= available):
        return config, {}
    adapted = {"min_consistent_views": {
        "requested": config.min_consistent_views, "used": available,
        "reason": f"{len(pairs)} registered views: the pair lists hold at "
                  f"most {available} source views"}}
    return dataclasses.replace(config, min_consistent_views=available), adapted


def _print_summary(summary: dict, out_dir: pathlib.Path) -> None:
    print(f"\n{'view':>8} {'size':>11} {'points':>9} {'photo rej':>9} "
          f"{'geo rej':>8}")
    for view in summary["views"]:
        print(f"{view['view_id']:>8} {view['width']:>5}x{view['height']:<5} "
              f"{view['points_kept']:>9} "
              f"{100 * view['photometric_rejection']:>8.1f}% "
              f"{100 * view['geometric_rejection']:>7.1f}%")
    totals, timing = summary["totals"], summary["timing"]
    print(f"fused {totals['num_points']} points from {totals['num_views']} "
          f"views; photometric filter removed "
          f"{100 * totals['photometric_rejection']:.1f} % of pixels, "
          f"geometric filter {100 * totals['geometric_rejection']:.1f} %")
    print(f"time: inference {timing['inference_seconds']:.1f} s "
          f"({timing['inference_seconds_per_view']:.2f} s/view), fusion "
          f"{timing['fusion_seconds']:.1f} s")
    for hint in summary["diagnosis"]:
        print(f"note: {hint}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.scene and not args.images:
        parser.error("expected --scene (an MVSNet or COLMAP folder) or "
                     "--images (a folder of photos for structure from "
                     "motion)")
    if not args.model:
        from keras_mvs import presets

        if not presets.is_preset(presets.DEFAULT_PRESET):
            parser.exit(2, f"reconstruct: error: {NO_MODEL_MESSAGE}\n")
        args.model = presets.DEFAULT_PRESET
        description = presets.preset_info(args.model)["description"]
        print(f"No --model given: using the shipped preset "
              f"{args.model!r} ({description})")
    try:
        render_width, render_height = (
            int(v) for v in args.render_size.lower().split("x"))
    except ValueError:
        parser.error(f"--render-size: expected WIDTHxHEIGHT such as 640x480; "
                     f"received {args.render_size!r}")
    if args.gt_ply and not pathlib.Path(args.gt_ply).is_file():
        parser.error(f"--gt-ply {args.gt_ply}: no such file")
    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        parser.error(f"--memory-budget-gb must be positive; received "
                     f"{args.memory_budget_gb}")
    # Checked before anything is loaded: --out must be a folder, and a
    # previous reconstruction in it is replaced only when asked; its result
    # files go first, so a failed rerun never leaves an old fused.ply
    # looking like its result.
    out_dir = pathlib.Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"reconstruct: error: --out {out_dir}: a file, not a folder",
              file=sys.stderr)
        return 2
    previous = [out_dir / name for name in RESULT_NAMES
                if (out_dir / name).exists()]
    if previous and not args.overwrite:
        print(f"reconstruct: error: --out {out_dir} holds a previous "
              f"reconstruction ({previous[0].name}); pass --overwrite to "
              "replace it, or choose another folder", file=sys.stderr)
        return 2
    for path in previous:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    # TensorFlow is imported only once the arguments are known to be sound,
    # and without its log noise unless --verbose.
    from experiments import console

    console.quiet_tensorflow(["--verbose"] if args.verbose else [])
    from keras_mvs import files
    from keras_mvs import inference
    from keras_mvs import reconstruct as reconstruct_lib

    try:
        config = filter_config(args.filter, args.conf,
                               args.min_consistent_views)
    except ValueError as error:
        parser.error(f"--filter/--conf: {error}")
    sfm_record, adapted = None, {}
    try:
        if args.scene:
            scene = open_scene(pathlib.Path(args.scene), args.images,
                               out_dir)
        else:
            # summary.json marks a complete run: none while SfM runs.
            (out_dir / "summary.json").unlink(missing_ok=True)
            scene, sfm_record = scene_from_photos(
                pathlib.Path(args.images), out_dir, sfm_options(args))
            if args.min_consistent_views is None:
                config, adapted = fit_filter_to_pairs(config, scene.pairs)
            for field, change in adapted.items():
                print(f"adapted: {field} {change['requested']} -> "
                      f"{change['used']} ({change['reason']})")
        # Every cam file and image header the run will read, before the
        # model is loaded: a bad file in view 15 fails now, not after views
        # 0-14 were written.
        from keras_mvs.data import pipeline

        pipeline.check_folders([scene.root], num_views=args.views)
    except (ValueError, FileNotFoundError) as error:
        # FormatError, SfmError and ColmapError are ValueErrors naming the
        # file and the problem.
        print(f"reconstruct: error: {error}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        predictor = inference.load_model(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"reconstruct: error: {error}", file=sys.stderr)
        return 2
    try:
        if args.num_depths is not None:
            predictor = reconstruct_lib.with_num_depths(predictor,
                                                        args.num_depths)
        load_seconds = time.perf_counter() - start
        budget = ("auto" if args.memory_budget_gb is None
                  else int(args.memory_budget_gb * 2**30))
        settings = {"command": " ".join(sys.argv if argv is None
                                        else ["reconstruct", *argv]),
                    "scene_name": scene.name}
        summary = reconstruct_lib.reconstruct(
            scene, predictor, out_dir, num_views=args.views,
            max_height=args.max_height, max_width=args.max_width,
            filter_config=config, memory_budget_bytes=budget,
            verbose=0 if args.quiet else 1, settings=settings)
    except reconstruct_lib.ReconstructionError as error:
        print(f"reconstruct: error: {error}", file=sys.stderr)
        return 1
    summary["timing"]["model_load_seconds"] = load_seconds
    if sfm_record is not None:
        summary["sfm"] = sfm_record
        summary["adapted"] = adapted
        summary["timing"]["sfm_seconds"] = sfm_record["timing"][
            "total_seconds"]
        print(f"sfm: {sfm_record['num_registered']} of "
              f"{sfm_record['num_images']} images registered"
              + (f"; not registered: {', '.join(sfm_record['unregistered'])}"
                 if sfm_record["unregistered"] else ""))
    _print_summary(summary, out_dir)
    if "masks" in summary:
        masks = summary["masks"]
        print(f"object masks ({masks['masked_views']} views): "
              f"{100 * masks['projection_fraction']:.1f} % of projections "
              f"inside, {100 * masks['hull_fraction']:.1f} % of points inside "
              "the visual hull")

    if args.gt_ply or args.render:
        points, colors, _ = files.read_ply(str(out_dir / "fused.ply"))
    if args.gt_ply:
        metrics = reconstruct_lib.evaluate_against(
            points, args.gt_ply, args.threshold, args.max_distance)
        summary["evaluation"] = {"gt_ply": str(args.gt_ply), **metrics}
        print(f"against {args.gt_ply}: accuracy {metrics['accuracy']:.4g}, "
              f"completeness {metrics['completeness']:.4g}, overall "
              f"{metrics['overall']:.4g}; at {args.threshold:g}: precision "
              f"{metrics['precision']:.4f}, recall {metrics['recall']:.4f}, "
              f"F-score {metrics['fscore']:.4f}")
    if args.render:
        forward, up = reconstruct_lib.render_views_direction(
            scene, [v["view_id"] for v in summary["views"]])
        size = reconstruct_lib.write_render(
            args.render, points, colors, forward, up, render_width,
            render_height)
        summary["render"] = {"path": str(args.render), "bytes": size}
    files.write_json(out_dir / "summary.json", summary)
    _print_outputs(out_dir, args.render)
    return 0


def _print_outputs(out_dir: pathlib.Path, render: Optional[str]) -> None:
    from experiments import console

    items = [(out_dir / name, what) for name, what in (
        ("mvsnet_scene", "the COLMAP model converted to MVSNet layout"),
        ("depth", "depth maps (PFM)"),
        ("confidence", "confidence maps (PFM)"),
        ("previews", "depth and confidence PNGs with colour bars"),
        ("cams", "cameras at the depth-map resolution"),
        ("images", "the reference images as the network saw them"),
        ("fused.ply", "the fused point cloud: python -m experiments.render "
         f"{out_dir / 'fused.ply'} --out view.png"),
        ("summary.json", "per-view points, rejection rates, timing"))]
    if render:
        items.append((pathlib.Path(render), "the rendered view"))
    console.wrote([(str(path), what) for path, what in items],
                  root=str(out_dir))


if __name__ == "__main__":
    sys.exit(main())
