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
import pathlib
import sys
from typing import Optional
from typing import Sequence

from keras_mvs.training import console


def export_model(model, out, overwrite: bool = False) -> pathlib.Path:
    """Loads the Keras network at `model` and exports it to `out`.

    Args:
        model: training work directory or `.keras` file (path-like).
        out: the version folder, `<model base path>/<integer version>`.
        overwrite: replace an existing version.

    Returns:
        The written version folder.

    Raises:
        ValueError: `out` is not a version folder, or `model` is a folder
            without `model.keras` (such as a SavedModel).
        FileExistsError: `out` exists and `overwrite` is False.
        FileNotFoundError: nothing loadable at `model`.
    """
    from keras_mvs import export
    from keras_mvs import inference

    # Both are checked before loading, which is the slow part.
    out = export.check_version_path(out, overwrite, argument="--out")
    model = pathlib.Path(model)
    if model.is_dir() and not (model / "model.keras").is_file():
        raise ValueError(
            f"--model {model}: a folder without model.keras (a SavedModel "
            "cannot be exported again); expected a training work directory "
            "or a .keras file")
    network = inference.load_model(model).network
    return export.export_saved_model(network, out, overwrite)


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
    console.quiet_tensorflow(["--verbose"] if args.verbose else [])
    from keras_mvs import export

    try:
        path = export_model(args.model, args.out, args.overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(export.describe_signature(path))
    console.wrote([(str(path), "the SavedModel (TF Serving version folder; "
                    "saved_models/README.md says how to serve it)")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
