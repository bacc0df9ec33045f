"""TFDS builder for DTU (MVSNet preprocessed)."""
