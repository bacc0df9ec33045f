"""The `keras_mvs.losses` public contract of DESIGN.md section 4."""

import inspect

import pytest

from keras_mvs import losses

# Name -> the leading parameters (name, default) DESIGN.md fixes; later
# optional parameters may be added.
CONTRACT = {
    "unity_labels": [("depth_gt", None), ("depth_hypotheses", None),
                     ("interval", None)],
    "unified_focal_loss": [("unity", None), ("labels", None),
                           ("mask", None), ("alpha", None), ("gamma", None),
                           ("base", 5.0)],
    "smooth_l05": [("x", None)],
    "unsupervised_stage_loss": [("images", None), ("intrinsics", None),
                                ("cam_from_world", None), ("depth", None),
                                ("view_min", "reference"),
                                ("reference_quirks", False)],
    "masked_smooth_l1": [("depth_pred", None), ("depth_true", None),
                         ("mask", None), ("beta", 1.0)],
    "supervised_cascade_loss": [("stages", None), ("depth_gt", None),
                                ("mask", None), ("head", "unity")],
    "unsupervised_cascade_loss": [("stages", None), ("images", None),
                                  ("intrinsics", None),
                                  ("cam_from_world", None),
                                  ("stage_weights", (0.5, 1.0, 2.0))],
    "icc_consistency_loss": [("stages", None), ("pseudo_depth", None),
                             ("filter_mask", None)],
    "scc_consistency_loss": [("stages", None), ("pseudo_depth", None),
                             ("pseudo_confidence", None),
                             ("threshold", 0.95)],
    "pseudo_unity_loss": [("stages", None), ("pseudo_depth", None),
                          ("mask", None)],
    "reference_rectangle_mask": [("seed", None), ("batch", None),
                                 ("height", None), ("width", None)],
    "apply_source_masking": [("images", None), ("seed", None),
                             ("rate", None),
                             ("fill", (0.485, 0.456, 0.406))],
    "apply_reference_mask": [("images", None), ("filter_mask", None),
                             ("fill", (0.485, 0.456, 0.406))],
    "downsample_to": [("x", None), ("height", None), ("width", None)],
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_signature(name):
    parameters = list(inspect.signature(getattr(losses, name)).parameters
                      .values())
    for parameter, (expected_name, expected_default) in zip(
            parameters, CONTRACT[name]):
        assert parameter.name == expected_name
        if expected_default is None:
            assert parameter.default is inspect.Parameter.empty
        else:
            assert parameter.default == expected_default
    assert len(parameters) >= len(CONTRACT[name])
    # Any parameter beyond the contract's is optional.
    for parameter in parameters[len(CONTRACT[name]):]:
        assert (parameter.default is not inspect.Parameter.empty
                or parameter.kind is inspect.Parameter.VAR_KEYWORD)


def test_constants():
    assert losses.UFL_ALPHAS == (0.75, 0.5, 0.25)
    assert losses.UFL_GAMMAS == (2.0, 1.0, 0.0)
    assert losses.STAGE_WEIGHTS == (0.5, 1.0, 2.0)
    assert losses.SCC_WEIGHT == 0.01
