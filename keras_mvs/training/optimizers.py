"""Adam with one update kernel per variable.

`keras.optimizers.Adam` writes its update as about 24 graph ops per variable
(the bias corrections are recomputed for each one). The cascade has 230
trainable variables, so in a traced training step Adam alone is 5,500 of
the step's 7,200 ops, and at 128x160 the graph it adds costs about 85 MB of
resident memory (measured with `bench/train_step_bench.py`). `Adam` here
computes the step's bias corrections once and updates each variable with
TensorFlow's `ResourceApplyAdam` kernel, which evaluates Keras's formula in
Keras's order:

    m += (g - m) (1 - beta_1)
    v += (g^2 - v) (1 - beta_2)
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)

One difference: the kernel forms 1 - beta_2 in float32 from float32(0.999),
which gives 0.0009999871 where Keras (and PyTorch) multiply by 0.001, so
v runs 1.3e-5 lower relatively and each step 6e-6 larger (Keras 2's Adam,
on the same kernel, did the same). 1 - beta_1 is off by 2.4e-7.

Under a distribution strategy, with `amsgrad` or for sparse gradients it
falls back to Keras's own update (the kernel takes the handles of
device-local variables).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_mvs")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with one `ResourceApplyAdam` per variable.

    Same arguments, state variables and updates as Keras's Adam, up to float
    round-off and the 1.3e-5 of 1 - beta_2 above
    (tests/training_optimizers_test.py).

    Example:
        >>> optimizer = Adam(learning_rate=1e-3)
        >>> trainer.compile(optimizer=optimizer)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The current `apply` call's scalars (learning rate, beta powers,
        # betas, epsilon), shared by its variables, per dtype.
        self._step_scalars = {}

    def apply(self, grads, trainable_variables=None):
        self._step_scalars = {}
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = {}

    def _scalars(self, learning_rate, dtype):
        if dtype not in self._step_scalars:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1 = tf.cast(self.beta_1, dtype)
            beta_2 = tf.cast(self.beta_2, dtype)
            self._step_scalars[dtype] = dict(
                lr=tf.cast(learning_rate, dtype),
                beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step),
                beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype))
        return self._step_scalars[dtype]

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or tf.distribute.has_strategy()
                or isinstance(gradient, tf.IndexedSlices)):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            grad=tf.cast(gradient, dtype),
            **self._scalars(learning_rate, dtype))
