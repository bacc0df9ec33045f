"""CascadeMVSNet.predict_tiled: windows with TILE_MARGIN of context give the
untiled outputs."""

import numpy as np
import pytest

from keras_mvs.models import cas_mvsnet
from keras_mvs.testing import tiny

HEIGHT, WIDTH, VIEWS = 64, 768, 3
CUTS = (0, 256, 512, 768)  # three column tiles: left, middle, right


def _inputs():
    return tiny.sideways_rig_inputs(VIEWS, HEIGHT, WIDTH)


def _tiles(margin):
    return [((0, HEIGHT, max(0, a - margin), min(WIDTH, b + margin)),
             (0, HEIGHT, a, b)) for a, b in zip(CUTS[:-1], CUTS[1:])]


@pytest.fixture(scope="module")
def network_and_whole():
    network = cas_mvsnet.CascadeMVSNet(
        num_depths=(8, 8, 8), aggregation="variance", head="unity",
        base_channels=4)
    network.build()
    # Keras's default initialisation makes a near-constant network whose
    # outputs barely depend on their context (a 0-pixel margin would pass);
    # He-normal kernels with gain 1.5 make the context matter, so a margin
    # short of the receptive field fails (test_a_short_margin_differs).
    rng = np.random.default_rng(1)
    for weight in network.weights:
        if len(weight.shape) >= 4:
            fan_in = int(np.prod(weight.shape[:-1]))
            weight.assign((rng.normal(size=weight.shape) * 1.5
                           * np.sqrt(2.0 / fan_in)).astype(np.float32))
    inputs = _inputs()
    whole = network(inputs, training=False)
    return network, inputs, whole


def _max_differences(tiled, whole):
    pairs = [(tiled, whole)] + list(zip(tiled["stages"], whole["stages"]))
    return {key: max(float(np.max(np.abs(a[key] - np.asarray(b[key]))))
                     for a, b in pairs) for key in ("depth", "confidence")}


def test_tiles_with_the_margin_give_the_untiled_outputs(network_and_whole):
    network, inputs, whole = network_and_whole
    tiled = network.predict_tiled(inputs, _tiles(cas_mvsnet.TILE_MARGIN))
    assert tiled["depth"].shape == (1, HEIGHT, WIDTH)
    assert [s["depth"].shape for s in tiled["stages"]] == [
        (1, 16, 192), (1, 32, 384), (1, 64, 768)]
    # Not bit for bit: convolutions and the warp's ray products over other
    # sizes sum in other orders, and this high-gain network amplifies the
    # round-off (measured: 3.6e-5 in depth, 3.5e-3 in confidence, the same
    # with oneDNN off and with a 192-pixel margin). Depth spans 2-6.
    differences = _max_differences(tiled, whole)
    assert differences["depth"] < 1e-4, differences
    assert differences["confidence"] < 1e-2, differences


def test_a_short_margin_differs(network_and_whole):
    # The check above is not vacuous: 128 pixels of context are short of the
    # cascade's receptive field (measured: 0.26 off in depth).
    network, inputs, whole = network_and_whole
    tiled = network.predict_tiled(inputs, _tiles(128))
    assert _max_differences(tiled, whole)["depth"] > 0.05


def test_one_whole_tile_is_the_plain_call(network_and_whole):
    network, inputs, whole = network_and_whole
    box = (0, HEIGHT, 0, WIDTH)
    tiled = network.predict_tiled(inputs, [(box, box)])
    # The same order of round-off as the tiles (measured 5.7e-5 in depth):
    # the windowed graph warps per-pixel stage-1 planes and runs in a
    # tf.function, the plain call eagerly here.
    differences = _max_differences(tiled, whole)
    assert differences["depth"] < 1e-4, differences
    assert differences["confidence"] < 1e-2, differences


@pytest.mark.parametrize("tile", [
    ((0, 64, 16, 400), (0, 64, 32, 384)),  # window off the 32-pixel grid
    ((0, 64, 0, 800), (0, 64, 0, 768)),  # window past the image
    ((0, 64, 0, 384), (0, 64, 352, 416)),  # core outside its window
])
def test_bad_tiles_are_refused(network_and_whole, tile):
    network, inputs, _ = network_and_whole
    with pytest.raises(ValueError, match="predict_tiled"):
        network.predict_tiled(inputs, [tile])
