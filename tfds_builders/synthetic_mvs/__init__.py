"""TFDS builder for the keras_mvs synthetic scenes."""
