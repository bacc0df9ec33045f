"""keras_mvs.malloc: the commands' arena limit."""

import os
import pathlib
import subprocess
import sys

import pytest

from keras_mvs import malloc

_GLIBC = malloc._glibc() is not None
# The subprocesses import `bench` from the repository root.
_ROOT = pathlib.Path(__file__).resolve().parents[1]

# 16 threads allocate at once; then glibc's malloc_info XML is read, which
# has one <heap> element per arena.
_COUNT_ARENAS = """
import ctypes, ctypes.util, os, sys, tempfile, threading
from keras_mvs import malloc
set_by_us = malloc.limit_arenas() if sys.argv[1] == "limit" else False
barrier = threading.Barrier(16)

def allocate():
    blocks = [ctypes.create_string_buffer(1000) for _ in range(500)]
    barrier.wait()
    del blocks

threads = [threading.Thread(target=allocate) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.TemporaryFile() as out:
    stream = libc.fdopen(os.dup(out.fileno()), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    out.seek(0)
    text = out.read().decode()
print(set_by_us, text.count("<heap nr="))
"""


def _arenas(mode, **env):
    environ = {k: v for k, v in os.environ.items()
               if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", _COUNT_ARENAS, mode],
                         env={**environ, **env}, capture_output=True,
                         text=True, check=True)
    set_by_us, arenas = out.stdout.split()
    return set_by_us == "True", int(arenas)


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_threads_share_the_limited_arenas():
    # Without the limit glibc makes up to 8 arenas per core (16 measured
    # on 2 cores).
    assert _arenas("none")[1] > malloc.ARENAS
    assert _arenas("limit") == (True, malloc.ARENAS)


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_the_users_setting_is_kept():
    assert _arenas("limit", MALLOC_ARENA_MAX="5") == (False, 5)


def test_count_is_checked():
    with pytest.raises(ValueError, match="at least 1"):
        malloc.limit_arenas(0)


# 200 MB in 10 kB blocks from the heap, all freed but the last (which keeps
# the heap from shrinking by itself); resident MB before and after.
_RELEASE = """
import ctypes, ctypes.util
from bench.model_bench import current_rss_mb as resident_mb
from keras_mvs import malloc
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

blocks = [libc.malloc(10_000) for _ in range(20_000)]
for block in blocks:
    libc.memset(block, 1, 10_000)
for block in blocks[:-1]:
    libc.free(block)
before = resident_mb()
released = malloc.release_free_memory()
print(released, before, resident_mb())
"""


@pytest.mark.skipif(not _GLIBC, reason="glibc only")
def test_release_returns_freed_heap_memory():
    out = subprocess.run([sys.executable, "-c", _RELEASE], cwd=_ROOT,
                         capture_output=True, text=True, check=True)
    released, before, after = out.stdout.split()
    print(f"resident {float(before):.0f} -> {float(after):.0f} MB")
    assert released == "True"
    assert float(before) - float(after) > 150


def test_training_releases_once_after_the_first_step(monkeypatch):
    from keras_mvs.training import callbacks

    calls = []
    monkeypatch.setattr(malloc, "release_free_memory",
                        lambda: calls.append(1) or True)
    callback = callbacks.ReleaseMemoryAfterFirstStep()
    for batch in range(3):
        callback.on_train_batch_end(batch)
    assert calls == [1] and callback.released is True
