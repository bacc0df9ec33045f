"""Pretrained networks shipped with keras-mvs, addressable by name.

Like keras-hub presets: `CascadeMVSNet.from_preset("synthetic_unity")` builds
the network a preset describes and loads its weights, and every command that
takes `--model` accepts a preset name. `presets.json` in this folder is the
listing: per preset, the network's constructor arguments, the weights file
beside it, how it was trained (the command and config overrides that
reproduce it, seed, steps, wall time, machine) and its held-out figures.

Example:
    >>> from keras_mvs import presets
    >>> sorted(presets.list_presets())
    >>> network = CascadeMVSNet.from_preset("synthetic_unity")
"""

import functools
import json
import pathlib

PRESETS_DIR = pathlib.Path(__file__).resolve().parent
LISTING = PRESETS_DIR / "presets.json"
# What `reconstruct` uses when no --model is given.
DEFAULT_PRESET = "synthetic_unity"


@functools.lru_cache(maxsize=1)
def list_presets() -> dict:
    """All shipped presets: name -> listing entry (a dict).

    Each entry has `description`, `weights` (a file in this folder),
    `network` (CascadeMVSNet constructor arguments), `training` and
    `held_out`.
    """
    if not LISTING.is_file():
        return {}
    with open(LISTING) as handle:
        return json.load(handle)


def is_preset(name) -> bool:
    """Whether `name` (any object) names a shipped preset."""
    return isinstance(name, str) and name in list_presets()


def preset_info(name: str) -> dict:
    """The listing entry of preset `name`.

    Raises:
        ValueError: no preset of that name; the message lists the presets.
    """
    presets = list_presets()
    if name not in presets:
        known = ", ".join(sorted(presets)) or "none"
        raise ValueError(f"No preset named {name!r}; shipped presets: "
                         f"{known}.")
    return presets[name]


def weights_path(name: str) -> pathlib.Path:
    """The weights file of preset `name`.

    Raises:
        ValueError: unknown preset.
        FileNotFoundError: the weights file is missing from the install.
    """
    weights = PRESETS_DIR / preset_info(name)["weights"]
    if not weights.is_file():
        raise FileNotFoundError(
            f"Preset {name!r}: its weights file {weights} is missing; "
            "reinstall keras-mvs.")
    return weights
