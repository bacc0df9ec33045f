"""Supervised UniMVSNet training: unity head and Unified Focal Loss.

    python -m experiments.train_unimvs [--config FILE] [--workdir DIR]
        [--data SPEC] [--objective NAME] [--smoke] [--verbose]
        [--config.KEY=VALUE ...]

With no arguments it trains on the synthetic benchmark's training scenes and
reports depth metrics on the held-out ones. `--config.model.head=regression`
trains the regression head with smooth-L1 instead.
"""

import pathlib
import sys

from keras_mvs.training import console

CONFIG = pathlib.Path(__file__).parent / "configs" / "unimvs.py"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Before TensorFlow is imported (by experiments.training).
    console.quiet_tensorflow(argv)
    from experiments import training

    return training.main(
        argv, name="unimvs",
        description=__doc__.split("\n\n")[0], default_config=str(CONFIG))


if __name__ == "__main__":
    sys.exit(main())
