"""Structure from motion on a folder of photos, with pycolmap.

`run_sfm(images_dir, sfm_dir)` turns photos into an undistorted COLMAP
model that `keras_mvs.data.colmap.convert` reads:

1. Checks: at least 3 images, every file readable, one image size.
2. Features: SIFT into `sfm_dir/database.db`, one shared camera.
3. Matching: exhaustive for up to `SfmOptions.exhaustive_max_images`
   images, sequential (each image with its `sequential_overlap` neighbours
   in name order, plus quadratic steps) above that; both need no
   vocabulary tree.
4. Mapping: COLMAP's incremental mapper. When it leaves images out (or
   splits them into several models), the matches are drawn again with the
   next seed and the mapper reruns, up to `SfmOptions.mapping_attempts`
   times. For up to `CONSENSUS_MAX_IMAGES` photos it goes on until
   `SfmOptions.consensus_models` attempts registered every image, and
   keeps the one whose cameras agree best with the others'
   (`consensus_choice`); otherwise the first complete model, or the
   attempt registering most images. Only when every attempt leaves images
   out does `mapper="auto"` run the global mapper
   (GLOMAP), and it keeps the global model only when it registers more
   images and places the cameras of every incremental attempt within
   `MAX_DISAGREEMENT` of theirs (`model_disagreement`), the attempts
   holding at least `MIN_CHECKED_SHARE` of the photos between them. The
   chosen model is written to `sfm_dir/sparse/`.
5. Undistortion into `sfm_dir/dense/` (`images/` and `sparse/`).

`sfm_dir/sfm.json` is written last and records the counts, the
unregistered images and the timings; a folder without it is unfinished.

Default settings and why (measured on the Middlebury temple and dino
16-view rings, 640x480, the dino nearly textureless and seen with a
3310-pixel focal length, about 11 degrees of field of view):

* COLMAP's defaults register 13 / 16 temple images (issue 16) and 3 / 16
  dino images (measured).
* SIFT with peak threshold 0.001 (COLMAP: 0.0067) and edge threshold 20
  gives 1400-2500 instead of 150-350 features per dino image;
  domain-size pooling, affine shapes and guided matching raise the
  neighbour inliers further.
* A SIMPLE_PINHOLE camera: with a long focal length the radial term of
  SIMPLE_RADIAL is unconstrained and drifts (k = 2.5 on the dino), and
  the models split.
* Two-view tracks are triangulated and new images are accepted with few
  2D-3D inliers (8, inlier ratio 0.05, 24 px, 6 trials): neighbours on a
  sparse ring share few points, and without this the ring breaks into
  two models (8 + 10 images on the dino).
* Up to 3 incremental mapping attempts, each with a new draw of the
  matches: the incremental mapper is deterministic on one database, and
  whether the dino ring holds together depends on the verification's
  RANSAC draw (1 of 5 single-thread draws split it into 10 + 8 images).
  With them, three default runs registered 16 / 16 with mean centre
  errors 1.1-1.9 % of the ring radius (temple 0.4-0.7 %); before, the
  global mapper was kept whenever the incremental one split, and folded
  the ring in 1 of 4 runs (64 %).
* Up to 6 attempts and the consensus of 3 complete models: complete
  incremental models of one photo set differ by the draw, and the one
  closest to the others is usually closest to the truth. Twelve complete
  dino models (one attempt each) had mean centre errors of 1.0-4.6 %
  (2.3 % on average); the consensus of 3 of them averaged 1.8 % (500
  random triples), of 5 1.6 %. Seven temple models had 0.40-1.32 %, the
  two above 1 % the farthest from the others; the consensus of 3
  averaged 0.52 %, never above 1.2 %. One incremental attempt registers
  the whole dino ring 7 times in 12, so 6 attempts leave it open about
  0.5 % of the time instead of 7 % with 3; the global mapper, which then
  runs, folded 2 of 5 dino rings (33 and 39 % centre error) while
  agreeing within 5 % with the incremental model's arc.

Example:
    >>> result = run_sfm("photos", "out/sfm")
    >>> conversion = colmap.convert(result.model_dir, result.images_dir)

The module stays over ~500 lines as one job: the five stages share one
database, one set of pycolmap options and one timing record, and about 50
of its lines are the measurements above that justify the defaults.
"""

import dataclasses
import pathlib
import shutil
import time
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
from PIL import Image

from keras_mvs import files
from keras_mvs.data import formats

PathLike = formats.PathLike

# Image files picked up from the folder (case-insensitive suffixes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MIN_IMAGES = 3
MAPPERS = ("auto", "incremental", "global")
MATCHERS = ("auto", "exhaustive", "sequential")
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL",
                 "OPENCV")
# Camera models that take known intrinsics (`SfmOptions.camera_params`):
# their parameter count and order.
CAMERA_PARAMS = {"SIMPLE_PINHOLE": (3, "f, cx, cy"),
                 "PINHOLE": (4, "fx, fy, cx, cy")}
# Above this `model_disagreement` the global model is not trusted over
# an incremental one. Measured on the Middlebury rings: 16 % on the temple
# (incremental 0.6 %, global 9 % centre error against the calibration),
# 96-155 % on dino runs where the global model was folded (23-84 % centre
# error); two incremental runs agree within 2 %.
MAX_DISAGREEMENT = 0.3
# The agreement says little about cameras no incremental model holds: on
# a dino run (PINHOLE camera) a global model that folded the ring (55 %
# centre error) agreed within 2.7 % with the images it shared with the
# incremental one, and with one attempt each, two folded rings (33 and
# 39 %) agreed within 3.7 and 5.3 % with the attempt's arc of 8 or more
# images. So every attempt's model checks the global one, and below this
# share of the photos held between them the attempts do not vouch for it.
MIN_CHECKED_SHARE = 0.5
# Photo sets up to this size map `SfmOptions.consensus_models` complete
# models and keep the consensus; larger ones keep the first complete model
# (each mapping takes minutes there, and long overlapping sequences do not
# hang on one weak pair as small rings do).
CONSENSUS_MAX_IMAGES = 60


class SfmError(ValueError):
    """A photo set SfM cannot handle; the message names the file or the
    problem."""


@dataclasses.dataclass
class SfmOptions:
    """Settings of `run_sfm`; the defaults are measured (module docstring).

    Attributes:
        max_num_features: SIFT features kept per image.
        peak_threshold: SIFT DoG peak threshold (COLMAP: 0.0067); lower
            finds features on weak texture.
        edge_threshold: SIFT edge threshold (COLMAP: 10).
        domain_size_pooling: DSP-SIFT descriptors (CPU only).
        estimate_affine_shape: affine-adapted features.
        guided_matching: re-match under the estimated two-view geometry.
        matcher: "exhaustive", "sequential" or "auto" (exhaustive up to
            `exhaustive_max_images`).
        exhaustive_max_images: the "auto" matcher's switch point.
        sequential_overlap: neighbours matched per image (sequential).
        camera_model: COLMAP model of the one shared camera.
        single_camera: one camera for all images (same lens and zoom);
            False gives every image its own.
        mapper: "incremental", "global" or "auto" (module docstring).
        mapping_attempts: incremental mapping runs at most, each after a
            new draw of the matches, until `consensus_models` of them
            register every image.
        consensus_models: complete incremental models to compare (photo
            sets up to `CONSENSUS_MAX_IMAGES`); the one closest to the
            others is kept. 1: the first complete model.
        min_num_matches: verified matches a pair needs to count.
        init_min_num_inliers: inliers of the mapper's initial pair.
        abs_pose_min_num_inliers: 2D-3D inliers to register an image.
        abs_pose_min_inlier_ratio: their minimum share.
        abs_pose_max_error: RANSAC threshold of registration, pixels.
        max_reg_trials: registration attempts per image.
        two_view_tracks: triangulate points seen by two images only.
        init_image_names: optional names of the initial image pair.
        camera_params: known intrinsics of the shared camera, in the
            order of `camera_model`'s parameters (SIMPLE_PINHOLE: "f, cx,
            cy"; PINHOLE: "fx, fy, cx, cy"; COLMAP's pixel convention,
            the top-left pixel centre at (0.5, 0.5)); the focal length
            is still refined, the principal point kept. None: estimated
            from the images (principal point at the image centre).
        num_threads: threads, -1 for all cores.
        random_seed: seed of COLMAP's RANSAC and mapper (-1: random);
            with more than one thread the runs can still differ a little.
    """

    max_num_features: int = 8192
    peak_threshold: float = 0.001
    edge_threshold: float = 20.0
    domain_size_pooling: bool = True
    estimate_affine_shape: bool = True
    guided_matching: bool = True
    matcher: str = "auto"
    exhaustive_max_images: int = 100
    sequential_overlap: int = 10
    camera_model: str = "SIMPLE_PINHOLE"
    single_camera: bool = True
    mapper: str = "auto"
    mapping_attempts: int = 6
    consensus_models: int = 3
    min_num_matches: int = 10
    init_min_num_inliers: int = 50
    abs_pose_min_num_inliers: int = 8
    abs_pose_min_inlier_ratio: float = 0.05
    abs_pose_max_error: float = 24.0
    max_reg_trials: int = 6
    two_view_tracks: bool = True
    init_image_names: Optional[Tuple[str, str]] = None
    camera_params: Optional[Tuple[float, ...]] = None
    num_threads: int = -1
    random_seed: int = 0

    def __post_init__(self):
        for name, allowed in (("matcher", MATCHERS), ("mapper", MAPPERS),
                              ("camera_model", CAMERA_MODELS)):
            if getattr(self, name) not in allowed:
                raise SfmOptionError(
                    name, "{%s}: expected one of %s; received %r"
                    % (name, allowed, getattr(self, name)))
        if self.max_num_features < 100:
            raise SfmOptionError(
                "max_num_features", "{max_num_features}: expected at least "
                f"100; received {self.max_num_features}")
        if self.mapping_attempts < 1:
            raise SfmOptionError(
                "mapping_attempts", "{mapping_attempts}: expected at least "
                f"1; received {self.mapping_attempts}")
        if self.consensus_models < 1:
            raise SfmOptionError(
                "consensus_models", "{consensus_models}: expected at least "
                f"1; received {self.consensus_models}")
        wanted = CAMERA_PARAMS.get(self.camera_model)
        if self.camera_params is not None and (
                wanted is None or len(self.camera_params) != wanted[0]):
            raise SfmOptionError(
                "camera_params",
                f"{{camera_params}}: {len(self.camera_params)} values do not "
                f"fit {{camera_model}} {self.camera_model}; expected "
                + "; ".join(f"{count} ({names}) with {model}"
                            for model, (count, names)
                            in CAMERA_PARAMS.items()))
        if (self.init_image_names is not None
                and len(set(self.init_image_names)) != 2):
            raise SfmOptionError(
                "init_image_names", "{init_image_names}: expected two "
                f"different image names; received {self.init_image_names!r}")


class SfmOptionError(ValueError):
    """An invalid `SfmOptions` field.

    `field` is the field at fault. The message is a template in which every
    field it names appears as `{field}`; `str(error)` spells them
    `SfmOptions.field`, `describe(names)` as `names[field]` (the command
    line's flags), so a front end words the error in its own terms.
    """

    def __init__(self, field: str, template: str):
        self.field = field
        self.template = template
        super().__init__(self.describe(_FieldNames()))

    def describe(self, names) -> str:
        """The message with each field named by `names[field]`."""
        return self.template.format_map(names)


class _FieldNames(dict):
    def __missing__(self, field):
        return f"SfmOptions.{field}"


@dataclasses.dataclass
class SfmResult:
    """What `run_sfm` produced.

    Attributes:
        sfm_dir: the output folder.
        model_dir: the undistorted model (`sfm_dir/dense/sparse`).
        images_dir: the undistorted images (`sfm_dir/dense/images`).
        images: every input image name, sorted.
        registered: names of the registered images, sorted.
        unregistered: names of the images left out, sorted.
        num_points: sparse 3-D points of the kept model.
        mean_reprojection_error: of the kept model, pixels.
        mapper: "incremental" or "global", the mapper of the kept model.
        mapper_disagreement: when the global mapper ran after incremental
            attempts, the largest `model_disagreement` of an attempt's
            model and the global one, else None.
        mapping_attempts: incremental mapping attempts run.
        consensus: when complete incremental models were compared:
            `{"complete_models": their attempts (1-based), "kept_attempt",
            "mean_disagreement": each one's mean `consensus_choice`
            disagreement with the others}`; else None.
        matcher: "exhaustive" or "sequential".
        verified_pairs: image pairs with enough verified matches.
        focal_length: the first camera's mean focal length, pixels.
        timing: seconds per stage.
    """

    sfm_dir: pathlib.Path
    model_dir: pathlib.Path
    images_dir: pathlib.Path
    images: List[str]
    registered: List[str]
    unregistered: List[str]
    num_points: int
    mean_reprojection_error: float
    mapper: str
    mapper_disagreement: Optional[float]
    mapping_attempts: int
    consensus: Optional[dict]
    matcher: str
    verified_pairs: int
    focal_length: float
    timing: Dict[str, float]

    def to_json(self) -> dict:
        """A JSON-ready dict (paths as strings)."""
        record = dataclasses.asdict(self)
        for key in ("sfm_dir", "model_dir", "images_dir"):
            record[key] = str(record[key])
        record["num_images"] = len(self.images)
        record["num_registered"] = len(self.registered)
        return record


def list_images(images_dir: PathLike) -> List[str]:
    """Names of the image files directly in `images_dir`, sorted.

    Raises:
        SfmError: no such folder.
    """
    images_dir = pathlib.Path(images_dir)
    if not images_dir.is_dir():
        raise SfmError(f"--images {images_dir}: no such folder")
    return sorted(p.name for p in images_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_images(images_dir: PathLike) -> Tuple[List[str], Tuple[int, int]]:
    """Checks a photo set before any SfM work.

    Args:
        images_dir: the folder of photos.

    Returns:
        `(names, (height, width))`: the sorted image names and their size.

    Raises:
        SfmError: fewer than `MIN_IMAGES` images, a file that cannot be
            decoded, or images of different sizes (each message names the
            files).
    """
    images_dir = pathlib.Path(images_dir)
    names = list_images(images_dir)
    if len(names) < MIN_IMAGES:
        others = sorted(p.name for p in images_dir.iterdir())[:5]
        raise SfmError(
            f"{images_dir}: {len(names)} image(s) {names}; structure from "
            f"motion needs at least {MIN_IMAGES} photos of the scene "
            f"({'/'.join(IMAGE_SUFFIXES)}); the folder holds {others}")
    sizes = {}
    for name in names:
        try:
            with Image.open(images_dir / name) as image:
                image.load()
                sizes[name] = (image.height, image.width)
        except Exception as error:  # Pillow raises many error types
            raise SfmError(
                f"{images_dir / name}: cannot be read as an image "
                f"({type(error).__name__}: {error}); remove or replace "
                "it") from None
    counts = {}
    for size in sizes.values():
        counts[size] = counts.get(size, 0) + 1
    if len(counts) > 1:
        common = max(counts, key=counts.get)
        odd = [name for name in names if sizes[name] != common]
        raise SfmError(
            f"{images_dir}: images of {len(counts)} sizes; "
            f"{len(names) - len(odd)} are {common[1]}x{common[0]} but "
            + ", ".join(f"{name} is {sizes[name][1]}x{sizes[name][0]}"
                        for name in odd[:5])
            + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
            + "; expected photos from one camera at one size (resize or "
            "remove the others)")
    return names, next(iter(counts))


def _extraction_options(options: SfmOptions):
    import pycolmap

    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = options.num_threads
    sift = extraction.sift
    sift.max_num_features = options.max_num_features
    sift.peak_threshold = options.peak_threshold
    sift.edge_threshold = options.edge_threshold
    sift.domain_size_pooling = options.domain_size_pooling
    sift.estimate_affine_shape = options.estimate_affine_shape
    return extraction


def _pipeline_options(options: SfmOptions, image_ids: Dict[str, int],
                      seed: int):
    import pycolmap

    pipeline = pycolmap.IncrementalPipelineOptions()
    pipeline.num_threads = options.num_threads
    pipeline.min_num_matches = options.min_num_matches
    pipeline.extract_colors = True
    pipeline.random_seed = seed
    mapper = pipeline.mapper
    mapper.init_min_num_inliers = options.init_min_num_inliers
    mapper.abs_pose_min_num_inliers = options.abs_pose_min_num_inliers
    mapper.abs_pose_min_inlier_ratio = options.abs_pose_min_inlier_ratio
    mapper.abs_pose_max_error = options.abs_pose_max_error
    mapper.max_reg_trials = options.max_reg_trials
    pipeline.triangulation.ignore_two_view_tracks = (
        not options.two_view_tracks)
    if options.init_image_names is not None:
        missing = [n for n in options.init_image_names if n not in image_ids]
        if missing:
            raise SfmError(
                f"initial image pair: {missing} not among the images "
                f"{sorted(image_ids)[:5]}...")
        pipeline.init_image_id1 = image_ids[options.init_image_names[0]]
        pipeline.init_image_id2 = image_ids[options.init_image_names[1]]
    return pipeline


def _match(database: pathlib.Path, options: SfmOptions, matcher: str,
           seed: int) -> Tuple[int, set]:
    """Matches the features in `database`, COLMAP's RANSAC seeded with
    `seed` (-1: random).

    Returns:
        `(verified, connected)`: the image pairs with at least
        `options.min_num_matches` verified inliers, and the ids of the
        images in at least one of them.
    """
    import pycolmap

    if seed >= 0:
        pycolmap.set_random_seed(seed)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = options.num_threads
    matching.guided_matching = options.guided_matching
    verification = pycolmap.TwoViewGeometryOptions()
    device = pycolmap.Device.cpu
    if matcher == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=matching,
                                  verification_options=verification,
                                  device=device)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = options.sequential_overlap
        pairing.quadratic_overlap = True
        pycolmap.match_sequential(database, matching_options=matching,
                                  pairing_options=pairing,
                                  verification_options=verification,
                                  device=device)
    db = pycolmap.Database.open(str(database))
    try:
        pair_ids, geometries = db.read_two_view_geometries()
    finally:
        db.close()
    verified, connected = 0, set()
    for pair_id, geometry in zip(pair_ids, geometries):
        if len(geometry.inlier_matches) >= options.min_num_matches:
            verified += 1
            connected.update(pycolmap.pair_id_to_image_pair(pair_id))
    return verified, connected


def _map(database: pathlib.Path, features_database: pathlib.Path,
         images_dir: pathlib.Path, mapping_dir: pathlib.Path,
         options: SfmOptions, image_ids: Dict[str, int], matcher: str,
         log: Callable[[str], None]):
    """Step 4 of the module docstring.

    Returns:
        `(model, mapper, attempts, disagreement, consensus)`: the kept
        `pycolmap.Reconstruction` (None if no model formed), the mapper
        that made it, the incremental attempts run,
        `SfmResult.mapper_disagreement` and `SfmResult.consensus`.
    """
    import pycolmap

    num_images = len(image_ids)
    wanted = (options.consensus_models
              if num_images <= CONSENSUS_MAX_IMAGES else 1)
    best, best_attempt, attempts = None, None, 0
    complete = []  # (attempt, model) of the attempts registering all
    arcs = []  # {name: centre} of each attempt's largest model
    consensus = None
    best_database = mapping_dir / "best.db"
    if options.mapper in ("auto", "incremental"):
        for attempt in range(options.mapping_attempts):
            start = time.perf_counter()
            seed = (options.random_seed + attempt
                    if options.random_seed >= 0 else -1)
            if attempt:
                # A new draw of the verification's RANSAC: on sparse rings
                # one neighbour pair more or less decides whether the
                # chain of images holds together.
                shutil.copyfile(features_database, database)
                _match(database, options, matcher, seed)
            output = mapping_dir / f"incremental_{attempt}"
            output.mkdir(parents=True)
            models = pycolmap.incremental_mapping(
                database, images_dir, output,
                _pipeline_options(options, image_ids, seed))
            attempts += 1
            log(f"mapping (incremental, attempt {attempt + 1} of at most "
                f"{options.mapping_attempts}): {_describe_models(models)} "
                f"({time.perf_counter() - start:.1f} s)")
            model = _best_model(models)
            if model is not None:
                arcs.append(_centres(model))
            if model is not None and (best is None
                                      or _size(model) > _size(best)):
                best, best_attempt = model, attempt
            more = attempt + 1 < options.mapping_attempts
            if model is not None and model.num_reg_images() == num_images:
                complete.append((attempt, model))
                if len(complete) == wanted:
                    break
                if more:
                    shutil.copyfile(database,
                                    mapping_dir / f"complete_{attempt}.db")
            elif best_attempt == attempt and more and not complete:
                shutil.copyfile(database, best_database)
        if len(complete) > 1:
            index, spread = consensus_choice(
                [model for _, model in complete])
            best_attempt, best = complete[index]
            consensus = {
                "complete_models": [a + 1 for a, _ in complete],
                "kept_attempt": best_attempt + 1,
                "mean_disagreement": [float(v) for v in spread]}
            log(f"mapping: {len(complete)} attempts registered every image "
                f"(attempts {', '.join(str(a + 1) for a, _ in complete)}); "
                f"kept attempt {best_attempt + 1}, the closest to the "
                "others (mean camera disagreement "
                + " / ".join(f"{100 * v:.1f}" for v in spread)
                + " % of the camera spread)")
        if best_attempt is not None and best_attempt != attempts - 1:
            # database.db holds the matches of the kept model (and the
            # global mapper, if it runs, maps those).
            shutil.copyfile(mapping_dir / f"complete_{best_attempt}.db"
                            if complete else best_database, database)
    if options.mapper == "incremental" or (
            options.mapper == "auto" and best is not None
            and best.num_reg_images() == num_images):
        return best, "incremental", attempts, None, consensus

    start = time.perf_counter()
    (mapping_dir / "global").mkdir(parents=True)
    pipeline = pycolmap.GlobalPipelineOptions()
    pipeline.num_threads = options.num_threads
    pipeline.random_seed = options.random_seed
    pipeline.min_num_matches = options.min_num_matches
    try:
        models = pycolmap.global_mapping(database, images_dir,
                                         mapping_dir / "global", pipeline)
    except RuntimeError as error:
        if options.mapper == "global":
            raise
        log(f"mapping (global): failed ({error})")
        models = {}
    candidate = _best_model(models)
    log(f"mapping (global): {_describe_models(models)} "
        f"({time.perf_counter() - start:.1f} s)")
    if options.mapper == "global" or best is None:
        return candidate, "global", attempts, None, None
    # Every attempt's model checks the global one where it has cameras:
    # attempts that break the ring at different places cover more of it
    # between them than the largest alone.
    checked = set().union(*arcs)
    disagreements = [] if candidate is None else [
        value for value in (model_disagreement(arc, candidate)
                            for arc in arcs) if value is not None]
    disagreement = max(disagreements) if disagreements else None
    if candidate is None or candidate.num_reg_images() <= best.num_reg_images():
        return best, "incremental", attempts, disagreement, None
    if len(checked) < MIN_CHECKED_SHARE * num_images:
        log(f"warning: the global model registers "
            f"{candidate.num_reg_images()} images, but the incremental "
            f"attempts hold only {len(checked)} of the {num_images} between "
            "them, too few to check it (the global mapper can fold sparse "
            "rings); kept the incremental model; pass --sfm-mapper global "
            "to take the global one")
        return best, "incremental", attempts, disagreement, None
    if disagreement is not None and disagreement <= MAX_DISAGREEMENT:
        log(f"mapping: the global model registers "
            f"{candidate.num_reg_images()} images and places the cameras "
            f"of the {len(arcs)} incremental attempt(s) ({len(checked)} "
            f"images between them) within {100 * disagreement:.1f} % of "
            "the camera spread: kept it")
        return candidate, "global", attempts, disagreement, None
    log(f"warning: the global model registers {candidate.num_reg_images()} "
        f"images but places the cameras of the incremental attempts "
        f"differently"
        + (f" (up to {100 * disagreement:.0f} % of the camera spread)"
           if disagreement is not None else "")
        + f"; kept the largest incremental model ({best.num_reg_images()} "
        "images; the global mapper folds sparse rings); try "
        "--sfm-init-pair or more photos")
    return best, "incremental", attempts, disagreement, None


def _size(model) -> Tuple[int, int]:
    return model.num_reg_images(), model.num_points3D()


def _registered_names(reconstruction) -> List[str]:
    return sorted(image.name for image in reconstruction.images.values()
                  if image.has_pose)


def _best_model(models: Dict[int, object]):
    """The model with the most registered images (ties: the most points),
    or None."""
    best = None
    for model in models.values():
        key = _size(model)
        if best is None or key > best[0]:
            best = (key, model)
    return None if best is None else best[1]


def _describe_models(models: Dict[int, object]) -> str:
    sizes = sorted((m.num_reg_images() for m in models.values()),
                   reverse=True)
    return (f"{len(sizes)} model(s) of {'+'.join(map(str, sizes))} images"
            if sizes else "no model")


def run_sfm(
    images_dir: PathLike,
    sfm_dir: PathLike,
    options: Optional[SfmOptions] = None,
    log: Callable[[str], None] = print,
) -> SfmResult:
    """Runs structure from motion on a folder of photos.

    Args:
        images_dir: the photos (directly in the folder; JPEG, PNG, TIFF or
            BMP), all of one size.
        sfm_dir: output folder; its previous content is replaced.
        options: the settings (default `SfmOptions()`).
        log: receives one line per stage (counts and seconds).

    Returns:
        The SfmResult; `sfm_dir/sfm.json` holds the same record.

    Raises:
        SfmError: too few, unreadable or mixed-size images, no two images
            overlapping, or fewer than `MIN_IMAGES` images registered.
    """
    import pycolmap

    options = options or SfmOptions()
    # COLMAP's INFO log (hundreds of lines) would drown the stage lines, and
    # its warnings are advice that does not apply here (GPU solvers, thread
    # counts, focal priors for the global mapper).
    previous_level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = max(previous_level, 2)
    try:
        return _run_sfm(pathlib.Path(images_dir), pathlib.Path(sfm_dir),
                        options, log)
    finally:
        pycolmap.logging.minloglevel = previous_level


def _run_sfm(images_dir: pathlib.Path, sfm_dir: pathlib.Path,
             options: SfmOptions, log: Callable[[str], None]) -> SfmResult:
    """`run_sfm` with the log level set."""
    import pycolmap

    timing = {}
    start = time.perf_counter()
    if options.random_seed >= 0:
        pycolmap.set_random_seed(options.random_seed)
    names, (height, width) = check_images(images_dir)
    timing["check_seconds"] = time.perf_counter() - start
    log(f"sfm: {len(names)} images of {width}x{height} in {images_dir} "
        f"({timing['check_seconds']:.1f} s)")
    if sfm_dir.exists():
        shutil.rmtree(sfm_dir)
    sfm_dir.mkdir(parents=True)
    database = sfm_dir / "database.db"
    device = pycolmap.Device.cpu

    stage = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    if options.camera_params is not None:
        reader.camera_params = ",".join(
            repr(float(value)) for value in options.camera_params)
    pycolmap.extract_features(
        database, images_dir, image_names=names,
        camera_mode=(pycolmap.CameraMode.SINGLE if options.single_camera
                     else pycolmap.CameraMode.PER_IMAGE),
        reader_options=reader, extraction_options=_extraction_options(
            options), device=device)
    db = pycolmap.Database.open(str(database))
    try:
        image_ids = {image.name: image.image_id
                     for image in db.read_all_images()}
        keypoints = {name: db.num_keypoints_for_image(image_id)
                     for name, image_id in image_ids.items()}
    finally:
        db.close()
    timing["features_seconds"] = time.perf_counter() - stage
    unread = [name for name in names if name not in image_ids]
    if unread:
        raise SfmError(
            f"{images_dir}: COLMAP could not read {len(unread)} image(s): "
            f"{unread[:5]}; re-save them as JPEG or PNG")
    counts = np.array([keypoints[n] for n in names])
    log(f"features: {len(names)} images, {int(counts.min())}-"
        f"{int(counts.max())} (median {int(np.median(counts))}) SIFT "
        f"features per image ({timing['features_seconds']:.1f} s)")
    featureless = [n for n in names if keypoints[n] == 0]
    if len(featureless) > len(names) - 2:
        raise SfmError(
            f"{images_dir}: no features found in {featureless[:5]}; "
            "expected textured photos (blank or uniform images cannot be "
            "matched)")

    # The matches are drawn again for a new mapping attempt (`_map`).
    features_database = sfm_dir / "features.db"
    shutil.copyfile(database, features_database)

    stage = time.perf_counter()
    matcher = options.matcher
    if matcher == "auto":
        matcher = ("exhaustive" if len(names) <= options.exhaustive_max_images
                   else "sequential")
    verified, connected = _match(database, options, matcher,
                                 options.random_seed)
    timing["matching_seconds"] = time.perf_counter() - stage
    num_pairs = len(names) * (len(names) - 1) // 2
    log(f"matching ({matcher}): {verified} of {num_pairs} image pairs "
        f"verified with >= {options.min_num_matches} inliers, "
        f"{len(connected)} of {len(names)} images connected "
        f"({timing['matching_seconds']:.1f} s)")
    if verified == 0:
        raise SfmError(
            f"{images_dir}: no overlap at all: no two of the {len(names)} "
            f"images share {options.min_num_matches} geometrically "
            "verified matches; expected overlapping photos of one scene "
            "from nearby viewpoints")

    stage = time.perf_counter()
    mapping_dir = sfm_dir / "mapping"
    chosen, chosen_mapper, attempts, disagreement, consensus = _map(
        database, features_database, images_dir, mapping_dir, options,
        image_ids, matcher, log)
    timing["mapping_seconds"] = time.perf_counter() - stage
    registered = [] if chosen is None else _registered_names(chosen)
    if len(registered) < MIN_IMAGES:
        raise SfmError(
            f"{images_dir}: only {len(registered)} of {len(names)} images "
            f"could be registered ({registered}); expected at least "
            f"{MIN_IMAGES} overlapping photos (about 60 % overlap between "
            "neighbours, viewpoints a few degrees to ~20 degrees apart)")
    unregistered = sorted(set(names) - set(registered))
    camera = next(iter(chosen.cameras.values()))
    error = float(chosen.compute_mean_reprojection_error())
    log(f"mapping: kept the {chosen_mapper} model, {len(registered)} of "
        f"{len(names)} images registered, {chosen.num_points3D()} points, "
        f"mean reprojection error {error:.2f} px, focal "
        f"{camera.mean_focal_length():.0f} px "
        f"({timing['mapping_seconds']:.1f} s)")
    if unregistered:
        log(f"warning: {len(unregistered)} image(s) not registered: "
            + ", ".join(unregistered))
    sparse_dir = sfm_dir / "sparse"
    sparse_dir.mkdir()
    chosen.write(str(sparse_dir))

    stage = time.perf_counter()
    dense_dir = sfm_dir / "dense"
    pycolmap.undistort_images(str(dense_dir), str(sparse_dir),
                              str(images_dir), num_threads=options.num_threads)
    timing["undistortion_seconds"] = time.perf_counter() - stage
    log(f"undistortion: {len(registered)} images to {dense_dir / 'images'} "
        f"({timing['undistortion_seconds']:.1f} s)")
    shutil.rmtree(mapping_dir, ignore_errors=True)
    features_database.unlink()
    timing["total_seconds"] = time.perf_counter() - start

    result = SfmResult(
        sfm_dir=sfm_dir, model_dir=dense_dir / "sparse",
        images_dir=dense_dir / "images", images=names,
        registered=registered, unregistered=unregistered,
        num_points=int(chosen.num_points3D()),
        mean_reprojection_error=error, mapper=chosen_mapper,
        mapper_disagreement=disagreement, mapping_attempts=attempts,
        consensus=consensus,
        matcher=matcher, verified_pairs=int(verified),
        focal_length=float(camera.mean_focal_length()), timing=timing)
    record = {**result.to_json(), "options": dataclasses.asdict(options)}
    files.write_json(sfm_dir / "sfm.json", record)
    return result


def model_disagreement(first, second) -> Optional[float]:
    """How far two reconstructions of one photo set place the cameras.

    The centres of the images both register are aligned by
    `similarity_fit`; the result is the largest residual divided by the
    mean distance of the aligned centres from their centroid.

    Args:
        first, second: `pycolmap.Reconstruction`s (or `{name: [3] centre}`
            dicts).

    Returns:
        The relative disagreement (0 for the same cameras up to a
        similarity), or None with fewer than 3 common images.
    """
    residuals = _relative_residuals(first, second)
    return None if residuals is None else float(residuals.max())


def consensus_choice(models: Sequence) -> Tuple[int, np.ndarray]:
    """The model of several of one photo set that agrees best with the rest.

    For every pair, the cameras both register are aligned by
    `similarity_fit` and the mean residual is taken relative to the camera
    spread (as `model_disagreement`, with the mean for the maximum: one
    badly placed camera should not outweigh the rest).

    Args:
        models: two or more `pycolmap.Reconstruction`s or `{name: [3]
            centre}` dicts.

    Returns:
        `(index of the model with the smallest summed disagreement, [N]
        each model's mean disagreement with the others)`; pairs with
        fewer than 3 common images count as disagreement 1.
    """
    count = len(models)
    if count < 2:
        raise ValueError(f"consensus_choice: expected two or more models; "
                         f"received {count}")
    table = np.zeros((count, count))
    for i in range(count):
        for j in range(i + 1, count):
            residuals = _relative_residuals(models[i], models[j])
            table[i, j] = table[j, i] = (
                1.0 if residuals is None else float(residuals.mean()))
    spread = table.sum(1) / (count - 1)
    return int(np.argmin(spread)), spread


def _centres(model) -> Dict[str, np.ndarray]:
    """`{name: centre}` of a reconstruction's registered images (a dict
    is returned as it is)."""
    if isinstance(model, dict):
        return model
    return {image.name: np.asarray(image.projection_center(), np.float64)
            for image in model.images.values() if image.has_pose}


def _relative_residuals(first, second) -> Optional[np.ndarray]:
    """Residuals of the common cameras after a similarity fit of `first`
    to `second`, over the mean distance of `second`'s from their centroid
    (None with fewer than 3 common images or no spread)."""
    a, b = _centres(first), _centres(second)
    common = sorted(set(a) & set(b))
    if len(common) < 3:
        return None
    source = np.stack([a[name] for name in common])
    target = np.stack([b[name] for name in common])
    scale, rotation, translation = similarity_fit(source, target)
    residual = np.linalg.norm(
        scale * source @ rotation.T + translation - target, axis=1)
    spread = np.mean(np.linalg.norm(target - target.mean(0), axis=1))
    return residual / spread if spread > 0 else None


def similarity_fit(
    source: np.ndarray, target: np.ndarray,
) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity from `source` to `target` (Umeyama 1991).

    Args:
        source: `[N, 3]` points (e.g. SfM camera centres), N >= 3.
        target: `[N, 3]` corresponding points (e.g. true centres).

    Returns:
        `(scale, rotation [3, 3], translation [3])` minimising
        `sum |scale * rotation @ source_i + translation - target_i|^2`,
        with det(rotation) = +1.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or (
            source.shape[1] != 3) or source.shape[0] < 3:
        raise ValueError(
            "similarity_fit: expected two [N, 3] arrays with N >= 3; "
            f"received {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(0), target.mean(0)
    a, b = source - source_mean, target - target_mean
    u, s, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.eye(3)
    if np.linalg.det(u @ vt) < 0:
        d[2, 2] = -1.0
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / np.mean(np.sum(a**2, axis=1)))
    translation = target_mean - scale * rotation @ source_mean
    return scale, rotation, translation


def camera_centres(
    model_dir: PathLike, names: Optional[Sequence[str]] = None,
) -> Dict[str, np.ndarray]:
    """World-frame camera centres of a COLMAP model's registered images.

    Args:
        model_dir: a COLMAP model folder.
        names: keep only these image names (default: all registered).

    Returns:
        `{name: [3] centre}` in model units.
    """
    import pycolmap

    centres = _centres(pycolmap.Reconstruction(str(model_dir)))
    return {name: centre for name, centre in centres.items()
            if names is None or name in names}
