"""Depth-map filtering and fusion into a coloured point cloud.

This package owns the post-processing of ALGORITHMS.md 6, in two modules:

    consistency.py  the pair checks: the forward-backward reprojection of a
                    reference depth map through its sources, the "pcd" pair
                    test (`check_geometric_consistency`, DESIGN.md 4), the
                    photometric mask and the pcd / dynamic ("dypcd")
                    geometric filters
    fuse.py         the filter settings and presets, the per-view inputs and
                    the loop that filters every reference view and fuses the
                    survivors into one world-frame cloud

Conventions are those of `keras_mvs.geometry`, which does all the projective
work (pixel (row i, column j) has its centre at x = j, y = i; bilinear
sampling with zero padding; `cam_from_world` maps world to camera with OpenCV
axes; depth is the camera-frame z). Inputs and outputs are numpy arrays.
PLY files are read and written by `keras_mvs.files`.

Example:
    >>> config = FilterConfig.preset("casmvsnet")
    >>> cloud = fuse_views(views, pairs, config)
    >>> files.write_ply("fused.ply", cloud.points, cloud.colors)
"""

from keras_mvs.fusion.consistency import ReprojectionErrors
from keras_mvs.fusion.consistency import check_geometric_consistency
from keras_mvs.fusion.consistency import dynamic_consistency
from keras_mvs.fusion.consistency import pcd_consistency
from keras_mvs.fusion.consistency import photometric_mask
from keras_mvs.fusion.consistency import reprojection_errors
from keras_mvs.fusion.fuse import CLMVSNET_DTU_PIXEL_ERROR
from keras_mvs.fusion.fuse import UNIMVSNET_TANKS_CONFIDENCE_THRESHOLDS
from keras_mvs.fusion.fuse import FilterConfig
from keras_mvs.fusion.fuse import FusedCloud
from keras_mvs.fusion.fuse import FusionView
from keras_mvs.fusion.fuse import ViewStats
from keras_mvs.fusion.fuse import filter_view
from keras_mvs.fusion.fuse import fuse_views
