"""Convolution and pooling (1-D and 2-D), differentiable to any order.

Shapes are PyTorch's: input (N, C, H, W) or unbatched (C, H, W); weight (C_out, C_in/groups, kH, kW).
The 1-D ops run the 2-D ones on a height of 1.

How convolution is computed (im2col): the padded input is viewed (no copy, `as_strided`) as
all its kH·kW shifted windows, copied once into a matrix `cols` of shape
(groups, C_in/groups·kH·kW, OH·OW·N), and multiplied by the weight matrix: one matrix product
(the bias rides in it as a row of ones in `cols` and a column of the weight matrix).
Backward is two more products (weight: cols·gᵀ; input: Wᵀ·g) and, for the input, the columns
are added back to their windows by looping over the kH·kW kernel offsets (a strided add each).

Memory layout: a conv output is an (N, C, OH, OW) view of memory ordered (C, OH, OW, N), batch
innermost. Later ops keep that layout (pooling allocates its results and gradients like its input),
so window reads and gradient adds run over long contiguous rows. Independent per-offset kernels
of large arrays can run on a small thread pool (opt-in: $CHAINRULE_NUM_THREADS; NumPy releases the GIL).

Every backward rule is itself a recorded op: conv's input gradient (a transposed convolution)
and weight gradient (a correlation of input and gradient) have backward rules made of the same
three ops, and the pooling ops are linear maps recorded with their adjoints, so
`create_graph=True` gives exact higher-order gradients. Without `create_graph` the engine runs the
same rules on NumPy arrays (`np_backward`): no Tensor per intermediate gradient, and conv's bias
gradient comes out of the weight-gradient product (the row of ones kept in cols) instead of a pass over g.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..tensor import Tensor, is_grad_enabled, record

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "conv1d",
    "conv2d",
    "max_pool1d",
    "max_pool2d",
]

Pad2 = tuple[tuple[int, int], tuple[int, int]]


class _Geometry(NamedTuple):
    """Where the windows of a 2-D sliding op lie in the (padded) input."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: Pad2  # ((top, bottom), (left, right)), bottom/right include ceil_mode's extra
    dilation: tuple[int, int]
    out: tuple[int, int]  # (OH, OW)
    in_hw: tuple[int, int]  # (H, W) before padding


_executor: list[ThreadPoolExecutor] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_executor.clear)  # a forked child has no pool threads: make a new pool


def _num_threads() -> int:
    """Threads for the big elementwise kernels: $CHAINRULE_NUM_THREADS, default 1.

    Off by default: measured on 2 cores, the pool threads compete with BLAS's own (spinning) threads
    and a CNN training step got slower (9.4 ms against 6.4 ms, benchmarks/conv_cnn_step.py; again
    6.2 ms against 5.7 ms once freed memory was kept, see chainrule._memory).
    """
    env = os.environ.get("CHAINRULE_NUM_THREADS")
    return max(1, int(env)) if env else 1


def _parallel(tasks: list[Callable[[], Any]], elements: int) -> list[Any]:
    """Run independent NumPy tasks (each touching `elements` values) on a thread pool; NumPy releases the GIL.

    Small tasks run inline: a thread hand-off costs tens of microseconds.
    """
    threads = _num_threads()
    if len(tasks) < 2 or threads < 2 or elements < 1 << 15:
        return [t() for t in tasks]
    if not _executor:
        _executor.append(ThreadPoolExecutor(threads, thread_name_prefix="chainrule"))
    return list(_executor[0].map(lambda t: t(), tasks))


def _pair(v: Any, name: str, op: str) -> tuple[int, int]:
    if isinstance(v, int | np.integer):
        return int(v), int(v)
    t = tuple(int(i) for i in v)
    if len(t) == 1:
        return t[0], t[0]
    if len(t) != 2:
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return t  # type: ignore[return-value]


def _out_size(n: int, k: int, s: int, p0: int, p1: int, d: int, ceil: bool) -> int:
    span = n + p0 + p1 - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= n + p0:  # the last window must start inside the input or left padding
        out -= 1
    return out


def _geometry(
    op: str, hw: tuple[int, int], kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool = False
) -> _Geometry:
    k = _pair(kernel, "kernel_size", op)
    s = _pair(stride if stride is not None and stride != () else k, "stride", op)
    d = _pair(dilation, "dilation", op)
    if min(k) < 1 or min(s) < 1 or min(d) < 1:
        raise ValueError(f"{op}: kernel_size {k}, stride {s} and dilation {d} must be positive")
    if isinstance(padding, str):
        if padding == "valid":
            pad = ((0, 0), (0, 0))
        elif padding == "same":
            if s != (1, 1):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions (stride {s})")
            tot = [d[i] * (k[i] - 1) for i in range(2)]
            pad = ((tot[0] // 2, tot[0] - tot[0] // 2), (tot[1] // 2, tot[1] - tot[1] // 2))  # extra on the right
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        p = _pair(padding, "padding", op)
        if min(p) < 0:
            raise ValueError(f"{op}: padding {p} must be non-negative")
        pad = ((p[0], p[0]), (p[1], p[1]))
    out = tuple(_out_size(hw[i], k[i], s[i], pad[i][0], pad[i][1], d[i], ceil_mode) for i in range(2))
    if min(out) < 1:
        raise ValueError(
            f"{op}: input of spatial size {hw} with padding {pad} is smaller than the kernel "
            f"{k} (dilation {d}); the output would be empty"
        )
    if ceil_mode:  # pad the bottom/right so that the last (partial) window fits
        pad = tuple(
            (pad[i][0], max(pad[i][1], (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - hw[i] - pad[i][0]))
            for i in range(2)
        )
    return _Geometry(k, s, pad, d, out, hw)  # type: ignore[arg-type]


def _full_laid_out_as(like: np.ndarray, shape: tuple[int, ...], value: float | None = 0.0) -> np.ndarray:
    """`value`-filled (None: uninitialised) array of `shape` whose axes lie in memory in the same order as `like`'s.

    Keeping one memory layout through a network keeps elementwise ops on matching strides (fast).
    """
    order = np.argsort([-abs(st) for st in like.strides], kind="stable")
    if value is None:  # uninitialised: the caller writes every element
        make = lambda sh: np.empty(sh, like.dtype)  # noqa: E731
    elif value == 0:
        make = lambda sh: np.zeros(sh, like.dtype)  # noqa: E731
    else:
        make = lambda sh: np.full(sh, value, like.dtype)  # noqa: E731
    if list(order) == list(range(like.ndim)):
        return make(shape)
    return make([shape[i] for i in order]).transpose(np.argsort(order))


def _same_layout(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    """`a` copied, if needed, into `like`'s memory layout, so that ops combining the two run on matching strides."""
    if np.argsort(a.strides, kind="stable").tolist() == np.argsort(like.strides, kind="stable").tolist():
        return a
    out = np.empty_like(like, dtype=a.dtype)  # order="K": like's layout
    np.copyto(out, a)
    return out


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view of `a`'s elements in memory order (`a` must be contiguous in some axis order)."""
    order = np.argsort([-abs(st) for st in a.strides], kind="stable")
    return a.transpose(order).reshape(-1)


def _pad(x: np.ndarray, pad: Pad2, value: float = 0.0) -> np.ndarray:
    (t, b), (l, r) = pad
    if not (t or b or l or r):
        return x
    *lead, h, w = x.shape
    out = _full_laid_out_as(x, (*lead, h + t + b, w + l + r), value)
    out[..., t : t + h, l : l + w] = x
    return out


def _windows(xp: np.ndarray, geo: _Geometry) -> np.ndarray:
    """Read-only view (N, C, kH, kW, OH, OW) of padded `xp`: [..., i, j, p, q] = xp[..., p·sh + i·dh, q·sw + j·dw]."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = geo.kernel, geo.stride, geo.dilation, geo.out
    a, b, c, e = xp.strides
    shape = (xp.shape[0], xp.shape[1], kh, kw, oh, ow)
    return as_strided(xp, shape, (a, b, c * dh, e * dw, c * sh, e * sw), writeable=False)


def _offsets(geo: _Geometry) -> list[tuple[int, tuple[slice, slice]]]:
    """(flat kernel index, slices of the padded input hit by that kernel offset) for every offset."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = geo.kernel, geo.stride, geo.dilation, geo.out
    return [
        (
            i * kw + j,
            (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)),
        )
        for i in range(kh)
        for j in range(kw)
    ]


def _crop(xp: np.ndarray, geo: _Geometry) -> np.ndarray:
    (t, _), (l, _) = geo.pad
    h, w = geo.in_hw
    return xp[..., t : t + h, l : l + w]


def _padded_shape(lead: tuple[int, ...], geo: _Geometry) -> tuple[int, ...]:
    (t, b), (l, r) = geo.pad
    return (*lead, geo.in_hw[0] + t + b, geo.in_hw[1] + l + r)


def _linear_op(name: str, fwd: Callable, adj: Callable, x: Tensor, value: np.ndarray | None = None) -> Tensor:
    """Record the linear map `fwd` applied to `x`; its gradient is the adjoint map `adj` (recorded the same way)."""
    out = fwd(x.data) if value is None else value
    return record(
        name,
        out,
        (x,),
        lambda g: (_linear_op(name + "_backward", adj, fwd, g),),
        saved=(),
        np_backward=lambda g: (adj(g),),  # without create_graph: the adjoint on the NumPy gradient
    )


# ----------------------------------------------------------------------------- convolution kernels (NumPy)


class _ConvSpec(NamedTuple):
    geo: _Geometry
    groups: int
    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]


def _im2col(x: np.ndarray, spec: _ConvSpec, ones_row: bool = False) -> np.ndarray:
    """cols (G, C/G·kH·kW, OH·OW·N): every window of the padded input, laid out for one matrix product.

    The batch index is innermost: the product's output (C_out, OH, OW, N) then keeps the batch innermost,
    which makes the strided window reads and gradient adds of the next layers run over long contiguous rows.
    With `ones_row`, cols gets one more row of ones (G, C/G·kH·kW + 1, OH·OW·N), so that the product
    with the weight matrix extended by the bias column also adds the bias.
    """
    n, c = x.shape[:2]
    g = spec.groups
    (kh, kw), (oh, ow) = spec.geo.kernel, spec.geo.out
    if n > 1 and not x.transpose(1, 2, 3, 0).flags.c_contiguous:
        # batch innermost first (a copy kH·kW times smaller than cols): the window copy then reads contiguous rows
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    win = _windows(_pad(x, spec.geo.pad), spec.geo).reshape(n, g, c // g, kh, kw, oh, ow)
    rows = (c // g) * kh * kw
    full = np.empty((g, rows + ones_row, oh * ow * n), dtype=x.dtype)
    if ones_row:
        full[:, rows] = 1
    cols = full[:, :rows].reshape(g, c // g, kh, kw, oh, ow, n)  # a view: only the leading axes are split
    src = win.transpose(1, 2, 3, 4, 5, 6, 0)
    _parallel([lambda i=i: np.copyto(cols[:, :, i], src[:, :, i]) for i in range(kh)], cols[:, :, 0].size)
    return full


def _g_matrix(g: np.ndarray, groups: int) -> np.ndarray:
    """Output gradient (N, O, OH, OW) as (G, O/G, OH·OW·N) (no copy when it has the conv output's layout)."""
    n, o, oh, ow = g.shape
    return g.transpose(1, 2, 3, 0).reshape(groups, o // groups, oh * ow * n)


def _conv_np(
    x: np.ndarray, w: np.ndarray, spec: _ConvSpec, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """conv(x, w) + bias and the cols of x (for the weight gradient).

    When the bias rides in the product, the returned cols keep their row of ones
    (G, C/G·kH·kW + 1, OH·OW·N): the weight-gradient product then also gives the bias gradient.
    """
    n = x.shape[0]
    o = w.shape[0]
    g = spec.groups
    wm = w.reshape(g, o // g, -1)
    fold = bias is not None and bias.dtype == w.dtype == x.dtype  # the bias rides in the product: no extra pass
    cols = _im2col(x, spec, ones_row=fold)
    if fold:
        wm = np.concatenate([wm, bias.reshape(g, o // g, 1)], axis=2)
    out = np.matmul(wm, cols).reshape(o, *spec.geo.out, n).transpose(3, 0, 1, 2)  # memory (O, OH, OW, N)
    if bias is not None and not fold:
        out += bias.reshape(1, -1, 1, 1)
    return out, cols


def _conv_input_grad_np(g: np.ndarray, w: np.ndarray, spec: _ConvSpec) -> np.ndarray:
    n, c = spec.x_shape[:2]
    o, _, kh, kw = w.shape
    grp = spec.groups
    oh, ow = spec.geo.out
    wt = w.reshape(grp, o // grp, -1).transpose(0, 2, 1)
    dcols = np.matmul(wt, _g_matrix(g, grp)).reshape(c, kh * kw, oh, ow, n)
    gxp = np.zeros(_padded_shape((c,), spec.geo) + (n,), dtype=dcols.dtype)  # (C, Hp, Wp, N)
    offsets = _offsets(spec.geo)

    def add_windows(lo: int, hi: int) -> None:  # overlapping windows: split the work by channel, not by offset
        for k, (sl_h, sl_w) in offsets:
            gxp[lo:hi, sl_h, sl_w] += dcols[lo:hi, k]

    bounds = [0, c // 2, c] if c > 1 else [0, c]
    _parallel([lambda lo=lo, hi=hi: add_windows(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])], dcols.size // 2)
    (t, _), (l, _) = spec.geo.pad
    h, w_ = spec.geo.in_hw
    return gxp[:, t : t + h, l : l + w_].transpose(3, 0, 1, 2)


def _conv_weight_grad_np(x: np.ndarray, g: np.ndarray, spec: _ConvSpec, cols: np.ndarray | None) -> np.ndarray:
    """d<conv(x, w), g>/dw, of shape w_shape."""
    cols = _im2col(x, spec) if cols is None else cols
    return _cols_g_product(cols, g, spec).transpose(0, 2, 1).reshape(spec.w_shape)


def _conv_wb_grad_np(g: np.ndarray, spec: _ConvSpec, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight gradient, bias gradient) from one product, cols carrying its row of ones (see _conv_np)."""
    res = _cols_g_product(cols, g, spec)  # (G, rows + 1, O/G): the last row of each group is the bias gradient
    return res[:, :-1].transpose(0, 2, 1).reshape(spec.w_shape), res[:, -1].reshape(-1)


def _cols_g_product(cols: np.ndarray, g: np.ndarray, spec: _ConvSpec) -> np.ndarray:
    """cols (G, rows, K) times the gradient as (G, K, O/G): (G, rows, O/G)."""
    gm = _g_matrix(g, spec.groups)
    grp, rows, k = cols.shape
    oh = spec.geo.out[0]
    if rows * gm.shape[1] <= 1024 and oh > 1 and gm.strides[2] == cols.strides[2] == cols.itemsize:
        # A tiny result over a very long contraction runs far below BLAS's peak (about 2x slower measured for
        # 9x16 over 43264): contract OH chunks as one batched product and add the OH partial results.
        cc = cols.reshape(grp, rows, oh, k // oh).transpose(0, 2, 1, 3)  # (G, OH, rows, K/OH), no copy
        gc = gm.reshape(grp, gm.shape[1], oh, k // oh).transpose(0, 2, 3, 1)  # (G, OH, K/OH, O/G)
        return np.matmul(cc, gc).sum(1)
    # cols · gᵀ rather than g · colsᵀ: the long N·OH·OW axis is contracted as BLAS does it fastest
    return np.matmul(cols, gm.transpose(0, 2, 1))


# ----------------------------------------------------------------------------- convolution ops (recorded)


def _conv(x: Tensor, w: Tensor, spec: _ConvSpec, bias: Tensor | None = None) -> Tensor:
    """Convolution (plus bias) as a recorded op; without bias also the derivative of the two gradient ops."""
    out, cols_full = _conv_np(x.data, w.data, spec, None if bias is None else bias.data)
    rows = spec.w_shape[1] * spec.w_shape[2] * spec.w_shape[3]
    folded = cols_full.shape[1] != rows
    cols = cols_full[:, :rows] if folded else cols_full

    def backward(g: Tensor) -> tuple:
        gx = _conv_input_grad(g, w, spec) if x.requires_grad else None
        gw = _conv_weight_grad(x, g, spec, cols) if w.requires_grad else None
        gb = _bias_grad(g) if bias is not None and bias.requires_grad else None
        return gx, gw, gb

    def np_backward(g: np.ndarray) -> tuple:  # without create_graph: NumPy only, the bias gradient rides along
        gx = _conv_input_grad_np(g, w.data, spec) if x.requires_grad else None
        gw = gb = None
        want_b = bias is not None and bias.requires_grad
        if w.requires_grad and want_b and folded:
            gw, gb = _conv_wb_grad_np(g, spec, cols_full)
        else:
            gw = _conv_weight_grad_np(x.data, g, spec, cols) if w.requires_grad else None
            gb = _sum_but_channels(g) if want_b else None
        return gx, gw, gb

    parents = (x, w) if bias is None else (x, w, bias)
    return record("conv2d", out, parents, backward, saved=(x, w), np_backward=np_backward)


def _sum_but_channels(v: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C,): sum over all but the channel axis."""
    m = v.transpose(1, 2, 3, 0)
    if m.flags.c_contiguous:  # the conv output layout: a product with ones is several times faster than np.sum
        return m.reshape(m.shape[0], -1) @ np.ones(m[0].size, dtype=v.dtype)
    return v.sum((0, 2, 3))


def _bias_grad(g: Tensor) -> Tensor:
    """g.sum((0, 2, 3)), recorded as a linear map whose adjoint spreads a (C,) gradient over g's shape."""
    return _linear_op(
        "conv2d_bias_grad", _sum_but_channels, lambda b: np.broadcast_to(b.reshape(1, -1, 1, 1), g.shape).copy(), g
    )


def _conv_input_grad(g: Tensor, w: Tensor, spec: _ConvSpec) -> Tensor:
    """d<conv(x, w), g>/dx: a transposed convolution of g by w. Bilinear in (g, w)."""

    def backward(gg: Tensor) -> tuple:
        return (
            _conv(gg, w, spec) if g.requires_grad else None,
            _conv_weight_grad(gg, g, spec) if w.requires_grad else None,
        )

    return record("conv2d_input_grad", _conv_input_grad_np(g.data, w.data, spec), (g, w), backward)


def _conv_weight_grad(x: Tensor, g: Tensor, spec: _ConvSpec, cols: np.ndarray | None = None) -> Tensor:
    """d<conv(x, w), g>/dw: the correlation of x with g. Bilinear in (x, g)."""

    def backward(gg: Tensor) -> tuple:
        return (
            _conv_input_grad(g, gg, spec) if x.requires_grad else None,
            _conv(x, gg, spec) if g.requires_grad else None,
        )

    return record("conv2d_weight_grad", _conv_weight_grad_np(x.data, g.data, spec, cols), (x, g), backward)


def _check_conv(op: str, x: Tensor, w: Tensor, bias: Tensor | None, groups: int, nd: int) -> None:
    if w.ndim != nd + 2:
        raise ValueError(f"{op}: weight must have {nd + 2} dims (out, in/groups, kernel...), got shape {w.shape}")
    if x.ndim != nd + 2:
        raise ValueError(f"{op}: input must have {nd + 1} (unbatched) or {nd + 2} dims, got shape {x.shape}")
    if groups < 1 or x.shape[1] % groups or w.shape[0] % groups:
        raise ValueError(
            f"{op}: groups={groups} must divide both the input channels ({x.shape[1]}) and output channels "
            f"({w.shape[0]})"
        )
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(
            f"{op}: input has {x.shape[1]} channels (shape {x.shape}) but the weight of shape {w.shape} with "
            f"groups={groups} expects {w.shape[1] * groups}"
        )
    if bias is not None and bias.shape != (w.shape[0],):
        raise ValueError(f"{op}: bias must have shape ({w.shape[0]},), got {bias.shape}")
    dts = {x.dtype, w.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dts) > 1:
        raise TypeError(f"{op}: input, weight and bias must have the same dtype, got {sorted(map(str, dts))}")


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation (PyTorch's conv2d).

    input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in/groups, kH, kW); bias (C_out,).
    Returns (N, C_out, OH, OW) with OH = floor((H + 2·pad - dilation·(kH - 1) - 1) / stride) + 1.
    padding: int, pair, 'valid' (none) or 'same' (output size = input size, stride 1 only).
    """
    return _conv_nd("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
) -> Tensor:
    """1-D cross-correlation. input (N, C_in, L) or (C_in, L); weight (C_out, C_in/groups, k) -> (N, C_out, L_out)."""
    return _conv_nd("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def _one(v: Any) -> Any:
    """A 1-D argument (int, 1-tuple or str) as the 2-D one with height 1."""
    if isinstance(v, str):
        return v
    v = (int(v),) if isinstance(v, int | np.integer) else tuple(v)
    if len(v) != 1:
        raise ValueError(f"a 1-D op takes an int or a 1-tuple, got {v!r}")
    return (1, v[0])


def _conv_nd(
    op: str, nd: int, x: Tensor, w: Tensor, bias: Tensor | None, stride: Any, padding: Any, dilation: Any, groups: int
) -> Tensor:
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x.unsqueeze(0)
    _check_conv(op, x, w, bias, groups, nd)
    if nd == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, dilation = _one(stride), _one(dilation)
        padding = padding if isinstance(padding, str) else (0, _one(padding)[1])
    geo = _geometry(op, x.shape[2:], w.shape[2:], stride, padding, dilation)
    spec = _ConvSpec(geo, groups, x.shape, w.shape)
    out = _conv(x, w, spec, bias)
    if nd == 1:
        out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out


# ----------------------------------------------------------------------------- pooling


def _pool_input(op: str, x: Tensor, nd: int) -> tuple[Tensor, bool]:
    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{op}: input must have {nd + 1} (unbatched) or {nd + 2} dims, got shape {x.shape}")
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x.unsqueeze(0)
    return (x.unsqueeze(2) if nd == 1 else x), unbatched


def _pool_output(out: Tensor, nd: int, unbatched: bool) -> Tensor:
    if nd == 1:
        out = out.squeeze(2)
    return out.squeeze(0) if unbatched else out


def _check_pool_padding(op: str, geo: _Geometry, padding: Any) -> None:
    p = _pair(padding, "padding", op)
    if p[0] * 2 > geo.kernel[0] or p[1] * 2 > geo.kernel[1]:
        raise ValueError(f"{op}: padding {p} must be at most half of the kernel size {geo.kernel}")


def _max_pool(op: str, x: Tensor, geo: _Geometry, return_indices: bool) -> Any:
    n, c = x.shape[:2]
    xp = _pad(x.data, geo.pad, -np.inf)
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    offsets = _offsets(geo)
    views = [xp[(..., *sl)] for _, sl in offsets]

    def running_max(vs: list[np.ndarray]) -> np.ndarray:
        m = vs[0].copy() if len(vs) == 1 else np.maximum(vs[0], vs[1])
        for v in vs[2:]:
            np.maximum(m, v, out=m)
        return m

    # 4 offsets (2x2 windows): the first maximum is found as a tournament of the pairs (0, 1), (2, 3)
    # and of their maxima, three comparisons instead of four equality tests and their tie-breaking
    pairwise = len(views) == 4 and x.requires_grad and is_grad_enabled()
    hi = pair_wins = None
    if pairwise and _num_threads() == 1:
        # the second of a pair is its first maximum where the pair's maximum exceeds the first (NaN: neither):
        # one strided read instead of two, while the pair's values are still in cache
        best = np.maximum(views[0], views[1])
        b1 = best > views[0]
        rest = [np.maximum(views[2], views[3])]
        pair_wins = (b1, rest[0] > views[2])
    else:
        half = len(views) // 2
        parts = [views] if half < 2 else [views[:half], views[half:]]
        best, *rest = _parallel([lambda vs=vs: running_max(vs) for vs in parts], views[0].size)
        if pairwise:
            pair_wins = (views[1] > views[0], views[3] > views[2])
    if pairwise:
        hi = rest[0] > best  # the second pair holds the first maximum
    for r in rest:
        np.maximum(best, r, out=best)
    shape_p = _padded_shape((n, c), geo)
    disjoint = sh > dh * (kh - 1) and sw > dw * (kw - 1)  # windows do not overlap: scatter can write, not add
    # windows tile the padded input exactly (e.g. 2x2 pooling of an even size): the scatter writes every element
    tiled = (kh, kw) == (sh, sw) and (dh, dw) == (1, 1) and shape_p[2:] == (geo.out[0] * sh, geo.out[1] * sw)
    masks: list[np.ndarray] = []

    def selection() -> list[np.ndarray]:
        """One boolean mask per kernel offset marking where it holds its window's first maximum, or its last NaN
        in a window holding NaN (PyTorch's rule: a value is taken if it exceeds the one held or is NaN)."""
        if masks:
            return masks
        # a NaN anywhere makes the maximum NaN: checked once on the (smaller) pooled map, then the slow exact path
        with np.errstate(invalid="ignore"):
            has_nan = best.dtype.kind in "fc" and bool(np.isnan(np.maximum.reduce(best, axis=None)))
        if hi is not None and not has_nan:
            b1, b3 = pair_wins  # type: ignore[misc]
            f1, f3, fhi = _flat(b1), _flat(b3), _flat(hi)
            if np.may_share_memory(f1, b1) and np.may_share_memory(f3, b3) and np.may_share_memory(fhi, hi):
                s0, s3 = np.empty_like(b1), np.empty_like(b1)  # b1's layout: their flat views line up
                f0, fs3 = _flat(s0), _flat(s3)
                np.logical_or(f1, fhi, out=f0)
                np.logical_not(f0, out=f0)
                np.logical_and(f3, fhi, out=fs3)
                np.greater(f1, fhi, out=f1)  # b1 and not hi
                np.greater(fhi, f3, out=f3)  # hi and not b3
                masks.extend((s0, b1, b3, s3))
        if not masks:
            taken = None
            equal = _parallel([lambda v=v: v == best for v in views], best.size)
            for i, sel in enumerate(equal):
                flat = _flat(sel)  # 1-D logical ops are several times faster than on transposed 4-D arrays
                if not np.may_share_memory(flat, sel):
                    sel = np.ascontiguousarray(sel)
                    flat = sel.reshape(-1)
                if taken is not None:
                    np.greater(flat, taken, out=flat)  # sel and not yet taken
                if taken is None:
                    taken = flat.copy() if len(views) > 1 else flat
                elif i < len(views) - 1:
                    np.logical_or(taken, flat, out=taken)
                masks.append(sel)
            if has_nan:
                in_nan_window, taken_nan = np.isnan(best), np.zeros(best.shape, bool)
                for v, sel in zip(reversed(views), reversed(masks)):  # the last NaN of each NaN window
                    nan_here = np.isnan(v) & in_nan_window & ~taken_nan
                    taken_nan |= nan_here
                    sel |= nan_here
        return masks

    def scatter(g: np.ndarray) -> np.ndarray:  # adjoint: each output's gradient goes to its argmax
        g = _same_layout(g, best)
        gxp = _full_laid_out_as(best, shape_p, None if tiled else 0.0)
        if disjoint:
            pairs = zip(offsets, selection())
            _parallel([lambda sl=sl, m=m: np.multiply(g, m, out=gxp[(..., *sl)]) for (_, sl), m in pairs], g.size)
        else:
            for (_, sl), sel in zip(offsets, selection()):
                gxp[(..., *sl)] += g * sel
        return _crop(gxp, geo)

    def gather(v: np.ndarray) -> np.ndarray:  # the forward map with the argmax held fixed
        vp = _pad(v, geo.pad)
        out = np.zeros(best.shape, dtype=v.dtype)
        for (_, sl), sel in zip(offsets, selection()):
            np.copyto(out, vp[(..., *sl)], where=sel)
        return out

    out = _linear_op(op, gather, scatter, x, value=best)
    if not return_indices:
        return out
    arg = sum(k * m.astype(np.int64) for k, m in enumerate(selection()))
    ((t, _), (l, _)), oh, ow = geo.pad, *geo.out
    row = np.arange(oh).reshape(-1, 1) * sh - t + (arg // kw) * dh
    col = np.arange(ow) * sw - l + (arg % kw) * dw
    return out, Tensor((row * geo.in_hw[1] + col).astype(np.int64))


def max_pool2d(
    input: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """Largest value of each window. input (N, C, H, W) or (C, H, W); stride defaults to kernel_size.

    The gradient goes to the first maximum of each window (as PyTorch). With `return_indices`,
    also returns the flat index (h·W + w) of each maximum in its input plane.
    """
    x, unbatched = _pool_input("max_pool2d", input, 2)
    geo = _geometry("max_pool2d", x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    _check_pool_padding("max_pool2d", geo, padding)
    res = _max_pool("max_pool2d", x, geo, return_indices)
    if return_indices:
        return _pool_output(res[0], 2, unbatched), _pool_output(res[1], 2, unbatched)
    return _pool_output(res, 2, unbatched)


def max_pool1d(
    input: Tensor,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    dilation: int | tuple[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """Largest value of each window. input (N, C, L) or (C, L); stride defaults to kernel_size."""
    x, unbatched = _pool_input("max_pool1d", input, 1)
    stride = _one(stride) if stride is not None and stride != () else None
    k = _one(kernel_size)
    geo = _geometry("max_pool1d", x.shape[2:], k, stride, (0, _one(padding)[1]), _one(dilation), ceil_mode)
    _check_pool_padding("max_pool1d", geo, (0, _one(padding)[1]))
    res = _max_pool("max_pool1d", x, geo, return_indices)
    if return_indices:
        return _pool_output(res[0], 1, unbatched), _pool_output(res[1], 1, unbatched)
    return _pool_output(res, 1, unbatched)


def _divisor(geo: _Geometry, padding: tuple[int, int], count_include_pad: bool) -> np.ndarray:
    """(OH, OW) number of elements each window averages over (PyTorch's rule, separable in h and w)."""
    counts = []
    for i in range(2):
        start = np.arange(geo.out[i]) * geo.stride[i] - padding[i]
        end = np.minimum(start + geo.kernel[i], geo.in_hw[i] + padding[i])
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, geo.in_hw[i])
        counts.append(end - start)
    return np.outer(counts[0], counts[1])


def _avg_pool(
    op: str, x: Tensor, geo: _Geometry, padding: tuple[int, int], count_include_pad: bool, divisor_override: Any
) -> Tensor:
    n, c = x.shape[:2]
    if divisor_override is not None:
        scale = np.asarray(1.0 / divisor_override, dtype=x.dtype)
    else:
        scale = (1.0 / _divisor(geo, padding, count_include_pad)).astype(x.dtype)
    offsets = _offsets(geo)
    shape_p = _padded_shape((n, c), geo)

    def pool(v: np.ndarray) -> np.ndarray:
        vp = _pad(v, geo.pad)
        out = _full_laid_out_as(vp, (n, c, *geo.out))
        for _, sl in offsets:
            out += vp[(..., *sl)]
        out *= scale
        return out

    def spread(g: np.ndarray) -> np.ndarray:
        gs = g * scale
        gxp = _full_laid_out_as(gs, shape_p)
        for _, sl in offsets:
            gxp[(..., *sl)] += gs
        return _crop(gxp, geo)

    return _linear_op(op, pool, spread, x)


def avg_pool2d(
    input: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Mean of each window. input (N, C, H, W) or (C, H, W); stride defaults to kernel_size.

    `count_include_pad` counts the zero padding in the divisor; `divisor_override` replaces it.
    """
    x, unbatched = _pool_input("avg_pool2d", input, 2)
    geo = _geometry("avg_pool2d", x.shape[2:], kernel_size, stride, padding, 1, ceil_mode)
    _check_pool_padding("avg_pool2d", geo, padding)
    out = _avg_pool("avg_pool2d", x, geo, _pair(padding, "padding", "avg_pool2d"), count_include_pad, divisor_override)
    return _pool_output(out, 2, unbatched)


def avg_pool1d(
    input: Tensor,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """Mean of each window. input (N, C, L) or (C, L); stride defaults to kernel_size."""
    x, unbatched = _pool_input("avg_pool1d", input, 1)
    stride = _one(stride) if stride is not None and stride != () else None
    pad = (0, _one(padding)[1])
    geo = _geometry("avg_pool1d", x.shape[2:], _one(kernel_size), stride, pad, 1, ceil_mode)
    _check_pool_padding("avg_pool1d", geo, pad)
    return _pool_output(_avg_pool("avg_pool1d", x, geo, pad, count_include_pad, None), 1, unbatched)


def _adaptive_matrix(n_in: int, n_out: int, dtype: np.dtype) -> np.ndarray:
    """(n_out, n_in) averaging matrix of PyTorch's adaptive windows [floor(i·n/m), ceil((i+1)·n/m))."""
    m = np.zeros((n_out, n_in), dtype=dtype)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool2d(input: Tensor, output_size: int | tuple[int | None, int | None]) -> Tensor:
    """Mean over windows chosen so that the output is (N, C, *output_size); None keeps that input size.

    The windows are rectangles, so the op is two small matrix products: A_h · x · A_wᵀ.
    """
    x, unbatched = _pool_input("adaptive_avg_pool2d", input, 2)
    h, w = x.shape[2:]
    size = (output_size, output_size) if isinstance(output_size, int | np.integer) else tuple(output_size)
    if len(size) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    oh, ow = h if size[0] is None else int(size[0]), w if size[1] is None else int(size[1])
    if oh < 1 or ow < 1 or min(h, w) < 1:
        raise ValueError(f"adaptive_avg_pool2d: output size {(oh, ow)} and input {x.shape} must be non-empty")
    out = x
    if ow != w:
        out = out @ Tensor(_adaptive_matrix(w, ow, x.dtype).T)
    if oh != h:
        out = Tensor(_adaptive_matrix(h, oh, x.dtype)) @ out
    return _pool_output(out, 2, unbatched)


def adaptive_avg_pool1d(input: Tensor, output_size: int | Sequence[int]) -> Tensor:
    """input (N, C, L) or (C, L) -> (N, C, output_size): mean over PyTorch's adaptive windows."""
    size = output_size if isinstance(output_size, int | np.integer) else tuple(output_size)[0]
    x, unbatched = _pool_input("adaptive_avg_pool1d", input, 1)
    out = adaptive_avg_pool2d(x, (1, size))
    return _pool_output(out, 1, unbatched)
