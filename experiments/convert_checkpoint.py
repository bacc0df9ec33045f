r"""Converts an official UniMVSNet/CasMVSNet PyTorch checkpoint to .keras.

    python -m experiments.convert_checkpoint --state-dict FILE \
        --out FILE.keras [--aggregation {auto,adaptive,variance,groupwise}] \
        [--head {unity,regression}] [--num-depths 48,32,8] \
        [--depth-interval-ratios 4,2,1] [--input-normalization none] \
        [--warp-sampling {align_corners_false,exact}]

`FILE` is a PyTorch `.ckpt`/`.pth` (needs torch: `pip install
"keras-mvs[convert]"`) or an `.npz` of the state_dict. The aggregation is
read from the tensors by default (`auto`: the weight nets mean adaptive).
The head has no weights, so it cannot be inferred: the default `unity` is
UniMVSNet's; CasMVSNet checkpoints need `--aggregation variance --head
regression`; CL-MVSNet checkpoints `--head regression --input-normalization
imagenet` (group-wise aggregation is read from the tensors).
Every official checkpoint (UniMVSNet, CasMVSNet, CL-MVSNet) learned its
weights with the official warp, which samples the source at PyTorch's
`align_corners=False` positions, so the converted model uses
`warp_sampling="align_corners_false"` and reproduces the official depth maps
(`--warp-sampling exact` overrides it). `--num-depths` and
`--depth-interval-ratios` are the cascade settings stored in the model
(UniMVSNet's Tanks and Temples test uses `64,32,8` and `3,2,1`). `--out`
is never half written (`keras_mvs.checkpoints.convert_to_keras_file`).
"""

import argparse
import sys
from pathlib import Path
from typing import Optional
from typing import Sequence

from keras_mvs import checkpoints
from keras_mvs import geometry
from keras_mvs.layers import cost_volume
from keras_mvs.models import cas_mvsnet


def _triple(kind: type):
    """An argparse type: three comma-separated `kind` values."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            noun = "ints" if kind is int else "numbers"
            raise argparse.ArgumentTypeError(
                f"expected three comma-separated {noun}, got {text!r}")
        return values
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses the command line (`argv` defaults to `sys.argv[1:]`)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.convert_checkpoint",
        description="Convert a UniMVSNet/CasMVSNet PyTorch state_dict into a "
        "keras_mvs CascadeMVSNet saved as .keras.")
    add = parser.add_argument
    add("--state-dict", required=True, type=Path,
        help="PyTorch .ckpt/.pth or .npz of the state_dict")
    add("--out", required=True, type=Path,
        help="output model file, ending in .keras")
    add("--aggregation", default="auto",
        choices=("auto",) + cost_volume.AGGREGATIONS,
        help="cost aggregation; auto (default) reads it from the tensors")
    add("--head", default="unity", choices=cas_mvsnet.HEADS,
        help="depth head: unity (UniMVSNet, default) or regression "
        "(CasMVSNet soft-argmin)")
    add("--num-depths", type=_triple(int), default=(48, 32, 8),
        help="hypotheses per stage (default 48,32,8)")
    add("--depth-interval-ratios", type=_triple(float),
        default=(4.0, 2.0, 1.0), help="interval ratios per stage (default "
        "4,2,1)")
    add("--warp-sampling", default="align_corners_false",
        choices=geometry.WARP_SAMPLINGS,
        help="where the warp samples the source: align_corners_false "
        "(default; what the official code computes and its checkpoints "
        "learned) or exact")
    add("--input-normalization", default="none",
        choices=cas_mvsnet.INPUT_NORMALIZATIONS,
        help="none (UniMVSNet, CasMVSNet) or imagenet (CL-MVSNet)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".keras":
        parser.error(f"--out must end in .keras, got {str(args.out)!r}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        report, config = checkpoints.convert_to_keras_file(
            args.state_dict, args.out, aggregation=args.aggregation,
            head=args.head, num_depths=args.num_depths,
            depth_interval_ratios=args.depth_interval_ratios,
            input_normalization=args.input_normalization,
            warp_sampling=args.warp_sampling)
    except (checkpoints.StateDictError, FileNotFoundError, ImportError,
            ValueError) as error:
        # The message names the file and every offending key; a traceback
        # would only bury it.
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.state_dict}: {len(report.assigned)} tensors converted, "
          f"{len(report.ignored)} num_batches_tracked ignored; "
          f"aggregation={config['aggregation']}, head={args.head}, "
          f"warp_sampling={args.warp_sampling}"
          + (" (the official code's sampling, which its checkpoints learned)"
             if args.warp_sampling == "align_corners_false" else "")
          + f"; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
