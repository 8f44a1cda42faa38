"""Anomaly detection: find the op that produced the first NaN or Inf (like torch.autograd.detect_anomaly).

While `detect_anomaly()` is active, every recorded op remembers where in the user's code it was created
(the innermost stack frame outside the chainrule package); a forward result or a backward gradient
containing NaN/Inf raises AnomalyError naming that op and location. Inactive, it costs one flag check.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import tensor as _tensor
from .errors import AnomalyError

_in_backward = [0]
_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _location() -> str:
    """'file:line: code' of the innermost frame outside the chainrule package."""
    f = sys._getframe(1)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PKG):
        f = f.f_back
    if f is None:
        return "<unknown location>"
    code = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
    return f"{f.f_code.co_filename}:{f.f_lineno}" + (f": {code}" if code else "")


def _bad(a: Any) -> str | None:
    if isinstance(a, _tensor.Tensor):
        a = a.data
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fc":
        return None
    if np.isnan(a).any():
        return "NaN"
    if np.isinf(a).any():
        return "Inf"
    return None


def _hook(op: str, data: np.ndarray, parents: tuple, backward: Callable) -> Callable:
    """Check a forward result; return `backward` wrapped so that its gradients are checked too."""
    if _in_backward[0]:  # an op computing a gradient: the gradient it returns is checked below
        return backward
    where = _location()
    what = _bad(data)
    if what is not None:
        if any(_bad(p) for p in parents):
            raise AnomalyError(f"{op} received an input containing {what} (created before {op} at {where})")
        raise AnomalyError(f"forward of {op} produced {what}; the op was created at {where}")

    def checked(g: Any) -> Any:
        _in_backward[0] += 1
        try:
            grads = backward(g)
        finally:
            _in_backward[0] -= 1
        for i, pg in enumerate(grads):
            bad = _bad(pg)
            if bad is not None:
                raise AnomalyError(
                    f"backward of {op} produced {bad} in the gradient of its input {i}"
                    f"{' (the incoming gradient already had ' + _bad(g) + ')' if _bad(g) else ''}; "
                    f"the op was created at {where}"
                )
        return grads

    return checked


def is_anomaly_enabled() -> bool:
    return _tensor._ANOMALY[0] is not None


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Context manager: raise AnomalyError at the first op whose forward or backward produces NaN/Inf."""
    prev = _tensor._ANOMALY[0]
    _tensor._ANOMALY[0] = _hook
    try:
        yield
    finally:
        _tensor._ANOMALY[0] = prev
