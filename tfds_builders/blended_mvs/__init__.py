"""TFDS builder for BlendedMVS (low-res set)."""
