"""Learned layers of the cascade network (one public layer per module)."""

from keras_mvs.layers.conv_blocks import ConvBnReLU
from keras_mvs.layers.conv_blocks import DeconvBnReLU3D
from keras_mvs.layers.cost_regularization import CostRegularization
from keras_mvs.layers.cost_volume import CostVolume
from keras_mvs.layers.feature_pyramid import FeaturePyramid
