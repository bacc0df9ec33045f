"""Training driver shared by `experiments.train_clmvs` and `train_unimvs`.

`train_and_evaluate(config, workdir)` is the importable, tested function the
entry points call: it resolves the data, builds the network and the trainer,
fits with the callbacks of DESIGN.md section 6, saves `model.keras` and
evaluates depth on held-out scenes when they have ground truth. It says what
it is doing at each stage and shows one progress bar for the whole run
(`RunProgress`); the entry points silence TensorFlow's own logs first
(`experiments.console`).

Work directory:
    config.json          the resolved configuration
    logs/                TensorBoard: every loss term and metric at every
                         optimizer step (train/), depth images (images/)
    checkpoints/         network weights every `train.log_every` steps
    backup/              BackupAndRestore state (resume after a kill)
    model.keras          the final network (written last, atomically)
    eval.json            held-out depth metrics, when ground truth exists

Distribution (`make_strategy`): with TF_CONFIG naming more than one task,
MultiWorkerMirroredStrategy and the `distributed_fit` loop (Keras `fit`
fails there): checkpoints, scalar logs and `model.keras`, no backup, no
held-out evaluation; the chief writes the work directory, the other workers
a temporary folder that is removed at the end. With several GPUs,
MirroredStrategy and `fit`. `data.batch_size` is the global batch. With more
than one replica, BatchNorm statistics are all-reduced across replicas
(`model.sync_batchnorm`, SyncBN as the references train).
"""

import argparse
import functools
import gc
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from keras_mvs import models
from keras_mvs import schedules
from keras_mvs.data import pipeline
from keras_mvs.data import synthetic
from keras_mvs.models import trainer as trainer_lib
from keras_mvs.training import console

# === Configuration ===


def parse_args(argv: Sequence[str], description: str, default_config: str):
    """Parses the command-line contract of DESIGN.md section 11.

    `--config FILE` names a Python file with `get_config(smoke)`; further
    `--config.SECTION.KEY=VALUE` arguments override fields of the locked
    config (unknown keys fail).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config,
                        help="config file defining get_config(smoke)")
    parser.add_argument("--workdir", default=None,
                        help="work directory (default: runs/<name>-<time>)")
    parser.add_argument("--data", default=None,
                        help="'' (synthetic), an MVSNet folder, or "
                        "tfds:NAME[/CONFIG]")
    parser.add_argument("--objective", default=None,
                        choices=trainer_lib.OBJECTIVES)
    parser.add_argument("--init", default=None, metavar="MODEL",
                        help="start from these weights: a preset name "
                        "(e.g. synthetic_unity), a work directory or a "
                        ".keras file")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny, fast run (under 2 minutes on a CPU)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own log messages and "
                        "warnings (hidden by default)")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config.") or "=" not in item:
            parser.error(f"unrecognised argument: {item!r} (overrides look "
                         "like --config.train.steps=100)")
        key, value = item[len("--config."):].split("=", 1)
        overrides.append((key, value))
    return args, overrides


def load_config(path: str, smoke: bool) -> ml_collections.ConfigDict:
    """Loads `get_config(smoke)` from a config file path."""
    import importlib.util

    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such config file")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config {path}: the file defines no get_config()")
    return module.get_config(smoke)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence) -> None:
    """Applies `(dotted.key, text)` overrides, parsed to the field's type."""
    for key, text in overrides:
        parts = key.split(".")
        node = config
        for part in parts[:-1]:
            if not isinstance(node, ml_collections.ConfigDict) or (
                    part not in node):
                raise KeyError(f"--config.{key}: no section {part!r}")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict):
            raise KeyError(f"--config.{key}: {parts[-2]!r} is a field, "
                           "not a section")
        if parts[-1] not in node:
            raise KeyError(f"--config.{key}: no such field; known: "
                           f"{sorted(node.keys())}")
        current = node[parts[-1]]
        node[parts[-1]] = _parse_like(current, text, key)


def _parse_like(current, text: str, key: str):
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            items = [t for t in text.strip("()[] ").split(",") if t.strip()]
            kind = type(current[0]) if current else str
            return tuple(kind(t.strip().strip("'\"")) for t in items)
    except ValueError:
        raise ValueError(f"--config.{key}={text!r}: expected a value of type "
                         f"{type(current).__name__}") from None
    return text


def resolve_config(args, overrides) -> ml_collections.ConfigDict:
    config = load_config(args.config, args.smoke)
    if args.data is not None:
        config.data.spec = args.data
    if args.objective is not None:
        config.loss.objective = args.objective
    apply_overrides(config, overrides)
    if args.init is not None:
        config.model.init = args.init
    if config.model.init:
        adopt_init_architecture(config)
    if config.loss.objective == "unsupervised_unity":
        # The objective is defined on the unity head (DESIGN.md section 1).
        config.model.head = "unity"
    validate_config(config)
    return config


# The network settings that the weights depend on (or were learned with):
# a run started from a model takes them from it.
_WEIGHT_SETTINGS = ("aggregation", "base_channels", "groups",
                    "input_normalization", "warp_sampling")


@functools.lru_cache(maxsize=1)
def init_network(init: str) -> keras.Model:
    """The Keras network of `--init`: a preset, work directory or .keras.

    Cached: the config resolution reads its architecture and the driver
    its weights, from one load.
    """
    from keras_mvs import inference

    network = inference.load_model(init).network
    if network is None:
        raise ValueError(f"--init {init}: a SavedModel holds no trainable "
                         "Keras network; give a preset name, a work "
                         "directory or a .keras file")
    return network


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
        settings = init_network(config.model.init).get_config()
    for key in _WEIGHT_SETTINGS:
        if key in settings:
            config.model[key] = settings[key]
    if config.loss.objective == "unsupervised":
        config.model.head = "regression"
    elif config.loss.objective == "supervised":
        config.model.head = settings.get("head", config.model.head)


def load_init_weights(network: keras.Model, init: str) -> int:
    """Copies every variable of the `--init` model into `network` by path.

    Returns:
        The number of variables copied.

    Raises:
        ValueError: the two networks' variables differ (names or shapes).
    """
    def by_path(model):
        # Paths below the network's own name: a network inside the trainer
        # has its variables under "mvs_trainer/<network name>/...".
        variables = {}
        for variable in model.variables:
            parts = variable.path.split("/")
            start = parts.index(model.name) + 1 if model.name in parts else 1
            variables["/".join(parts[start:])] = variable
        return variables

    source = by_path(init_network(init))
    target = by_path(network)
    mismatched = sorted(
        set(source) ^ set(target)
        | {k for k in set(source) & set(target)
           if tuple(source[k].shape) != tuple(target[k].shape)})
    if mismatched:
        raise ValueError(f"--init {init}: its variables do not fit the "
                         f"network; differing: {mismatched[:5]}")
    for key, variable in target.items():
        variable.assign(source[key])
    return len(target)


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


def validate_config(config: ml_collections.ConfigDict) -> None:
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


def steps_per_epoch(config) -> int:
    """`train.steps_per_epoch`, at least 1 (it is `steps // 16` by default,
    0 for runs shorter than 16 steps)."""
    return max(int(config.train.steps_per_epoch), 1)


# === Data ===


def scene_dirs(spec: str, split: str, config,
               on_scene: Optional[Callable[[int, int], None]] = None,
               ) -> List[pathlib.Path]:
    """Scene folders of a data spec ('' = the synthetic benchmark split).

    `on_scene(k, n)` is called before each synthetic scene rendered.
    """
    if not spec:
        return synthetic.ensure_benchmark(
            split, height=config.data.height, width=config.data.width,
            num_views=config.data.synthetic_views, on_scene=on_scene)
    root = pathlib.Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {spec}: not a folder (expected an MVSNet-layout scene "
            "with cams/ and images/, a folder of such scenes, or "
            "tfds:NAME[/CONFIG])")
    if (root / "cams").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "cams").is_dir())
    if not found:
        raise FileNotFoundError(
            f"--data {spec}: neither a scene (no cams/ folder) nor a folder "
            "of scenes (no subfolder has cams/)")
    return found


def prepare_synthetic(config, splits: Sequence[str]) -> None:
    """Renders the synthetic benchmark splits that are not cached yet,
    one status line counting the scenes of all of them."""
    missing = []
    for split in dict.fromkeys(splits):
        folder = synthetic.benchmark_dir(
            split, height=config.data.height, width=config.data.width,
            num_views=config.data.synthetic_views)
        if not folder.is_dir():
            missing.append((split, folder))
    if not missing:
        return
    total = sum(len(synthetic.benchmark_seeds(split)) for split, _ in missing)
    folder = str(missing[0][1].parent)
    home = str(pathlib.Path.home())
    if folder.startswith(home + os.sep):
        folder = "~" + folder[len(home):]
    console.stage(f"rendering the synthetic benchmark once, into {folder} "
                  f"({config.data.height}x{config.data.width}, "
                  f"{config.data.synthetic_views} views a scene)")
    status = console.StatusLine(every=5)
    done = [0]
    start = time.monotonic()

    def on_scene(index, count):
        done[0] += 1
        status.update(f"rendering the synthetic benchmark {done[0]}/{total}",
                      force=done[0] == 1)

    for split, _ in missing:
        scene_dirs("", split, config, on_scene=on_scene)
    status.close(f"rendered the synthetic benchmark: {total} scenes in "
                 f"{console.format_duration(time.monotonic() - start)}")


def scene_dataset(spec: str, split: str, config) -> tf.data.Dataset:
    if spec.startswith("tfds:"):
        from keras_mvs.data import tfds_source

        name, _, builder_config = spec[len("tfds:"):].partition("/")
        return tfds_source.scenes_from_tfds(
            name, split, config=builder_config or None)
    dirs = scene_dirs(spec, split, config)
    # Every cam and image header is read now: a bad file fails here with its
    # name, not inside the input pipeline after the graph is built.
    pipeline.check_folders(
        dirs, num_views=config.data.num_views,
        require_depth=config.loss.objective == "supervised")
    return pipeline.scene_dicts_from_folders(
        dirs, height=config.data.height, width=config.data.width)


def training_dataset(config) -> tf.data.Dataset:
    objective = config.loss.objective
    branches = (("regular",) if objective == "supervised"
                else tuple(config.loss.branches))
    return pipeline.make_dataset(
        scene_dataset(config.data.spec, config.data.split, config),
        num_views=config.data.num_views,
        batch_size=config.data.batch_size,
        seed=config.data.seed,
        training=True,
        branches=branches,
        require_depth=objective == "supervised",
    )


# === Model ===


def build_network(config, num_replicas: int = 1) -> keras.Model:
    model = config.model
    return models.CascadeMVSNet(
        num_depths=tuple(model.num_depths),
        depth_interval_ratios=tuple(model.depth_interval_ratios),
        aggregation=model.aggregation,
        head=model.head,
        base_channels=model.base_channels,
        groups=model.groups,
        num_depths_base=model.num_depths_base,
        input_normalization=model.input_normalization,
        warp_sampling=model.warp_sampling,
        xla_warp=model.xla_warp,
        sync_batchnorm=model.sync_batchnorm and num_replicas > 1,
    )


def build_trainer(config, network: keras.Model) -> trainer_lib.MVSTrainer:
    loss = config.loss
    trainer = trainer_lib.MVSTrainer(
        network,
        objective=loss.objective,
        branches=tuple(loss.branches),
        stage_weights=tuple(loss.stage_weights),
        view_min=loss.view_min,
        reference_quirks=loss.reference_quirks,
        max_icc_weight=loss.max_icc_weight,
        scc_weight=loss.scc_weight,
        confidence_threshold=loss.confidence_threshold,
        max_source_mask_rate=loss.max_source_mask_rate,
        mask_ramp_epochs=loss.mask_ramp_epochs,
        steps_per_epoch=steps_per_epoch(config),
        seed=config.train.seed,
        xla=config.train.xla,
    )
    learning_rate = schedules.WarmupMultiStep(
        config.optimizer.learning_rate,
        steps_per_epoch=steps_per_epoch(config),
        warmup_epochs=config.optimizer.warmup_epochs,
        milestones=tuple(config.optimizer.milestones),
    )
    # jit_compile stays False: XLA over MirroredStrategy crashes
    # (TF_NOTES.md 2.2); --xla compiles inside the step instead.
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    jit_compile=False)
    return trainer


# === Callbacks ===


@tf.function(reduce_retracing=True)
def _all_finite(variables) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                          for v in variables])


def weights_finite(network: keras.Model) -> bool:
    """Whether every weight of `network` (moving statistics included) is
    finite."""
    return bool(_all_finite(network.variables))


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss or weight and names the step.

    Both are checked after every step: a NaN learning rate, for one, leaves
    the loss of the step finite and the weights it produced NaN. Once this
    callback fired, `AtomicCheckpoint` and `GuardedBackup` write nothing, and
    they check the weights themselves before writing, so every checkpoint
    and backup holds finite weights. `last_checkpoint` is the newest one.
    """

    def __init__(self, network: Optional[keras.Model] = None):
        super().__init__()
        self.network = network
        self.failed_step: Optional[int] = None
        self.value = None
        self.last_checkpoint: Optional[pathlib.Path] = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        step = int(self.model.optimizer.iterations.numpy())
        if loss is not None and not np.isfinite(float(loss)):
            self.failed_step, self.value = step, float(loss)
        elif not weights_finite(self.network or self.model):
            self.failed_step, self.value = step, "finite, but the update " \
                "made weights non-finite"
        if self.failed_step is not None:
            print(f"\nNon-finite loss ({self.value}) at step "
                  f"{self.failed_step}: training stopped.", file=sys.stderr)
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `minutes` of wall-clock time have passed.

    The budget counts from the start of `fit` (tracing included), so a run's
    budget is what a user waits. The run ends normally: the last period's
    checkpoint, `model.keras` and the evaluation are written.
    """

    def __init__(self, minutes: float):
        super().__init__()
        self.minutes = minutes
        self.start = None
        self.stopped_at_step: Optional[int] = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start > 60.0 * self.minutes:
            self.stopped_at_step = int(self.model.optimizer.iterations.numpy())
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_at_step is not None:
            # Said in words too: the bar ends at the step reached.
            print(f"Time budget of {self.minutes:g} min "
                  f"(train.max_minutes) reached: stopped after step "
                  f"{self.stopped_at_step}. model.keras and the evaluation "
                  "use the weights of that step; a larger "
                  "--config.train.max_minutes trains longer.", flush=True)


class GuardedBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that keeps the last backup once the loss failed.

    Keras still calls `on_epoch_end` for the epoch a callback stopped; the
    weights then are the diverged ones, and a rerun would resume from them.
    """

    def __init__(self, nan_guard: "StopOnNaN", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_guard = nan_guard

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.failed_step is None and weights_finite(self.model):
            super().on_epoch_end(epoch, logs)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Writes the network's weights at the end of each log period.

    Files are written under a temporary name, then renamed, so a checkpoint
    that exists is complete. Only the newest `keep` are kept.
    """

    def __init__(self, directory: pathlib.Path, network: keras.Model,
                 nan_guard: StopOnNaN, keep: int = 3):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.network = network
        self.nan_guard = nan_guard
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.failed_step is not None or not weights_finite(
                self.network):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        step = int(self.model.optimizer.iterations.numpy())
        final = self.directory / f"ckpt-{step:08d}.weights.h5"
        tmp = self.directory / f".tmp-ckpt-{step:08d}.weights.h5"
        self.network.save_weights(tmp)
        os.replace(tmp, final)
        self.nan_guard.last_checkpoint = final
        for old in sorted(self.directory.glob("ckpt-*.weights.h5"))[
                :-self.keep]:
            old.unlink()


class RunProgress(keras.callbacks.Callback):
    """One progress bar for the whole run, in optimizer steps.

    Keras's own bar counts a logging period ("epoch" of `fit`); this one
    counts the run's optimizer steps, starts at the step a resumed run
    restored from `backup/` (it must come after the backup callback), says
    that the first step builds the graph (and, on a terminal, how long that
    has taken so far), then shows the measured time per step and the time
    left: to the last step, or to the time budget when that comes first.
    The first step is left out of the rate, as it includes tracing. A run
    stopped early (time budget, non-finite loss) ends the bar at the step
    it reached.

    On a terminal the bar is redrawn in place; otherwise one line is
    printed every `print_every` steps, at the end, and whenever
    `quiet_seconds` passed without one.
    """

    def __init__(self, total_steps: int, max_minutes: float = 0.0,
                 monitoring_only: bool = False, depth_unit: str = "mm",
                 print_every: int = 100, stream=None,
                 clock: Callable[[], float] = time.monotonic,
                 tick_seconds: float = 1.0, quiet_seconds: float = 60.0):
        super().__init__()
        self.total_steps = total_steps
        self.quiet_seconds = quiet_seconds
        self.last_line = 0.0
        self.max_minutes = max_minutes
        self.monitoring_only = monitoring_only
        self.depth_unit = depth_unit
        self.print_every = max(print_every, 1)
        self.stream = sys.stdout if stream is None else stream
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.first_step = 0
        self.step = 0
        self.timed_from = None  # (step, time) at the end of the first step
        self.start = None
        self.status = None
        self.logs = {}
        self._lock = threading.Lock()
        self._ticking = threading.Event()
        self._ticker = None

    def _iterations(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self.start = self.clock()
        self.first_step = self.step = self._iterations()
        self.status = console.StatusLine(self.stream)
        write = self.stream.write
        if self.first_step:
            write(f"resuming from backup/ at step {self.first_step}\n")
        if self.monitoring_only:
            write("* depth error and within 4 intervals compare with the "
                  "ground truth, for monitoring only: the unsupervised "
                  "objective never sees it\n")
        write("building the training graph: the first step takes a minute "
              "or two\n")
        self.stream.flush()
        if self.status.terminal:
            self._ticking.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self):
        while not self._ticking.wait(self.tick_seconds):
            with self._lock:
                if self._ticking.is_set():
                    return
                self.status.update(self._text(
                    note="building the training graph "
                    f"({console.format_duration(self.clock() - self.start)})"
                ))

    def _stop_ticker(self):
        self._ticking.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        self.step = self._iterations()
        self.logs = dict(logs or {})
        if self.timed_from is None:
            self._stop_ticker()
            self.timed_from = (self.step, now)
            self.last_line = now
            self.status.above(
                f"step {self.step}/{self.total_steps}: the first step "
                "(graph building) took "
                f"{console.format_duration(now - self.start)}")
        elif (self.step % self.print_every == 0
              or self.step >= self.total_steps):
            self.last_line = now
            self.status.above(self._period_text(now))
        elif not self.status.terminal and (
                now - self.last_line >= self.quiet_seconds):
            self.last_line = now
            self.status.above(self._text(now))
        if self.status.terminal:
            self.status.update(self._text(now))

    def seconds_per_step(self, now: float) -> Optional[float]:
        """Measured seconds per step after the first, None before."""
        if self.timed_from is None or self.step <= self.timed_from[0]:
            return None
        return (now - self.timed_from[1]) / (self.step - self.timed_from[0])

    def seconds_left(self, now: float):
        """(seconds to the end of the run, whether the budget ends it)."""
        rate = self.seconds_per_step(now)
        if rate is None:
            return None, False
        left = rate * max(self.total_steps - self.step, 0)
        if self.max_minutes > 0:
            budget = self.start + 60.0 * self.max_minutes - now
            if budget < left:
                return max(budget, 0.0), True
        return left, False

    def _metrics(self, names: Sequence[str]) -> List[str]:
        shown = []
        for name in names:
            if name in self.logs:
                text = console.format_value(name, float(self.logs[name]),
                                            self.depth_unit)
                if self.monitoring_only and (
                        name in console.GROUND_TRUTH_TERMS):
                    text += "*"
                shown.append(text)
        return shown

    def _time_text(self, now: float) -> str:
        rate = self.seconds_per_step(now)
        left, by_budget = self.seconds_left(now)
        if left is None:
            return "timing the steps"
        text = f"{rate:.2f} s/step, {console.format_duration(left)} left"
        return text + (" (time budget)" if by_budget else "")

    def _period_text(self, now: float) -> str:
        """The line kept at the end of each logging period."""
        metrics = self._metrics(("loss", "depth_mae", "within_4_intervals"))
        return (f"step {self.step}/{self.total_steps}: "
                + ", ".join(metrics) + f" ({self._time_text(now)})")

    def _text(self, now: Optional[float] = None, note: str = "") -> str:
        """The bar: steps, time per step and left, and the loss."""
        now = self.clock() if now is None else now
        return console.progress_text(
            self.step, self.total_steps, self._time_text(now) if not note
            else note, self._metrics(("loss",)))

    def on_train_end(self, logs=None):
        self._stop_ticker()
        elapsed = console.format_duration(self.clock() - self.start)
        if self.step >= self.total_steps:
            end = f"done in {elapsed}"
        else:
            end = f"stopped at step {self.step} after {elapsed}"
        self.status.close(console.progress_text(
            self.step, self.total_steps, end, self._metrics(("loss",))))


class StepScalars(keras.callbacks.Callback):
    """TensorBoard scalars of every term at every optimizer step.

    Keras's trackers report the mean since the start of the logging
    period; the value of step k of the period is recovered from the means
    of steps k and k - 1 (k m_k - (k - 1) m_{k-1}). Each scalar carries its
    readable name and unit as its TensorBoard description.
    """

    def __init__(self, log_dir: pathlib.Path, depth_unit: str = "mm",
                 monitoring_only: bool = False, flush_every: int = 100):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir / "train"))
        self.depth_unit = depth_unit
        self.monitoring_only = monitoring_only
        self.flush_every = flush_every
        self.previous = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.previous = {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        count = batch + 1
        with self.writer.as_default(step=step):
            for name, value in (logs or {}).items():
                mean = float(value)
                before = self.previous.get(name)
                current = (mean if before is None or count == 1
                           else count * mean - (count - 1) * before)
                self.previous[name] = mean
                tf.summary.scalar(name, current,
                                  description=self._describe(name))
        if step % self.flush_every == 0:
            self.writer.flush()

    def _describe(self, name: str) -> str:
        label, unit, meaning = console.TERMS.get(name, (name, "", ""))
        unit = self.depth_unit if unit == "depth" else unit
        text = f"{label}" + (f" ({unit})" if unit else "")
        if meaning:
            text += f": {meaning}"
        if unit == "%":
            text += " (stored as a fraction)"
        if self.monitoring_only and name in console.GROUND_TRUTH_TERMS:
            text += "; monitoring only, not used by the objective"
        return text

    def on_train_end(self, logs=None):
        self.writer.flush()


class DepthImages(keras.callbacks.Callback):
    """Writes the reference image, depth and confidence of a fixed batch."""

    def __init__(self, log_dir: pathlib.Path, batch: Dict[str, tf.Tensor]):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir / "images"))
        self.inputs = trainer_lib.network_inputs(batch)
        self.depth_gt = batch.get("depth")

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.model(self.inputs, training=False)
        depth_range = self.inputs["depth_range"]
        low = depth_range[:, 0, tf.newaxis, tf.newaxis]
        high = depth_range[:, 1, tf.newaxis, tf.newaxis]
        step = int(self.model.optimizer.iterations.numpy())

        def normalised(depth):
            return tf.clip_by_value((depth - low) / (high - low), 0.0, 1.0)[
                ..., tf.newaxis]

        with self.writer.as_default(step=step):
            tf.summary.image("reference", self.inputs["images"][:, 0])
            tf.summary.image("depth", normalised(outputs["depth"]))
            tf.summary.image("confidence",
                             outputs["confidence"][..., tf.newaxis])
            if self.depth_gt is not None:
                tf.summary.image("depth_ground_truth",
                                 normalised(self.depth_gt))
        self.writer.flush()


# === Entry ===


def default_workdir(name: str) -> pathlib.Path:
    return pathlib.Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_json(path: pathlib.Path, payload) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: pathlib.Path) -> Dict[str, float]:
    """Trains per `config` into `workdir`; returns the held-out metrics.

    Returns:
        The depth metrics of the held-out scenes (empty when the data has no
        ground truth or no held-out split).

    Raises:
        FloatingPointError: the loss became non-finite; names the step.
    """
    # The strategy comes first: MultiWorkerMirroredStrategy must be created
    # before TensorFlow initialises its devices.
    strategy = make_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.data.batch_size % replicas:
        raise ValueError(
            f"--config.data.batch_size={config.data.batch_size} is the global "
            f"batch and must be a multiple of the {replicas} replicas "
            f"({strategy.__class__.__name__})")
    workdir = pathlib.Path(workdir)
    if not is_chief(strategy):
        # Documented pattern: only the chief writes the real work directory.
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="keras_mvs-worker-"))
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config.to_dict())
    keras.mixed_precision.set_global_policy(config.train.precision)
    keras.utils.set_random_seed(config.train.seed)

    multi_worker = isinstance(strategy,
                              tf.distribute.MultiWorkerMirroredStrategy)
    if not config.data.spec:
        prepare_synthetic(config, [config.data.split] + (
            [] if multi_worker else [config.eval.split]))
    with console.ticking("loading the training data and building the "
                         "network"):
        dataset = training_dataset(config)
        first_batch = next(iter(dataset))
        with strategy.scope():
            network = build_network(config, replicas)
            trainer = build_trainer(config, network)
            # Builds the weights.
            trainer(trainer_lib.network_inputs(first_batch))
            if config.model.init:
                count = load_init_weights(network, config.model.init)
    if config.model.init:
        console.stage(f"initialised {count} variables from "
                      f"{config.model.init} (aggregation "
                      f"{config.model.aggregation}, head "
                      f"{config.model.head})")

    steps = config.train.steps
    period = min(config.train.log_every, steps)
    if multi_worker:
        # Keras fit fails under this strategy (TF_NOTES.md 6).
        try:
            return _train_multi_worker(config, trainer, dataset, strategy,
                                       workdir, steps, period)
        finally:
            if not is_chief(strategy):
                shutil.rmtree(workdir, ignore_errors=True)
    check_backup(workdir / "backup")
    monitoring_only = config.loss.objective != "supervised"
    nan_guard = StopOnNaN(network)
    callbacks = [
        nan_guard,
        GuardedBackup(nan_guard, str(workdir / "backup"),
                      save_freq="epoch", double_checkpoint=True,
                      delete_checkpoint=False),
        AtomicCheckpoint(workdir / "checkpoints", network, nan_guard,
                         keep=config.train.keep_checkpoints),
        StepScalars(workdir / "logs", depth_unit=config.data.depth_unit,
                    monitoring_only=monitoring_only, flush_every=period),
        DepthImages(workdir / "logs", first_batch),
        # After the backup (it restores the step), before the budget (the
        # bar ends before the budget's message).
        RunProgress(steps, max_minutes=config.train.max_minutes,
                    monitoring_only=monitoring_only,
                    depth_unit=config.data.depth_unit, print_every=period),
    ]
    if config.train.max_minutes > 0:
        callbacks.append(TimeBudget(config.train.max_minutes))
    console.stage(
        f"training for {steps} steps"
        + (f" or {config.train.max_minutes:g} min" if
           config.train.max_minutes > 0 else "")
        + f"; checkpoint, backup and TensorBoard images every {period} "
        "steps")
    resumed_step = backup_step(workdir / "backup", period)
    if resumed_step:
        # The batches are a fixed sequence (seeded); a resumed run skips the
        # ones already trained on, so it sees what an uninterrupted run
        # would have seen from this step on.
        dataset = dataset.skip(resumed_step)
    # shuffle=False: the dataset shuffles itself (Keras would warn).
    trainer.fit(dataset, epochs=max(steps // period, 1),
                steps_per_epoch=period, callbacks=callbacks, verbose=0,
                shuffle=False)
    if nan_guard.failed_step is not None:
        kept = (f"the last good checkpoint is {nan_guard.last_checkpoint}"
                if nan_guard.last_checkpoint is not None else
                "no checkpoint was written before it (the first is written "
                f"at step {period})")
        backup = ("backup/ holds the last finished period, with finite "
                  "weights" if any((workdir / "backup").glob("*")) else
                  "nothing was backed up")
        raise FloatingPointError(
            f"training stopped: the loss was {nan_guard.value} at step "
            f"{nan_guard.failed_step}; {kept}; {backup}")

    with console.ticking("saving the network to model.keras"):
        tmp = workdir / ".tmp-model.keras"
        network.save(tmp)
        os.replace(tmp, workdir / "model.keras")
    metrics = evaluate_heldout(config, network)
    if metrics:
        metrics["train_steps"] = int(trainer.optimizer.iterations.numpy())
        write_json(workdir / "eval.json", metrics)
    return metrics


def check_backup(backup: pathlib.Path) -> None:
    """Refuses a damaged `backup/` before resuming from it.

    Keras's BackupAndRestore falls back to `latest.weights.h5.bkp` when the
    weights cannot be read, but reports neither file when both are damaged,
    and a garbled `training_metadata.json` ends in a JSONDecodeError.

    Raises:
        ValueError: naming the damaged file and what to do.
    """
    advice = (f"delete {backup} to start the run over (checkpoints/ keeps "
              "the periodic weights)")
    weights = [backup / "latest.weights.h5",
               backup / "latest.weights.h5.bkp"]
    present = [path for path in weights if path.exists()]
    if present:
        import h5py

        errors = []
        for path in present:
            try:
                with h5py.File(path, "r") as handle:
                    list(handle.keys())
            except OSError as error:
                errors.append(f"{path} ({error})")
        if len(errors) == len(present):
            raise ValueError(f"cannot resume: the backup weights cannot be "
                             f"read: {'; '.join(errors)}; {advice}")
    metadata = backup / "training_metadata.json"
    if metadata.exists():
        try:
            epoch = json.loads(metadata.read_text())["epoch"]
            if not isinstance(epoch, int) or epoch < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError(
                f"cannot resume: {metadata} is not the JSON Keras writes "
                '(expected {"epoch": N, "batch": M}); ' + advice) from None


def backup_step(backup: pathlib.Path, period: int) -> int:
    """The optimizer step a run resumes from: the backup's finished periods
    times the period (0 without a backup)."""
    metadata = backup / "training_metadata.json"
    if not metadata.exists():
        return 0
    return int(json.loads(metadata.read_text())["epoch"]) * period


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers,
    MirroredStrategy when several GPUs are visible, else the default."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get(
        "cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief task (or worker 0 when the cluster names no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (not has_chief and resolver.task_type == "worker"
            and resolver.task_id == 0)


def _train_multi_worker(config, trainer, dataset, strategy, workdir, steps,
                        period) -> Dict[str, float]:
    """`distributed_fit` in periods, with checkpoints and scalar logs.

    Every worker runs every step (the collectives need all of them) and
    writes its checkpoints; only the chief's land in the real work
    directory. No BackupAndRestore here: a killed multi-worker run restarts
    from its newest checkpoint by hand.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    network = trainer.network
    checkpoints = workdir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(workdir / "logs" / "train"))
    callback = _PeriodCallback(period, network, checkpoints, writer,
                               config.train.keep_checkpoints)
    trainer_lib.distributed_fit(trainer, dataset, steps, strategy,
                                callback=callback)
    failed = callback.failed
    if failed:
        raise FloatingPointError(
            f"training stopped: the loss was {failed[0][1]} at step "
            f"{failed[0][0]}; the last good checkpoint is in {checkpoints}")
    tmp = workdir / ".tmp-model.keras"
    network.save(tmp)
    os.replace(tmp, workdir / "model.keras")
    return {}


class _PeriodCallback:
    """`distributed_fit` callback: NaN check and scalars every step; an
    atomic checkpoint every `period` steps."""

    def __init__(self, period, network, checkpoints, writer, keep):
        self.period, self.network = period, network
        self.checkpoints, self.writer, self.keep = checkpoints, writer, keep
        self.failed = []  # [(step, loss)] of the first non-finite loss
        self.means = {}  # the previous step's running means

    def __call__(self, step, logs) -> bool:
        if not np.isfinite(logs["loss"]):
            self.failed.append((step, logs["loss"]))
            return True  # stop
        # The trackers hold means since step 1 (never reset here); each
        # step's own value is recovered as in `StepScalars`.
        with self.writer.as_default(step=step):
            for name, mean in logs.items():
                before = self.means.get(name)
                tf.summary.scalar(name, mean if before is None else
                                  step * mean - (step - 1) * before)
                self.means[name] = mean
        if step % self.period:
            return False
        self.writer.flush()
        final = self.checkpoints / f"ckpt-{step:08d}.weights.h5"
        tmp = self.checkpoints / f".tmp-ckpt-{step:08d}.weights.h5"
        self.network.save_weights(tmp)
        os.replace(tmp, final)
        for old in sorted(self.checkpoints.glob("ckpt-*.weights.h5"))[
                :-self.keep]:
            old.unlink()
        return False


def evaluate_heldout(config, network: keras.Model) -> Dict[str, float]:
    """Depth metrics on the held-out split (synthetic benchmark by default)."""
    from experiments import evaluate

    if config.data.spec:
        return {}
    dirs = scene_dirs("", config.eval.split, config)
    status = console.StatusLine(every=10)
    total = evaluate.count_reference_views(
        dirs, config.eval.max_views_per_scene)
    label = (f"evaluating depth on the held-out synthetic scenes "
             f"({config.eval.split} split, {len(dirs)} scenes, "
             f"{config.eval.num_views} views)")

    ticker = console.ticking(f"{label}: building the graph")
    ticker.__enter__()

    def on_view(count):
        if count == 1:
            ticker.__exit__(None, None, None)
        status.update(f"{label}: view {count}/{total}", force=count == 1)

    try:
        metrics = evaluate.evaluate_depth(
            network, dirs, num_views=config.eval.num_views,
            height=config.data.height, width=config.data.width,
            max_views_per_scene=config.eval.max_views_per_scene,
            on_view=on_view)
    finally:
        ticker.__exit__(None, None, None)
    status.close(f"{label}: {metrics['num_views_evaluated']} views scored")
    return metrics


def main(argv: Sequence[str], name: str, description: str,
         default_config: str) -> int:
    """The training entry points' `main`; returns the exit status.

    `console.quiet_tensorflow` must have run before this module was
    imported for the C++ log level to apply.
    """
    args, overrides = parse_args(argv, description, default_config)
    try:
        config = resolve_config(args, overrides)
    except (KeyError, ValueError, FileNotFoundError) as error:
        # A user's mistake: one line naming the field or file, no traceback.
        print(f"{name}: error: {error.args[0] if error.args else error}",
              file=sys.stderr)
        return 2
    workdir = pathlib.Path(args.workdir) if args.workdir else (
        default_workdir(name))
    print(f"{name}: objective {config.loss.objective}, data "
          f"{config.data.spec or 'synthetic benchmark'}, workdir {workdir}",
          flush=True)
    try:
        metrics = train_and_evaluate(config, workdir)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        _print_outputs(workdir, config)
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
        from experiments import evaluate

        print()
        print(evaluate.describe_depth_metrics(
            metrics, data=(f"held-out synthetic scenes "
                           f"({config.eval.split} split)"),
            unit=config.data.depth_unit))
    _print_outputs(workdir, config)
    return 0


def _print_outputs(workdir: pathlib.Path, config) -> None:
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
