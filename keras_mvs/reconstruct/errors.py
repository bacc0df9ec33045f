"""The errors a reconstruction raises for settings it cannot run with."""


class ReconstructionError(RuntimeError):
    """A reconstruction that cannot run as asked; the message says why and
    what to change."""


class InsufficientMemoryError(ReconstructionError):
    """The cost volume does not fit (estimated, or TF ran out of memory)."""
