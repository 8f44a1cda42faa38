"""Keep freed array memory in the process for reuse (glibc only).

A training step allocates and frees the same large arrays every step. glibc's defaults hand such
memory back to the operating system on free (arrays above the mmap threshold, and the top of the heap
above the trim threshold), so the next step takes it back page by page: measured on the CNN
benchmark (benchmarks/conv_cnn_step.py) about 4,400 page faults and 5 ms of an 11 ms step. Raising
both thresholds keeps the memory for the next step; the peak memory is unchanged, the memory freed
after the peak is returned later (above `trim_threshold` of free heap top) or at exit.

Set CHAINRULE_KEEP_FREED_MEMORY=0 before importing chainrule to keep the allocator's defaults.
"""

from __future__ import annotations

import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc's malloc to serve arrays up to `mmap_threshold` bytes from its heap and to return the free
    heap top to the OS only above `trim_threshold` bytes. Returns False where this is not glibc (no effect)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def _configure_from_env() -> None:
    if os.environ.get("CHAINRULE_KEEP_FREED_MEMORY", "1").strip().lower() not in ("0", "false", "no", "off"):
        keep_freed_memory()
