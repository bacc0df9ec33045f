"""The run driver: `train_and_evaluate(config, workdir)`.

It resolves the data, builds the network and the trainer, fits with the
callbacks of DESIGN.md section 6, saves `model.keras` and evaluates depth on
held-out scenes when they have ground truth. It says what it is doing at
each stage and shows one progress bar for the whole run (`RunProgress`).

Work directory:
    config.json          the resolved configuration
    logs/                TensorBoard: every loss term and metric at every
                         optimizer step (train/), depth images (images/)
    checkpoints/         network weights every `train.log_every` steps
    backup/              BackupAndRestore state (resume after a kill)
    model.keras          the final network (written last, atomically)
    eval.json            held-out depth metrics, when ground truth exists

Distribution (`keras_mvs.training.distribute`): with TF_CONFIG naming more
than one task, MultiWorkerMirroredStrategy and the `distributed_fit` loop
(Keras `fit` fails there): checkpoints, scalar logs and `model.keras`, no
backup, no held-out evaluation; the chief writes the work directory, the
other workers a temporary folder that is removed at the end. With several
GPUs, MirroredStrategy and `fit`. `data.batch_size` is the global batch.
With more than one replica, BatchNorm statistics are all-reduced across
replicas (`model.sync_batchnorm`, SyncBN as the references train).
"""

import pathlib
import shutil
import tempfile
from typing import Dict

import keras
import ml_collections
import tensorflow as tf

from keras_mvs import console
from keras_mvs import files
from keras_mvs import models
from keras_mvs import schedules
from keras_mvs.data import pipeline
from keras_mvs.data import specs
from keras_mvs.models import trainer as trainer_lib
from keras_mvs.training import backup
from keras_mvs.training import callbacks
from keras_mvs.training import distribute
from keras_mvs.training import heldout
from keras_mvs.training import optimizers
from keras_mvs.training import warm_start

# === Data ===


def training_dataset(config: ml_collections.ConfigDict) -> tf.data.Dataset:
    """The batched, shuffled training tuples of `config.data`."""
    objective = config.loss.objective
    branches = (("regular",) if objective == "supervised"
                else tuple(config.loss.branches))
    scenes = specs.scene_dataset(
        config.data.spec, config.data.split, height=config.data.height,
        width=config.data.width, num_views=config.data.num_views,
        require_depth=objective == "supervised",
        synthetic_views=config.data.synthetic_views)
    return pipeline.make_dataset(
        scenes,
        num_views=config.data.num_views,
        batch_size=config.data.batch_size,
        seed=config.data.seed,
        training=True,
        branches=branches,
        require_depth=objective == "supervised",
    )


# === Model ===


def build_network(config: ml_collections.ConfigDict,
                  num_replicas: int = 1) -> keras.Model:
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
        recompute_sources=model.recompute_sources,
        recompute_regularization=model.recompute_regularization,
        recompute_features=model.recompute_features,
    )


def build_trainer(config: ml_collections.ConfigDict,
                  network: keras.Model) -> trainer_lib.MVSTrainer:
    """The compiled trainer; the epoch-based schedules read
    `train.steps_per_epoch` (at least 1 once `config.resolve` ran)."""
    loss = config.loss
    steps_per_epoch = max(int(config.train.steps_per_epoch), 1)
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
        steps_per_epoch=steps_per_epoch,
        seed=config.train.seed,
        xla=config.train.xla,
    )
    learning_rate = schedules.WarmupMultiStep(
        config.optimizer.learning_rate,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.optimizer.warmup_epochs,
        milestones=tuple(config.optimizer.milestones),
    )
    # jit_compile stays False: XLA over MirroredStrategy crashes
    # (TF_NOTES.md 2.2); --xla compiles inside the step instead.
    trainer.compile(optimizer=optimizers.Adam(learning_rate),
                    jit_compile=False)
    return trainer


# === Run ===


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: pathlib.Path) -> Dict[str, float]:
    """Trains per `config` into `workdir`; returns the held-out metrics.

    Returns:
        The depth metrics of the held-out scenes (empty when the data has no
        ground truth or no held-out split).

    Raises:
        FloatingPointError: the loss became non-finite; names the step.
        ValueError: the global batch does not split over the replicas.
    """
    # The strategy comes first: MultiWorkerMirroredStrategy must be created
    # before TensorFlow initialises its devices.
    strategy = distribute.make_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.data.batch_size % replicas:
        raise ValueError(
            f"--config.data.batch_size={config.data.batch_size} is the global "
            f"batch and must be a multiple of the {replicas} replicas "
            f"({strategy.__class__.__name__})")
    workdir = pathlib.Path(workdir)
    if not distribute.is_chief(strategy):
        # Documented pattern: only the chief writes the real work directory.
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="keras_mvs-worker-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files.write_json(workdir / "config.json", config.to_dict())
    keras.mixed_precision.set_global_policy(config.train.precision)
    keras.utils.set_random_seed(config.train.seed)

    multi_worker = isinstance(strategy,
                              tf.distribute.MultiWorkerMirroredStrategy)
    if not config.data.spec:
        heldout.prepare_synthetic(
            [config.data.split]
            + ([] if multi_worker else [config.eval.split]),
            height=config.data.height, width=config.data.width,
            synthetic_views=config.data.synthetic_views)
    with console.ticking("loading the training data and building the "
                         "network"):
        dataset = training_dataset(config)
        first_batch = next(iter(dataset))
        with strategy.scope():
            network = build_network(config, replicas)
            trainer = build_trainer(config, network)
            # Builds the weights, then the optimizer's slots: built inside
            # the first traced step, they make tf.function trace the whole
            # training graph twice (variables may only be created on the
            # first trace), and the second trace's graph stays alive beside
            # the first (about 230 MB of the default run's peak).
            trainer(trainer_lib.network_inputs(first_batch))
            trainer.optimizer.build(trainer.trainable_variables)
            if config.model.init:
                count = warm_start.load_init_weights(network,
                                                     config.model.init)
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
            distribute.train_multi_worker(
                trainer, dataset, strategy, workdir, steps, period,
                config.train.keep_checkpoints)
            return {}
        finally:
            if not distribute.is_chief(strategy):
                shutil.rmtree(workdir, ignore_errors=True)
    _fit(config, trainer, dataset, first_batch, workdir, steps, period)
    with console.ticking("saving the network to model.keras"):
        with files.atomic_path(workdir / "model.keras") as temporary:
            network.save(temporary)
    metrics = heldout.evaluate_heldout(config, network)
    if metrics:
        metrics["train_steps"] = int(trainer.optimizer.iterations.numpy())
        files.write_json(workdir / "eval.json", metrics)
    return metrics


def _fit(config, trainer, dataset, first_batch, workdir, steps,
         period) -> None:
    """`trainer.fit` with the run's callbacks, resuming from `backup/`.

    Raises:
        FloatingPointError: the loss or the weights became non-finite.
    """
    backup.check_backup(workdir / "backup")
    monitoring_only = config.loss.objective != "supervised"
    nan_guard = callbacks.StopOnNaN(trainer.network)
    run_callbacks = [
        nan_guard,
        callbacks.ReleaseMemoryAfterFirstStep(),
        callbacks.GuardedBackup(nan_guard, str(workdir / "backup"),
                                save_freq="epoch", double_checkpoint=True,
                                delete_checkpoint=False),
        callbacks.AtomicCheckpoint(workdir / "checkpoints", trainer.network,
                                   nan_guard,
                                   keep=config.train.keep_checkpoints),
        callbacks.StepScalars(workdir / "logs",
                              depth_unit=config.data.depth_unit,
                              monitoring_only=monitoring_only,
                              flush_every=period),
        callbacks.DepthImages(workdir / "logs", first_batch),
        # After the backup (it restores the step), before the budget (the
        # bar ends before the budget's message).
        callbacks.RunProgress(steps, max_minutes=config.train.max_minutes,
                              monitoring_only=monitoring_only,
                              depth_unit=config.data.depth_unit,
                              print_every=period),
    ]
    if config.train.max_minutes > 0:
        run_callbacks.append(callbacks.TimeBudget(config.train.max_minutes))
    console.stage(
        f"training for {steps} steps"
        + (f" or {config.train.max_minutes:g} min" if
           config.train.max_minutes > 0 else "")
        + f"; checkpoint, backup and TensorBoard images every {period} "
        "steps")
    resumed_step = backup.backup_step(workdir / "backup", period)
    if resumed_step:
        # The batches are a fixed sequence (seeded); a resumed run skips the
        # ones already trained on, so it sees what an uninterrupted run
        # would have seen from this step on.
        dataset = dataset.skip(resumed_step)
    # shuffle=False: the dataset shuffles itself (Keras would warn).
    trainer.fit(dataset, epochs=max(steps // period, 1),
                steps_per_epoch=period, callbacks=run_callbacks, verbose=0,
                shuffle=False)
    if nan_guard.failed_step is not None:
        kept = (f"the last good checkpoint is {nan_guard.last_checkpoint}"
                if nan_guard.last_checkpoint is not None else
                "no checkpoint was written before it (the first is written "
                f"at step {period})")
        backed_up = ("backup/ holds the last finished period, with finite "
                     "weights" if backup.has_backup(workdir / "backup") else
                     "nothing was backed up")
        raise FloatingPointError(
            f"training stopped: the loss was {nan_guard.value} at step "
            f"{nan_guard.failed_step}; {kept}; {backed_up}")
