"""Builds a keras-mvs TFDS dataset without the `tfds` CLI.

    python -m tfds_builders.build NAME --manual_dir DIR --data_dir DIR \
        [--config C]

`tfds build` needs apache-beam in TFDS 4.9.10 (tensorflow/datasets#5463,
TF_NOTES.md 5.1); this entry point calls the builder directly and prints the
build time and the on-disk size of what it wrote.
"""

import argparse
import importlib
import sys
import time

import tensorflow_datasets as tfds
from etils import epath

from tfds_builders import mvs_scene

DATASETS = ("dtu", "blended_mvs", "tanks_and_temples", "synthetic_mvs")


def _size_bytes(folder: epath.Path) -> int:
    """Total size of the files directly in a prepared dataset folder."""
    return sum(path.stat().length for path in folder.iterdir()
               if path.is_file())


def builder_class(name: str, config: str | None) -> type:
    """Imports and returns a dataset's Builder, checking the config name.

    Raises:
        ValueError: an unknown dataset or config.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of "
                         f"{', '.join(DATASETS)}")
    module = importlib.import_module(
        f"tfds_builders.{name}.{name}_dataset_builder")
    configs = [c.name for c in module.Builder.BUILDER_CONFIGS]
    if config is not None and config not in configs:
        raise ValueError(f"Unknown config {config!r} of {name}; expected one "
                         f"of {', '.join(configs)}")
    return module.Builder


def build(name: str, manual_dir: str | None, data_dir: str | None,
          config: str | None) -> tuple[epath.Path, float, int]:
    """Prepares one dataset.

    Args:
        name: one of DATASETS.
        manual_dir: the folder holding the manual download (ignored by
            synthetic_mvs).
        data_dir: the TFDS data directory, or None for TFDS' default.
        config: the builder config name, or None for the default.

    Returns:
        (prepared folder, build time in seconds, size in bytes). A dataset
        that is already prepared is not rebuilt (time ~0).

    Raises:
        ValueError: an unknown name or config, or unreadable data.
        tfds_builders.mvs_scene.ManualDataError: a file of the manual
            download is missing (the message names it and gives the
            download instructions).
        AssertionError: the manual directory is missing or empty (raised
            by TFDS, with the instructions).
    """
    builder = builder_class(name, config)(config=config, data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    seconds = time.perf_counter() - start
    folder = epath.Path(builder.data_dir)
    return folder, seconds, _size_bytes(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfds_builders.build", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument("--manual_dir", default=None,
                        help="folder with the manual download (see the "
                        "builder's MANUAL_DOWNLOAD_INSTRUCTIONS)")
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data directory (default "
                        "~/tensorflow_datasets)")
    parser.add_argument("--config", default=None,
                        help="builder config (default: the builder's)")
    args = parser.parse_args(argv)
    try:
        builder_class(args.name, args.config)
    except ValueError as error:
        parser.error(str(error))
    try:
        folder, seconds, size = build(args.name, args.manual_dir,
                                      args.data_dir, args.config)
    except (mvs_scene.ManualDataError, AssertionError) as error:
        # Missing manual data: the message is the help; no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Built {folder} in {seconds:.1f} s; {size / 2**20:.2f} MiB "
          f"({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
