"""Supervised UniMVSNet training: unity head and Unified Focal Loss.

    python -m experiments.train_unimvs [--config FILE] [--workdir DIR]
        [--data SPEC] [--objective NAME] [--init MODEL] [--smoke]
        [--verbose] [--config.KEY=VALUE ...]

With no arguments it trains on the synthetic benchmark's training scenes and
reports depth metrics on the held-out ones. `--config.model.head=regression`
trains the regression head with smooth-L1 instead. The run itself is
`keras_mvs.training.driver.train_and_evaluate(config, workdir)`.
"""

import pathlib
import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console
from keras_mvs import malloc

CONFIG = pathlib.Path(__file__).parent / "configs" / "unimvs.py"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before TensorFlow is imported (by keras_mvs.training.cli).
    malloc.limit_arenas()
    console.quiet_tensorflow(argv)
    from keras_mvs.training import cli

    return cli.main(argv, name="unimvs",
                    description=__doc__.split("\n\n")[0],
                    default_config=str(CONFIG))


if __name__ == "__main__":
    sys.exit(main())
