"""Unsupervised CL-MVSNet training (the project's main job).

    python -m experiments.train_clmvs [--config FILE] [--workdir DIR]
        [--data SPEC] [--objective NAME] [--init MODEL] [--smoke]
        [--verbose] [--config.KEY=VALUE ...]

With no arguments it trains on the built-in synthetic scenes (generated once
into ~/.cache/keras_mvs, no download) without using their ground truth, then
reports held-out depth metrics. `--data DIR` takes any MVSNet-layout folder of
real photos (no depth needed); `--objective unsupervised_unity` trains the
unity head with the contrastive branches (DESIGN.md section 1). The run
itself is `keras_mvs.training.driver.train_and_evaluate(config, workdir)`.
"""

import pathlib
import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console
from keras_mvs import malloc

CONFIG = pathlib.Path(__file__).parent / "configs" / "clmvs.py"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before TensorFlow is imported (by keras_mvs.training.cli).
    malloc.limit_arenas()
    console.quiet_tensorflow(argv)
    from keras_mvs.training import cli

    return cli.main(argv, name="clmvs", description=__doc__.split("\n\n")[0],
                    default_config=str(CONFIG))


if __name__ == "__main__":
    sys.exit(main())
