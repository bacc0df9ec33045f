"""`--init`: starting a run from the weights of a given model.

`init_network` loads the model once (a preset name, a training work
directory or a `.keras` file); the config resolution reads its architecture
from it (`config.adopt_init_architecture`) and the driver its weights
(`load_init_weights`).
"""

import functools

import keras

from keras_mvs import inference


@functools.lru_cache(maxsize=1)
def init_network(init: str) -> keras.Model:
    """The Keras network of `--init`: a preset, work directory or .keras.

    Cached: the config resolution reads its architecture and the driver
    its weights, from one load.

    Raises:
        ValueError: `init` is a SavedModel (no trainable Keras network).
        FileNotFoundError: nothing loadable at `init`.
    """
    network = inference.load_model(init).network
    if network is None:
        raise ValueError(f"--init {init}: a SavedModel holds no trainable "
                         "Keras network; give a preset name, a work "
                         "directory or a .keras file")
    return network


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
