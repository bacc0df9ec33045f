"""Tests for keras_mvs.schedules."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mvs import schedules


@pytest.mark.parametrize(
    "step, factor",
    [
        (0, 1 / 3),  # t = 0: warm-up starts at 1/3
        (11, (1 - 1 / 3) / 3 + 1 / 3),  # t = 0.11 = warm-up / 3
        (33, 1.0),  # t = 0.33: warm-up over
        (999, 1.0),  # t = 9.99
        (1000, 0.5),  # t = 10: first milestone
        (1199, 0.5),
        (1200, 0.25),  # t = 12
        (1400, 0.125),  # t = 14
        (1600, 0.125),  # t = 16: no further decay
    ],
)
def test_warmup_multistep_clmvsnet(step, factor):
    schedule = schedules.WarmupMultiStep(5e-4, steps_per_epoch=100)
    assert float(schedule(step)) == pytest.approx(5e-4 * factor, rel=1e-6)


def test_warmup_multistep_unimvsnet_warmup_and_int64_step():
    schedule = schedules.WarmupMultiStep(1e-3, steps_per_epoch=50,
                                         warmup_epochs=0.2)
    # t = 0.1, half the warm-up: (1 - 0.5) / 3 + 0.5 = 2/3.
    assert float(schedule(tf.constant(5, tf.int64))) == pytest.approx(
        1e-3 * 2 / 3, rel=1e-6)
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-6)


def test_warmup_multistep_serialization_and_optimizer():
    schedule = schedules.WarmupMultiStep(5e-4, 100, warmup_epochs=0.2,
                                         milestones=(6, 8))
    config = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(config)
    assert isinstance(restored, schedules.WarmupMultiStep)
    assert restored.get_config() == schedule.get_config()
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    assert float(restored.learning_rate) == pytest.approx(5e-4 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedules.WarmupMultiStep(1e-3, 0)
    with pytest.raises(ValueError, match="milestones"):
        schedules.WarmupMultiStep(1e-3, 10, milestones=(12, 10))


def test_icc_weight_reference_schedule():
    expected = [0.01, 0.02, 0.02, 0.04, 0.04, 0.08, 0.08, 0.16, 0.16, 0.32,
                0.32, 0.32, 0.32, 0.32, 0.32, 0.32]
    for epoch, weight in enumerate(expected):
        assert float(schedules.icc_weight(epoch)) == pytest.approx(weight)
    assert float(schedules.icc_weight(2.99)) == pytest.approx(0.02)
    assert float(schedules.icc_weight(tf.constant(3, tf.int64))) == (
        pytest.approx(0.04))


def test_source_mask_rate_ramp():
    rates = [float(schedules.source_mask_rate(e))
             for e in (0, 1, 7.5, 14, 15, 20)]
    np.testing.assert_allclose(
        rates, [0.0, 0.1 / 15, 0.7 / 15, 1.4 / 15, 0.1, 0.1], rtol=1e-6)
    assert float(schedules.source_mask_rate(tf.constant(3))) == (
        pytest.approx(0.02))
