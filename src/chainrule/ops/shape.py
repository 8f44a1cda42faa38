"""Shape and indexing ops: reshape, transpose, expand, cat/stack, pad, flip, getitem, gather.

Most are views in NumPy; their gradients move `g` back to the input's layout.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tensor import Tensor, record
from ._util import norm_dims, unbroadcast


def _sizes(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], Sequence | np.ndarray):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(a: Tensor, *shape: int) -> Tensor:
    shape = _sizes(shape)
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ValueError(
            f"reshape: cannot reshape a tensor of shape {a.shape} ({a.numel()} elements) into {shape}"
        ) from None
    return record("reshape", out, (a,), lambda g: (g.reshape(a.shape),), saved=())


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if a.ndim == 0:
        return a.reshape(1)
    s, e = start_dim % a.ndim, end_dim % a.ndim
    return a.reshape(a.shape[:s] + (-1,) + a.shape[e + 1 :]) if s <= e else a


def squeeze(a: Tensor, dim: Any = None) -> Tensor:
    if dim is None:
        return a.reshape(tuple(n for n in a.shape if n != 1))
    dims = norm_dims(dim, a.ndim, "squeeze")
    return a.reshape(tuple(n for i, n in enumerate(a.shape) if not (i in dims and n == 1)))


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    if not -a.ndim - 1 <= dim <= a.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {a.ndim} dims")
    dim = dim % (a.ndim + 1)
    return a.reshape(a.shape[:dim] + (1,) + a.shape[dim:])


def transpose(a: Tensor, dim0: int, dim1: int) -> Tensor:
    if a.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return a
    return record("transpose", np.swapaxes(a.data, dim0, dim1), (a,), lambda g: (g.transpose(dim0, dim1),), saved=())


def permute(a: Tensor, *dims: int) -> Tensor:
    dims = _sizes(dims)
    if sorted(d % builtins.max(a.ndim, 1) for d in dims) != list(range(a.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {a.ndim} dims of shape {a.shape}")
    inverse = tuple(np.argsort([d % a.ndim for d in dims]).tolist())
    return record("permute", np.transpose(a.data, dims), (a,), lambda g: (g.permute(inverse),), saved=())


def expand(a: Tensor, *sizes: int) -> Tensor:
    sizes = _sizes(sizes)
    lead = len(sizes) - a.ndim
    if lead < 0:
        raise ValueError(f"expand: cannot expand shape {a.shape} to fewer dims {sizes}")
    shape = tuple(a.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    return broadcast_to(a, shape)


def broadcast_to(a: Tensor, shape: Sequence[int]) -> Tensor:
    shape = tuple(shape)
    if shape == a.shape:
        return a
    try:
        out = np.broadcast_to(a.data, shape)
    except ValueError:
        raise ValueError(f"expand: shape {a.shape} cannot be broadcast to {shape}") from None
    return record("expand", out, (a,), lambda g: (unbroadcast(g, a.shape),), saved=())


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    try:
        out = np.concatenate([t.data for t in tensors], axis=dim)
    except ValueError:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"cat: shapes {shapes} differ outside dim {dim}") from None
    ax = dim % out.ndim
    bounds = np.cumsum([0] + [t.shape[ax] for t in tensors])

    def backward(g: Tensor) -> tuple[Tensor, ...]:
        lead = (slice(None),) * ax
        return tuple(g[lead + (slice(int(lo), int(hi)),)] for lo, hi in zip(bounds[:-1], bounds[1:]))

    return record("cat", out, tuple(tensors), backward, saved=())


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {[t.shape for t in tensors]}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)


def split(a: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    n = a.shape[dim]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        sizes = [builtins.min(step, n - i) for i in range(0, n, step)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not add up to the size {n} of dim {dim}")
    lead = (slice(None),) * (dim % a.ndim)
    starts = np.cumsum([0] + sizes)
    return tuple(a[lead + (slice(int(s), int(s + k)),)] for s, k in zip(starts, sizes))


def chunk(a: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    n = a.shape[dim]
    return split(a, -(-n // chunks), dim)


def unbind(a: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    lead = (slice(None),) * (dim % a.ndim)
    return tuple(a[lead + (i,)] for i in range(a.shape[dim]))


def pad(a: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad the last len(pad)//2 dims: pad = (last_left, last_right, prev_left, prev_right, ...)."""
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > a.ndim:
        raise ValueError(f"pad: {tuple(pad)} must hold a (left, right) pair for at most {a.ndim} dims")
    if builtins.min(pad, default=0) < 0:
        raise ValueError(f"pad: negative padding {tuple(pad)} is not supported")
    widths = [(0, 0)] * a.ndim
    for i in range(len(pad) // 2):
        widths[a.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    out = np.pad(a.data, widths, mode="constant", constant_values=value)
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
    return record("pad", out, (a,), lambda g: (g[inner],), saved=())


def flip(a: Tensor, dims: Any) -> Tensor:
    dims = norm_dims(dims, a.ndim, "flip")
    return record("flip", np.flip(a.data, dims), (a,), lambda g: (g.flip(dims),), saved=())


# ----------------------------------------------------------------------------- indexing


def _index(index: Any) -> Any:
    """A Tensor, list or tuple index as NumPy understands it."""
    if isinstance(index, Tensor):  # a 0-d integer tensor acts as an int (as PyTorch)
        return int(index.data) if index.ndim == 0 and index.dtype.kind in "iu" else index.data
    if isinstance(index, list):
        return np.asarray(index) if index else np.zeros(0, np.int64)
    if isinstance(index, tuple):
        return tuple(_index(i) for i in index)
    return index


def _is_basic(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, int | slice | np.integer) or i is None or i is Ellipsis for i in items)


def _split_ints(index: tuple) -> tuple[tuple, tuple]:
    """(integers, the rest) of an index mixing integers and arrays, applied one after the other.

    PyTorch selects with integers first; NumPy treats them as arrays, which can move the result's dims.
    """
    first, rest = [], []
    for i in index:
        if isinstance(i, int | np.integer) and not isinstance(i, bool):
            first.append(i)
        elif i is None:
            rest.append(i)
        elif i is Ellipsis or isinstance(i, slice):
            first.append(slice(None) if i is not Ellipsis else i)
            rest.append(i)
        else:  # an array; a boolean mask covers mask.ndim dims
            first.extend([slice(None)] * (np.ndim(i) if np.asarray(i).dtype == bool else 1))
            rest.append(i)
    return tuple(first), tuple(rest)


def getitem(a: Tensor, index: Any) -> Tensor:
    index = _index(index)
    if isinstance(index, tuple) and not _is_basic(index):
        first, rest = _split_ints(index)
        if len(rest) < len(index):
            return getitem(getitem(a, first), rest)
    try:
        out = a.data[index]
    except IndexError as e:
        raise IndexError(f"index into a tensor of shape {a.shape}: {e}") from None
    basic = _is_basic(index)
    if basic:
        out = out if isinstance(out, np.ndarray) else np.asarray(out)
    return record("getitem", out, (a,), lambda g: (index_add_to(g, index, a.shape, basic),), saved=())


def index_add_to(g: Tensor, index: Any, shape: tuple[int, ...], basic: bool = False) -> Tensor:
    """Zeros of `shape` with `g` added at `index`; repeated indices accumulate. The adjoint of getitem."""
    out = np.zeros(shape, dtype=g.dtype)
    if basic:
        out[index] = g.data
    else:
        np.add.at(out, index, g.data)
    return record("index_add", out, (g,), lambda gg: (gg[index],), saved=())


def _gather_index(dim: int, index: np.ndarray) -> tuple[np.ndarray, ...]:
    """Full coordinate arrays selecting index[...] along `dim` and the position elsewhere."""
    grids = list(np.indices(index.shape, sparse=True))
    grids[dim] = index
    return tuple(grids)


def gather(a: Tensor, dim: int, index: Tensor) -> Tensor:
    """out[i][j][k] = a[i][index[i][j][k]][k] for dim = 1 (as torch.gather)."""
    idx = index.data if isinstance(index, Tensor) else np.asarray(index)
    if idx.ndim != a.ndim:
        raise ValueError(f"gather: index has {idx.ndim} dims but the input has {a.ndim} (shape {a.shape})")
    if a.ndim == 0:
        return gather(a.reshape(1), 0, idx.reshape(1)).reshape(())
    dim = dim % a.ndim
    if idx.size and (idx.min() < -a.shape[dim] or idx.max() >= a.shape[dim]):
        raise IndexError(f"gather: index out of range for dim {dim} of size {a.shape[dim]}")
    coords = _gather_index(dim, idx)
    return record("gather", a.data[coords], (a,), lambda g: (index_add_to(g, coords, a.shape),), saved=())


def index_select(a: Tensor, dim: int, index: Tensor) -> Tensor:
    idx = index.data if isinstance(index, Tensor) else np.asarray(index)
    if idx.ndim != 1:
        raise ValueError(f"index_select: index must be 1-D, got shape {idx.shape}")
    return getitem(a, (slice(None),) * (dim % a.ndim) + (idx,))
