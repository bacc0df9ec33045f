"""The whole converted network against the official UniMVSNet
(`full_model_unimvsnet.npz` and its weights: variance aggregation, unity
head, fixed random weights with non-trivial BatchNorm statistics, 3 views of
64x96)."""

import numpy as np
import official_outputs as ref
import pytest
import tensorflow as tf

from experiments import convert_checkpoint
from keras_mvs import checkpoints
from keras_mvs.losses import depth as depth_losses
from keras_mvs.models import cas_mvsnet

# README: argmax-based unity depth can jump by about one interval where two
# unities nearly tie; fewer than 0.5 % of the pixels may differ by more
# than half an interval.
MAX_JUMP_FRACTION = 0.005


def _inputs(data) -> dict:
    intrinsics, cam_from_world = ref.split_cams(data["proj_matrices_stage3"])
    return {
        "images": ref.nchw_to_nhwc(data["imgs"]),
        "intrinsics": intrinsics,
        "cam_from_world": cam_from_world,
        "depth_range": data["depth_values"][:, [0, -1]],
    }


def _converted(warp_sampling="align_corners_false", xla_warp=False):
    data = ref.load("full_model_unimvsnet")
    weights = ref.load("full_model_unimvsnet_weights")
    model = cas_mvsnet.CascadeMVSNet(
        aggregation="variance", head="unity", warp_sampling=warp_sampling,
        xla_warp=xla_warp)
    checkpoints.convert_state_dict(weights, model)
    return data, model


def _jump_fraction(depth, expected, interval) -> float:
    return float(np.mean(np.abs(depth - expected) > 0.5 * interval))


@pytest.mark.parametrize("xla_warp", [False, True])
def test_eval_mode_reproduces_the_official_depth_maps(xla_warp):
    data, model = _converted(xla_warp=xla_warp)
    outputs = model(_inputs(data), training=False)
    for index, stage in enumerate(outputs["stages"]):
        name = f"eval_stage{index + 1}"
        interval = float(data[f"{name}_interval"])
        np.testing.assert_allclose(stage["interval"].numpy(), [interval],
                                   rtol=1e-6)
        # A refinement stage's hypotheses follow the previous depth, so a
        # pixel whose previous depth jumped (a tie, see MAX_JUMP_FRACTION)
        # moves the hypotheses of the pixels around it: at 64x96 the
        # stage-2 unities of hypotheses 9 and 17 at pixel (2, 35) are
        # equal in float32 and 1 ulp apart in the official run, which moves
        # 16 stage-3 pixels. Elsewhere they agree to round-off.
        hypotheses = stage["hypotheses"].numpy()
        expected = data[f"{name}_depth_values"]
        moved = np.any(~np.isclose(hypotheses, expected, rtol=1e-6,
                                   atol=3e-4), axis=1)  # [B, h, w]
        assert np.mean(moved) < MAX_JUMP_FRACTION
        np.testing.assert_allclose(
            np.moveaxis(hypotheses, 1, -1)[~moved],
            np.moveaxis(expected, 1, -1)[~moved], rtol=1e-6, atol=3e-4)
        np.testing.assert_allclose(stage["volume"].numpy(),
                                   data[f"{name}_prob_volume"], rtol=0,
                                   atol=1e-4)
        np.testing.assert_allclose(
            stage["confidence"].numpy(),
            data[f"{name}_photometric_confidence"], rtol=0, atol=1e-4)
        depth = stage["depth"].numpy()
        expected = data[f"{name}_depth"]
        assert _jump_fraction(depth, expected, interval) < MAX_JUMP_FRACTION
        same_bin = np.abs(depth - expected) <= 0.5 * interval
        np.testing.assert_allclose(depth[same_bin], expected[same_bin],
                                   rtol=1e-3)


def test_exact_sampling_does_not_reproduce_the_official_depth():
    # The official checkpoints need the official sampling: with exact
    # sampling the final depth leaves the official bin at many pixels.
    data, model = _converted(warp_sampling="exact")
    depth = model(_inputs(data), training=False)["depth"].numpy()
    interval = float(data["eval_stage3_interval"])
    assert _jump_fraction(depth, data["eval_stage3_depth"], interval) > 0.05


def _train_step(model, data):
    """Train-mode forward (batch-statistics BatchNorm), the reference loss
    `mvs_loss(mode="unification")` with each stage's own ground truth, and
    its gradients."""
    with tf.GradientTape() as tape:
        outputs = model(_inputs(data), training=True)
        loss = 0.0
        for index, stage in enumerate(outputs["stages"]):
            gt = data[f"train_depth_gt_stage{index + 1}"]
            labels = depth_losses.unity_labels(gt, stage["hypotheses"],
                                               stage["interval"])
            loss += depth_losses.STAGE_WEIGHTS[index] * (
                depth_losses.unified_focal_loss(
                    stage["volume"], labels,
                    data[f"train_mask_stage{index + 1}"],
                    depth_losses.UFL_ALPHAS[index],
                    depth_losses.UFL_GAMMAS[index],
                    logits=stage["logits"]))
    variables = model.trainable_variables
    return outputs, loss, dict(zip(
        (checkpoints.torch_name(v.path.partition("/")[2]) for v in variables),
        tape.gradient(loss, variables)))


@pytest.mark.parametrize("xla_warp", [False, True])
def test_train_mode_loss_and_gradients(xla_warp):
    # xla_warp=True takes the warp's gradient from
    # geometry.homography_warp_vjp (compiled, plane by plane).
    data, model = _converted(xla_warp=xla_warp)
    outputs, loss, gradients = _train_step(model, data)
    # BatchNorm statistics per view (the reference runs its FPN once per
    # view): without them the stage depths move by hundreds of mm.
    for index, stage in enumerate(outputs["stages"]):
        np.testing.assert_allclose(stage["depth"].numpy(),
                                   data[f"train_stage{index + 1}_depth"],
                                   rtol=1e-5)
    assert float(loss) == pytest.approx(float(data["train_loss"]), rel=1e-5)
    norm = np.sqrt(sum(float(tf.reduce_sum(tf.square(g)))
                       for g in gradients.values()))
    assert norm == pytest.approx(float(data["train_grad_norm_total"]),
                                 rel=1e-4)
    # The last layer's gradient agrees to float32 round-off; the first
    # layer's sits behind the whole network (every stage's U-Net,
    # batch-statistics BatchNorm at batch 1) and agrees to 0.5 % in
    # relative L2 norm, where our own plain and XLA warps differ by 0.07 %.
    tolerances = {"cost_regularization.2.prob.weight": 1e-5,
                  "feature.conv0.0.conv.weight": 5e-3}
    for name, tolerance in tolerances.items():
        expected = checkpoints.to_keras_layout(data[f"train_grad/{name}"])
        ours = gradients[name].numpy()
        error = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
        assert error < tolerance, (name, error)


def test_train_mode_updates_batch_norm_like_pytorch():
    # Each FPN BatchNorm sees V = 3 per-view batches, one momentum-0.1
    # update each, with the unbiased variance: the moving mean after one
    # step is 0.9^3 m + 0.1 (0.9^2 mu_0 + 0.9 mu_1 + mu_2).
    data, model = _converted()
    images = _inputs(data)["images"][0]  # [V, H, W, 3]
    layer = model.feature_pyramid.conv0[0]
    before_mean = layer.bn.moving_mean.numpy().copy()
    before_var = layer.bn.moving_variance.numpy().copy()
    conv = layer.conv(tf.constant(images)).numpy()  # [V, H, W, C]
    _train_step(model, data)
    means = conv.mean(axis=(1, 2))
    variances = conv.var(axis=(1, 2), ddof=1)
    weights = 0.1 * 0.9 ** np.array([2.0, 1.0, 0.0])[:, None]
    np.testing.assert_allclose(
        layer.bn.moving_mean.numpy(),
        0.9**3 * before_mean + (weights * means).sum(0), rtol=1e-4,
        atol=1e-6)
    np.testing.assert_allclose(
        layer.bn.moving_variance.numpy(),
        0.9**3 * before_var + (weights * variances).sum(0), rtol=1e-4)


def _convert(tmp_path, *extra):
    """Runs `convert_checkpoint` on the official weights; returns the
    loaded `.keras` model."""
    import keras

    source = tmp_path / "unimvsnet.npz"
    np.savez(source, **ref.load("full_model_unimvsnet_weights"))
    out = tmp_path / "unimvsnet.keras"
    assert convert_checkpoint.main(
        ["--state-dict", str(source), "--out", str(out),
         "--aggregation", "variance", *extra]) == 0
    return keras.saving.load_model(out)


def test_convert_checkpoint_sets_the_official_sampling(tmp_path, capsys):
    model = _convert(tmp_path)
    assert "align_corners_false" in capsys.readouterr().out
    assert model.warp_sampling == "align_corners_false"
    data = ref.load("full_model_unimvsnet")
    depth = model(_inputs(data), training=False)["depth"].numpy()
    assert _jump_fraction(depth, data["eval_stage3_depth"],
                          float(data["eval_stage3_interval"])) < (
        MAX_JUMP_FRACTION)


def test_convert_checkpoint_sampling_can_be_overridden(tmp_path):
    model = _convert(tmp_path, "--warp-sampling", "exact")
    assert model.warp_sampling == "exact"
