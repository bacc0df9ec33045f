"""Packages a finished training run as a shipped preset (keras_mvs/presets).

    python tools/package_preset.py --workdir RUN --name synthetic_unity \
        --description "..." --command "python -m experiments.train_unimvs ..." \
        [--machine "2-core CPU, no GPU"] [--heldout NAME=metrics.json ...] \
        [--step N]

Writes `keras_mvs/presets/<name>.weights.h5` (the network's weights, from
`RUN/model.keras`, or from the checkpoint of step N with `--step`) and the
listing entry in `keras_mvs/presets/presets.json`: the network's constructor
arguments, the command and resolved config overrides that trained it, the
optimizer steps reached, the wall time (from the run's files), the machine,
and each `--heldout NAME=FILE` metrics JSON (`experiments.evaluate depth
--out FILE`, or the run's eval.json).
"""

import argparse
import json
import pathlib
import time

_REPO = pathlib.Path(__file__).resolve().parents[1]
PRESETS = _REPO / "keras_mvs" / "presets"
# Constructor arguments that describe the trained network (the rest, like
# xla_warp, are run-time choices).
NETWORK_KEYS = ("num_depths", "depth_interval_ratios", "aggregation", "head",
                "base_channels", "groups", "num_depths_base",
                "input_normalization", "warp_sampling")


def _network(workdir: pathlib.Path, step):
    import keras

    import keras_mvs.models  # noqa: F401  (registers the layers)
    from keras_mvs.models import cas_mvsnet

    model = keras.saving.load_model(workdir / "model.keras", compile=False) \
        if step is None else None
    config = json.loads((workdir / "config.json").read_text())
    if model is None:
        settings = {key: config["model"][key] for key in NETWORK_KEYS
                    if key in config["model"]}
        model = cas_mvsnet.CascadeMVSNet(**settings)
        model.build()
        model.load_weights(
            str(workdir / "checkpoints" / f"ckpt-{step:08d}.weights.h5"))
    return model, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--description", required=True)
    parser.add_argument("--command", required=True,
                        help="the command line that trained the run")
    parser.add_argument("--machine", default="2-core x86 CPU, 24 GB, no GPU")
    parser.add_argument("--heldout", action="append", default=[],
                        metavar="NAME=FILE")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--notes", default="")
    args = parser.parse_args()

    model, config = _network(args.workdir, args.step)
    settings = model.get_config()
    network = {key: settings[key] for key in NETWORK_KEYS if key in settings}
    weights = PRESETS / f"{args.name}.weights.h5"
    model.save_weights(str(weights))

    files = [p for p in args.workdir.rglob("*") if p.is_file()]
    start = (args.workdir / "config.json").stat().st_mtime
    end = max(p.stat().st_mtime for p in files)
    steps = args.step
    if steps is None:
        eval_file = args.workdir / "eval.json"
        if eval_file.is_file():
            steps = json.loads(eval_file.read_text()).get("train_steps")
    heldout = {}
    for item in args.heldout:
        name, _, path = item.partition("=")
        heldout[name] = json.loads(pathlib.Path(path).read_text())

    listing_file = PRESETS / "presets.json"
    listing = (json.loads(listing_file.read_text())
               if listing_file.is_file() else {})
    listing[args.name] = {
        "description": args.description,
        "weights": weights.name,
        "network": network,
        "training": {
            "command": args.command,
            "config": config,
            "steps": steps,
            "wall_time_minutes": round((end - start) / 60.0, 1),
            "machine": args.machine,
            "packaged": time.strftime("%Y-%m-%d", time.gmtime()),
            "notes": args.notes,
        },
        "held_out": heldout,
    }
    listing_file.write_text(json.dumps(listing, indent=1, sort_keys=True)
                            + "\n")
    print(f"wrote {weights} ({weights.stat().st_size} bytes) and "
          f"{listing_file}")


if __name__ == "__main__":
    main()
