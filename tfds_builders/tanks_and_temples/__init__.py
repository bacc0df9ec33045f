"""TFDS builder for Tanks and Temples (MVSNet preprocessed)."""
