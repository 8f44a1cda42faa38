"""Helpers shared by the op definitions: constant wrapping, dims and the one unbroadcast helper."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from ..tensor import Tensor, _default_dtype, int64


def const(x: Any, like: Tensor) -> Tensor:
    """`x` as a tensor; a Python or NumPy scalar takes `like`'s floating dtype (as in PyTorch)."""
    if type(x) is float:  # the common case (`0.5 * t`, `y - t`): skip the isinstance chain
        dt = like.data.dtype
        return Tensor._wrap(np.array(x, dtype=dt if dt.kind == "f" else _default_dtype[0]))
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray) and x.ndim > 0:
        return Tensor(x)
    if like.dtype.kind == "f":
        return Tensor(np.asarray(x, dtype=like.dtype))
    if isinstance(x, float | np.floating):
        return Tensor(np.asarray(x, dtype=_default_dtype[0]))
    if isinstance(x, bool | np.bool_):
        return Tensor(np.asarray(x))
    return Tensor(np.asarray(x, dtype=int64))


def unbroadcast(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum `g` over the dims that broadcasting added or stretched, giving a tensor of `shape`."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axes, keepdim=True).reshape(shape) if axes else g.reshape(shape)


def norm_dims(dim: Any, ndim: int, op: str = "op") -> tuple[int, ...]:
    """`dim` (None, int or sequence) as a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int | np.integer) else tuple(dim)
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
    return tuple(sorted({int(d) % ndim for d in dims})) if ndim else ()  # a 0-d tensor accepts dim 0 and -1


def keep_shape(shape: tuple[int, ...], dims: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the reduced `dims` kept as size 1."""
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def check_broadcast(op: str, a: Tensor, b: Tensor) -> None:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


def cached_constant(cache: dict, key: Hashable, make: Callable[[], np.ndarray]) -> np.ndarray:
    """`cache[key]`, made by `make()` and frozen (read-only) the first time: constants that a hot op needs for
    every batch (np.arange(n), vectors of ones). Batch sizes vary little, but the cache is kept small anyway."""
    arr = cache.get(key)
    if arr is None:
        if len(cache) >= 32:
            cache.clear()
        arr = cache[key] = make()
        arr.flags.writeable = False
    return arr
