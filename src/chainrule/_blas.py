"""Small matrix products on one BLAS thread; large in-place updates y += a·x through BLAS's threaded axpy.

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


def _openblas() -> tuple[Any, str, str]:
    """(library, symbol prefix, symbol suffix) of the OpenBLAS bundled with NumPy's wheel, or (None, "", "")."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)  # the library NumPy already loaded: same handle
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", "")):
            if getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None) is not None:
                return lib, prefix, suffix
    return None, "", ""


def _openblas_threads() -> tuple[Any, Any]:
    """(set_num_threads, get_num_threads) of NumPy's OpenBLAS, or (None, None)."""
    if _LIB is None or os.environ.get("CHAINRULE_BLAS_THREADS_SMALL", "1") == "0":
        return None, None
    setter = getattr(_LIB, f"{_PREFIX}openblas_set_num_threads{_SUFFIX}")
    getter = getattr(_LIB, f"{_PREFIX}openblas_get_num_threads{_SUFFIX}")
    setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
    return setter, getter


def _openblas_axpy() -> dict[np.dtype, Any]:
    """cblas_saxpy/daxpy of NumPy's OpenBLAS by dtype (64-bit integer arguments only), or {}."""
    if _LIB is None or _SUFFIX != "64_" or os.environ.get("CHAINRULE_BLAS_AXPY", "1") == "0":
        return {}
    found = {}
    for dtype, letter, real in (
        (np.dtype(np.float32), "s", ctypes.c_float),
        (np.dtype(np.float64), "d", ctypes.c_double),
    ):
        fn = getattr(_LIB, f"{_PREFIX}cblas_{letter}axpy64_", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int64, real, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
            fn.restype = None
            found[dtype] = fn
    return found


_LIB, _PREFIX, _SUFFIX = _openblas()
_SET, _GET = _openblas_threads()
_AXPY = _openblas_axpy()
AXPY_MIN = 32_768  # elements; below this NumPy's two passes cost less than the ctypes call (~2.5 µs) and the hand-off


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


def axpy_ok(*arrays: np.ndarray) -> bool:
    """Whether `axpy` takes BLAS's path for these arrays (large, C-contiguous, one dtype BLAS has)."""
    first = arrays[0]
    return (
        first.size >= AXPY_MIN
        and first.dtype in _AXPY
        and all(a.dtype == first.dtype and a.size == first.size and a.flags.c_contiguous for a in arrays)
    )


def axpy(alpha: float, x: np.ndarray, y: np.ndarray) -> None:
    """y += alpha * x in place, for C-contiguous float arrays of one shape and dtype.

    Large arrays go to BLAS's axpy, one pass that OpenBLAS splits over its threads: an optimizer's update is
    bound by memory traffic, and a gradient just written by a threaded product lies half in each core's
    cache (SGD with momentum on a 784×256 weight: 160 µs in NumPy's passes, 2 threads). Otherwise (or with
    CHAINRULE_BLAS_AXPY=0) NumPy's `y += alpha * x`. One rounding where BLAS fuses the multiply-add.
    """
    fn = _AXPY.get(y.dtype) if y.size >= AXPY_MIN else None
    if (
        fn is None
        or alpha == 0  # OpenBLAS returns at once: y would keep y + 0·x's NaN where x is inf or NaN
        or x.dtype != y.dtype
        or x.shape != y.shape
        or not (x.flags.c_contiguous and y.flags.c_contiguous)
        or (x is not y and np.may_share_memory(x, y))  # overlapping: NumPy buffers it, BLAS would not
    ):
        y += alpha * x
        return
    if not y.flags.writeable:
        raise ValueError("axpy: the output array is read-only")
    fn(y.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
