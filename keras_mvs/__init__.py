"""keras-mvs: learned multi-view stereo for TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
