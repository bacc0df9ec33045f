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
"""

import ctypes
import ctypes.util
import os

# mallopt's parameter number for the arena limit (glibc malloc.h).
_M_ARENA_MAX = -8

# The arena count the commands use.
ARENAS = 2


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
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        # gnu_get_libc_version exists in glibc only.
        if not hasattr(libc, "gnu_get_libc_version"):
            return False
        return bool(libc.mallopt(_M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False
