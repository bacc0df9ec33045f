"""The Keras callbacks of a training run (DESIGN.md section 6).

    StopOnNaN         stops at the first non-finite loss or weight
    GuardedBackup     BackupAndRestore that never backs up diverged weights
    AtomicCheckpoint  the network's weights every logging period, newest kept
    TimeBudget        stops after `train.max_minutes`
    RunProgress       one progress bar for the whole run, in optimizer steps
    StepScalars       TensorBoard scalars of every term at every step
    DepthImages       TensorBoard reference, depth and confidence images

Checkpoints hold finite weights only: once `StopOnNaN` fired, neither
`AtomicCheckpoint` nor `GuardedBackup` writes, and both check the weights
themselves before writing.
"""

import pathlib
import sys
import threading
import time
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_mvs import console
from keras_mvs import files
from keras_mvs import malloc
from keras_mvs.models import trainer as trainer_lib


def write_checkpoint(directory: pathlib.Path, network: keras.Model,
                     step: int, keep: int) -> pathlib.Path:
    """Writes `ckpt-STEP.weights.h5` atomically; keeps the newest `keep`.

    Returns:
        The checkpoint's path.
    """
    final = pathlib.Path(directory) / f"ckpt-{step:08d}.weights.h5"
    with files.atomic_path(final) as temporary:
        network.save_weights(temporary)
    for old in sorted(final.parent.glob("ckpt-*.weights.h5"))[:-keep]:
        old.unlink()
    return final


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


class ReleaseMemoryAfterFirstStep(keras.callbacks.Callback):
    """Returns the memory freed while the first step was built to the system.

    The first step traces, optimises and compiles the training graph; the
    memory that work frees stays with malloc, and the later steps reuse
    little of it (`keras_mvs.malloc.release_free_memory`).
    """

    def __init__(self):
        super().__init__()
        self.released = None  # whether memory was returned, after step 1

    def on_train_batch_end(self, batch, logs=None):
        if self.released is None:
            self.released = malloc.release_free_memory()


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
    that exists is complete (`write_checkpoint`). Only the newest `keep` are
    kept.
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
        self.nan_guard.last_checkpoint = write_checkpoint(
            self.directory, self.network, step, self.keep)


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
