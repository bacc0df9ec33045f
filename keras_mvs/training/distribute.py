"""Distribution: which strategy a run uses, and the multi-worker loop.

`make_strategy` picks MultiWorkerMirroredStrategy when TF_CONFIG names more
than one task, MirroredStrategy with several GPUs, else the default. Keras
`fit` fails under MultiWorkerMirroredStrategy (TF_NOTES.md 6), so there the
same `train_step` runs through `distributed_fit`, a thin `strategy.run`
loop; `train_multi_worker` adds checkpoints, scalar logs and `model.keras`
around it. The chief writes the real work directory (`is_chief`).
"""

import json
import os
import pathlib
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from keras_mvs import files
from keras_mvs.models import trainer as trainer_lib
from keras_mvs.training import callbacks


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


def distributed_fit(trainer: trainer_lib.MVSTrainer,
                    dataset: tf.data.Dataset, steps: int,
                    strategy: tf.distribute.Strategy,
                    callback: Optional[Callable[[int, Dict[str, float]],
                                                bool]] = None,
                    ) -> Dict[str, float]:
    """Runs `steps` training steps through `strategy.run(trainer.train_step)`.

    Keras 3 `fit` fails under `MultiWorkerMirroredStrategy` (TF_NOTES.md 6),
    so multi-machine training drives the same `train_step` with this thin
    loop. `dataset` yields global batches; the strategy splits them.

    Args:
        trainer: a compiled `MVSTrainer` built inside `strategy.scope()`.
        dataset: the global-batch training dataset.
        steps: number of optimizer steps.
        strategy: the distribution strategy the trainer was built under.
        callback: optional `callback(step, logs)` after every step (host);
            a true return value stops the loop (every worker sees the same
            reduced logs, so all stop at the same step).

    Returns:
        The last step's logs as Python floats (means over replicas).
    """
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def step_fn(batch):
        logs = strategy.run(trainer.train_step, args=(batch,))
        return {name: strategy.reduce("MEAN", value, axis=None)
                for name, value in logs.items()}

    logs = {}
    for step in range(steps):
        logs = {k: float(v) for k, v in step_fn(next(iterator)).items()}
        if callback is not None and callback(step + 1, logs):
            break
    return logs


class PeriodCallback:
    """`distributed_fit` callback: NaN check and scalars every step; an
    atomic checkpoint every `period` steps."""

    def __init__(self, period: int, network: keras.Model,
                 checkpoints: pathlib.Path, writer, keep: int):
        self.period, self.network = period, network
        self.checkpoints, self.writer, self.keep = checkpoints, writer, keep
        # [(step, loss)] of the first non-finite loss.
        self.failed: List[Tuple[int, float]] = []
        self.means = {}  # the previous step's running means

    def __call__(self, step: int, logs: Dict[str, float]) -> bool:
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
        callbacks.write_checkpoint(self.checkpoints, self.network, step,
                                   self.keep)
        return False


def train_multi_worker(trainer: trainer_lib.MVSTrainer,
                       dataset: tf.data.Dataset,
                       strategy: tf.distribute.Strategy,
                       workdir: pathlib.Path, steps: int, period: int,
                       keep_checkpoints: int) -> None:
    """`distributed_fit` in periods, with checkpoints and scalar logs, then
    `model.keras`.

    Every worker runs every step (the collectives need all of them) and
    writes its checkpoints; only the chief's land in the real work
    directory. No BackupAndRestore here: a killed multi-worker run restarts
    from its newest checkpoint by hand.

    Raises:
        FloatingPointError: the loss became non-finite; names the step.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    network = trainer.network
    checkpoints = workdir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    writer = tf.summary.create_file_writer(str(workdir / "logs" / "train"))
    callback = PeriodCallback(period, network, checkpoints, writer,
                              keep_checkpoints)
    distributed_fit(trainer, dataset, steps, strategy, callback=callback)
    failed = callback.failed
    if failed:
        raise FloatingPointError(
            f"training stopped: the loss was {failed[0][1]} at step "
            f"{failed[0][0]}; the last good checkpoint is in {checkpoints}")
    with files.atomic_path(workdir / "model.keras") as temporary:
        network.save(temporary)
