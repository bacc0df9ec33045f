"""A run's configuration: loading a config file, resolving and checking it.

Config files are Python files defining `get_config(smoke: bool = False)`
that returns a locked `ml_collections.ConfigDict` with the sections `data`,
`model`, `loss`, `optimizer`, `train` and `eval` (STYLE.md rule 10;
experiments/configs/). `resolve` applies what the command line decided
besides field overrides (`--data`, `--objective`, `--init`), derives what
follows from it, and `validate` range-checks every numeric field before
anything is built.
"""

import importlib.util
import pathlib
from typing import Optional

import ml_collections
import numpy as np

from keras_mvs.training import warm_start

# The network settings that the weights depend on (or were learned with):
# a run started from a model takes them from it.
WEIGHT_SETTINGS = ("aggregation", "base_channels", "groups",
                   "input_normalization", "warp_sampling")

# Numeric fields and their allowed ranges: (section.key, minimum, what).
_RANGES = (
    ("data.height", 32, "a multiple of 32"),
    ("data.width", 32, "a multiple of 32"),
    ("data.num_views", 2, "the reference and at least one source"),
    ("data.batch_size", 1, "at least one example"),
    ("data.synthetic_views", 2, "views per synthetic scene"),
    ("model.base_channels", 1, "channels"),
    ("model.num_depths_base", 2, "hypotheses"),
    ("train.steps", 1, "optimizer steps"),
    ("train.log_every", 1, "steps per logging period"),
    ("train.keep_checkpoints", 1, "checkpoints kept"),
    ("eval.num_views", 2, "the reference and at least one source"),
)


def load(path: str, smoke: bool = False) -> ml_collections.ConfigDict:
    """`get_config(smoke)` of the config file at `path`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file defines no `get_config`.
    """
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such config file")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config {path}: the file defines no get_config()")
    return module.get_config(smoke)


def resolve(config: ml_collections.ConfigDict, *,
            data: Optional[str] = None, objective: Optional[str] = None,
            init: Optional[str] = None) -> ml_collections.ConfigDict:
    """Applies `--data`, `--objective` and `--init` and what follows.

    With `init` (or `model.init`) the network settings are those of that
    model; `unsupervised_unity` trains the unity head;
    `train.steps_per_epoch` is at least 1 (it is `steps // 16` by default,
    0 for runs shorter than 16 steps), so the resolved config holds the
    value the schedules use. Then `validate`.

    Returns:
        `config`, changed in place.

    Raises:
        ValueError, FileNotFoundError: naming the field, flag or file.
    """
    if data is not None:
        config.data.spec = data
    if objective is not None:
        config.loss.objective = objective
    if init is not None:
        config.model.init = init
    if config.model.init:
        adopt_init_architecture(config)
    if config.loss.objective == "unsupervised_unity":
        # The objective is defined on the unity head (DESIGN.md section 1).
        config.model.head = "unity"
    config.train.steps_per_epoch = max(int(config.train.steps_per_epoch), 1)
    validate(config)
    return config


def adopt_init_architecture(config: ml_collections.ConfigDict) -> None:
    """Sets the config's network settings to those of `config.model.init`.

    The head follows the objective: `unsupervised` trains the soft-argmin
    head (CL-MVSNet's photometric loss needs a differentiable depth),
    `unsupervised_unity` the unity head, `supervised` keeps the init
    model's. The logits mean the same hypotheses under either head, so the
    weights carry over.
    """
    from keras_mvs import presets

    if presets.is_preset(config.model.init):
        settings = presets.preset_info(config.model.init)["network"]
    else:
        settings = warm_start.init_network(config.model.init).get_config()
    for key in WEIGHT_SETTINGS:
        if key in settings:
            config.model[key] = settings[key]
    if config.loss.objective == "unsupervised":
        config.model.head = "regression"
    elif config.loss.objective == "supervised":
        config.model.head = settings.get("head", config.model.head)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks value ranges before anything is built.

    Raises:
        ValueError: naming the field as `--config.KEY=VALUE`, what was found
            and what was expected.
    """
    def fail(key, value, expected):
        raise ValueError(f"--config.{key}={value!r}: expected {expected}")

    for key, minimum, what in _RANGES:
        section, field = key.split(".")
        value = config[section][field]
        if not isinstance(value, int) or isinstance(value, bool) or (
                value < minimum):
            fail(key, value, f"an integer >= {minimum} ({what})")
    for key in ("data.height", "data.width"):
        section, field = key.split(".")
        if config[section][field] % 32:
            fail(key, config[section][field], "a multiple of 32")
    rate = config.optimizer.learning_rate
    if not (isinstance(rate, float) and np.isfinite(rate) and rate > 0):
        fail("optimizer.learning_rate", rate, "a finite number > 0")
    minutes = config.train.max_minutes
    if not (np.isfinite(minutes) and minutes >= 0):
        fail("train.max_minutes", minutes, "minutes >= 0 (0: no budget)")
    depths = tuple(config.model.num_depths)
    if len(depths) != 3 or any(d < 8 or d % 8 for d in depths):
        fail("model.num_depths", depths,
             "three multiples of 8, one per stage, such as 48,32,8")
