"""Tests for keras_mvs.export and `python -m experiments.export`.

No TF Serving binary can be installed here (TF_NOTES.md 4.2), so the serving
contract is checked the ways TF_NOTES.md 4.3 lists: the reloaded signature
against the Keras model, `saved_model_cli show` and `run`, a gRPC
PredictRequest / PredictResponse through the tensorflow-serving-api protos,
and the REST columnar JSON body. One tiny network is exported once for the
whole module.
"""

import contextlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2

from experiments import export as export_cli
from keras_mvs import export
from keras_mvs import inference
from keras_mvs.models import cas_mvsnet

# (B, V, H, W): two batch sizes, view counts and image sizes, one graph.
SHAPES = ((1, 2, 32, 64), (2, 3, 64, 32))
SAVED_MODEL_CLI = pathlib.Path(sys.executable).parent / "saved_model_cli"
# Graph and eager kernels sum in different orders: depths of 2 to 6 units
# agree to a few 1e-7.
TOLERANCE = {"rtol": 1e-6, "atol": 1e-5}
# The serving graph and the eager Keras call round differently (graph-mode
# kernel fusions), and where two unity hypotheses tie to float32 round-off
# the head may pick the other one: a few pixels of a map then move by a
# fraction of the depth range (measured once: 1 pixel of 4,096, by 0.048),
# as between the inference paths (tests/models/cas_mvsnet_test.py).
MAX_MOVED_FRACTION = 1e-3


def assert_maps_close(actual, desired, name):
    """Equal within TOLERANCE except on at most MAX_MOVED_FRACTION of the
    pixels."""
    assert actual.shape == desired.shape, name
    close = np.isclose(actual, desired, **TOLERANCE)
    assert np.mean(~close) <= MAX_MOVED_FRACTION, (
        name, int(np.sum(~close)), np.abs(actual - desired).max())


def make_inputs(batch, views, height, width, seed=0):
    """Random images; a sideways rig of cameras looking down +z."""
    rng = np.random.default_rng(seed)
    intrinsics = np.array([[0.8 * width, 0.0, width / 2.0],
                           [0.0, 0.8 * width, height / 2.0],
                           [0.0, 0.0, 1.0]], np.float32)
    cam_from_world = np.tile(np.eye(4, dtype=np.float32),
                             (batch, views, 1, 1))
    cam_from_world[:, :, 0, 3] = -0.1 * np.arange(views)
    return {
        "images": rng.uniform(size=(batch, views, height, width, 3)).astype(
            np.float32),
        "intrinsics": np.tile(intrinsics, (batch, views, 1, 1)),
        "cam_from_world": cam_from_world,
        "depth_range": np.tile(np.float32([2.0, 6.0]), (batch, 1)),
    }


@pytest.fixture(scope="module")
def network():
    network = cas_mvsnet.CascadeMVSNet(num_depths=(8, 8, 8))
    network(make_inputs(1, 2, 32, 32))
    # Fresh BatchNorm layers are the identity in inference mode; random
    # statistics make an export that dropped them give other numbers.
    rng = np.random.default_rng(1)
    for variable in network.weights:
        if variable.path.endswith(("moving_mean", "beta")):
            variable.assign(rng.normal(0.0, 0.1, variable.shape))
        elif variable.path.endswith(("moving_variance", "gamma")):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
    return network


@pytest.fixture(scope="module")
def cases(network):
    """Inputs and the Keras model's outputs, one per shape of SHAPES."""
    cases = []
    for seed, shape in enumerate(SHAPES):
        inputs = make_inputs(*shape, seed=seed)
        outputs = network(inputs, training=False)
        cases.append((inputs, {key: outputs[key].numpy()
                               for key in export.OUTPUT_NAMES}))
    return cases


@pytest.fixture(scope="module")
def cli_run(network, tmp_path_factory):
    """The module's one export: `python -m experiments.export` in-process.

    The network goes through a `.keras` file with the XLA warp switched on
    (the serving graph must still be free of XLA), over a stale version
    that `--overwrite` must replace completely.
    """
    root = tmp_path_factory.mktemp("export")
    network.xla_warp = True
    try:
        network.save(root / "model.keras")
    finally:
        network.xla_warp = False
    out = root / "saved_models" / "cas" / "1"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old export")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_cli.main(["--model", str(root / "model.keras"),
                                "--out", str(out), "--overwrite"])
    return code, out, stdout.getvalue()


@pytest.fixture(scope="module")
def exported(cli_run):
    return cli_run[1]


@pytest.fixture(scope="module")
def serving(exported):
    loaded = tf.saved_model.load(str(exported))
    # The signature holds the variables only while `loaded` lives.
    yield loaded.signatures[export.SIGNATURE_NAME]
    del loaded


def run_saved_model_cli(*args):
    if not SAVED_MODEL_CLI.is_file():
        pytest.skip(f"saved_model_cli not found beside {sys.executable}")
    result = subprocess.run(
        [str(SAVED_MODEL_CLI), *args], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_layout_is_tf_serving_and_complete(exported):
    assert (exported / "saved_model.pb").is_file()
    assert (exported / "variables" / "variables.index").is_file()
    # Nothing but the version: the temporary folder was renamed away.
    assert [p.name for p in exported.parent.iterdir()] == ["1"]


def test_network_config_is_stored_with_the_export(exported, network):
    stored = export.read_network_config(exported)
    rebuilt = keras.saving.deserialize_keras_object(stored)
    assert isinstance(rebuilt, cas_mvsnet.CascadeMVSNet)
    # The config of the graph that was exported: the XLA warp was off.
    assert rebuilt.get_config() == {**network.get_config(), "xla_warp": False}
    assert export.read_network_config(exported.parent) is None


def test_serving_graph_has_no_xla(exported):
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((exported / "saved_model.pb").read_bytes())
    library = saved_model.meta_graphs[0].graph_def.library
    assert library.function, "expected the traced functions in the library"
    for function in library.function:
        attr = function.attr.get("_XlaMustCompile")
        assert attr is None or not attr.b, function.signature.name


def test_signature_inputs_and_outputs(serving):
    _, inputs = serving.structured_input_signature
    assert inputs == export.serving_input_signature()
    assert {name: spec.shape.as_list()
            for name, spec in serving.structured_outputs.items()} == {
                "depth": [None, None, None],
                "confidence": [None, None, None]}
    assert all(spec.dtype == tf.float32
               for spec in serving.structured_outputs.values())


def test_reloaded_signature_equals_keras_for_two_shapes(serving, cases):
    for inputs, expected in cases:
        outputs = serving(**{k: tf.constant(v) for k, v in inputs.items()})
        for name in export.OUTPUT_NAMES:
            assert_maps_close(outputs[name].numpy(), expected[name], name)


@pytest.mark.parametrize("shape, message", [
    ((1, 2, 48, 64), "multiples of 32"),
    ((1, 2, 32, 40), "multiples of 32"),
    ((1, 1, 32, 32), "V >= 2 views"),
])
def test_bad_request_shapes_name_the_input(serving, shape, message):
    inputs = make_inputs(*shape)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serving(**{k: tf.constant(v) for k, v in inputs.items()})


def test_saved_model_cli_show(exported):
    text = run_saved_model_cli(
        "show", "--dir", str(exported), "--tag_set", "serve",
        "--signature_def", "serving_default")
    for name, shape in (("images", "(-1, -1, -1, -1, 3)"),
                        ("intrinsics", "(-1, -1, 3, 3)"),
                        ("cam_from_world", "(-1, -1, 4, 4)"),
                        ("depth_range", "(-1, 2)")):
        block = text.split(f"inputs['{name}']")[1].split("name:")[0]
        assert "DT_FLOAT" in block and shape in block, (name, text)
    for name in export.OUTPUT_NAMES:
        block = text.split(f"outputs['{name}']")[1].split("name:")[0]
        assert "DT_FLOAT" in block and "(-1, -1, -1)" in block, (name, text)
    assert "Method name is: tensorflow/serving/predict" in text


def test_saved_model_cli_run(exported, cases, tmp_path):
    inputs, expected = cases[0]
    np.savez(tmp_path / "x.npz", **inputs)
    spec = ";".join(f"{name}={tmp_path / 'x.npz'}[{name}]" for name in inputs)
    run_saved_model_cli(
        "run", "--dir", str(exported), "--tag_set", "serve",
        "--signature_def", "serving_default", "--inputs", spec,
        "--outdir", str(tmp_path / "out"))
    for name in export.OUTPUT_NAMES:
        assert_maps_close(np.load(tmp_path / "out" / f"{name}.npy"),
                          expected[name], name)


def test_predict_request_and_response_protos(serving, cases):
    inputs, expected = cases[0]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cas"
    request.model_spec.signature_name = export.SIGNATURE_NAME
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    # What a gRPC server receives: the request's bytes.
    received = predict_pb2.PredictRequest.FromString(
        request.SerializeToString())
    assert received.model_spec.signature_name == "serving_default"
    feed = {name: tf.make_ndarray(proto)
            for name, proto in received.inputs.items()}
    assert sorted(feed) == sorted(export.serving_input_signature())
    outputs = serving(**{k: tf.constant(v) for k, v in feed.items()})

    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(received.model_spec)
    for name, tensor in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(tensor.numpy()))
    client_side = predict_pb2.PredictResponse.FromString(
        response.SerializeToString())
    assert sorted(client_side.outputs) == ["confidence", "depth"]
    for name in export.OUTPUT_NAMES:
        proto = client_side.outputs[name]
        assert proto.dtype == tf.float32.as_datatype_enum
        assert [d.size for d in proto.tensor_shape.dim] == list(
            expected[name].shape)
        assert_maps_close(tf.make_ndarray(proto), expected[name], name)


def test_rest_columnar_body_round_trips_through_json(serving, cases):
    inputs, expected = cases[0]
    body = json.dumps({"signature_name": "serving_default",
                       "inputs": {k: v.tolist() for k, v in inputs.items()}})
    parsed = json.loads(body)["inputs"]
    feed = {name: np.asarray(parsed[name], np.float32) for name in inputs}
    for name, array in inputs.items():
        np.testing.assert_array_equal(feed[name], array, err_msg=name)
    outputs = serving(**{k: tf.constant(v) for k, v in feed.items()})
    # A columnar request gets a columnar reply: {"outputs": {name: list}}.
    reply = json.loads(json.dumps(
        {"outputs": {k: v.numpy().tolist() for k, v in outputs.items()}}))
    for name in export.OUTPUT_NAMES:
        assert_maps_close(np.asarray(reply["outputs"][name]),
                          expected[name], name)


def test_inference_loads_version_and_base_folder(exported, cases, tmp_path):
    inputs, expected = cases[0]
    # Version 9 is unreadable: loading it (the last name in string order)
    # instead of 10 (the highest number) would fail.
    base = tmp_path / "cas"
    shutil.copytree(exported, base / "10")
    (base / "9").mkdir()
    (base / "9" / "saved_model.pb").write_bytes(b"not a SavedModel")
    for path, version in ((exported, exported), (base, base / "10")):
        predictor = inference.load_model(path)
        assert predictor.kind == "saved_model"
        assert predictor.path == version
        assert predictor.network_config["config"]["num_depths"] == [8, 8, 8]
        # Keys beyond the signature's (ground truth in a batch) are ignored.
        outputs = predictor({**inputs, "depth": expected["depth"]})
        assert_maps_close(outputs["depth"].numpy(), expected["depth"],
                          "depth")
    with pytest.raises(ValueError, match="missing \\['depth_range'\\]"):
        predictor({k: v for k, v in inputs.items() if k != "depth_range"})


def test_cli_exports_a_keras_file_and_prints_the_signature(cli_run):
    code, out, summary = cli_run
    assert code == 0
    assert f"SavedModel {out}" in summary
    for line in ("images: float32 (-1, -1, -1, -1, 3)",
                 "intrinsics: float32 (-1, -1, 3, 3)",
                 "cam_from_world: float32 (-1, -1, 4, 4)",
                 "depth_range: float32 (-1, 2)",
                 "depth: float32 (-1, -1, -1)",
                 "confidence: float32 (-1, -1, -1)"):
        assert line in summary, summary
    # --overwrite replaced the stale version as a whole.
    assert not (out / "stale.txt").exists()
    assert f"Wrote:\n  {out}/  the SavedModel" in summary


@pytest.mark.parametrize("version, message", [
    ("v1", "must be an integer version"),
    ("latest", "must be an integer version"),
    ("1.5", "must be an integer version"),
    ("2", "version 2 already exists"),
])
def test_cli_rejects_bad_out_before_loading(tmp_path, capsys, version,
                                            message):
    (tmp_path / "cas" / "2").mkdir(parents=True)
    # The model does not exist: --out is checked before anything is loaded.
    with pytest.raises(SystemExit) as raised:
        export_cli.main(["--model", str(tmp_path / "missing.keras"),
                         "--out", str(tmp_path / "cas" / version)])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("python -m experiments.export: error: --out ")
    assert message in error
    assert sorted(p.name for p in (tmp_path / "cas").iterdir()) == ["2"]


def test_cli_rejects_missing_model_and_saved_model(exported, tmp_path,
                                                   capsys):
    for model in (tmp_path / "missing.keras", exported.parent):
        with pytest.raises(SystemExit) as raised:
            export_cli.main(["--model", str(model),
                             "--out", str(tmp_path / "cas" / "1")])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert f"--model {model}" in error
        assert "a training work directory" in error
    assert not (tmp_path / "cas").exists()


def test_export_rejects_bad_arguments(network, tmp_path):
    with pytest.raises(TypeError, match="must be a keras.Model"):
        export.export_saved_model(lambda inputs: inputs, tmp_path / "m" / "1")
    with pytest.raises(ValueError, match="must be built"):
        export.export_saved_model(cas_mvsnet.CascadeMVSNet(
            num_depths=(8, 8, 8)), tmp_path / "m" / "1")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        export.export_saved_model(network, tmp_path / "file" / "1")
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_saved_model(network, tmp_path / "m" / "1")
    with pytest.raises(ValueError, match="^path .*integer version"):
        export.export_saved_model(network, tmp_path / "m")


def test_export_rejects_network_without_depth_output(tmp_path):
    inputs = {name: keras.Input(shape=spec.shape[1:], name=name)
              for name, spec in export.serving_input_signature().items()}
    model = keras.Model(inputs, {"depth": inputs["depth_range"]})
    # Export switches an XLA warp off while tracing, and back on after.
    model.xla_warp = True
    with pytest.raises(ValueError, match="Missing: \\['confidence'\\]"):
        export.export_saved_model(model, tmp_path / "m" / "1")
    assert model.xla_warp is True
    # The failed export leaves nothing behind.
    assert list((tmp_path / "m").iterdir()) == []
