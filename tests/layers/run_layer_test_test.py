"""`run_layer_test` rejects the layer faults it exists to catch."""

import keras
import numpy as np
import pytest

from keras_mvs.testing.layers import run_layer_test


@keras.saving.register_keras_serializable(package="run_layer_test_test")
class _Scale(keras.layers.Layer):
    """y = factor * x * w, with one trainable weight w per channel."""

    def __init__(self, factor=2.0, unused_weight=False, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.unused_weight = unused_weight

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), name="w")
        if self.unused_weight:
            self.spare = self.add_weight(shape=(1,), name="spare")

    def call(self, inputs, training=None):
        return self.factor * inputs * self.w

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor,
                       "unused_weight": self.unused_weight})
        return config


class _ForgetsFactor(_Scale):
    def get_config(self):
        config = super().get_config()
        del config["factor"]
        return config


class _WrongFactor(_Scale):
    def get_config(self):
        config = super().get_config()
        config["factor"] = 1.0
        return config


@keras.saving.register_keras_serializable(package="run_layer_test_test")
class _NotSaved(_Scale):
    """Loads with fresh weights: its variables are left out of the file."""

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


_X = np.arange(12, dtype=np.float32).reshape(2, 2, 3)


def test_accepts_a_correct_layer(tmp_path):
    run_layer_test(_Scale, {"factor": 3.0}, _X, (2, 2, 3), tmp_path)


@pytest.mark.parametrize("layer_class,init_kwargs,match", [
    (_ForgetsFactor, {}, r"lacks constructor arguments \['factor'\]"),
    (_WrongFactor, {"factor": 3.0}, r"\['factor'\] is 1.0"),
    (_Scale, {"unused_weight": True}, "no gradient reaches"),
    (_NotSaved, {}, "output 0 differs after save/load"),
])
def test_rejects(tmp_path, layer_class, init_kwargs, match):
    with pytest.raises(AssertionError, match=match):
        run_layer_test(layer_class, init_kwargs, _X, (2, 2, 3), tmp_path)


def test_rejects_wrong_shape(tmp_path):
    with pytest.raises(AssertionError, match="eager output shapes"):
        run_layer_test(_Scale, {}, _X, (2, 2, 4), tmp_path)
