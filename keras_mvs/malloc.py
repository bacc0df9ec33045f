"""Fewer glibc malloc arenas for the commands that run the network.

glibc gives each thread that allocates concurrently its own arena, up to
8 per core, and memory freed into one arena is not reused by another. A
traced TensorFlow step allocates from its inter- and intra-op threads, so
memory freed by one stage sits idle in its arena while the next allocates
afresh elsewhere: the supervised training step at 128x160 held about 110 MB
more resident memory with the default arenas than with two (bench/
train_step_bench.py, same speed). The commands call `limit_arenas()` before
TensorFlow starts its threads; a `MALLOC_ARENA_MAX` in the environment is
the user's choice and is left alone. Elsewhere than glibc, nothing happens.

    from keras_mvs import malloc
    malloc.limit_arenas()   # first thing in a command's main()

`release_free_memory()` hands the free memory malloc holds back to the
system (glibc's `malloc_trim`). The training driver calls it once, after
the first step: building and optimising the traced step and compiling the
XLA warps free far more than the later steps reuse (at 128x160, 45 MB of
the supervised step's working memory).
"""

import ctypes
import ctypes.util
import os

# mallopt's parameter number for the arena limit (glibc malloc.h).
_M_ARENA_MAX = -8

# The arena count the commands use.
ARENAS = 2


def _glibc():
    """The C library when it is glibc, else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # gnu_get_libc_version exists in glibc only.
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def limit_arenas(count: int = ARENAS) -> bool:
    """Limits glibc malloc to `count` arenas; returns whether it was set.

    Not set when `MALLOC_ARENA_MAX` is in the environment (glibc has read
    it) or the C library is not glibc. Arenas created before the call stay.
    """
    if count < 1:
        raise ValueError(f"Arena count must be at least 1. Received: "
                         f"count={count}")
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, count))


def release_free_memory() -> bool:
    """Returns malloc's free memory to the system; whether any was.

    Free chunks inside the heap are released page by page, so this also
    helps when live allocations sit above them. Nothing happens elsewhere
    than glibc.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
