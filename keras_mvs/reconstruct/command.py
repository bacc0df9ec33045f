"""The reconstruct command (`python -m experiments.reconstruct`).

`build_parser` defines its flags (DESIGN.md 11), `check_arguments` refuses
what argparse cannot (one line, exit status 2), and `run` does the rest:
the output folder check, the scene (`scenes`), the model, `reconstruct`,
the optional evaluation against ground-truth points and the rendered view.
User errors end with one `reconstruct: error: ...` line on stderr and
status 2 (1 for a reconstruction that cannot run as asked), before any
expensive work where possible.

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
the same weights (not possible for SavedModels). A Keras network's
plane-sweep warp is compiled by XLA one depth plane at a time
(`CascadeMVSNet(xla_warp=True)`: about twice as fast on CPU, in the same
memory; `--no-xla-warp` runs it in plain TensorFlow).

Filters (ALGORITHMS.md 6.3): `pcd` is CasMVSNet's (final confidence > 0.9,
1 px, 1 %, 5 consistent sources), `dypcd` UniMVSNet's dynamic check (stage
confidences > 0.1, 0.15, 0.9); any `keras_mvs.fusion.FilterConfig` preset
name works too. The default, `auto`, picks by the model's head once it is
loaded: `unimvsnet_dtu` (pcd, confidence > 0.3, 3 consistent sources:
UniMVSNet's DTU settings) for the unity head, whose confidence is one
classification's peak, and `pcd` otherwise. `--conf` replaces the
confidence thresholds.
"""

import argparse
import pathlib
import sys
import time
from typing import List
from typing import Optional
from typing import Tuple

from keras_mvs import files
from keras_mvs import inference
from keras_mvs import presets
from keras_mvs.data import pipeline
from keras_mvs.reconstruct import cli
from keras_mvs.reconstruct import driver
from keras_mvs.reconstruct import layout
from keras_mvs.reconstruct import planning
from keras_mvs.reconstruct import render
from keras_mvs.reconstruct import scenes
from keras_mvs.reconstruct.errors import ReconstructionError
from keras_mvs.reconstruct.evaluate import evaluate_against

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

_num_depths = cli.comma_tuple(
    int, (3,), "three multiples of 8 such as 48,32,8",
    valid=lambda value: value >= 8 and value % 8 == 0)
_thresholds = cli.comma_tuple(
    float, (1, 3), "one confidence threshold in [0, 1) or three (stages 1, "
    "2, 3) such as 0.1,0.15,0.9", valid=lambda value: 0.0 <= value < 1.0)


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """The command-line parser (DESIGN.md 11)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reconstruct", description=description)
    add = parser.add_argument
    add("--scene", help="MVSNet-layout folder or COLMAP model folder (omit "
        "to run structure from motion on --images)")
    add("--model", help="preset name, work directory, .keras file or "
        "SavedModel (default: the synthetic_unity preset)")
    add("--out", required=True, help="output folder")
    add("--overwrite", action="store_true",
        help="replace the reconstruction already in --out")
    add("--images", help="with --scene COLMAP: the undistorted images "
        "folder; without --scene: the photos to run structure from motion "
        "on")
    add("--sfm-matcher", default="auto",
        choices=("auto", "exhaustive", "sequential"),
        help="feature matching (auto: exhaustive up to 100 images, else "
        "sequential in name order)")
    add("--sfm-mapper", default="auto",
        choices=("auto", "incremental", "global"),
        help="mapping (auto: incremental; global only when every attempt "
        "leaves photos out, kept when it agrees with the incremental model)")
    add("--sfm-camera-model", default="SIMPLE_PINHOLE",
        help="COLMAP camera model shared by the photos (SIMPLE_RADIAL or "
        "OPENCV for lenses with visible distortion)")
    add("--sfm-camera-params", type=cli.comma_tuple(
        float, (3, 4), "known intrinsics 'f,cx,cy' (SIMPLE_PINHOLE) or "
        "'fx,fy,cx,cy' (PINHOLE), pixels", lambda value: value > 0),
        help="known intrinsics of the camera (COLMAP's pixel convention); "
        "the principal point is kept, the focal length refined. Default: "
        "estimated, principal point at the image centre")
    add("--sfm-max-features", type=cli.positive_int, default=8192,
        help="SIFT features per image")
    add("--sfm-mapping-attempts", type=cli.positive_int, default=6,
        help="incremental mapping runs at most, each after a new draw of "
        "the matches, until --sfm-consensus of them register every photo "
        "(default 6)")
    add("--sfm-consensus", type=cli.positive_int, default=3,
        help="complete models to map and compare (up to 60 photos); the "
        "one closest to the others is kept (default 3; 1: the first)")
    add("--sfm-init-pair", help="two image names to start the incremental "
        "mapper from, comma-separated")
    add("--max-height", type=cli.positive_int,
        default=planning.DEFAULT_MAX_HEIGHT,
        help="largest network input height (default 864)")
    add("--max-width", type=cli.positive_int,
        default=planning.DEFAULT_MAX_WIDTH,
        help="largest network input width (default 1152)")
    add("--views", type=cli.positive_int, default=planning.DEFAULT_NUM_VIEWS,
        help="views per inference, reference included (default 5)")
    add("--num-depths", type=_num_depths,
        help="hypotheses per stage, e.g. 48,32,8 (Keras models only)")
    add("--filter", default="auto",
        help="auto (default: the pcd filter with the settings of the "
        "model head's paper: confidence > 0.3 and 3 consistent views for "
        "the unity head, as UniMVSNet on DTU; > 0.9 and 5 views for "
        "soft-argmin heads, as CasMVSNet), pcd, dypcd or a FilterConfig "
        "preset name")
    add("--conf", type=_thresholds, help="confidence threshold(s): one for "
        "the final confidence or three for the stages")
    add("--min-consistent-views", type=cli.positive_int,
        help="pcd: consistent sources a pixel needs")
    add("--xla-warp", action=argparse.BooleanOptionalAction, default=True,
        help="compile the plane-sweep warp with XLA (default; about twice "
        "as fast on CPU, compiled once per image size; Keras models only)")
    add("--memory-budget-gb", type=float,
        help="memory a view's inference may take; views over it run in "
        "tiles (default: available RAM on CPU, unchecked on GPU)")
    add("--gt-ply", help="ground-truth points (PLY, or .npz with xyz) to "
        "evaluate the fused cloud against")
    add("--threshold", type=float, default=1.0,
        help="precision/recall distance, depth units")
    add("--max-distance", type=float, default=20.0,
        help="accuracy/completeness cut-off, depth units")
    add("--render", help="write a rendered view of the fused cloud to this "
        "PNG")
    add("--render-size", type=cli.image_size(), default=(640, 480),
        help="render WIDTHxHEIGHT")
    add("--quiet", action="store_true", help="no progress bars")
    add("--verbose", action="store_true",
        help="show TensorFlow's log messages")
    return parser


def check_arguments(parser: argparse.ArgumentParser,
                    args: argparse.Namespace) -> None:
    """Refuses what argparse cannot check (a missing scene, a missing
    ground-truth file, a non-positive memory budget, an unknown filter),
    through `parser.error` (exit 2), and fills in the default model (the
    shipped preset), saying so."""
    if not args.scene and not args.images:
        parser.error("expected --scene (an MVSNet or COLMAP folder) or "
                     "--images (a folder of photos for structure from "
                     "motion)")
    if not args.model:
        if not presets.is_preset(presets.DEFAULT_PRESET):
            parser.exit(2, f"reconstruct: error: {NO_MODEL_MESSAGE}\n")
        args.model = presets.DEFAULT_PRESET
        description = presets.preset_info(args.model)["description"]
        print(f"No --model given: using the shipped preset "
              f"{args.model!r} ({description})")
    if args.gt_ply and not pathlib.Path(args.gt_ply).is_file():
        parser.error(f"--gt-ply {args.gt_ply}: no such file")
    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        parser.error(f"--memory-budget-gb must be positive; received "
                     f"{args.memory_budget_gb}")
    try:
        driver.filter_from_flags(args.filter, args.conf,
                                 args.min_consistent_views)
    except ValueError as error:
        parser.error(f"--filter/--conf: {error}")


def _describe_filter(config) -> str:
    thresholds = "/".join(f"{value:g}" for value in
                          config.confidence_thresholds)
    text = f"{config.method}, confidence > {thresholds}"
    if config.method == "pcd":
        text += f", {config.min_consistent_views} consistent views"
    return text


def _error(message: object) -> None:
    print(f"reconstruct: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace,
        command_line: str) -> Tuple[int, List[Tuple[str, str]]]:
    """Runs the command on arguments `check_arguments` passed; the entry
    point prints `wrote` (`keras_mvs.console.wrote`).

    Args:
        args: the parsed flags.
        command_line: recorded in summary.json's settings.

    Returns:
        `(status, wrote)`: the exit status (0, 1 for a
        `ReconstructionError`, 2 for bad input) and, on success, the
        `(path, what it is)` pairs of the outputs.
    """
    # --out must be a folder, and a previous reconstruction in it is
    # replaced only when asked; its result files go first, so a failed
    # rerun never leaves an old fused.ply looking like its result.
    out_dir = pathlib.Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        _error(f"--out {out_dir}: a file, not a folder")
        return 2, []
    previous = layout.previous_results(out_dir)
    if previous and not args.overwrite:
        _error(f"--out {out_dir} holds a previous reconstruction "
               f"({previous[0].name}); pass --overwrite to replace it, or "
               "choose another folder")
        return 2, []
    layout.remove_results(previous)

    sfm_record, adapted = None, {}
    try:
        if args.scene:
            scene = scenes.open_scene(pathlib.Path(args.scene), args.images,
                                      out_dir)
        else:
            # summary.json marks a complete run: none while SfM runs.
            (out_dir / "summary.json").unlink(missing_ok=True)
            scene, sfm_record = scenes.scene_from_photos(
                pathlib.Path(args.images), out_dir, scenes.sfm_options(
                    args.sfm_matcher, args.sfm_mapper, args.sfm_camera_model,
                    args.sfm_max_features, args.sfm_init_pair,
                    args.sfm_camera_params, args.sfm_mapping_attempts,
                    args.sfm_consensus))
        # Every cam file and image header the run will read, before the
        # model is loaded: a bad file in view 15 fails now, not after views
        # 0-14 were written.
        pipeline.check_folders([scene.root], num_views=args.views)
    except (ValueError, FileNotFoundError) as error:
        # FormatError, SfmError and ColmapError are ValueErrors naming the
        # file and the problem.
        _error(error)
        return 2, []

    start = time.perf_counter()
    try:
        predictor = inference.load_model(args.model)
    except (FileNotFoundError, ValueError) as error:
        _error(error)
        return 2, []
    name = (driver.auto_filter(predictor) if args.filter == "auto"
            else args.filter)
    config = driver.filter_from_flags(name, args.conf,
                                      args.min_consistent_views)
    if args.filter == "auto":
        print(f"filter: {name} ({_describe_filter(config)}) for the "
              f"{driver.model_head(predictor) or 'unknown'} head")
    if sfm_record is not None and args.min_consistent_views is None:
        config, adapted = driver.fit_filter_to_pairs(config, scene.pairs)
    for field, change in adapted.items():
        print(f"adapted: {field} {change['requested']} -> "
              f"{change['used']} ({change['reason']})")
    try:
        if args.num_depths is not None:
            predictor = planning.with_num_depths(predictor, args.num_depths)
        if predictor.network is not None:
            predictor.network.xla_warp = args.xla_warp
        load_seconds = time.perf_counter() - start
        budget = ("auto" if args.memory_budget_gb is None
                  else int(args.memory_budget_gb * 2**30))
        summary = driver.reconstruct(
            scene, predictor, out_dir, num_views=args.views,
            max_height=args.max_height, max_width=args.max_width,
            filter_config=config, memory_budget_bytes=budget,
            verbose=0 if args.quiet else 1,
            settings={"command": command_line, "scene_name": scene.name,
                      "xla_warp": (args.xla_warp
                                   and predictor.network is not None)})
    except ReconstructionError as error:
        _error(error)
        return 1, []
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
    print_summary(summary)

    if args.gt_ply or args.render:
        points, colors, _ = files.read_ply(str(out_dir / "fused.ply"))
    if args.gt_ply:
        metrics = evaluate_against(points, args.gt_ply, args.threshold,
                                   args.max_distance)
        summary["evaluation"] = {"gt_ply": str(args.gt_ply), **metrics}
        print(f"against {args.gt_ply}: accuracy {metrics['accuracy']:.4g}, "
              f"completeness {metrics['completeness']:.4g}, overall "
              f"{metrics['overall']:.4g}; at {args.threshold:g}: precision "
              f"{metrics['precision']:.4f}, recall {metrics['recall']:.4f}, "
              f"F-score {metrics['fscore']:.4f}")
    if args.render:
        forward, up = render.render_views_direction(
            scene, [v["view_id"] for v in summary["views"]])
        size = render.write_render(args.render, points, colors, forward, up,
                                   *args.render_size)
        summary["render"] = {"path": str(args.render), "bytes": size}
    files.write_json(out_dir / "summary.json", summary)
    return 0, outputs(out_dir, args.render)


def print_summary(summary: dict) -> None:
    """Prints the per-view table, the totals, the timing, the diagnosis and
    the agreement with the object masks of a summary."""
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
    if "masks" in summary:
        masks = summary["masks"]
        print(f"object masks ({masks['masked_views']} views): "
              f"{100 * masks['projection_fraction']:.1f} % of projections "
              f"inside, {100 * masks['hull_fraction']:.1f} % of points inside "
              "the visual hull")


def outputs(out_dir: pathlib.Path, render_path: Optional[str] = None
            ) -> List[Tuple[str, str]]:
    """`(path, what it is)` of everything a run writes into `out_dir`."""
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
    if render_path:
        items.append((pathlib.Path(render_path), "the rendered view"))
    return [(str(path), what) for path, what in items]
