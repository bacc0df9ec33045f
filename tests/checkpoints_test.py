"""Tests of keras_mvs.checkpoints and experiments.convert_checkpoint."""

import pathlib
import re
import sys

import keras
import numpy as np
import pytest

from experiments import convert_checkpoint
from keras_mvs import checkpoints
from keras_mvs.models import cas_mvsnet

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# A copy of ../shared/spec/unimvsnet_state_dict.tsv (names and shapes of the
# reference checkpoint), so the tests run in any checkout.
_SPEC = _REPO_ROOT / "tests" / "fixtures" / "unimvsnet_state_dict.tsv"
_LAYOUT_DOC = _REPO_ROOT / "docs" / "weight_layout.md"
_SEED = 0


@pytest.fixture(scope="module")
def spec():
    # Committed with the tests: a missing listing is an error, not a skip.
    return checkpoints.read_state_dict_spec(_SPEC)


@pytest.fixture(scope="module")
def state_dict(spec):
    return checkpoints.random_state_dict(spec, seed=_SEED)


@pytest.fixture(scope="module")
def converted(state_dict):
    """An adaptive/unity model holding `state_dict`, and the report."""
    model = cas_mvsnet.CascadeMVSNet(num_depths=(8, 8, 8))
    report = checkpoints.convert_state_dict(state_dict, model)
    return model, report


def _variables(model):
    return {v.path.partition("/")[2]: v for v in model.variables}


def test_spec_lists_every_tensor_of_the_adaptive_model(spec, converted):
    model, _ = converted
    expected = checkpoints.expected_state_dict(model)
    tensors = {k: v for k, v in spec.items()
               if not k.endswith(".num_batches_tracked")}
    assert expected == tensors
    assert len(expected) == 230


def test_names_agree_with_the_layout_table(spec, converted):
    # docs/weight_layout.md's full table: | `torch` | shape | `keras` | ...
    model, report = converted
    rows = re.findall(r"^\| `([^`]+)` \| [^|]+ \| `([^`]+)` \|",
                      _LAYOUT_DOC.read_text(), flags=re.MULTILINE)
    table = {torch: keras_path for torch, keras_path in rows
             if "." in torch}
    assert table == report.assigned
    assert set(table) | {k for k in spec if k.endswith("tracked")} == set(
        spec)


def test_every_tensor_lands_transposed(state_dict, converted):
    model, report = converted
    variables = _variables(model)
    for name, path in report.assigned.items():
        source = state_dict[name]
        if source.ndim == 4:  # Conv2d (out, in, kh, kw)
            source = source.transpose(2, 3, 1, 0)
        elif source.ndim == 5:  # Conv3d / ConvTranspose3d
            source = source.transpose(2, 3, 4, 1, 0)
        np.testing.assert_array_equal(
            variables[path].numpy(), source, err_msg=name)
    assert len(report.ignored) == 44
    assert all(k.endswith(".num_batches_tracked") for k in report.ignored)


def test_single_elements_land_where_the_layout_says(state_dict, converted):
    model, _ = converted
    pyramid = model.feature_pyramid
    # Conv2d k5 s2: weight[out, in, y, x] -> kernel[y, x, in, out].
    np.testing.assert_equal(
        pyramid.conv1[0].conv.kernel.numpy()[1, 4, 5, 3],
        state_dict["feature.conv1.0.conv.weight"][3, 5, 1, 4])
    # FPN lateral 1x1 with its bias.
    np.testing.assert_equal(
        pyramid.inner1.kernel.numpy()[0, 0, 15, 31],
        state_dict["feature.inner1.weight"][31, 15, 0, 0])
    np.testing.assert_array_equal(
        pyramid.inner2.bias.numpy(), state_dict["feature.inner2.bias"])
    # Conv3d: weight[out, in, d, y, x] -> kernel[d, y, x, in, out].
    regularization = model.cost_regularization[2]
    np.testing.assert_equal(
        regularization.conv5.conv.kernel.numpy()[2, 0, 1, 17, 40],
        state_dict["cost_regularization.2.conv5.conv.weight"][40, 17, 2, 0, 1])
    # ConvTranspose3d: weight[in, out, d, y, x] -> kernel[d, y, x, out, in],
    # not flipped spatially.
    np.testing.assert_equal(
        model.cost_regularization[1].conv9.conv.kernel.numpy()[0, 1, 2, 11, 7],
        state_dict["cost_regularization.1.conv9.conv.weight"][7, 11, 0, 1, 2])
    np.testing.assert_equal(
        regularization.prob.kernel.numpy()[2, 1, 0, 5, 0],
        state_dict["cost_regularization.2.prob.weight"][0, 5, 2, 1, 0])
    # BatchNorm statistics and the adaptive weight nets.
    bn = model.cost_regularization[0].conv7.bn
    np.testing.assert_array_equal(
        bn.moving_variance.numpy(),
        state_dict["cost_regularization.0.conv7.bn.running_var"])
    np.testing.assert_array_equal(
        bn.moving_mean.numpy(),
        state_dict["cost_regularization.0.conv7.bn.running_mean"])
    w_net = model.cost_aggregation[1].w_net_0
    np.testing.assert_equal(
        w_net.conv.kernel.numpy()[0, 0, 0, 9, 0],
        state_dict["cost_aggregation.weight_net.1.w_net.0.conv.weight"][
            0, 9, 0, 0, 0])
    np.testing.assert_array_equal(
        w_net.bn.gamma.numpy(),
        state_dict["cost_aggregation.weight_net.1.w_net.0.bn.weight"])


def test_random_state_dict_is_deterministic_and_distinct(spec, state_dict):
    again = checkpoints.random_state_dict(dict(reversed(spec.items())),
                                          seed=_SEED)
    for name, value in state_dict.items():
        np.testing.assert_array_equal(again[name], value)
    assert all(np.all(v > 0) for k, v in state_dict.items()
               if k.endswith("running_var"))
    firsts = [v.ravel()[0] for k, v in state_dict.items()
              if not k.endswith("tracked")]
    assert len(set(firsts)) == len(firsts)


def _error(state_dict, model):
    with pytest.raises(checkpoints.StateDictError) as error:
        checkpoints.convert_state_dict(state_dict, model)
    return error.value


def test_missing_extra_and_misshaped_keys_are_all_named(state_dict,
                                                        converted):
    model, _ = converted
    before = model.feature_pyramid.out1.kernel.numpy().copy()
    broken = dict(state_dict)
    del broken["cost_regularization.1.conv9.bn.running_var"]
    broken["cost_regularization.3.conv0.conv.weight"] = np.zeros(3)
    broken["feature.out1.weight"] = np.zeros((32, 32, 3, 3), np.float32)
    error = _error(broken, model)
    assert error.missing == ["cost_regularization.1.conv9.bn.running_var"]
    assert error.unexpected == ["cost_regularization.3.conv0.conv.weight"]
    assert error.mismatched == [
        ("feature.out1.weight", (32, 32, 3, 3), (32, 32, 1, 1))]
    message = str(error)
    for key in ("cost_regularization.1.conv9.bn.running_var",
                "cost_regularization.3.conv0.conv.weight",
                "feature.out1.weight"):
        assert key in message
    # Nothing was assigned.
    np.testing.assert_array_equal(
        model.feature_pyramid.out1.kernel.numpy(), before)


@pytest.mark.parametrize("key", [
    "feature.inner1.bias",
    "cost_aggregation.weight_net.2.w_net.1.bn.running_mean",
    "cost_regularization.0.prob.weight",
])
def test_each_missing_key_is_named(state_dict, converted, key):
    model, _ = converted
    broken = {k: v for k, v in state_dict.items() if k != key}
    assert _error(broken, model).missing == [key]


def test_stray_counter_is_unexpected(state_dict, converted):
    model, _ = converted
    broken = dict(state_dict)
    broken["feature.out1.num_batches_tracked"] = np.array(3)
    assert _error(broken, model).unexpected == [
        "feature.out1.num_batches_tracked"]


def test_counters_are_optional(state_dict, converted):
    model, _ = converted
    plain = {k: v for k, v in state_dict.items()
             if not k.endswith("num_batches_tracked")}
    assert checkpoints.convert_state_dict(plain, model).ignored == ()


def test_variance_model_rejects_the_aggregation_nets(state_dict):
    model = cas_mvsnet.CascadeMVSNet(num_depths=(8, 8, 8),
                                     aggregation="variance", head="regression")
    error = _error(state_dict, model)
    # 6 weight nets x (conv + 4 BN tensors + the BN counter).
    assert len(error.unexpected) == 36 and not error.missing
    assert all(k.startswith("cost_aggregation.") for k in error.unexpected)
    variance = {k: v for k, v in state_dict.items()
                if not k.startswith("cost_aggregation.")}
    assert checkpoints.model_config(variance)["aggregation"] == "variance"
    assert len(checkpoints.convert_state_dict(variance, model).assigned) == 200


def test_clmvsnet_names_convert_into_the_groupwise_model():
    model = cas_mvsnet.CascadeMVSNet(num_depths=(8, 8, 8),
                                     aggregation="groupwise",
                                     head="regression")
    shapes = checkpoints.expected_state_dict(model)
    assert [shapes[f"cost_regularization.{s}.conv0.conv.weight"][1]
            for s in range(3)] == [8, 8, 8]
    state_dict = checkpoints.random_state_dict(shapes, seed=1)
    # CL-MVSNet: CLMVSNet.model wraps the network, whose 3-D CNNs are
    # `regularization.{S}`.
    cl_state_dict = {
        "model." + re.sub(r"^cost_regularization\.", "regularization.", k): v
        for k, v in state_dict.items()}
    assert "model.regularization.2.prob.weight" in cl_state_dict
    assert checkpoints.model_config(cl_state_dict) == {
        "aggregation": "groupwise", "base_channels": 8, "groups": 8}
    checkpoints.convert_state_dict(cl_state_dict, model)
    np.testing.assert_equal(
        model.cost_regularization[0].conv0.conv.kernel.numpy()[0, 1, 2, 7, 3],
        state_dict["cost_regularization.0.conv0.conv.weight"][3, 7, 0, 1, 2])


def test_npz_with_wrapper_prefixes(tmp_path, state_dict):
    path = tmp_path / "state.npz"
    np.savez(path, **{f"module.{k}": v for k, v in state_dict.items()})
    loaded = checkpoints.load_state_dict(path)
    assert sorted(loaded) == sorted(state_dict)
    np.testing.assert_array_equal(loaded["feature.out3.weight"],
                                  state_dict["feature.out3.weight"])
    assert checkpoints.canonical_keys(
        {"model.a": 1, "model.b": 2}) == {"a": 1, "b": 2}
    assert checkpoints.canonical_keys(
        {"model.a": 1, "b": 2}) == {"model.a": 1, "b": 2}
    assert checkpoints.canonical_keys(
        {"module.model.regularization.0.prob.weight": 1}) == {
            "cost_regularization.0.prob.weight": 1}


def test_load_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        checkpoints.load_state_dict(tmp_path / "nope.npz")
    other = tmp_path / "weights.h5"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.h5.*\.ckpt"):
        checkpoints.load_state_dict(other)
    ckpt = tmp_path / "model_000015.ckpt"
    ckpt.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
    with pytest.raises(ImportError, match=r"keras-mvs\[convert\].*\.npz"):
        checkpoints.load_state_dict(ckpt)


def test_malformed_spec_line_is_located(tmp_path):
    path = tmp_path / "spec.tsv"
    path.write_text("name\tshape\nfeature.out1.weight\t32x32x1\nbad line\n")
    with pytest.raises(ValueError, match=r"spec\.tsv:3"):
        checkpoints.read_state_dict_spec(path)


def test_cli_npz_round_trip(tmp_path, state_dict):
    source = tmp_path / "unimvsnet.npz"
    np.savez(source, **state_dict)
    out = tmp_path / "models" / "unimvsnet.keras"
    assert convert_checkpoint.main(
        ["--state-dict", str(source), "--out", str(out),
         "--num-depths", "8,8,8"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["unimvsnet.keras"]
    model = keras.models.load_model(out)
    assert (model.aggregation, model.head, model.num_depths) == (
        "adaptive", "unity", (8, 8, 8))
    np.testing.assert_array_equal(
        model.cost_regularization[2].conv11.conv.kernel.numpy(),
        state_dict["cost_regularization.2.conv11.conv.weight"].transpose(
            2, 3, 4, 1, 0))


def test_cli_reports_bad_checkpoints(tmp_path, state_dict, capsys):
    source = tmp_path / "cas.npz"
    np.savez(source, **state_dict)
    out = tmp_path / "cas.keras"
    assert convert_checkpoint.main(
        ["--state-dict", str(source), "--out", str(out),
         "--aggregation", "variance", "--head", "regression"]) == 1
    assert "cost_aggregation.weight_net.0.w_net.0.conv.weight" in (
        capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [source]
