"""glibc's memory allocator set for PyTorch training on the CPU (Linux; elsewhere nothing changes).

By default glibc hands each block above its threshold (128 KiB, rising with use up to 32 MiB) its
own mapping and gives it back to the kernel when freed, and trims the top of its heap just as
readily. A training step frees and allocates its activations anew, so each comes back as fresh
pages the kernel must fault in and zero: about 5,000 page faults a step of DigitNet at batch 128,
some tens of milliseconds. Serving blocks up to 32 MiB from the heap and keeping what is freed
there lets every step reuse the last one's memory (benchmarks/allocator.py measures it). The
process keeps its peak memory until it ends instead of returning it between steps: fine for a
command that trains, evaluates and exits. mallopt is called by hand because neither PyTorch nor
Lightning sets the allocator; preloading jemalloc or tcmalloc would do the same, outside Python.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit machines
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed memory at the heap's top


def keep_freed_memory() -> bool:
    """Set glibc's thresholds as above; False where the C library is not glibc's."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
