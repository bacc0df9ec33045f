"""Models: the cascade network."""

from keras_mvs.models.cas_mvsnet import CascadeMVSNet
