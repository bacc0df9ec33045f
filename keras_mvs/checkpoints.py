"""Import of official PyTorch checkpoints (UniMVSNet, CasMVSNet) into our model.

A PyTorch state_dict of the reference network (every name and shape is
listed in `../shared/spec/unimvsnet_state_dict.tsv`) maps one to one onto
the variables of `keras_mvs.models.CascadeMVSNet` (docs/weight_layout.md):

* names: `feature.conv{A}.{B}.X` -> `feature_pyramid/conv{A}_{B}/X`,
  `feature.{out1,...}.X` -> `feature_pyramid/{out1,...}/X`,
  `cost_aggregation.weight_net.{S}.w_net.{J}.X` ->
  `cost_aggregation_{S}/w_net_{J}/X`,
  `cost_regularization.{S}.{block}.X` -> `cost_regularization_{S}/{block}/X`;
  leaves `weight` -> `kernel` (conv) or `gamma` (BatchNorm), `bias` ->
  `bias` or `beta`, `running_mean` -> `moving_mean`, `running_var` ->
  `moving_variance`.
* kernels: PyTorch puts the channel axes first, Keras last, both reversed:
  Conv2d `(out, in, kh, kw)` -> `(kh, kw, in, out)`, Conv3d
  `(out, in, kd, kh, kw)` -> `(kd, kh, kw, in, out)`, and ConvTranspose3d
  `(in, out, kd, kh, kw)` -> Keras Conv3DTranspose `(kd, kh, kw, out, in)`:
  the same axis permutation, with no spatial flip (our transposed block is
  the exact adjoint of the same cross-correlation, see
  `keras_mvs.layers.conv_blocks`).
* `num_batches_tracked` is ignored: PyTorch reads it only when BatchNorm's
  momentum is None, and our momentum is fixed (0.9 in Keras terms).

The expected names and shapes are derived from the model's own variables,
so any configuration converts whose tensors exist in the checkpoint: the
adaptive (UniMVSNet) and variance (CasMVSNet) aggregations, other base
widths, and the group-wise variant, whose 3-D CNNs take G channels at every
stage. CL-MVSNet's network (`networks/clmvsnet.py`) has the same FPN names
and parameter-free aggregation, samplers and heads; it calls the 3-D CNNs
`regularization.{S}` instead of `cost_regularization.{S}`, and
`canonical_keys` renames them. Every official checkpoint learned its weights
with the official warp's sampling (PyTorch's `align_corners=False`,
ALGORITHMS.md 9 item 1): a converted model needs
`CascadeMVSNet(warp_sampling="align_corners_false")`, which
`experiments.convert_checkpoint` sets.

This module needs only numpy at import time; reading `.ckpt`/`.pth` files
imports torch on demand (the optional `convert` extra), and
`convert_to_keras_file` Keras. It is a little over 500 lines because it is
one job, a checkpoint in and our model out: the name and layout mapping,
the three file formats and the conversion to a `.keras` file.
"""

import dataclasses
import os
import re
import zipfile
import zlib
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Union

import numpy as np

if TYPE_CHECKING:  # annotations only: importing keras costs seconds
    import keras

PathLike = Union[str, os.PathLike]

TORCH_EXTENSIONS = (".ckpt", ".pth", ".pt", ".tar")
NPZ_EXTENSION = ".npz"
# Wrappers that prefix every key: DataParallel / DistributedDataParallel
# ("module.") and CL-MVSNet's training wrapper ("model.").
KEY_PREFIXES = ("module.", "model.")
# CL-MVSNet's name for the 3-D CNNs -> the UniMVSNet / CasMVSNet name.
KEY_ALIASES = (("regularization.", "cost_regularization."),)
IGNORED_LEAF = "num_batches_tracked"

_LEAVES = {
    "kernel": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
# Keras path (after the model name) -> PyTorch module path, leaf excluded.
_MODULE_RULES = (
    (re.compile(r"^feature_pyramid/conv(\d+)_(\d+)/(conv|bn)$"),
     r"feature.conv\1.\2.\3"),
    (re.compile(r"^feature_pyramid/(out\d+|inner\d+)$"), r"feature.\1"),
    (re.compile(r"^cost_aggregation_(\d+)/w_net_(\d+)/(conv|bn)$"),
     r"cost_aggregation.weight_net.\1.w_net.\2.\3"),
    (re.compile(r"^cost_regularization_(\d+)/(conv\d+)/(conv|bn)$"),
     r"cost_regularization.\1.\2.\3"),
    (re.compile(r"^cost_regularization_(\d+)/prob$"),
     r"cost_regularization.\1.prob"),
)


class StateDictError(ValueError):
    """A state_dict does not fit the model.

    Attributes:
        missing: names the model needs that the state_dict lacks.
        unexpected: names in the state_dict that the model has no place for.
        mismatched: `(name, got_shape, expected_shape)` for tensors whose
            PyTorch shape differs from the model's.
    """

    def __init__(self, missing: Iterable[str], unexpected: Iterable[str],
                 mismatched: Iterable[tuple]):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} missing key(s): "
                         + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"{len(self.unexpected)} unexpected key(s): "
                         + ", ".join(self.unexpected))
        for name, got, expected in self.mismatched:
            lines.append(f"key {name!r} has shape {got}, the model expects "
                         f"{expected} (PyTorch layout)")
        super().__init__(
            "The state_dict does not match the model (check --aggregation "
            "and the model configuration):\n  " + "\n  ".join(lines))


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What `convert_state_dict` did.

    Attributes:
        assigned: PyTorch name -> Keras variable path (without the model
            name), one entry per model variable.
        ignored: state_dict keys deliberately not used
            (`num_batches_tracked`).
    """

    assigned: dict[str, str]
    ignored: tuple[str, ...]


def torch_name(keras_path: str) -> str:
    """PyTorch state_dict name of a CascadeMVSNet variable.

    Args:
        keras_path: the variable's path without the model name, e.g.
            `cost_regularization_1/conv9/conv/kernel`.

    Returns:
        The reference name, e.g. `cost_regularization.1.conv9.conv.weight`.

    Raises:
        ValueError: the path belongs to no layer of the reference network.
    """
    module, _, leaf = keras_path.rpartition("/")
    for pattern, replacement in _MODULE_RULES:
        if pattern.match(module) and leaf in _LEAVES:
            return f"{pattern.sub(replacement, module)}.{_LEAVES[leaf]}"
    raise ValueError(
        f"The model variable {keras_path!r} has no counterpart in the "
        "reference state_dict layout (docs/weight_layout.md)")


def torch_shape(keras_shape: Iterable[int]) -> tuple:
    """PyTorch shape of a Keras variable: channel axes first, reversed."""
    keras_shape = tuple(int(n) for n in keras_shape)
    if len(keras_shape) < 2:
        return keras_shape
    return (keras_shape[-1], keras_shape[-2]) + keras_shape[:-2]


def to_keras_layout(array: np.ndarray) -> np.ndarray:
    """Moves a PyTorch kernel's channel axes last (inverse of `torch_shape`).

    `(a, b, *k) -> (*k, b, a)`: Conv2d/Conv3d `(out, in, *k)` to Keras
    `(*k, in, out)`, ConvTranspose3d `(in, out, *k)` to Keras
    Conv3DTranspose `(*k, out, in)`. Vectors pass unchanged.
    """
    array = np.asarray(array)
    if array.ndim < 2:
        return array
    return np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))


def _model_variables(network: "keras.Model") -> dict:
    """Keras path (model name dropped) -> variable; builds the model first."""
    if not network.built:
        network.build()
    variables = {}
    for variable in network.variables:
        _, _, path = variable.path.partition("/")
        variables[path] = variable
    return variables


def expected_state_dict(network: "keras.Model") -> dict:
    """The state_dict a model converts from: PyTorch name -> PyTorch shape.

    `num_batches_tracked` entries are not listed (they are optional and
    ignored).

    Args:
        network: a `keras_mvs.models.CascadeMVSNet` (built on demand).

    Returns:
        dict of name -> shape tuple, in the model's variable order.
    """
    return {torch_name(path): torch_shape(variable.shape)
            for path, variable in _model_variables(network).items()}


def canonical_keys(state_dict: Mapping[str, Any]) -> dict:
    """Brings a state_dict's keys to the UniMVSNet names.

    Drops wrapper prefixes shared by every key (`module.`, then `model.`)
    and renames CL-MVSNet's `regularization.` modules to
    `cost_regularization.`. Other keys are left alone, so a key that fits
    nowhere is still reported by `convert_state_dict`.
    """
    state_dict = dict(state_dict)
    for prefix in KEY_PREFIXES:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value
                          for key, value in state_dict.items()}
    for alias, name in KEY_ALIASES:
        state_dict = {
            (name + key[len(alias):] if key.startswith(alias) else key): value
            for key, value in state_dict.items()}
    return state_dict


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, maybe on a GPU
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def convert_state_dict(state_dict: Mapping[str, Any],
                       network: "keras.Model") -> ConversionReport:
    """Loads a reference PyTorch state_dict into a CascadeMVSNet, strictly.

    Every model variable must have exactly one state_dict tensor of the
    matching PyTorch shape, and every state_dict key must be used, apart from
    BatchNorm `num_batches_tracked` counters, which are ignored. All problems
    are collected and raised together before anything is assigned, so a
    failed conversion leaves the model untouched.

    Args:
        state_dict: name -> tensor (numpy arrays or torch tensors) in the
            reference layout, passed through `canonical_keys`.
        network: a `keras_mvs.models.CascadeMVSNet` whose aggregation, head
            and widths match the checkpoint (built on demand).

    Returns:
        A `ConversionReport`.

    Raises:
        StateDictError: missing, unexpected or mis-shaped keys, all named.

    Example:
        >>> model = CascadeMVSNet(aggregation="adaptive", head="unity")
        >>> convert_state_dict(load_state_dict("model_000015.ckpt"), model)
    """
    state_dict = canonical_keys(state_dict)
    variables = _model_variables(network)
    names = {torch_name(path): path for path in variables}
    bn_modules = {name.rpartition(".")[0] for name in names
                  if name.endswith(".running_var")}

    missing = [name for name in names if name not in state_dict]
    unexpected, ignored, mismatched = [], [], []
    arrays = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if leaf == IGNORED_LEAF and module in bn_modules:
            ignored.append(key)
            continue
        if key not in names:
            unexpected.append(key)
            continue
        array = _to_numpy(value)
        expected = torch_shape(variables[names[key]].shape)
        if array.shape != expected:
            mismatched.append((key, array.shape, expected))
            continue
        arrays[key] = array
    if missing or unexpected or mismatched:
        raise StateDictError(missing, unexpected, mismatched)

    for name, path in names.items():
        variable = variables[path]
        variable.assign(to_keras_layout(arrays[name]).astype(variable.dtype))
    return ConversionReport(assigned=dict(names), ignored=tuple(ignored))


def model_config(state_dict: Mapping[str, Any]) -> dict:
    """CascadeMVSNet arguments that a state_dict's shapes determine.

    Args:
        state_dict: reference-layout state_dict (see `canonical_keys`).

    Returns:
        dict with `aggregation` ("adaptive" when the aggregation weight nets
        are present; "groupwise" when the first 3-D convolution takes fewer
        channels than the coarsest feature map has; otherwise "variance"),
        `base_channels` and `groups`.

    Raises:
        StateDictError: a key needed to tell is missing.
    """
    state_dict = canonical_keys(state_dict)
    first_2d = "feature.conv0.0.conv.weight"
    coarse_features = "feature.out1.weight"
    first_3d = "cost_regularization.0.conv0.conv.weight"
    absent = [key for key in (first_2d, coarse_features, first_3d)
              if key not in state_dict]
    if absent:
        raise StateDictError(absent, [], [])
    base_channels = int(_to_numpy(state_dict[first_2d]).shape[0])
    cost_channels = int(_to_numpy(state_dict[first_3d]).shape[1])
    feature_channels = int(_to_numpy(state_dict[coarse_features]).shape[0])
    if any(key.startswith("cost_aggregation.") for key in state_dict):
        aggregation = "adaptive"
    elif cost_channels != feature_channels:
        aggregation = "groupwise"
    else:
        aggregation = "variance"
    groups = cost_channels if aggregation == "groupwise" else base_channels
    return {"aggregation": aggregation, "base_channels": base_channels,
            "groups": groups}


def load_state_dict(path: PathLike) -> dict:
    """Reads a reference state_dict as numpy arrays.

    `.npz` files (`np.savez(path, **state_dict)`) need only numpy. PyTorch
    files (`.ckpt`, `.pth`, `.pt`, `.tar`) are read with
    `torch.load(weights_only=True)`, which needs torch (`pip install
    "keras-mvs[convert]"`). The official checkpoints nest the state_dict under
    a `"model"` key (Lightning-style files under `"state_dict"`); the keys
    pass through `canonical_keys`.

    Args:
        path: the checkpoint file.

    Returns:
        dict of name -> numpy array.

    Raises:
        FileNotFoundError: `path` does not exist.
        ImportError: a PyTorch file and no torch installed.
        ValueError: an unknown extension or an unreadable layout.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}")
    extension = os.path.splitext(path)[1].lower()
    if extension == NPZ_EXTENSION:
        try:
            # Our own handle: np.load(path) leaves the file it opened open
            # when the archive is damaged (its zip reader raises first).
            with open(path, "rb") as handle, np.load(
                    handle, allow_pickle=False) as archive:
                state_dict = {key: archive[key] for key in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
            # numpy's own message ("pickled (object) data", "not a zip
            # file") names no file and suggests unpickling.
            found = _describe_unreadable(path)
            detail = "" if found == "a text file" else f" ({error})"
            raise ValueError(
                f"Cannot read {path!r}: expected an .npz archive of the "
                f"state_dict's arrays (numpy.savez), found {found}{detail}"
            ) from None
    elif extension in TORCH_EXTENSIONS:
        state_dict = _load_torch(path)
    else:
        raise ValueError(
            f"Cannot read {path!r}: expected a PyTorch checkpoint "
            f"({', '.join(TORCH_EXTENSIONS)}) or an {NPZ_EXTENSION} of the "
            "state_dict")
    if not state_dict:
        raise ValueError(f"The checkpoint {path!r} holds no tensors")
    return canonical_keys(state_dict)


def _describe_unreadable(path: str) -> str:
    """What a file that should be an .npz looks like: text, a truncated or
    other zip, or binary data."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK"):
        return "a truncated or damaged zip archive"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data that is not a zip archive"


def _load_torch(path: str) -> dict:
    try:
        import torch  # the optional `convert` extra; nothing else needs it
    except ImportError as error:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path!r} needs torch: "
            "`pip install \"keras-mvs[convert]\"`, or convert it to .npz "
            "where torch is installed: `sd = torch.load(PATH, "
            "map_location='cpu')['model']; numpy.savez('state.npz', "
            "**{k: v.numpy() for k, v in sd.items()})`") from error
    # weights_only refuses pickled code; the reference checkpoints hold only
    # tensors, numbers and dicts.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, Mapping) and isinstance(
                checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"{path!r} holds a {type(checkpoint).__name__}, expected a "
            "state_dict (a dict of tensors, possibly under a 'model' key)")
    tensors = {key: value for key, value in checkpoint.items()
               if isinstance(value, torch.Tensor)}
    others = sorted(set(checkpoint) - set(tensors))
    if others:
        raise ValueError(
            f"{path!r}: the state_dict has non-tensor entries: {others}")
    return {key: _to_numpy(value) for key, value in tensors.items()}


def read_state_dict_spec(path: PathLike) -> dict:
    """Reads a `name<TAB>shape` listing such as unimvsnet_state_dict.tsv.

    Lines starting with `#` and the `name\\tshape` header are skipped; a
    shape is `AxBxC` or `scalar`.

    Returns:
        dict of name -> shape tuple (`()` for scalars), in file order.

    Raises:
        ValueError: a malformed line, naming the file and line number.
    """
    spec = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\n")
            if not line or line.startswith("#") or line == "name\tshape":
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not re.fullmatch(
                    r"scalar|\d+(x\d+)*", fields[1]):
                raise ValueError(
                    f"{os.fspath(path)}:{number}: expected 'name<TAB>AxBx..' "
                    f"or 'name<TAB>scalar'. Received: {line!r}")
            name, shape = fields
            spec[name] = () if shape == "scalar" else tuple(
                int(n) for n in shape.split("x"))
    return spec


def random_state_dict(shapes: Mapping[str, tuple], seed: int = 0) -> dict:
    """A deterministic reference-layout state_dict, for tests and fixtures.

    Each tensor draws from its own generator, seeded by `seed` and the name's
    CRC-32, so values are distinct per tensor and do not depend on the order
    of `shapes`. The scales keep activations of order one through the whole
    network: conv kernels `N(0, 2 / fan_in)`, BatchNorm `weight` in
    [0.5, 1.5], `bias` and `running_mean` `N(0, 0.1^2)`, `running_var` in
    [0.5, 1.5] (positive), plain conv biases `N(0, 0.1^2)` and
    `num_batches_tracked` a fixed int64 count.

    Args:
        shapes: name -> PyTorch shape (e.g. `read_state_dict_spec(...)`);
            BatchNorm entries are recognised by a `.bn.` module.
        seed: base seed.

    Returns:
        dict of name -> numpy array (float32; int64 counters).
    """
    state_dict = {}
    for name, shape in shapes.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        leaf = name.rpartition(".")[2]
        shape = tuple(shape)
        if leaf == IGNORED_LEAF:
            state_dict[name] = np.array(1000, np.int64)
            continue
        if leaf == "running_var" or (".bn." in name and leaf == "weight"):
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("running_mean", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        state_dict[name] = value.astype(np.float32)
    return state_dict


def convert_to_keras_file(
    state_dict_path: PathLike,
    out: PathLike,
    *,
    aggregation: str = "auto",
    head: str = "unity",
    num_depths: tuple = (48, 32, 8),
    depth_interval_ratios: tuple = (4.0, 2.0, 1.0),
    input_normalization: str = "none",
    warp_sampling: str = "align_corners_false",
) -> tuple:
    """Converts a checkpoint file into a `CascadeMVSNet` saved as `.keras`.

    The model is written under a temporary name beside `out` and renamed
    when complete (`keras_mvs.files.atomic_path`), so `out` is never half
    written.

    Args:
        state_dict_path: a PyTorch `.ckpt`/`.pth` or an `.npz` state_dict.
        out: the `.keras` file to write (its folder is created).
        aggregation: "auto" reads it from the tensors (`model_config`).
        head, num_depths, depth_interval_ratios, input_normalization,
            warp_sampling: `CascadeMVSNet` arguments the tensors cannot
            tell (the default sampling is the one official checkpoints
            learned with).

    Returns:
        `(ConversionReport, the CascadeMVSNet arguments read from the
        tensors)`.

    Raises:
        StateDictError, FileNotFoundError, ImportError, ValueError: as
            `load_state_dict` and `convert_state_dict`.
    """
    # Keras only here: this module is numpy-only at import.
    from keras_mvs import files
    from keras_mvs.models import cas_mvsnet

    state_dict = load_state_dict(state_dict_path)
    config = model_config(state_dict)
    if aggregation != "auto":
        config["aggregation"] = aggregation
    model = cas_mvsnet.CascadeMVSNet(
        num_depths=tuple(num_depths),
        depth_interval_ratios=tuple(depth_interval_ratios),
        head=head, input_normalization=input_normalization,
        warp_sampling=warp_sampling, **config)
    report = convert_state_dict(state_dict, model)
    out = os.fspath(out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with files.atomic_path(out) as temporary:
        model.save(temporary)
    return report, config
