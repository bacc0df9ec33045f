"""The training commands' command line (DESIGN.md section 11) and `main`.

    python -m experiments.train_clmvs [--config FILE] [--workdir DIR]
        [--data SPEC] [--objective NAME] [--init MODEL] [--smoke]
        [--verbose] [--config.KEY=VALUE ...]

Flags are absl flags; `--config.KEY=VALUE` overrides are
`ml_collections.config_flags` overrides of the locked config, parsed to
the field's type (unknown keys fail). Parsing goes in two passes over a
`FlagValues` of its own (no global `FLAGS`, so the commands can run twice
in one process): the first reads the plain flags, among them `--config
FILE` and `--smoke`, because the file's `get_config(smoke)` needs both; the
second gives that config to `config_flags.DEFINE_config_dict`, which
applies the overrides.

A user's mistake (unknown key or flag, badly typed or out-of-range value,
missing file) is one line naming the key and exit status 2, never a
traceback or a usage dump.
"""

import contextlib
import gc
import pathlib
import re
import sys
import time
from typing import List
from typing import Sequence
from typing import Tuple

import ml_collections
from absl import flags
from ml_collections.config_flags import config_flags
from ml_collections.config_flags import tuple_parser

from keras_mvs import console
from keras_mvs import evaluation
from keras_mvs.models import trainer as trainer_lib
from keras_mvs.training import config as config_lib
from keras_mvs.training import driver

_OVERRIDE_EXAMPLE = "--config.train.steps=100"


class UsageError(ValueError):
    """A mistake on the command line; the message is one line naming it."""


class _WordTupleParser(tuple_parser.TupleParser):
    """`config_flags`' tuple parser, also for unquoted words.

    config_flags reads `--config.loss.branches=regular,scc` and
    `=(regular,scc)` as the one-element tuple `("regular,scc",)` (its
    `ast.literal_eval` fails on bare words and it keeps the text whole);
    here both are `("regular", "scc")`, as the commands have always read
    them. Numbers and quoted items parse as in config_flags.
    """

    def parse(self, argument):
        value = super().parse(argument)
        if (isinstance(argument, str) and len(value) == 1
                and isinstance(value[0], str) and "," in value[0]):
            items = value[0].strip().strip("()[]").split(",")
            value = tuple(super(_WordTupleParser, self).parse(item.strip())[0]
                          for item in items if item.strip())
        return value


@contextlib.contextmanager
def _word_tuples():
    """Registers `_WordTupleParser` for tuple fields while parsing, and
    config_flags' own parser again afterwards (the registry is global)."""
    config_flags.register_flag_parser_for_type(tuple, _WordTupleParser())
    try:
        yield
    finally:
        config_flags.register_flag_parser_for_type(
            tuple, tuple_parser.TupleParser())


def _plain_flags(default_config: str) -> flags.FlagValues:
    flag_values = flags.FlagValues()
    flag_values.set_gnu_getopt(True)  # flags after an override's value

    def define(kind, name, default, help_text):
        kind(name, default, help_text, flag_values=flag_values)

    define(flags.DEFINE_string, "config", default_config,
           "config file defining get_config(smoke)")
    define(flags.DEFINE_string, "workdir", None,
           "work directory (default: runs/<name>-<time>)")
    define(flags.DEFINE_string, "data", None,
           "'' (synthetic), an MVSNet folder, or tfds:NAME[/CONFIG]")
    flags.DEFINE_enum("objective", None, trainer_lib.OBJECTIVES,
                      "the training objective", flag_values=flag_values)
    define(flags.DEFINE_string, "init", None,
           "start from these weights: a preset name (e.g. synthetic_unity), "
           "a work directory or a .keras file")
    define(flags.DEFINE_bool, "smoke", False,
           "tiny, fast run (under 2 minutes on a CPU)")
    define(flags.DEFINE_bool, "verbose", False,
           "show TensorFlow's own log messages and warnings (hidden by "
           "default)")
    return flag_values


def parse(argv: Sequence[str], default_config: str,
          ) -> Tuple[ml_collections.ConfigDict, flags.FlagValues]:
    """The resolved, checked config of a command line, and its plain flags.

    Args:
        argv: the arguments after the program name.
        default_config: the config file when `--config` is not given.

    Returns:
        `(config, flag_values)`; `flag_values.workdir` and `.verbose` are
        for the caller.

    Raises:
        UsageError: an unknown flag or key, a badly typed value.
        ValueError, FileNotFoundError: a value out of range, a missing
            config file or `--init` model (naming it).
    """
    plain = _plain_flags(default_config)
    try:
        rest = plain(["train"] + list(argv), known_only=True)[1:]
    except flags.Error as error:
        raise UsageError(_absl_message(error)) from None
    config = config_lib.load(plain.config, plain.smoke)
    defaults = config.to_dict()
    overrides = flags.FlagValues()
    overrides.set_gnu_getopt(True)
    try:
        with _word_tuples():
            config_flags.DEFINE_config_dict(
                "config", config, "the run's config", flag_values=overrides,
                lock_config=True, sys_argv=["train"] + rest)
            positional = overrides(["train"] + rest)[1:]
    except (KeyError, AttributeError) as error:
        raise UsageError(_unknown_key(config, rest, error)) from None
    except flags.Error as error:
        raise UsageError(_absl_message(error, config)) from None
    if positional:
        raise UsageError(f"unexpected argument {positional[0]!r} (overrides "
                         f"look like {_OVERRIDE_EXAMPLE})")
    _widen_numbers(config, defaults, overrides["config"].override_values)
    config_lib.resolve(config, data=plain.data, objective=plain.objective,
                       init=plain.init)
    return config, plain


def _widen_numbers(config, defaults: dict, values: dict) -> None:
    """Makes the ints of an overridden tuple floats where the default holds
    floats (`--config.loss.stage_weights=1,1,2`), as a float field's
    override `=1` is 1.0; config_flags keeps tuple items as written."""
    for key, value in values.items():
        parts = key.split(".")
        default = defaults
        for part in parts:
            default = default[part]
        if isinstance(value, tuple) and default and all(
                isinstance(item, float) for item in default):
            node = config
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = tuple(
                float(item) if isinstance(item, int)
                and not isinstance(item, bool) else item for item in value)


def _override_keys(args: Sequence[str]) -> List[str]:
    """The KEYs of the `--config.KEY=VALUE` (or `--noconfig.KEY`) args."""
    found = (re.match(r"--?(?:no)?config\.([^=]+)", arg) for arg in args)
    return [match.group(1) for match in found if match]


def _unknown_key(config, args: Sequence[str], error: Exception) -> str:
    """Names the first override whose key the config does not have."""
    for key in _override_keys(args):
        node, parts = config, key.split(".")
        for depth, part in enumerate(parts):
            is_last = depth == len(parts) - 1
            if not isinstance(node, ml_collections.ConfigDict):
                return (f"--config.{key}: {parts[depth - 1]!r} is a field, "
                        "not a section")
            if part not in node:
                if is_last:
                    return (f"--config.{key}: no such field; known: "
                            f"{sorted(node.keys())}")
                return f"--config.{key}: no section {part!r}"
            node = node[part]
    return f"--config: {error}"


def _absl_message(error: Exception, config=None) -> str:
    """absl's message, worded as the commands word theirs.

    absl says `flag --NAME=VALUE: REASON` for a value its parser refused;
    for a config field that becomes `--config.KEY='VALUE': expected a value
    of type T`.
    """
    if isinstance(error, flags.UnrecognizedFlagError):
        return (f"unknown flag --{error.flagname} (overrides look like "
                f"{_OVERRIDE_EXAMPLE})")
    text = str(error)
    match = re.match(r"flag --(config\.([\w.]+))=(.*?): ", text)
    if match and config is not None:
        node = config
        for part in match.group(2).split("."):
            node = node[part]
        return (f"--{match.group(1)}={match.group(3)!r}: expected a value "
                f"of type {type(node).__name__}")
    return text[len("flag "):] if text.startswith("flag --") else text


def _usage(name: str, description: str, flag_values) -> str:
    # absl's help without its module heading.
    flag_lines = [line for line in flag_values.get_help(
        include_special_flags=False).splitlines() if line.startswith(" ")]
    return "\n".join([
        f"usage: python -m experiments.train_{name} [--config FILE] "
        "[--workdir DIR] [--data SPEC] [--objective NAME] [--init MODEL] "
        "[--smoke] [--verbose] [--config.KEY=VALUE ...]", "",
        description, "", "flags:", *flag_lines,
        "  --config.KEY=VALUE: set a field of the config, parsed to its type "
        f"(e.g. {_OVERRIDE_EXAMPLE}); unknown keys fail", ""])


def main(argv: Sequence[str], name: str, description: str,
         default_config: str) -> int:
    """The training entry points' `main`; returns the exit status.

    `console.quiet_tensorflow` must have run before this module was
    imported for the C++ log level to apply.
    """
    if {"-h", "--help", "--helpfull"} & set(argv):
        sys.stdout.write(_usage(name, description,
                                _plain_flags(default_config)))
        return 0
    try:
        config, plain = parse(argv, default_config)
    except (KeyError, ValueError, FileNotFoundError) as error:
        # A user's mistake: one line naming the field or file, no traceback.
        print(f"{name}: error: {error.args[0] if error.args else error}",
              file=sys.stderr)
        return 2
    workdir = pathlib.Path(plain.workdir) if plain.workdir else (
        default_workdir(name))
    print(f"{name}: objective {config.loss.objective}, data "
          f"{config.data.spec or 'synthetic benchmark'}, workdir {workdir}",
          flush=True)
    try:
        metrics = driver.train_and_evaluate(config, workdir)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        print_outputs(workdir, config)
        return 1
    except (ValueError, FileNotFoundError) as error:
        # Bad data (pipeline.check_folders names every bad file) or a
        # batch that does not split over the replicas.
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    finally:
        # Generator-backed dataset iterators that Keras keeps in reference
        # cycles would be finalised after the interpreter, logging "Error
        # occurred when finalizing GeneratorDataset iterator"; collect
        # them while Python still runs.
        gc.collect()
    if metrics:
        print()
        print(evaluation.describe_depth_metrics(
            metrics, data=(f"held-out synthetic scenes "
                           f"({config.eval.split} split)"),
            unit=config.data.depth_unit))
    print_outputs(workdir, config)
    return 0


def default_workdir(name: str) -> pathlib.Path:
    return pathlib.Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def print_outputs(workdir: pathlib.Path,
                  config: ml_collections.ConfigDict) -> None:
    """The closing list of what the run wrote."""
    period = min(config.train.log_every, config.train.steps)
    console.wrote([
        (str(workdir / "config.json"), "the resolved configuration"),
        (str(workdir / "logs"), "TensorBoard scalars per step, depth images: "
         f"tensorboard --logdir {workdir / 'logs'}"),
        (str(workdir / "checkpoints"),
         f"network weights every {period} steps (newest "
         f"{config.train.keep_checkpoints})"),
        (str(workdir / "backup"), "resume state: the same command with "
         "the same --workdir continues the run"),
        (str(workdir / "model.keras"), "the trained network (--model "
         f"{workdir} for evaluate, export, reconstruct)"),
        (str(workdir / "eval.json"), "held-out depth metrics"),
    ], root=str(workdir))
