"""The `tf.data` input pipeline: scene dicts to training and evaluation batches.

Everything here works on *scene dicts*, one element per scene, each image
stored once (DESIGN.md 7); view tuples are assembled here, so the scene-level
contrastive branch can draw sources from a reference's full candidate list.
`keras_mvs.data.folders.scene_dicts_from_folders` produces scene dicts from
MVSNet-layout folders (re-exported here with `check_folders`, for callers
that use this module as the data entry point); the TFDS adapter
(`keras_mvs.data.tfds_source`) produces the same structure.

Scene dict (N views of one scene, all H x W):

* `"images"`: `[N, H, W, 3]` uint8 RGB.
* `"intrinsics"`: `[N, 3, 3]` float32, pixels of these H x W images.
* `"cam_from_world"`: `[N, 4, 4]` float32 world-to-camera (OpenCV axes).
* `"depth_range"`: `[N, 2]` float32 (first, last) hypothesis depth of each
  view as a reference, in the cam files' units.
* `"pairs"`: `[N, M]` int32 (M is normally 10): row i lists view i's
  candidate source views, best first, as *indices along the N axis*, padded
  with -1. Entries out of range, equal to i or repeated are ignored.
* optional `"depths"`: `[N, H, W]` float32 ground-truth depth (0 = unknown).
* optional `"masks"`: `[N, H, W]` float32 in {0, 1}.
* optional `"name"`: `[]` string, used in error messages (default
  "scene #<position in the dataset>").
* optional `"view_ids"`: `[N]` int32, the views' ids in the source data
  (default 0..N-1); batches report `ref_id` in these ids.
* optional `"problems"`: `[N]` string, empty for a usable view, otherwise
  what is wrong with it ("view 7: image file is missing"). Readers fill it
  where they know file names; the pipeline adds its own checks.

View tuples (`keras_mvs.data.view_tuples`, ALGORITHMS.md 1.2 and 4.1):
every view with at least one valid candidate is a reference; the regular
tuple takes its first V - 1 candidates, the scene-level (SCC) tuple V - 1
drawn from the whole candidate list, fresh per example. Crops, float
conversion and ICC augmentation are `keras_mvs.data.transforms`.

Bad data: a view with a problem (missing or unreadable image, depth map of
the wrong size, depth range not 0 < first < last, non-finite camera, depth
range or depth value) makes every reference tuple that may use it bad: the
reference itself, its regular sources, and with the SCC branch its whole
candidate list. A bad tuple stops the input pipeline with an error naming
the scene, the reference and the bad view, or, with `skip_bad=True`, is
skipped and counted in a logged warning.

Randomness is stateless: every random choice (scene and reference order,
SCC sources, crop offsets, ICC augmentation) derives from the `seed`
argument, the scene's visit number and the reference index, so the same seed
gives the same batches.
"""

import logging
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_mvs.data import folders
from keras_mvs.data import transforms
from keras_mvs.data import view_tuples
from keras_mvs.models.cas_mvsnet import SIZE_MULTIPLE

_LOG = logging.getLogger(__name__)

BRANCHES = ("regular", "icc", "scc")

# Reading folders is `keras_mvs.data.folders`; these names stay importable
# from here, where the entry points have always found them.
check_folders = folders.check_folders
scene_dicts_from_folders = folders.scene_dicts_from_folders


# === Per-scene assembly ===


def _no_autograph(function):
    """Marks a dataset function as plain TF code.

    The pipeline's functions have no tensor-dependent Python control flow, so
    autograph's source conversion would only add tracing time.
    """
    return tf.autograph.experimental.do_not_convert(function)


def _as_string(values: tf.Tensor) -> tf.Tensor:
    return tf.strings.as_string(values, precision=6, shortest=True)


def _complete_scene(scene_index: tf.Tensor, scene: dict) -> dict:
    """Adds default `name`/`view_ids` and merges the runtime data checks."""
    scene = dict(scene)
    count = tf.shape(scene["images"])[0]
    if "name" not in scene:
        scene["name"] = tf.strings.join(
            ["scene #", tf.strings.as_string(scene_index)])
    if "view_ids" not in scene:
        scene["view_ids"] = tf.range(count)
    view_ids = tf.strings.as_string(scene["view_ids"])
    first, last = scene["depth_range"][:, 0], scene["depth_range"][:, 1]
    finite_camera = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(scene["intrinsics"]), axis=[1, 2]),
        tf.reduce_all(tf.math.is_finite(scene["cam_from_world"]),
                      axis=[1, 2]))
    good_range = (tf.math.is_finite(first) & tf.math.is_finite(last)
                  & (first > 0) & (last > first))
    found = tf.fill([count], "")
    if "depths" in scene:
        finite_depth = tf.reduce_all(tf.math.is_finite(scene["depths"]),
                                     axis=[1, 2])
        found = tf.where(finite_depth, found, tf.strings.join(
            ["view ", view_ids, ": depth map has non-finite values"]))
    found = tf.where(good_range, found, tf.strings.join(
        ["view ", view_ids, ": depth range (", _as_string(first), ", ",
         _as_string(last), ") is not 0 < first < last"]))
    found = tf.where(finite_camera, found, tf.strings.join(
        ["view ", view_ids, ": camera has non-finite values"]))
    given = scene.get("problems", found)
    scene["problems"] = tf.where(tf.strings.length(given) > 0, given, found)
    return scene


def _check_size(scene: dict, crop: Optional[tuple[int, int]]) -> tf.Operation:
    """Asserts that the scene fits the crop, or is a multiple of 32."""
    height, width = tf.shape(scene["images"])[1], tf.shape(scene["images"])[2]
    size = tf.strings.join([tf.strings.as_string(height), "x",
                            tf.strings.as_string(width)])
    checks = []
    for key in ("depths", "masks"):
        if key in scene:
            other = tf.shape(scene[key])[1:3]
            checks.append(tf.debugging.Assert(
                tf.reduce_all(other == tf.shape(scene["images"])[1:3]),
                [tf.strings.join([
                    "scene ", scene["name"], ": ", key, " are ",
                    tf.strings.as_string(other[0]), "x",
                    tf.strings.as_string(other[1]), ", images are ", size])]))
    if crop is None:
        checks.append(tf.debugging.Assert(
            (height % SIZE_MULTIPLE == 0) & (width % SIZE_MULTIPLE == 0),
            [tf.strings.join([
                "scene ", scene["name"], ": images are ", size,
                f"; height and width must be multiples of {SIZE_MULTIPLE} "
                "(pass crop=(h, w) or resize the scene)"])]))
    else:
        checks.append(tf.debugging.Assert(
            (height >= crop[0]) & (width >= crop[1]),
            [tf.strings.join([
                "scene ", scene["name"], ": images are ", size,
                f", smaller than the crop {crop[0]}x{crop[1]}"])]))
    return tf.group(checks)


class _BadTupleReport:
    """Logs skipped reference tuples with a running count (via py_function)."""

    def __init__(self):
        self.skipped = 0

    def __call__(self, name: tf.Tensor, messages: tf.Tensor) -> np.int32:
        messages = [m.decode() for m in messages.numpy()]
        self.skipped += len(messages)
        _LOG.warning(
            "skip_bad: skipping %d reference view(s) of scene %s "
            "(%d skipped so far): %s", len(messages), name.numpy().decode(),
            self.skipped, "; ".join(messages))
        return np.int32(len(messages))


def _good_tuples(scene: dict, refs: tf.Tensor, used: tf.Tensor,
                 skip_bad: bool, report: _BadTupleReport) -> tf.Tensor:
    """Filters (or asserts on) reference tuples that use a bad view.

    Args:
        scene: completed scene dict.
        refs: `[R]` int32 reference indices.
        used: `[R, U]` int32 view indices each tuple may use (-1 = none).
        skip_bad: skip with a logged count instead of failing.
        report: the logger of skipped tuples.

    Returns:
        `[R']` int32 references whose tuples are usable.
    """
    problems = tf.gather(scene["problems"], tf.maximum(used, 0))
    problems = tf.where(used >= 0, problems, "")
    bad_views = tf.strings.length(problems) > 0  # [R, U]
    bad = tf.reduce_any(bad_views, axis=1)
    first_bad = tf.gather(problems, tf.argmax(tf.cast(bad_views, tf.int32),
                                              axis=1, output_type=tf.int32),
                          batch_dims=1)
    messages = tf.strings.join([
        "reference view ",
        tf.strings.as_string(tf.gather(scene["view_ids"], refs)), " uses ",
        first_bad])
    bad_messages = tf.boolean_mask(messages, bad)
    if skip_bad:
        logged = tf.cond(
            tf.reduce_any(bad),
            lambda: tf.py_function(report, [scene["name"], bad_messages],
                                   tf.int32),
            lambda: tf.constant(0))
        with tf.control_dependencies([logged]):
            return tf.boolean_mask(refs, tf.logical_not(bad))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [tf.strings.join([
            "scene ", scene["name"], ": ",
            tf.strings.reduce_join(bad_messages[:3], separator="; "),
            " (", tf.strings.as_string(tf.size(bad_messages)),
            " bad reference tuple(s) in this scene; pass skip_bad=True to "
            "skip them with a counted warning)"])])
    with tf.control_dependencies([check]):
        return tf.identity(refs)


def _scene_examples(
    visit: tf.Tensor,
    scene_index: tf.Tensor,
    scene: dict,
    *,
    num_views: int,
    seed: int,
    with_scc: bool,
    shuffle: bool,
    crop: Optional[tuple[int, int]],
    skip_bad: bool,
    report: _BadTupleReport,
) -> tf.data.Dataset:
    """One scene visit -> dataset of uint8 view tuples, one per reference."""
    scene = _complete_scene(scene_index, scene)
    size_check = _check_size(scene, crop)
    candidates, counts = view_tuples.candidate_lists(scene["pairs"])
    refs, views = view_tuples.regular_tuples(candidates, counts,
                                              num_views)
    used = views
    if with_scc:
        used = tf.concat([views, tf.gather(candidates, refs)], axis=1)
    good = _good_tuples(scene, refs, used, skip_bad, report)
    with tf.control_dependencies([size_check]):
        good = tf.identity(good)
    visit_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 0], tf.int64), visit)
    if shuffle:
        good = tf.random.experimental.stateless_shuffle(good, visit_seed)
    view_table = tf.scatter_nd(refs[:, tf.newaxis], views,
                               [tf.shape(counts)[0], num_views])

    def example(ref: tf.Tensor) -> dict:
        example_seed = tf.random.experimental.stateless_fold_in(
            visit_seed, tf.cast(ref, tf.int64))
        indices = view_table[ref]
        out = {
            "images": tf.gather(scene["images"], indices),
            "intrinsics": tf.gather(scene["intrinsics"], indices),
            "cam_from_world": tf.gather(scene["cam_from_world"], indices),
            "depth_range": scene["depth_range"][ref],
            "ref_id": scene["view_ids"][ref],
            "scene_index": scene_index,
            "scene_name": scene["name"],
            "seed": example_seed,
        }
        if "depths" in scene:
            out["depth"] = scene["depths"][ref]
            out["mask"] = (scene["masks"][ref] if "masks" in scene else
                           tf.cast(scene["depths"][ref] > 0, tf.float32))
        elif "masks" in scene:
            out["mask"] = scene["masks"][ref]
        if with_scc:
            scc_views = view_tuples.random_source_views(
                ref, candidates[ref], counts[ref], num_views,
                tf.random.experimental.stateless_fold_in(example_seed, 1))
            out["scc_images"] = tf.gather(scene["images"], scc_views)
            out["scc_intrinsics"] = tf.gather(scene["intrinsics"], scc_views)
            out["scc_cam_from_world"] = tf.gather(scene["cam_from_world"],
                                                  scc_views)
        return out

    return tf.data.Dataset.from_tensor_slices(good).map(
        _no_autograph(example))


def _check_arguments(num_views: int, batch_size: int,
                     crop: Optional[tuple[int, int]]) -> None:
    if num_views < 2:
        raise ValueError(f"num_views must be at least 2; received {num_views}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; received {batch_size}")
    if crop is not None:
        if (len(crop) != 2 or min(crop) <= 0
                or crop[0] % SIZE_MULTIPLE or crop[1] % SIZE_MULTIPLE):
            raise ValueError(
                f"crop must be (height, width), positive multiples of "
                f"{SIZE_MULTIPLE}; received {crop}")


def _tuples(scenes: tf.data.Dataset, *, num_views: int, seed: int,
            with_scc: bool, shuffle: bool, repeat: bool,
            crop: Optional[tuple[int, int]], skip_bad: bool,
            scene_cycle: int) -> tf.data.Dataset:
    """Scenes -> (uint8) view tuples, with seeded scene and reference order."""
    num_scenes = int(scenes.cardinality())
    if num_scenes > 0:
        # More would load the same scene several times at once.
        scene_cycle = min(scene_cycle, num_scenes)
    visits = scenes.enumerate()
    if shuffle:
        visits = visits.shuffle(scene_cycle, seed=seed,
                                reshuffle_each_iteration=True)
    if repeat:
        visits = visits.repeat()
    report = _BadTupleReport()

    def per_scene(visit, indexed):
        scene_index, scene = indexed
        return _scene_examples(
            visit, scene_index, scene, num_views=num_views, seed=seed,
            with_scc=with_scc, shuffle=shuffle, crop=crop, skip_bad=skip_bad,
            report=report)

    # Interleaving a few scenes mixes references of different scenes while
    # holding at most 2 * `scene_cycle` decoded scenes in memory (shuffle
    # buffer and interleave cycle).
    return visits.enumerate().interleave(
        _no_autograph(per_scene), cycle_length=scene_cycle if shuffle else 1,
        block_length=1)


def make_dataset(
    scenes: tf.data.Dataset,
    *,
    num_views: int,
    batch_size: int,
    seed: int,
    training: bool = True,
    branches: Sequence[str] = ("regular",),
    require_depth: bool = False,
    crop: Optional[tuple[int, int]] = None,
    shuffle: bool = True,
    repeat: bool = True,
    skip_bad: bool = False,
    shuffle_buffer: int = 16,
    scene_cycle: int = 4,
) -> tf.data.Dataset:
    """Training batches from a dataset of scene dicts.

    Each scene visit is expanded into one view tuple per reference (module
    docstring); references are shuffled within the scene, `scene_cycle`
    scenes are interleaved, and a `shuffle_buffer` of tuples mixes them
    further. The crop window is random in training and centred otherwise,
    the same for every view (and branch) of one example.

    Args:
        scenes: scene dicts (module docstring), e.g. from
            `scene_dicts_from_folders` or the TFDS adapter.
        num_views: V, reference included.
        batch_size: B; in training the last partial batch is dropped.
        seed: the seed of every random choice.
        training: random crop and `drop_remainder`; False centres the crop.
        branches: "regular" plus optionally "icc" and "scc".
        require_depth: raise if the scenes carry no "depths".
        crop: optional (height, width), multiples of 32.
        shuffle: shuffle scenes and references.
        repeat: repeat the scenes forever (each pass reshuffled).
        skip_bad: skip bad reference tuples with a counted warning instead of
            failing.
        shuffle_buffer: tuples in the shuffle buffer (each holds V or 2V
            uint8 images).
        scene_cycle: scenes interleaved at a time, and the size of the
            scene shuffle buffer (capped at the number of scenes when the
            dataset's cardinality is known); up to twice this many decoded
            scenes are held in memory. Scenes are re-read on every pass:
            pass `scenes.cache()` when they fit in memory.

    Returns:
        A dataset of dicts (B, V, H, W as above):

        * `"images"`: `[B, V, H, W, 3]` float32 in [0, 1], reference first.
        * `"intrinsics"`: `[B, V, 3, 3]` float32 for H x W.
        * `"cam_from_world"`: `[B, V, 4, 4]` float32.
        * `"depth_range"`: `[B, 2]` float32, the reference view's.
        * with depths: `"depth"` `[B, H, W]` float32 and `"mask"` `[B, H, W]`
          float32 of the reference (the scene's mask, else depth > 0).
        * with "scc": `"scc_images"`, `"scc_intrinsics"`,
          `"scc_cam_from_world"`, shaped like the regular ones.
        * with "icc": `"icc_images"` `[B, V, H, W, 3]` float32 in [0, 1],
          `augment.augment_views` of `"images"`.

    Raises:
        ValueError: bad arguments, or `require_depth` without depths.
        tf.errors.InvalidArgumentError (while iterating): a bad tuple without
            `skip_bad`, or a scene whose size does not fit (message names
            the scene, reference and view).
    """
    _check_arguments(num_views, batch_size, crop)
    unknown = set(branches) - set(BRANCHES)
    if "regular" not in branches or unknown:
        raise ValueError(
            f"branches must include 'regular' and only {BRANCHES}; received "
            f"{tuple(branches)}")
    if require_depth and "depths" not in scenes.element_spec:
        raise ValueError(
            "require_depth=True but the scene dicts have no 'depths' (keys: "
            f"{sorted(scenes.element_spec)})")
    with_scc, with_icc = "scc" in branches, "icc" in branches
    keep = ["images", "intrinsics", "cam_from_world", "depth_range", "depth",
            "mask"]
    if with_scc:
        keep += ["scc_images", "scc_intrinsics", "scc_cam_from_world"]
    if with_icc:
        keep.append("icc_images")
    dataset = _tuples(scenes, num_views=num_views, seed=seed,
                      with_scc=with_scc, shuffle=shuffle, repeat=repeat,
                      crop=crop, skip_bad=skip_bad, scene_cycle=scene_cycle)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.map(
        _no_autograph(lambda example: transforms.finish_example(
            example, crop=crop, random_crop=training, with_icc=with_icc,
            keep=keep)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(
    scenes: tf.data.Dataset,
    num_views: int,
    *,
    batch_size: int = 1,
    crop: Optional[tuple[int, int]] = None,
    skip_bad: bool = False,
) -> tf.data.Dataset:
    """Every reference of every scene once, in order, without augmentation.

    Args:
        scenes: scene dicts (module docstring).
        num_views: V, reference included.
        batch_size: B; the last batch may be smaller.
        crop: optional centre crop (height, width), multiples of 32.
        skip_bad: skip bad reference tuples with a counted warning.

    Returns:
        Batches with the regular keys of `make_dataset` (images, intrinsics,
        cam_from_world, depth_range, and depth/mask when present) plus
        `"ref_id"` `[B]` int32 (the view id), `"scene_index"` `[B]` int64
        (position of the scene in `scenes`) and `"scene_name"` `[B]` string.
    """
    _check_arguments(num_views, batch_size, crop)
    keep = ["images", "intrinsics", "cam_from_world", "depth_range", "depth",
            "mask", "ref_id", "scene_index", "scene_name"]
    dataset = _tuples(scenes, num_views=num_views, seed=0, with_scc=False,
                      shuffle=False, repeat=False, crop=crop,
                      skip_bad=skip_bad, scene_cycle=1)
    dataset = dataset.map(
        _no_autograph(lambda example: transforms.finish_example(
            example, crop=crop, random_crop=False, with_icc=False,
            keep=keep)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
