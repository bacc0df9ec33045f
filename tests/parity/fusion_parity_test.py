"""Depth filtering and fusion against the official code's outputs
(`fusion.npz`: 5 views of a plane, 48x64, view 0 with an inconsistent bump).

The reference samples the source depth with `cv2.remap`, which quantises the
bilinear weights to 1/32 px; `keras_mvs.fusion` samples in float. Masks can
therefore differ at pixels whose error sits on a threshold: the README of the
reference outputs asks for at least 99 % agreement and equal points up to
those pixels, which is what these tests assert (and they report how close
the two are).
"""

import numpy as np
import official_outputs as ref
import pytest

from keras_mvs import fusion

MIN_AGREEMENT = 0.99


def _data():
    return ref.load("fusion")


def _camera(data, view):
    # The cams as the reference read them back from the written files.
    return data["K_file"][view], data["extrinsics_file"][view]


def _errors(data, ref_view, src_views):
    k_ref, e_ref = _camera(data, ref_view)
    return fusion.reprojection_errors(
        data["depths"][ref_view], k_ref, e_ref, data["depths"][src_views],
        data["K_file"][src_views], data["extrinsics_file"][src_views])


def test_reprojected_depth_of_pair_0_1():
    data = _data()
    errors = _errors(data, 0, [1])
    expected = data["reproj_depth"]
    defined = np.isfinite(errors.pixel_error[0])
    # Where the source depth is sampled inside the image, the reprojected
    # depth agrees to cv2.remap's 1/32-px weight quantisation.
    assert defined.mean() > 0.8
    close = np.isclose(errors.depth_reprojected[0], expected, rtol=2e-3)
    assert close[defined].mean() > MIN_AGREEMENT


def test_pcd_pair_check():
    data = _data()
    mask, depth = fusion.check_geometric_consistency(
        data["depths"][0], *_camera(data, 0), data["depths"][1],
        *_camera(data, 1))
    expected = data["pair_mask"]
    assert (mask == expected).mean() > MIN_AGREEMENT
    both = mask & expected
    np.testing.assert_allclose(depth[both],
                               data["pair_depth_reprojected"][both],
                               rtol=1e-3)
    assert np.all(depth[~mask] == 0)


def test_dypcd_pair_masks_at_every_level():
    data = _data()
    errors = _errors(data, 0, [1])
    for index, level in enumerate(range(2, 11)):
        mask = ((errors.pixel_error[0] < level * 0.25)
                & (errors.relative_depth_error[0] < level / 1300.0))
        agreement = (mask == data["dypcd_pair_masks"][index]).mean()
        assert agreement > MIN_AGREEMENT, (level, agreement)


def _views(data):
    views = {}
    for view in range(len(data["depths"])):
        k, e = _camera(data, view)
        stages = [data[f"conf_stage{s}"][view] for s in (1, 2, 3)]
        views[view] = fusion.FusionView(
            depth=data["depths"][view], confidence=stages[-1],
            intrinsics=k, cam_from_world=e, image=data["images"][view],
            stage_confidences=stages)
    return views


def _pairs(data):
    return [(int(row[0]), [int(s) for s in row[1:]]) for row in data["pairs"]]


_CONFIGS = {
    # UniMVSNet pcd with the fixture's settings: three stage thresholds,
    # 1 px, 1 %, at least `pcd_thres_view` (2) consistent sources.
    "pcd": lambda data: fusion.FilterConfig.preset(
        "unimvsnet_pcd",
        confidence_thresholds=tuple(data["conf_thresholds"]),
        min_consistent_views=int(data["pcd_thres_view"])),
    "dypcd": lambda data: fusion.FilterConfig.preset(
        "unimvsnet_dypcd",
        confidence_thresholds=tuple(data["conf_thresholds"])),
}


@pytest.mark.parametrize("method", ["pcd", "dypcd"])
def test_filter_masks_end_to_end(method):
    data = _data()
    config = _CONFIGS[method](data)
    views = _views(data)
    for ref_view, sources in _pairs(data):
        photo, geo, _ = fusion.filter_view(
            views[ref_view], [views[s] for s in sources], config)
        np.testing.assert_array_equal(
            photo, data[f"{method}_mask_photo"][ref_view])
        assert (geo == data[f"{method}_mask_geo"][ref_view]).mean() > (
            MIN_AGREEMENT)
        final = photo & geo
        assert (final == data[f"{method}_mask_final"][ref_view]).mean() > (
            MIN_AGREEMENT)


@pytest.mark.parametrize("method", ["pcd", "dypcd"])
def test_fused_points_end_to_end(method):
    data = _data()
    cloud = fusion.fuse_views(_views(data), _pairs(data),
                              _CONFIGS[method](data))
    expected_xyz, expected_rgb = data[f"{method}_xyz"], data[f"{method}_rgb"]
    assert abs(len(cloud.points) - len(expected_xyz)) <= 0.01 * len(
        expected_xyz)
    # Points come in pair order, row-major within a view, as in the
    # reference: match them through the pixels both keep.
    ours_index, theirs_index, offset_ours, offset_theirs = [], [], 0, 0
    views = _views(data)
    config = _CONFIGS[method](data)
    for ref_view, sources in _pairs(data):
        photo, geo, _ = fusion.filter_view(
            views[ref_view], [views[s] for s in sources], config)
        ours = (photo & geo).ravel()
        theirs = data[f"{method}_mask_final"][ref_view].ravel()
        rank_ours = np.cumsum(ours) - 1 + offset_ours
        rank_theirs = np.cumsum(theirs) - 1 + offset_theirs
        both = ours & theirs
        ours_index.append(rank_ours[both])
        theirs_index.append(rank_theirs[both])
        offset_ours += ours.sum()
        offset_theirs += theirs.sum()
    ours_index = np.concatenate(ours_index)
    theirs_index = np.concatenate(theirs_index)
    assert len(ours_index) > MIN_AGREEMENT * len(expected_xyz)
    # The averaged depth uses float-sampled source depths: within 0.05 %.
    np.testing.assert_allclose(cloud.points[ours_index],
                               expected_xyz[theirs_index], rtol=5e-4,
                               atol=0.05)
    # Colours: the reference writes (float32(byte) / 255 * 255) as uint8,
    # which truncates some bytes one lower; ours are the bytes themselves.
    difference = (cloud.colors[ours_index].astype(int)
                  - expected_rgb[theirs_index].astype(int))
    assert set(np.unique(difference)) <= {0, 1}
