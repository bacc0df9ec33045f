"""Training driver shared by `experiments.train_clmvs` and `train_unimvs`.

`train_and_evaluate(config, workdir)` is the importable, tested function the
entry points call: it resolves the data, builds the network and the trainer,
fits with the callbacks of DESIGN.md section 6, saves `model.keras` and
evaluates depth on held-out scenes when they have ground truth.

Work directory:
    config.json          the resolved configuration
    logs/                TensorBoard scalars per loss term, depth images
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
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from keras_mvs import models
from keras_mvs import schedules
from keras_mvs.data import pipeline
from keras_mvs.data import synthetic
from keras_mvs.models import trainer as trainer_lib

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
    parser.add_argument("--smoke", action="store_true",
                        help="tiny, fast run (under 2 minutes on a CPU)")
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
    if config.loss.objective == "unsupervised_unity":
        # The objective is defined on the unity head (DESIGN.md section 1).
        config.model.head = "unity"
    return config


def steps_per_epoch(config) -> int:
    """`train.steps_per_epoch`, at least 1 (it is `steps // 16` by default,
    0 for runs shorter than 16 steps)."""
    return max(int(config.train.steps_per_epoch), 1)


# === Data ===


def scene_dirs(spec: str, split: str, config) -> List[pathlib.Path]:
    """Scene folders of a data spec ('' = the synthetic benchmark split)."""
    if not spec:
        return synthetic.ensure_benchmark(
            split, height=config.data.height, width=config.data.width,
            num_views=config.data.synthetic_views)
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


def scene_dataset(spec: str, split: str, config) -> tf.data.Dataset:
    if spec.startswith("tfds:"):
        from keras_mvs.data import tfds_source

        name, _, builder_config = spec[len("tfds:"):].partition("/")
        return tfds_source.scenes_from_tfds(
            name, split, config=builder_config or None)
    return pipeline.scene_dicts_from_folders(
        scene_dirs(spec, split, config), height=config.data.height,
        width=config.data.width)


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
        xla_warp=model.xla_warp,
        sync_batchnorm=model.sync_batchnorm and num_replicas > 1,
        recompute_sources=model.get("recompute_sources", False),
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


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and names the optimizer step.

    The trainer zeroes the gradients of a non-finite step, so the weights stay
    finite; `AtomicCheckpoint` writes nothing after this callback fired.
    """

    def __init__(self):
        super().__init__()
        self.failed_step: Optional[int] = None
        self.value = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.failed_step = int(self.model.optimizer.iterations.numpy())
            self.value = float(loss)
            print(f"\nNon-finite loss ({self.value}) at step "
                  f"{self.failed_step}: training stopped; the last good "
                  "checkpoint is kept.", file=sys.stderr)
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
            # Keras's progress bar closes a stopped epoch at its full length
            # ("100/100"), so say where training really stopped.
            print(f"Time budget of {self.minutes:g} min "
                  f"(train.max_minutes) reached: stopped after step "
                  f"{self.stopped_at_step}.", flush=True)


class GuardedBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that keeps the last backup once the loss failed.

    Keras still calls `on_epoch_end` for the epoch a callback stopped; the
    weights then are the diverged ones, and a rerun would resume from them.
    """

    def __init__(self, nan_guard: "StopOnNaN", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_guard = nan_guard

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.failed_step is None:
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
        if self.nan_guard.failed_step is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        step = int(self.model.optimizer.iterations.numpy())
        final = self.directory / f"ckpt-{step:08d}.weights.h5"
        tmp = self.directory / f".tmp-ckpt-{step:08d}.weights.h5"
        self.network.save_weights(tmp)
        os.replace(tmp, final)
        for old in sorted(self.directory.glob("ckpt-*.weights.h5"))[
                :-self.keep]:
            old.unlink()


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

    dataset = training_dataset(config)
    first_batch = next(iter(dataset))
    with strategy.scope():
        network = build_network(config, replicas)
        trainer = build_trainer(config, network)
        trainer(trainer_lib.network_inputs(first_batch))  # builds the weights

    steps = config.train.steps
    period = min(config.train.log_every, steps)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras fit fails under this strategy (TF_NOTES.md 6).
        try:
            return _train_multi_worker(config, trainer, dataset, strategy,
                                       workdir, steps, period)
        finally:
            if not is_chief(strategy):
                shutil.rmtree(workdir, ignore_errors=True)
    nan_guard = StopOnNaN()
    callbacks = [
        nan_guard,
        GuardedBackup(nan_guard, str(workdir / "backup"),
                      save_freq="epoch", double_checkpoint=True,
                      delete_checkpoint=False),
        AtomicCheckpoint(workdir / "checkpoints", network, nan_guard,
                         keep=config.train.keep_checkpoints),
        keras.callbacks.TensorBoard(str(workdir / "logs"),
                                    update_freq="epoch"),
        DepthImages(workdir / "logs", first_batch),
    ]
    if config.train.max_minutes > 0:
        callbacks.append(TimeBudget(config.train.max_minutes))
    trainer.fit(dataset, epochs=max(steps // period, 1),
                steps_per_epoch=period, callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 2)
    if nan_guard.failed_step is not None:
        raise FloatingPointError(
            f"training stopped: the loss was {nan_guard.value} at step "
            f"{nan_guard.failed_step}; the last good checkpoint is in "
            f"{workdir / 'checkpoints'}")

    tmp = workdir / ".tmp-model.keras"
    network.save(tmp)
    os.replace(tmp, workdir / "model.keras")
    metrics = evaluate_heldout(config, network)
    if metrics:
        metrics["train_steps"] = int(trainer.optimizer.iterations.numpy())
        write_json(workdir / "eval.json", metrics)
    return metrics


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
    """`distributed_fit` callback: NaN check every step; scalars and an
    atomic checkpoint every `period` steps."""

    def __init__(self, period, network, checkpoints, writer, keep):
        self.period, self.network = period, network
        self.checkpoints, self.writer, self.keep = checkpoints, writer, keep
        self.failed = []  # [(step, loss)] of the first non-finite loss

    def __call__(self, step, logs) -> bool:
        if not np.isfinite(logs["loss"]):
            self.failed.append((step, logs["loss"]))
            return True  # stop
        if step % self.period:
            return False
        with self.writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"epoch_{name}", value)
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
    return evaluate.evaluate_depth(
        network, dirs, num_views=config.eval.num_views,
        height=config.data.height, width=config.data.width,
        max_views_per_scene=config.eval.max_views_per_scene)


def main(argv: Sequence[str], name: str, description: str,
         default_config: str) -> int:
    args, overrides = parse_args(argv, description, default_config)
    config = resolve_config(args, overrides)
    workdir = pathlib.Path(args.workdir) if args.workdir else (
        default_workdir(name))
    print(f"{name}: objective {config.loss.objective}, data "
          f"{config.data.spec or 'synthetic benchmark'}, workdir {workdir}")
    try:
        metrics = train_and_evaluate(config, workdir)
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nDone. Outputs in {workdir}/: config.json, logs/ "
          "(tensorboard --logdir "
          f"{workdir / 'logs'}), checkpoints/, model.keras")
    for key, value in metrics.items():
        print(f"  held-out {key}: {value:.4f}")
    return 0
