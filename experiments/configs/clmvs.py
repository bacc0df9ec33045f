"""CL-MVSNet: unsupervised training with the two contrastive branches.

Group-wise correlation (G = 8), soft-argmin regression head, ImageNet input
normalisation, Adam 5e-4 with a 0.33-epoch warm-up and halving at epochs 10,
12, 14 (ALGORITHMS.md 4.4). `--objective unsupervised_unity` switches to the
unity head with UFL pseudo-labels for the contrastive branches.
"""

import ml_collections

from experiments.configs import base


def get_config(smoke: bool = False) -> ml_collections.ConfigDict:
    config = base.get_config(smoke)
    config.loss.objective = "unsupervised"
    config.model.aggregation = "groupwise"
    config.model.head = "regression"
    config.model.input_normalization = "imagenet"
    config.optimizer.learning_rate = 5e-4
    config.optimizer.warmup_epochs = 0.33
    config.lock()
    return config
