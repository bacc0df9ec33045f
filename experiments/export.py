"""Export a trained network as a TF Serving SavedModel.

    python -m experiments.export --model PATH --out saved_models/NAME/VERSION
        [--overwrite]

`--model` is a training work directory (with `model.keras`) or a `.keras`
file. `--out` is `<model base path>/<integer version>`; an existing version
is kept unless `--overwrite` is given. Prints the `serving_default`
signature of the written SavedModel (saved_models/README.md documents it
and how to serve it).
"""

import argparse
import sys
from typing import Optional
from typing import Sequence

from keras_mvs import console
from keras_mvs import malloc


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="training work directory or .keras file")
    parser.add_argument("--out", required=True,
                        help="saved_models/NAME/VERSION (integer version)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing version")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's log messages")
    args = parser.parse_args(argv)
    malloc.limit_arenas()
    console.quiet_tensorflow(["--verbose"] if args.verbose else [])
    from keras_mvs import export
    from keras_mvs import inference

    try:
        out = export.check_export_paths(args.model, args.out, args.overwrite)
        network = inference.load_model(args.model).network
        path = export.export_saved_model(network, out, args.overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(export.describe_signature(path))
    console.wrote([(str(path), "the SavedModel (TF Serving version folder; "
                    "saved_models/README.md says how to serve it)")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
