"""Loading trained models for inference, whatever form they were saved in.

`--model PATH` in every entry point accepts the name of a shipped preset
(`keras_mvs.presets`, e.g. `synthetic_unity`), a training work directory
(with `model.keras`), a `.keras` file, an exported SavedModel folder (with
`saved_model.pb`), or a TF Serving base folder holding numbered versions (the
highest is used). All of them load into a `Predictor` that maps the network's
input dict to at least `depth [B,H,W]` and `confidence [B,H,W]`.
"""

import pathlib
import zipfile
from typing import Dict
from typing import Optional
from typing import Union

import keras
import tensorflow as tf

from keras_mvs import export
from keras_mvs import models
from keras_mvs import presets

PathLike = Union[str, pathlib.Path]


class Predictor:
    """A loaded model: `predictor(inputs) -> {"depth", "confidence", ...}`.

    Attributes:
        path: where the model was loaded from.
        kind: `"preset"`, `"keras"` or `"saved_model"`.
        network: the Keras network (`None` for a SavedModel). Keras models
            also return the per-stage `depth` and `confidence` maps under
            `"stages"` (`network_maps`).
        network_config: for a SavedModel written by `keras_mvs.export`, the
            exported network's `keras.saving.serialize_keras_object` (its
            `"config"` holds `num_depths`, `base_channels`, ...); `None`
            otherwise.
    """

    def __init__(self, path: pathlib.Path, kind: str, network=None,
                 signature=None, network_config: Optional[dict] = None):
        self.path = path
        self.kind = kind
        self.network = network
        self.network_config = network_config
        self._signature = signature
        if network is not None:
            self._call = tf.function(
                lambda inputs: network_maps(network(inputs, training=False)),
                reduce_retracing=True)

    def __call__(self, inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        if self.network is not None:
            return self._call({k: tf.convert_to_tensor(v, tf.float32)
                               for k, v in inputs.items()})
        # A signature takes exactly its own inputs as keywords, so extra keys
        # (ground truth riding along in a batch) are left out here.
        _, specs = self._signature.structured_input_signature
        missing = sorted(set(specs) - set(inputs))
        if missing:
            raise ValueError(
                f"{self.path}: the SavedModel needs inputs {sorted(specs)}; "
                f"missing {missing}")
        return self._signature(**{k: tf.convert_to_tensor(inputs[k], tf.float32)
                                  for k in specs})


def network_maps(outputs: Dict[str, object]) -> Dict[str, object]:
    """The maps of a network's outputs that inference hands on.

    `depth` and `confidence` `[B, H, W]`, and under `stages` each stage's
    `depth` and `confidence` only: the stages' logits, volumes and
    hypotheses (`[B, D, h, w]` each) are left inside the graph, where they
    are freed as soon as the head has used them, instead of being held
    until the call returns.
    """
    maps = {key: outputs[key] for key in ("depth", "confidence")}
    if "stages" in outputs:
        maps["stages"] = [{key: stage[key] for key in ("depth", "confidence")}
                          for stage in outputs["stages"]]
    return maps


def load_model(path: PathLike) -> Predictor:
    """Loads a preset, work directory, `.keras` file or SavedModel.

    Raises:
        FileNotFoundError: nothing loadable at `path`; the message lists the
            accepted forms and how to get a model.
        ValueError: a SavedModel without a `serving_default` signature that
            gives `depth` and `confidence`, or with an unreadable network
            config (`keras_mvs.export.NETWORK_CONFIG_FILE`).
    """
    if presets.is_preset(str(path)) and not pathlib.Path(path).exists():
        return Predictor(pathlib.Path(str(path)), "preset",
                         network=models.CascadeMVSNet.from_preset(str(path)))
    path = pathlib.Path(path)
    if path.is_dir() and (path / "model.keras").is_file():
        path = path / "model.keras"
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        versions = sorted((p for p in path.iterdir()
                           if p.name.isdigit() and
                           (p / "saved_model.pb").is_file()),
                          key=lambda p: int(p.name))
        if versions:
            path = versions[-1]
    if path.is_file() and path.suffix == ".keras":
        # Importing the package registers the custom layers for loading.
        import keras_mvs.models  # noqa: F401

        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"--model {path}: not a .keras model (a .keras file is a zip "
                "archive; this one is truncated or another kind of file)")
        try:
            network = keras.saving.load_model(path, compile=False)
        except Exception as error:  # Keras raises many kinds here
            raise ValueError(f"--model {path}: the .keras file cannot be "
                             f"loaded ({type(error).__name__}: {error})"
                             ) from None
        return Predictor(path, "keras", network=network)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        loaded = tf.saved_model.load(str(path))
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"{path}: the SavedModel has no "
                             "'serving_default' signature")
        signature = loaded.signatures["serving_default"]
        missing = sorted({"depth", "confidence"}
                         - set(signature.structured_outputs))
        if missing:
            raise ValueError(
                f"{path}: the 'serving_default' signature lacks the outputs "
                f"{missing}; export it with `python -m experiments.export`")
        predictor = Predictor(path, "saved_model", signature=signature,
                              network_config=export.read_network_config(path))
        predictor._loaded = loaded  # keeps the variables alive
        return predictor
    raise FileNotFoundError(
        f"--model {path}: expected a preset name "
        f"({', '.join(sorted(presets.list_presets())) or 'none shipped'}), "
        "a training work directory containing "
        "model.keras, a .keras file, or an exported SavedModel folder "
        "containing saved_model.pb. Train one with `python -m "
        "experiments.train_clmvs` (or train_unimvs), or export one with "
        "`python -m experiments.export`.")
