"""Small matrix products on one BLAS thread.

OpenBLAS splits even a 100×100×100 product across its threads. On a machine with few cores that gains
nothing below a few million multiply-adds, and the second thread busy-waits between products: it doubles the
CPU time of a small-model training step, and when another process holds a core the product waits for the
descheduled thread (measured here: a MNIST-1D MLP epoch took 11 ms with one BLAS thread and 11–37 ms with two,
depending on the load). `matmul` runs products below `SMALL_PRODUCT` multiply-adds with one thread and restores
the caller's setting afterwards. Where NumPy's BLAS is not a bundled OpenBLAS, or with
CHAINRULE_BLAS_THREADS_SMALL=0, it is a plain `np.matmul`.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import numpy as np

SMALL_PRODUCT = 4_000_000  # multiply-adds; above this a second thread starts to pay (measured on 2 cores)


def _openblas_threads() -> tuple[Any, Any]:
    """(set_num_threads, get_num_threads) of the OpenBLAS bundled with NumPy's wheel, or (None, None)."""
    if os.environ.get("CHAINRULE_BLAS_THREADS_SMALL", "1") == "0":
        return None, None
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)  # the library NumPy already loaded: same handle
        except OSError:
            continue
        for prefix, suffix in (
            ("scipy_openblas_", "64_"),
            ("scipy_openblas_", ""),
            ("openblas_", "64_"),
            ("openblas_", ""),
        ):
            setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, getter
    return None, None


_SET, _GET = _openblas_threads()


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b`, on one BLAS thread when each matrix product has fewer than SMALL_PRODUCT multiply-adds."""
    if _SET is None or a.ndim < 2 or b.ndim < 2 or a.shape[-2] * a.shape[-1] * b.shape[-1] >= SMALL_PRODUCT:
        return a @ b
    threads = _GET()
    if threads <= 1:
        return a @ b
    _SET(1)
    try:
        return a @ b
    finally:
        _SET(threads)
