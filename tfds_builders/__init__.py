"""keras-mvs TFDS builders: one package per dataset (see README.md)."""
