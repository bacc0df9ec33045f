"""SavedModel export in the TF Serving layout (DESIGN.md section 9).

`export_saved_model(network, "saved_models/<name>/<version>")` writes one
SavedModel version with a single `serving_default` signature:

inputs (float32, names as in the Keras model's input dict):
    `images [B, V, H, W, 3]` in [0, 1], view 0 the reference, V >= 2, H and W
        multiples of 32;
    `intrinsics [B, V, 3, 3]` pixel intrinsics of the full-resolution images;
    `cam_from_world [B, V, 4, 4]` world-to-camera transforms (OpenCV axes);
    `depth_range [B, 2]` first and last stage-1 hypothesis, in depth units;
outputs (float32): `depth [B, H, W]` (depth units, camera-frame z of the
    reference view) and `confidence [B, H, W]` in [0, 1].

B, V, H and W are all dynamic: one graph serves any batch, view count and
image size. A request with V < 2, or H or W not a multiple of 32, fails with
an `InvalidArgumentError` that says so. The serving function is a plain
graph function, never XLA-compiled (TF_NOTES.md 4.1): XLA would compile anew
for every (V, H, W) and needs the XLA JIT in the serving binary.
"""

import json
import pathlib
import re
import shutil
from typing import Dict
from typing import Optional
from typing import Union

import keras
import tensorflow as tf

from keras_mvs import files
from keras_mvs.models import cas_mvsnet

PathLike = Union[str, pathlib.Path]

SIGNATURE_NAME = "serving_default"
OUTPUT_NAMES = ("depth", "confidence")
# TF Serving parses version folder names as int64 and ignores every other
# name, so a version must be all ASCII digits.
_VERSION_PATTERN = re.compile(r"[0-9]{1,18}")
# The exported network's Keras config, relative to the version folder. TF
# Serving reads nothing from assets.extra/ but its warm-up file, and the
# SavedModel loader ignores the folder.
NETWORK_CONFIG_FILE = pathlib.PurePosixPath("assets.extra",
                                            "keras_mvs_network.json")


def serving_input_signature() -> Dict[str, tf.TensorSpec]:
    """The `serving_default` inputs: dynamic B, V, H, W; float32.

    Returns:
        Dict from input name to `tf.TensorSpec`, in the order of the Keras
        model's input dict: `images [None, None, None, None, 3]`,
        `intrinsics [None, None, 3, 3]`, `cam_from_world [None, None, 4, 4]`,
        `depth_range [None, 2]`.
    """
    shapes = {
        "images": [None, None, None, None, 3],
        "intrinsics": [None, None, 3, 3],
        "cam_from_world": [None, None, 4, 4],
        "depth_range": [None, 2],
    }
    return {name: tf.TensorSpec(shape, tf.float32, name=name)
            for name, shape in shapes.items()}


def check_version_path(path: PathLike, overwrite: bool = False,
                       argument: str = "path") -> pathlib.Path:
    """Checks that `path` can receive a new SavedModel version.

    Args:
        path: `<model base path>/<version>`, e.g. `saved_models/cas/1`.
        overwrite: allow replacing an existing version.
        argument: how error messages name `path` (`"--out"` for the CLI).

    Returns:
        `path` as a `pathlib.Path`.

    Raises:
        ValueError: the last path component is not an integer version (TF
            Serving would ignore the folder), or its parent is a file.
        FileExistsError: the version exists and `overwrite` is False.
    """
    path = pathlib.Path(path)
    if not _VERSION_PATTERN.fullmatch(path.name):
        raise ValueError(
            f"{argument} {path}: the last folder must be an integer version "
            "number (TF Serving serves only numbered versions, as in "
            f"saved_models/<name>/<version>). Received: {path.name!r}; "
            f"expected e.g. {path / '1'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(
            f"{argument} {path}: the model base path {path.parent} is a "
            "file, expected a folder (or nothing)")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{argument} {path}: version {path.name} already exists. Export "
            "to a new version number (TF Serving picks up the highest one), "
            "or ask to overwrite it (--overwrite, overwrite=True).")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{argument} {path}: exists and is not a folder")
    return path


def export_saved_model(network: keras.Model, path: PathLike,
                       overwrite: bool = False) -> pathlib.Path:
    """Writes `network` as a TF Serving SavedModel version at `path`.

    The export is written to a hidden temporary folder beside `path` and
    renamed into place only once complete, so a crashed or interrupted
    export never leaves a version that TF Serving would load.

    Args:
        network: a built Keras model (e.g. `keras_mvs.models.CascadeMVSNet`)
            that maps the input dict of `serving_input_signature()` to a dict
            with at least `depth [B, H, W]` and `confidence [B, H, W]`. It is
            called with `training=False`. A `CascadeMVSNet` with
            `xla_warp=True` is exported with the plain warp (same weights and
            numbers) so that nothing in the serving graph is XLA-compiled.
        path: the version folder, `<model base path>/<integer version>`.
        overwrite: replace an existing version.

    Returns:
        The version folder: `saved_model.pb`, `variables/` and, when the
        network has a Keras config, `NETWORK_CONFIG_FILE` (the network's
        `keras.saving.serialize_keras_object`, as JSON), so that readers of
        the export know its hypotheses per stage and widths.

    Raises:
        TypeError: `network` is not a Keras model.
        ValueError: `network` is not built, its outputs lack `depth` or
            `confidence`, or `path` is not a version folder
            (`check_version_path`).
        FileExistsError: the version exists and `overwrite` is False.
    """
    if not isinstance(network, keras.Model):
        raise TypeError(
            "`network` must be a keras.Model (e.g. keras_mvs.models."
            f"CascadeMVSNet). Received: {type(network).__name__}")
    if not network.built:
        raise ValueError(
            "`network` must be built before export: call it once on an "
            "input dict (or load a trained .keras file)")
    path = check_version_path(path, overwrite)

    def serve(images: tf.Tensor, intrinsics: tf.Tensor,
              cam_from_world: tf.Tensor,
              depth_range: tf.Tensor) -> Dict[str, tf.Tensor]:
        images = _checked_images(images)
        outputs = network({"images": images, "intrinsics": intrinsics,
                           "cam_from_world": cam_from_world,
                           "depth_range": depth_range}, training=False)
        missing = [name for name in OUTPUT_NAMES
                   if not isinstance(outputs, dict) or name not in outputs]
        if missing:
            raise ValueError(
                f"`network` outputs must be a dict with {list(OUTPUT_NAMES)}."
                f" Missing: {missing}")
        # Per-stage volumes and hypotheses stay out of the signature: the
        # serving response carries only the final maps.
        return {name: tf.cast(outputs[name], tf.float32)
                for name in OUTPUT_NAMES}

    # A hidden sibling (not an integer: TF Serving and
    # `keras_mvs.inference.load_model` skip it), renamed into place whole.
    tmp = files.staging_directory(path)
    xla_warp = getattr(network, "xla_warp", False)
    try:
        # `xla_warp` is read when the serving function is traced (by
        # add_endpoint and again by the SavedModel writer), so it stays off
        # until the archive is written.
        if xla_warp:
            network.xla_warp = False
        # No `archive.track(network)`: the endpoint's variables are collected
        # from its trace, while track() would walk the model's trackables and
        # trace Keras' own default signature of the whole model once more (a
        # wasted trace, and one that fails for a model built by `build()`).
        archive = keras.export.ExportArchive()
        archive.add_endpoint(
            name=SIGNATURE_NAME, fn=serve,
            input_signature=list(serving_input_signature().values()))
        archive.write_out(str(tmp), verbose=False)
        _write_network_config(network, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if xla_warp:
            network.xla_warp = xla_warp
    files.publish_directory(tmp, path)
    return path


def _write_network_config(network: keras.Model,
                          folder: pathlib.Path) -> None:
    """Writes `network`'s serialized config to `folder / NETWORK_CONFIG_FILE`.

    Nothing is written for a network whose config cannot be serialized
    (a subclassed model without `get_config`): the SavedModel does not need
    it.
    """
    try:
        text = json.dumps(keras.saving.serialize_keras_object(network),
                          indent=2)
    except (NotImplementedError, TypeError):
        return
    path = folder / NETWORK_CONFIG_FILE
    path.parent.mkdir(exist_ok=True)
    files.write_text(path, text)


def read_network_config(path: PathLike) -> Optional[dict]:
    """The serialized Keras config stored with an export, if any.

    Args:
        path: a SavedModel version folder written by `export_saved_model`.

    Returns:
        `keras.saving.serialize_keras_object(network)` of the exported
        network (`"class_name"`, `"config"` with e.g. `num_depths`, ...), or
        None when the folder has no `NETWORK_CONFIG_FILE`.

    Raises:
        ValueError: the file exists but is not valid JSON.
    """
    config_path = pathlib.Path(path) / NETWORK_CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{config_path}: expected the exported network's config as "
            f"JSON ({error})") from None


def _checked_images(images: tf.Tensor) -> tf.Tensor:
    """`images [B, V, H, W, 3]`, once V >= 2 and H, W are multiples of 32.

    In the serving graph V, H and W are unknown until a request arrives, so
    the network's own shape checks cannot run at trace time; without these
    a bad request fails deep inside the 3-D U-Net with a shape error that
    names no input.
    """
    shape = tf.shape(images)
    checks = [
        tf.debugging.assert_greater_equal(
            shape[1], 2, message="`images` needs V >= 2 views (view 0 the "
            "reference, then at least one source view); received shape"),
        tf.debugging.assert_equal(
            shape[2:4] % cas_mvsnet.SIZE_MULTIPLE, 0, message=(
                "`images` height and width must be multiples of "
                f"{cas_mvsnet.SIZE_MULTIPLE}; received [H, W] remainders")),
    ]
    # The identity makes the network wait for the checks.
    with tf.control_dependencies(checks):
        return tf.identity(images)


def describe_signature(path: PathLike) -> str:
    """A human-readable summary of an exported `serving_default` signature.

    Reloads the SavedModel (which also proves that it loads) and lists every
    input and output with its dtype and shape (-1 for dynamic dimensions, as
    `saved_model_cli show` prints them).

    Args:
        path: a SavedModel version folder.

    Returns:
        Several lines of text.

    Raises:
        ValueError: the SavedModel has no `serving_default` signature.
    """
    path = pathlib.Path(path)
    loaded = tf.saved_model.load(str(path))
    if SIGNATURE_NAME not in loaded.signatures:
        raise ValueError(
            f"{path}: no {SIGNATURE_NAME!r} signature; found "
            f"{sorted(loaded.signatures)}")
    signature = loaded.signatures[SIGNATURE_NAME]
    _, input_specs = signature.structured_input_signature
    lines = [f"SavedModel {path}", f"signature {SIGNATURE_NAME!r}", "inputs:"]
    for name, spec in sorted(input_specs.items()):
        lines.append(f"  {name}: {spec.dtype.name} {_dims(spec.shape)}")
    lines.append("outputs:")
    for name, spec in sorted(signature.structured_outputs.items()):
        lines.append(f"  {name}: {spec.dtype.name} {_dims(spec.shape)}")
    return "\n".join(lines)


def _dims(shape: tf.TensorShape) -> str:
    return "(" + ", ".join("-1" if d is None else str(d)
                           for d in shape.as_list()) + ")"


def check_export_paths(model: PathLike, out: PathLike,
                       overwrite: bool = False) -> pathlib.Path:
    """Checks the export command's `--model` and `--out` before the slow
    load.

    Args:
        model: training work directory or `.keras` file (path-like).
        out: the version folder, `<model base path>/<integer version>`.
        overwrite: replace an existing version.

    Returns:
        `out` as a `pathlib.Path`.

    Raises:
        ValueError: `out` is not a version folder, or `model` is a folder
            without `model.keras` (such as a SavedModel, which cannot be
            exported again).
        FileExistsError: `out` exists and `overwrite` is False.
    """
    out = check_version_path(out, overwrite, argument="--out")
    model = pathlib.Path(model)
    if model.is_dir() and not (model / "model.keras").is_file():
        raise ValueError(
            f"--model {model}: a folder without model.keras (a SavedModel "
            "cannot be exported again); expected a training work directory "
            "or a .keras file")
    return out
