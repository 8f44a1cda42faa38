"""Reductions (sum, mean, var, std, amax/amin, max/min, logsumexp) and softmax.

`dim` is None (all dims), an int or a sequence of ints; `keepdim` keeps reduced dims as 1.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from ..tensor import Tensor, record
from ._util import keep_shape, norm_dims
from .math import maximum, minimum, where

MinMax = namedtuple("MinMax", ["values", "indices"])


def _dims(dim: Any, ndim: int, op: str) -> tuple[int, ...]:
    """The reduced dims; None or an empty list means all of them (as in PyTorch)."""
    return norm_dims(None if isinstance(dim, tuple | list) and not dim else dim, ndim, op)


def _spread(g: Tensor, shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> Tensor:
    """The gradient of a reduction, broadcast back to the input's shape."""
    if not keepdim:
        g = g.reshape(keep_shape(shape, dims))
    return g.expand(shape)


def sum(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    dims = _dims(dim, a.ndim, "sum")
    out = np.sum(a.data, axis=dims, keepdims=keepdim)
    return record("sum", np.asarray(out), (a,), lambda g: (_spread(g, a.shape, dims, keepdim),), saved=())


def mean(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    if a.dtype.kind != "f":
        raise TypeError(f"mean: needs a floating-point tensor, got dtype {a.dtype}")
    dims = _dims(dim, a.ndim, "mean")
    n = int(np.prod([a.shape[d] for d in dims])) if a.ndim else 1
    out = np.mean(a.data, axis=dims, keepdims=keepdim)
    return record("mean", np.asarray(out), (a,), lambda g: (_spread(g, a.shape, dims, keepdim) / n,), saved=())


def var(a: Tensor, dim: Any = None, correction: int = 1, keepdim: bool = False, unbiased: bool | None = None) -> Tensor:
    """Variance with Bessel's `correction` (1 by default, as PyTorch): sum((a - mean)²) / (N - correction)."""
    if unbiased is not None:
        correction = int(unbiased)
    dims = _dims(dim, a.ndim, "var")
    n = int(np.prod([a.shape[d] for d in dims])) if a.ndim else 1
    out = np.var(a.data, axis=dims, ddof=correction, keepdims=keepdim)

    scale = 2.0 / (n - correction) if n != correction else float("nan")  # 0/0 -> nan, as PyTorch

    def backward(g: Tensor) -> tuple[Tensor]:
        return (_spread(g, a.shape, dims, keepdim) * (a - a.mean(dims, keepdim=True)) * scale,)

    return record("var", np.asarray(out), (a,), backward)


def std(a: Tensor, dim: Any = None, correction: int = 1, keepdim: bool = False, unbiased: bool | None = None) -> Tensor:
    """sqrt(var); where it is 0 (a constant slice) the gradient is 0, as in PyTorch."""
    v = var(a, dim, correction, keepdim, unbiased)
    zero = v.data == 0
    out = record("std", np.sqrt(v.data), (v,), lambda g: (where(zero, 0.0, g / (where(zero, 1.0, out) * 2.0)),))
    return out


def _extreme(name: str, fn: Any, a: Tensor, dim: Any, keepdim: bool) -> Tensor:
    if a.data.size == 0:
        raise ValueError(f"{name}: cannot reduce an empty tensor")
    dims = _dims(dim, a.ndim, name)
    out = fn(a.data, axis=dims, keepdims=True)
    mask = a.data == out
    share = (mask / mask.sum(axis=dims, keepdims=True)).astype(a.dtype)  # ties split the gradient evenly
    result = out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in dims])
    return record(name, np.asarray(result), (a,), lambda g: (_spread(g, a.shape, dims, keepdim) * share,), saved=())


def amax(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _extreme("amax", np.max, a, dim, keepdim)


def amin(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _extreme("amin", np.min, a, dim, keepdim)


def _max_or_min(arg: Any, reduce: Any, a: Tensor, dim: Any, keepdim: bool) -> Any:
    if dim is None:
        return reduce(a)
    if isinstance(dim, Tensor):  # max(a, other): elementwise, as PyTorch
        return (maximum if reduce is amax else minimum)(a, dim)
    idx = arg(a, dim, keepdim=True)
    values = a.gather(dim, idx)  # the gradient goes to the selected element only (as PyTorch)
    if not keepdim:
        values, idx = values.squeeze(dim), idx.squeeze(dim)
    return MinMax(values, idx)


def max(a: Tensor, dim: int | Tensor | None = None, keepdim: bool = False) -> Any:
    """Without `dim`: the largest value (ties share the gradient). With `dim`: (values, indices).
    With a tensor instead of `dim`: the elementwise maximum."""
    return _max_or_min(argmax, amax, a, dim, keepdim)


def min(a: Tensor, dim: int | Tensor | None = None, keepdim: bool = False) -> Any:
    return _max_or_min(argmin, amin, a, dim, keepdim)


def argmax(a: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor(np.asarray(np.argmax(a.data), dtype=np.int64))
    return Tensor(np.argmax(a.data, axis=dim, keepdims=keepdim).astype(np.int64))


def argmin(a: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor(np.asarray(np.argmin(a.data), dtype=np.int64))
    return Tensor(np.argmin(a.data, axis=dim, keepdims=keepdim).astype(np.int64))


def _lse(x: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """log(sum(exp(x))) over `dims`, kept as size 1; shifted by the max so nothing overflows."""
    m = np.max(x, axis=dims, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return np.log(np.sum(np.exp(x - m), axis=dims, keepdims=True)) + m


def logsumexp(a: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    dims = _dims(dim, a.ndim, "logsumexp")
    lse = _lse(a.data, dims)
    result = lse if keepdim else lse.reshape([n for i, n in enumerate(a.shape) if i not in dims])
    out = record(
        "logsumexp",
        np.asarray(result),
        (a,),
        lambda g: (_spread(g, a.shape, dims, keepdim) * (a - out.reshape(lse.shape)).exp(),),
    )
    return out


def softmax(a: Tensor, dim: int = -1) -> Tensor:
    x = a.data
    dim = norm_dims(dim, a.ndim, "softmax")
    e = np.exp(x - np.max(x, axis=dim, keepdims=True))
    out = record(
        "softmax",
        e / np.sum(e, axis=dim, keepdims=True),
        (a,),
        lambda g: (out * (g - (g * out).sum(dim, keepdim=True)),),
        saved=(),
    )
    return out


def log_softmax(a: Tensor, dim: int = -1) -> Tensor:
    dims = norm_dims(dim, a.ndim, "log_softmax")
    out = record(
        "log_softmax",
        a.data - _lse(a.data, dims),
        (a,),
        lambda g: (g - out.exp() * g.sum(dims, keepdim=True),),
        saved=(),
    )
    return out
