"""`run_layer_test`: the checks every public layer must pass (keras-hub).

One call builds a layer from its constructor arguments, calls it eagerly and
symbolically, round-trips its config, takes a gradient in training mode and
saves and reloads a small model that contains it. Used by tests/layers/ for
every layer in `keras_mvs.layers`.
"""

import inspect
import pathlib
from typing import Any
from typing import Mapping
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf


def _as_tuple(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def randomize_weights(layer: keras.layers.Layer, seed: int = 0) -> None:
    """Gives every variable of `layer` (sublayers included) seeded random
    values, so that comparisons see the weights; moving variances are drawn
    from [0.5, 2] to stay valid.

    Args:
        layer: a built layer.
        seed: the generator's seed.
    """
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        variable.assign(value.astype(variable.dtype))


def _constructor_arguments(layer_class: type) -> list[str]:
    """The named parameters of `__init__` of `layer_class` and of its bases
    below `keras.layers.Layer` (a subclass that forwards `**kwargs` to a
    Keras layer must still serialise that layer's arguments)."""
    names = []
    for cls in layer_class.__mro__:
        if cls is keras.layers.Layer or not issubclass(
                cls, keras.layers.Layer):
            break
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters
        names += [name for name, p in parameters.items()
                  if name != "self" and name not in names
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names


def run_layer_test(
    layer_class: type,
    init_kwargs: Mapping[str, Any],
    inputs: np.ndarray | Sequence[np.ndarray],
    expected_output_shape: tuple | Sequence[tuple],
    tmp_path: pathlib.Path,
    call_kwargs: Mapping[str, Any] | None = None,
    atol: float = 0.0,
) -> None:
    """Asserts that a layer builds, calls, serialises and saves correctly.

    Checks, in order:

    1. **Config completeness:** every named constructor argument of
       `layer_class` (and of its Keras base layer, for a subclass that
       forwards `**kwargs`) appears in `get_config()`, with the value given
       in `init_kwargs` where one was given.
    2. **Config round trip:** `from_config(get_config())` gives the same
       config, and, with the original's weights copied, the same outputs.
    3. **Eager call** (inference mode) gives `expected_output_shape`;
       `compute_output_shape` agrees with it.
    4. **Symbolic call** on `keras.Input`s with an unknown batch size gives
       the expected shapes (batch axis None).
    5. **Gradient:** in training mode every trainable weight gets a finite
       gradient of the sum of the outputs (no weight is disconnected).
    6. **Save/load:** a functional model around the layer, saved as
       `.keras` and loaded, gives the original's outputs.

    The layer's weights are randomised (`randomize_weights`) before any
    output comparison, so a weight that is lost or mis-assigned shows.

    Args:
        layer_class: the layer class.
        init_kwargs: constructor arguments.
        inputs: one array or a sequence of arrays, passed positionally;
            batch axis first.
        expected_output_shape: the output shape, or a sequence of shapes for
            a layer that returns a list.
        tmp_path: a folder for the saved model.
        call_kwargs: further call arguments (not tensors), e.g.
            `{"groups": 2}`; `training` is set by the checks.
        atol: tolerance of the output comparisons (0: bitwise equal).

    Raises:
        AssertionError: a check fails (the message says which).
    """
    call_kwargs = dict(call_kwargs or {})
    inputs = tuple(np.asarray(x) for x in _as_tuple(inputs))
    multiple = bool(expected_output_shape) and isinstance(
        expected_output_shape[0], (tuple, list))
    expected = ([tuple(s) for s in expected_output_shape] if multiple
                else [tuple(expected_output_shape)])

    # 1. Config completeness.
    layer = layer_class(**init_kwargs)
    config = layer.get_config()
    missing = [name for name in _constructor_arguments(layer_class)
               if name not in config]
    assert not missing, (
        f"{layer_class.__name__}.get_config() lacks constructor arguments "
        f"{missing}")
    for name, value in init_kwargs.items():
        assert config.get(name) == value, (
            f"{layer_class.__name__}.get_config()[{name!r}] is "
            f"{config.get(name)!r}, constructed with {value!r}")

    # 3. Eager call.
    outputs = keras.tree.flatten(layer(*inputs, training=False,
                                       **call_kwargs))
    shapes = [tuple(o.shape) for o in outputs]
    assert shapes == expected, (
        f"{layer_class.__name__}: eager output shapes {shapes}, expected "
        f"{expected}")
    computed = layer.compute_output_shape(*[x.shape for x in inputs])
    computed = ([tuple(s) for s in computed] if multiple
                else [tuple(computed)])
    assert computed == expected, (
        f"{layer_class.__name__}.compute_output_shape gives {computed}, the "
        f"call {expected}")
    randomize_weights(layer)
    reference = [np.asarray(o) for o in keras.tree.flatten(
        layer(*inputs, training=False, **call_kwargs))]

    # 2. Config round trip, with the weights copied.
    clone = layer_class.from_config(config)
    assert clone.get_config() == config, (
        f"{layer_class.__name__}: from_config(get_config()) has config "
        f"{clone.get_config()}, not {config}")
    clone(*inputs, training=False, **call_kwargs)
    clone.set_weights(layer.get_weights())
    cloned = keras.tree.flatten(clone(*inputs, training=False, **call_kwargs))
    for index, (a, b) in enumerate(zip(reference, cloned)):
        np.testing.assert_allclose(
            np.asarray(b), a, atol=atol, rtol=0, err_msg=(
                f"{layer_class.__name__}: output {index} of the config "
                "clone differs"))

    # 4. Symbolic call.
    symbolic_inputs = [keras.Input(shape=x.shape[1:], dtype=str(x.dtype))
                       for x in inputs]
    symbolic = keras.tree.flatten(layer(*symbolic_inputs, training=False,
                                        **call_kwargs))
    symbolic_shapes = [tuple(o.shape) for o in symbolic]
    assert symbolic_shapes == [(None,) + s[1:] for s in expected], (
        f"{layer_class.__name__}: symbolic output shapes {symbolic_shapes}")

    # 5. Gradient in training mode.
    tensors = [tf.constant(x) for x in inputs]
    with tf.GradientTape() as tape:
        total = tf.add_n([
            tf.reduce_sum(tf.cast(o, tf.float32)) for o in keras.tree.flatten(
                layer(*tensors, training=True, **call_kwargs))])
    gradients = tape.gradient(total, layer.trainable_weights)
    for variable, gradient in zip(layer.trainable_weights, gradients):
        assert gradient is not None, (
            f"{layer_class.__name__}: no gradient reaches {variable.path}")
        assert np.all(np.isfinite(np.asarray(gradient))), variable.path

    # 6. Save and load a model holding the layer.
    model = keras.Model(symbolic_inputs, symbolic)
    before = [np.asarray(o) for o in keras.tree.flatten(
        model(list(inputs), training=False))]
    path = pathlib.Path(tmp_path) / f"{layer_class.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = keras.tree.flatten(loaded(list(inputs), training=False))
    assert len(after) == len(before)
    for index, (a, b) in enumerate(zip(before, after)):
        np.testing.assert_allclose(
            np.asarray(b), a, atol=atol, rtol=0, err_msg=(
                f"{layer_class.__name__}: output {index} differs after "
                "save/load"))
