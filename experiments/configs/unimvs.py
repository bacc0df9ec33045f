"""UniMVSNet: supervised training with the unity head and Unified Focal Loss.

Adaptive aggregation, unity head, UFL, Adam 1e-3 with a 0.2-epoch warm-up and
halving at epochs 10, 12, 14 (ALGORITHMS.md 5).
"""

import ml_collections

from experiments.configs import base


def get_config(smoke: bool = False) -> ml_collections.ConfigDict:
    config = base.get_config(smoke)
    config.loss.objective = "supervised"
    config.model.aggregation = "adaptive"
    config.model.head = "unity"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_epochs = 0.2
    config.lock()
    return config
