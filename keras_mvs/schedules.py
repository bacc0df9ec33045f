"""Training schedules of UniMVSNet and CL-MVSNet (ALGORITHMS.md 4 and 5).

* `WarmupMultiStep`: the learning rate of both reference codes, a PyTorch
  `LambdaLR` evaluated on the fractional epoch `t = step / steps_per_epoch`:
  linear warm-up from 1/3 to 1 over `warmup_epochs` (0.33 in CL-MVSNet, 0.2
  in UniMVSNet), then halving at each milestone epoch (10, 12, 14).
* `icc_weight`: the image-level consistency weight, 0.01 doubled at epochs
  1, 3, 5, 7 and 9, capped at 0.32 (`CL:tools.py::adjust_w_icc`).
* `source_mask_rate`: the ICC source-masking probability, ramped linearly
  from 0 to 0.1 over 15 epochs.

Epochs are 0-based, as in the reference. The reference sets the ICC weight
and the masking rate once per epoch from the integer epoch, so the two
per-epoch schedules floor a fractional epoch; pass `step / steps_per_epoch`
or the integer epoch, as a Python number or a tensor.
"""

from typing import Sequence
from typing import Union

import keras
import tensorflow as tf

Number = Union[int, float, tf.Tensor]

# The ICC weight schedule of CL-MVSNet (`adjust_w_icc`, `--w_icc`,
# `--max_w_icc`).
ICC_INITIAL_WEIGHT = 0.01
ICC_MAX_WEIGHT = 0.32
ICC_DOUBLING_EPOCHS = (1, 3, 5, 7, 9)


@keras.saving.register_keras_serializable(package="keras_mvs")
class WarmupMultiStep(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 1/3, then step decay at milestone epochs.

    With `t = step / steps_per_epoch` (a fractional epoch), the learning rate
    is `initial_learning_rate * factor(t)` where

    * `factor = (1 - t / warmup) / 3 + t / warmup` for `t < warmup_epochs`;
    * `factor = decay ** (number of milestones <= t)` afterwards.

    This is the `LambdaLR` of `CL:tools.py::get_schedular` and
    `Uni:tools.py::get_schedular`, stepped every iteration. Keras evaluates
    a schedule at `optimizer.iterations` before the update, so the first step
    uses `t = 0`, like the reference's first iteration.

    Args:
        initial_learning_rate: the base rate (5e-4 CL-MVSNet, 1e-3 UniMVSNet).
        steps_per_epoch: optimizer steps per epoch, > 0.
        warmup_epochs: warm-up length in epochs (0.33 CL-MVSNet, 0.2
            UniMVSNet); 0 disables it.
        milestones: epochs at which the rate is multiplied by `decay`.
        decay: the factor applied at each milestone.
        name: schedule name.

    Example:
        >>> schedule = WarmupMultiStep(5e-4, steps_per_epoch=1000)
        >>> optimizer = keras.optimizers.Adam(learning_rate=schedule)
    """

    def __init__(
        self,
        initial_learning_rate: float,
        steps_per_epoch: int,
        warmup_epochs: float = 0.33,
        milestones: Sequence[float] = (10, 12, 14),
        decay: float = 0.5,
        name: str = "WarmupMultiStep",
    ):
        super().__init__()
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive. Received: "
                             f"steps_per_epoch={steps_per_epoch}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0. Received: "
                             f"warmup_epochs={warmup_epochs}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing. Received: "
                             f"milestones={tuple(milestones)}")
        self.initial_learning_rate = initial_learning_rate
        self.steps_per_epoch = steps_per_epoch
        self.warmup_epochs = warmup_epochs
        self.milestones = tuple(milestones)
        self.decay = decay
        self.name = name

    def __call__(self, step):
        # float64 keeps t exact at milestone boundaries for any step count.
        epoch = tf.cast(step, tf.float64) / float(self.steps_per_epoch)
        passed = tf.reduce_sum(tf.cast(
            tf.constant(self.milestones, tf.float64) <= epoch, tf.float64))
        factor = tf.pow(tf.constant(self.decay, tf.float64), passed)
        if self.warmup_epochs > 0:
            progress = epoch / self.warmup_epochs
            warmup_factor = (1.0 - progress) / 3.0 + progress
            factor = tf.where(epoch < self.warmup_epochs, warmup_factor,
                              factor)
        return tf.cast(self.initial_learning_rate * factor, tf.float32)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_epochs": self.warmup_epochs,
            "milestones": list(self.milestones),
            "decay": self.decay,
            "name": self.name,
        }


def icc_weight(
    epoch: Number,
    initial: float = ICC_INITIAL_WEIGHT,
    maximum: float = ICC_MAX_WEIGHT,
    doubling_epochs: Sequence[int] = ICC_DOUBLING_EPOCHS,
) -> tf.Tensor:
    """CL-MVSNet's image-level consistency weight for a 0-based epoch.

    `min(initial * 2 ** (number of doubling epochs <= floor(epoch)),
    maximum)`: 0.01 at epoch 0, 0.02 at 1-2, 0.04 at 3-4, 0.08 at 5-6, 0.16
    at 7-8 and 0.32 from 9 on.

    Args:
        epoch: 0-based epoch, int or float, Python number or tensor;
            fractional epochs are floored.
        initial, maximum, doubling_epochs: the schedule's constants.

    Returns:
        Scalar float32 tensor.
    """
    epoch = tf.floor(tf.cast(epoch, tf.float32))
    doublings = tf.reduce_sum(tf.cast(
        tf.constant(doubling_epochs, tf.float32) <= epoch, tf.float32))
    return tf.minimum(initial * tf.pow(2.0, doublings), maximum)


def source_mask_rate(
    epoch: Number, max_rate: float = 0.1, ramp_epochs: float = 15
) -> tf.Tensor:
    """ICC source-masking probability for a 0-based epoch.

    `min(max_rate * floor(epoch) / ramp_epochs, max_rate)`: 0 at epoch 0,
    0.1 from epoch 15 on (ALGORITHMS.md 4.1).

    Args:
        epoch: 0-based epoch, Python number or tensor; fractional epochs are
            floored.
        max_rate: the final rate (`p_icc` = 0.1).
        ramp_epochs: epochs to reach it (15).

    Returns:
        Scalar float32 tensor.
    """
    if ramp_epochs <= 0:
        raise ValueError(f"ramp_epochs must be positive. Received: "
                         f"ramp_epochs={ramp_epochs}")
    epoch = tf.floor(tf.cast(epoch, tf.float32))
    return tf.minimum(max_rate * epoch / ramp_epochs, max_rate)
