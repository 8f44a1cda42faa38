"""Elementwise arithmetic, activations and matrix products.

Each op computes its value with NumPy and returns `record(name, value, parents, backward)`;
`backward(g)` maps d(loss)/d(output) to d(loss)/d(each parent) with Tensor ops, so that
it can itself be differentiated (`create_graph=True`). Most ops also give `np_backward`, the
same rule on NumPy values, which the engine uses when it records nothing (see `record`). The ops
that scalar models use most (add, sub, mul, pow 2, sigmoid) pass one function as both, telling the
cases apart by the type of g: one closure less per op is 5% of a scalar training step.

Scalar models (the reference example) are fast because of one idiom: `arr[()]` is a 0-d array's value as
a NumPy scalar, and arithmetic on NumPy scalars gives the same IEEE result as a ufunc on 0-d arrays at a
tenth of the cost (for an n-d array `arr[()]` is the array itself, as a view).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .._blas import matmul as _mm  # small products on one BLAS thread
from ..tensor import Tensor, _GradMode, record
from ._util import cached_constant, check_broadcast, const, unbroadcast

# ----------------------------------------------------------------------------- binary, broadcasting


_SCALAR_FLOATS = frozenset((np.float32, np.float64))


def _binary(op: str, fn: Any, a: Any, b: Any, scalar_fn: Any = None) -> tuple[Tensor, Tensor, np.ndarray]:
    """(a, b, fn(a, b)) with constants made tensors; `scalar_fn` (an `operator` function computing the same
    IEEE operation) is used for two 0-d operands of one float dtype: see the module docstring."""
    if not isinstance(a, Tensor):
        a = const(a, b)
    elif not isinstance(b, Tensor):
        b = const(b, a)
    ad, bd = a.data, b.data
    if scalar_fn is not None and not ad.ndim and not bd.ndim:
        x, y = ad[()], bd[()]
        if type(x) is type(y) and type(x) in _SCALAR_FLOATS:
            return a, b, np.asarray(scalar_fn(x, y))
    try:
        out = fn(ad, bd)
    except ValueError:
        check_broadcast(op, a, b)
        raise
    da, db = ad.dtype, bd.dtype
    if da is not db and (da.kind == "f") != (db.kind == "f"):  # int op float: the float's dtype, as PyTorch
        out = out.astype(da if da.kind == "f" else db, copy=False)
    return a, b, out


def add(a: Any, b: Any) -> Tensor:
    a, b, out = _binary("add", np.add, a, b, operator.add)

    def backward(g: Any) -> tuple:
        if isinstance(g, Tensor):
            return unbroadcast(g, a.shape), unbroadcast(g, b.shape)
        return g, g

    return record("add", out, (a, b), backward, saved=(), np_backward=backward)


def sub(a: Any, b: Any) -> Tensor:
    a, b, out = _binary("sub", np.subtract, a, b, operator.sub)

    def backward(g: Any) -> tuple:
        if isinstance(g, Tensor):
            return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)
        return g, (-g if b.requires_grad else None)

    return record("sub", out, (a, b), backward, saved=(), np_backward=backward)


def mul(a: Any, b: Any) -> Tensor:
    a, b, out = _binary("mul", np.multiply, a, b, operator.mul)

    def backward(g: Any) -> tuple:  # both rules: see the module docstring
        if isinstance(g, Tensor):
            return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)
        return (g * b.data[()] if a.requires_grad else None), (g * a.data[()] if b.requires_grad else None)

    return record("mul", out, (a, b), backward, np_backward=backward)


def div(a: Any, b: Any) -> Tensor:
    a, b, out = _binary("div", np.true_divide, a, b, operator.truediv)
    if a.dtype.kind != "f" and b.dtype.kind != "f":  # int / int: the default float dtype, as PyTorch
        from ..tensor import get_default_dtype

        out = out.astype(get_default_dtype(), copy=False)
    return record(
        "div",
        out,
        (a, b),
        lambda g: (
            unbroadcast(g / b, a.shape) if a.requires_grad else None,
            unbroadcast(-g * a / (b * b), b.shape) if b.requires_grad else None,
        ),
        np_backward=lambda g: (
            g / b.data[()] if a.requires_grad else None,
            -g * a.data[()] / (b.data[()] * b.data[()]) if b.requires_grad else None,
        ),
    )


def pow(a: Any, b: Any) -> Tensor:
    """a ** b. d/da = b·a^(b-1); d/db = a^b·ln(a) (taken as 0 where a = 0 and b >= 0, as PyTorch)."""
    if not isinstance(b, Tensor) and isinstance(a, Tensor):  # the common case: a constant exponent
        c = float(b) if not isinstance(b, int) else b
        if c == 2:  # x * x is what NumPy's `arr ** 2` computes (np.square); on a float scalar it is 10x cheaper
            x = a.data[()]
            out = np.asarray(x * x) if type(x) in _SCALAR_FLOATS else a.data**c

            def backward(g: Any) -> tuple:
                return (g * 2.0 * a,) if isinstance(g, Tensor) else (g * 2.0 * a.data[()],)

            backward.exponent = c  # the constant exponent, for readers of the graph (chainrule.capture)
            return record("pow", out, (a,), backward, np_backward=backward)
        out = a.data**c
        if c == 0:

            def zero(g: Any) -> tuple:
                return (g * 0.0,)

            zero.exponent = c
            return record("pow", out, (a,), zero, saved=(), np_backward=zero)

        def power(g: Tensor) -> tuple:
            return (g * c * a ** (c - 1),)

        power.exponent = c
        # `a.data ** k` (not a scalar's `** k`) in np_backward: the same special cases (k = 2, 0.5...) as Tensor pow
        return record("pow", out, (a,), power, np_backward=lambda g: (g * c * a.data ** (c - 1),))
    a, b, out = _binary("pow", np.power, a, b)

    def backward(g: Tensor) -> tuple[Tensor | None, Tensor | None]:
        ga = unbroadcast(where(b.data == 0, 0.0, g * b * a ** (b - 1)), a.shape) if a.requires_grad else None
        gb = None
        if b.requires_grad:
            safe_log = where(a.data == 0, 0.0, Tensor(np.log(np.where(a.data == 0, 1, a.data))))
            if a.requires_grad:  # keep the log's dependence on a for higher-order gradients
                safe_log = where(a.data == 0, 0.0, log(where(a.data == 0, 1.0, a)))
            gb = unbroadcast(g * a**b * safe_log, b.shape)
        return ga, gb

    return record("pow", out, (a, b), backward)


def matmul(a: Any, b: Any) -> Tensor:
    """Matrix product with NumPy/PyTorch rules: 1-D operands are promoted and squeezed, batch dims broadcast."""
    a = a if isinstance(a, Tensor) else const(a, b)
    b = b if isinstance(b, Tensor) else const(b, a)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dim, got shapes {a.shape} and {b.shape}")
    try:
        out = _mm(a.data, b.data)
    except ValueError:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned") from None

    def backward(g: Tensor) -> tuple[Tensor, Tensor]:
        if a.ndim == 2 and b.ndim == 2:
            return (g @ b.mT if a.requires_grad else None), (a.mT @ g if b.requires_grad else None)
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        g2 = g.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = unbroadcast(g2 @ b2.mT, a2.shape).reshape(a.shape) if a.requires_grad else None
        gb = unbroadcast(a2.mT @ g2, b2.shape).reshape(b.shape) if b.requires_grad else None
        return ga, gb

    return record("matmul", out, (a, b), backward)


_ONES: dict[tuple[int, str], np.ndarray] = {}  # read-only vectors of ones for _column_sums, by (length, dtype)


def _column_sums(g: np.ndarray) -> np.ndarray:
    """g.sum(0) of a 2-D float array; a column-major g as one matrix-vector product (NumPy's reduction
    along contiguous columns is ~4x slower)."""
    if g.flags.c_contiguous or g.dtype.kind != "f" or g.dtype.itemsize < 4:
        return g.sum(0)
    ones = cached_constant(_ONES, (g.shape[0], g.dtype.str), lambda: np.ones(g.shape[0], g.dtype))
    return ones @ g


def _linear_check(x: Tensor, weight: Tensor) -> None:
    if x.data.shape[-1:] != weight.data.shape[1:]:
        raise ValueError(
            f"linear: input has {x.shape[-1] if x.ndim else 0} features (shape {x.shape}) "
            f"but the weight expects {weight.shape[1]} (weight shape {weight.shape})"
        )


def _linear_data(xd: np.ndarray, wd: np.ndarray, bd: np.ndarray | None) -> np.ndarray:
    """xd @ wd.T + bd as a new array."""
    # a 2-D input: the product as weight @ x.T, returned transposed (a column-major (N, out) array), which
    # OpenBLAS runs 10-40% faster here than x @ weight.T; the next layer then multiplies contiguous operands
    out = _mm(wd, xd.T).T if xd.ndim == 2 else _mm(xd, wd.T)
    if bd is not None:
        out += bd
    return out


def _linear_np_grads(xd: np.ndarray, wd: np.ndarray, bd: np.ndarray | None, gd: np.ndarray, needs: tuple) -> tuple:
    """(dx, dweight, dbias) of x @ weight.T + bias for the upstream gradient gd, on NumPy arrays; `needs` says
    which of x, weight, bias want a gradient (None for the others)."""
    gx = gw = gb = None
    g2 = gd if gd.ndim == 2 else gd.reshape(-1, gd.shape[-1])
    # a column-major g of few columns (the last layer's): OpenBLAS multiplies it (as g.T @ x, or w.T @ g.T) 2-4x
    # slower than a row-major copy of g, which costs little at that size
    gt = np.ascontiguousarray(g2) if g2.shape[1] <= 32 and not g2.flags.c_contiguous else g2
    if needs[0]:  # a column-major g (from the forward above): keep that layout, as weight.T @ g.T
        gx = _mm(wd.T, gt.T).T if gd.ndim == 2 and not gd.flags.c_contiguous else _mm(gd, wd)
    if needs[1]:
        gw = _mm(gt.T, xd if xd.ndim == 2 else xd.reshape(-1, xd.shape[-1]))
    if bd is not None and needs[2]:
        gb = _column_sums(g2)
    return gx, gw, gb


# Array rules: `_<op>_fwd(*arrays) -> (out, ctx)` and `_<op>_bwd(ctx, g, needs) -> one gradient per input (None
# where `needs` says no)`, pure NumPy, side by side. The eager op runs them (its `np_backward` is the bwd rule) and
# chainrule.capture replays them, so a captured step does exactly the eager step's arithmetic; each op's
# `np_backward.replay = (fwd, bwd, extra arguments of fwd after the inputs' arrays)` says so to the capture.


def _linear_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple:
    return _linear_data(x, w, b), (x, w, b)


def _linear_bwd(ctx: tuple, g: np.ndarray, needs: tuple) -> tuple:
    return _linear_np_grads(*ctx, g, needs)


def _linear_relu_fwd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple:
    out = _linear_data(x, w, b)
    mask = np.logical_not(out <= 0)  # as relu's: the gradient passes where not z <= 0 (NaN included, as PyTorch)
    np.maximum(out, 0, out=out)
    return out, (x, w, b, mask)


def _linear_relu_bwd(ctx: tuple, g: np.ndarray, needs: tuple) -> tuple:
    x, w, b, mask = ctx
    return _linear_np_grads(x, w, b, _relu_grad(g, mask, g.dtype), needs)


def _relu_grad(g: Any, mask: np.ndarray, dtype: Any = None) -> Any:
    """g where the mask is set, else 0, as PyTorch's threshold_backward: g · mask (one fast pass) unless that made
    a NaN, as 0 · g does where g is inf or NaN (sqrt(relu(x)) sends inf where x <= 0); then np.where."""
    out = np.multiply(g, mask, dtype=dtype)
    if type(out) is not np.ndarray:  # a 0-d g and mask: a NumPy scalar
        return out if out == out else np.where(mask, out, np.zeros((), out.dtype))[()]
    flat = np.ravel(out, "K")
    s = np.dot(flat, flat)  # Σ r² is NaN only where some r is: one BLAS pass, no array made
    return out if s == s else np.where(mask, out, np.zeros((), out.dtype))


_RELU_BOOL_MASK = 65_536  # elements (measured: 692k float32, forward 547 -> 367 µs, backward unchanged)


def _relu_fwd(d: np.ndarray) -> tuple:
    mask = np.logical_not(d <= 0)  # not (x <= 0): the gradient passes at NaN, as PyTorch's threshold_backward
    # g * a float mask: ~1.5x faster than g * a bool one on cache-sized arrays (no cast in the loop); on large ones
    # (a conv layer's output) the pass that makes the float mask costs more than the cast saves
    if d.dtype.kind == "f" and d.size < _RELU_BOOL_MASK:
        mask = mask.astype(d.dtype)
    # np.maximum is one pass and keeps NaN (as a * mask did); the mask is kept for the gradient
    out = np.maximum(d, 0)
    return (out if type(out) is np.ndarray else np.asarray(out)), mask


def _relu_bwd(mask: np.ndarray, g: Any, needs: tuple = (True,)) -> tuple:
    return (_relu_grad(g, mask),)


def _tanh_fwd(d: np.ndarray) -> tuple:
    out = np.tanh(d)
    if type(out) is not np.ndarray:  # a 0-d input gives a NumPy scalar: the array a tensor holds
        out = np.asarray(out)
    return out, out[()]


def _tanh_bwd(y: Any, g: Any, needs: tuple = (True,)) -> tuple:
    return (g * (1.0 - y * y),)


def _sigmoid_fwd(d: np.ndarray) -> tuple:
    x = d[()]
    val = 1.0 / (1.0 + np.exp(-x)) if type(x) in _SCALAR_FLOATS and x > -700 else _sigmoid(d)
    out = np.asarray(val)
    return out, out[()]


def _sigmoid_bwd(y: Any, g: Any, needs: tuple = (True,)) -> tuple:
    return (g * y * (1.0 - y),)


def _linear_grads(x: Tensor, weight: Tensor, bias: Tensor | None, g: Tensor) -> tuple:
    """The same gradients as Tensor operations (differentiable, for create_graph)."""
    g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    gx = (g @ weight) if x.requires_grad else None
    gw = (g2.mT @ x2) if weight.requires_grad else None
    gb = g2.sum(0) if bias is not None and bias.requires_grad else None
    return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias. x: (..., in), weight: (out, in), bias: (out,) -> (..., out).

    One fused node: one matrix product forward, two backward, no broadcast bookkeeping.
    """
    _linear_check(x, weight)
    parents = (x, weight) if bias is None else (x, weight, bias)
    out, ctx = _linear_fwd(x.data, weight.data, None if bias is None else bias.data)

    def np_backward(gd: np.ndarray) -> tuple:
        return _linear_np_grads(
            *ctx, gd, (x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
        )

    np_backward.replay = (_linear_fwd, _linear_bwd, ())

    def backward(g: Tensor) -> tuple:
        if not _GradMode.enabled:  # (under detect_anomaly) the NumPy rule, wrapped
            return tuple(None if a is None else Tensor(a) for a in np_backward(g.data))
        return _linear_grads(x, weight, bias, g)

    return record("linear", out, parents, backward, saved=(x, weight), np_backward=np_backward)


def linear_relu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """relu(x @ weight.T + bias) as one node (what nn.Sequential runs for a Linear followed by a ReLU).

    Backward: z = x @ weight.T + bias passes g where z > 0, then linear's rule. Same values as the two ops.
    """
    _linear_check(x, weight)
    bd = None if bias is None else bias.data
    if x.data.dtype.kind == "b" and weight.data.dtype.kind == "b" and (bd is None or bd.dtype.kind == "b"):
        _relu_check(x.data)  # a bool product: refused, as the unfused relu does
    if not (
        _GradMode.enabled and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    ):
        out = _linear_data(x.data, weight.data, bd)
        return Tensor._wrap(np.maximum(out, 0, out=out))
    out, ctx = _linear_relu_fwd(x.data, weight.data, bd)
    mask = ctx[3]

    def np_backward(gd: np.ndarray) -> tuple:
        needs = (x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
        return _linear_relu_bwd(ctx, gd, needs)

    np_backward.replay = (_linear_relu_fwd, _linear_relu_bwd, ())

    def backward(g: Tensor) -> tuple:
        if not _GradMode.enabled:  # (under detect_anomaly) the NumPy rule, wrapped
            return tuple(None if a is None else Tensor(a) for a in np_backward(g.data))
        return _linear_grads(x, weight, bias, where(mask, g, 0.0))

    parents = (x, weight) if bias is None else (x, weight, bias)
    return record("linear_relu", out, parents, backward, saved=(x, weight), np_backward=np_backward)


# ----------------------------------------------------------------------------- unary


def neg(a: Tensor) -> Tensor:
    return record("neg", np.negative(a.data), (a,), lambda g: (-g,), saved=(), np_backward=lambda g: (-g,))


def abs(a: Tensor) -> Tensor:
    return record(
        "abs", np.abs(a.data), (a,), lambda g: (g * np.sign(a.data),), np_backward=lambda g: (g * np.sign(a.data),)
    )


def _floating(a: Tensor) -> Tensor:
    """`a`, or for an integer/bool tensor its values in the default float dtype: exp, log, sigmoid... of integers
    are real numbers (PyTorch gives float32 too). Integer tensors never require grad, so nothing is recorded."""
    if a.data.dtype.kind == "f":
        return a
    from ..tensor import get_default_dtype

    return Tensor._wrap(a.data.astype(get_default_dtype()))


def exp(a: Tensor) -> Tensor:
    a = _floating(a)
    out = record("exp", np.exp(a.data), (a,), lambda g: (g * out,), np_backward=lambda g: (g * out.data[()],))
    return out


def log(a: Tensor) -> Tensor:
    a = _floating(a)
    return record("log", np.log(a.data), (a,), lambda g: (g / a,), np_backward=lambda g: (g / a.data[()],))


def log1p(a: Tensor) -> Tensor:
    a = _floating(a)
    return record(
        "log1p",
        np.log1p(a.data),
        (a,),
        lambda g: (g / (a + 1.0),),
        np_backward=lambda g: (g / (a.data[()] + 1.0),),
    )


def sqrt(a: Tensor) -> Tensor:
    a = _floating(a)
    out = record(
        "sqrt", np.sqrt(a.data), (a,), lambda g: (g / (out * 2.0),), np_backward=lambda g: (g / (out.data[()] * 2.0),)
    )
    return out


def sin(a: Tensor) -> Tensor:
    a = _floating(a)
    return record("sin", np.sin(a.data), (a,), lambda g: (g * cos(a),), np_backward=lambda g: (g * np.cos(a.data),))


def cos(a: Tensor) -> Tensor:
    a = _floating(a)
    return record("cos", np.cos(a.data), (a,), lambda g: (-g * sin(a),), np_backward=lambda g: (-g * np.sin(a.data),))


def tanh(a: Tensor) -> Tensor:
    a = _floating(a)
    out, y = _tanh_fwd(a.data)

    def np_backward(g: Any) -> tuple:
        return _tanh_bwd(y, g)

    np_backward.replay = (_tanh_fwd, _tanh_bwd, ())
    res = record("tanh", out, (a,), lambda g: (g * (1.0 - res * res),), np_backward=np_backward)
    return res


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: no overflow for any x
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def sigmoid(a: Tensor) -> Tensor:
    a = _floating(a)
    val, y = _sigmoid_fwd(a.data)

    def backward(g: Any) -> tuple:
        if isinstance(g, Tensor):
            return (g * out * (1.0 - out),)
        return (g * y * (1.0 - y),)

    backward.replay = (_sigmoid_fwd, _sigmoid_bwd, ())
    out = record("sigmoid", val, (a,), backward, np_backward=backward)
    return out


def _relu_check(d: np.ndarray) -> None:
    """PyTorch's relu refuses bool tensors (integers keep their dtype)."""
    if d.dtype.kind == "b":
        raise TypeError(
            "relu: bool tensors are not supported (got dtype bool), as in PyTorch; convert first, e.g. x.long()"
        )


def relu(a: Tensor) -> Tensor:
    d = a.data
    _relu_check(d)
    if not (_GradMode.enabled and a.requires_grad):  # nothing is recorded: no mask
        return Tensor._wrap(np.maximum(d, 0))
    out, mask = _relu_fwd(d)

    def np_backward(g: Any) -> tuple:
        return _relu_bwd(mask, g)

    np_backward.replay = (_relu_fwd, _relu_bwd, ())
    return record(
        "relu",
        out,
        (a,),
        lambda g: (where(mask, g, 0.0),) if _GradMode.enabled else (Tensor(_relu_grad(g.data, mask)),),
        saved=(),
        np_backward=np_backward,
    )


def sign(a: Tensor) -> Tensor:
    return record("sign", np.sign(a.data), (a,), lambda g: (g * 0.0,), saved=(), np_backward=lambda g: (g * 0.0,))


def clamp(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Values limited to [min, max]; the gradient passes where min <= a <= max (as PyTorch)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    d = a.data
    mask = np.ones(d.shape, dtype=bool)
    if min is not None:
        mask &= d >= min
    if max is not None:
        mask &= d <= max
    return record(
        "clamp", np.clip(d, min, max), (a,), lambda g: (g * mask,), saved=(), np_backward=lambda g: (g * mask,)
    )


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max; at ties the gradient is split evenly (as PyTorch)."""
    a, b, out = _binary("maximum", np.maximum, a, b)
    share = np.where(a.data == b.data, 0.5, (a.data > b.data).astype(out.dtype)).astype(out.dtype)
    return record(
        "maximum",
        out,
        (a, b),
        lambda g: (unbroadcast(g * share, a.shape), unbroadcast(g * (1.0 - share), b.shape)),
        saved=(),
        np_backward=lambda g: (g * share, g * (1.0 - share)),
    )


def minimum(a: Any, b: Any) -> Tensor:
    a, b, out = _binary("minimum", np.minimum, a, b)
    share = np.where(a.data == b.data, 0.5, (a.data < b.data).astype(out.dtype)).astype(out.dtype)
    return record(
        "minimum",
        out,
        (a, b),
        lambda g: (unbroadcast(g * share, a.shape), unbroadcast(g * (1.0 - share), b.shape)),
        saved=(),
        np_backward=lambda g: (g * share, g * (1.0 - share)),
    )


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """`a` where `cond` is true, else `b` (broadcast together)."""
    c = cond.data if isinstance(cond, Tensor) else np.asarray(cond)
    c = c.astype(bool, copy=False)
    if not isinstance(a, Tensor):
        a = const(a, b) if isinstance(b, Tensor) else Tensor(a)
    if not isinstance(b, Tensor):
        b = const(b, a)
    try:
        out = np.where(c, a.data, b.data)
    except ValueError:
        raise ValueError(
            f"where: condition {c.shape}, input {a.shape} and other {b.shape} cannot be broadcast together"
        ) from None
    zero = Tensor(np.zeros((), out.dtype))
    return record(
        "where",
        out,
        (a, b),
        lambda g: (unbroadcast(where(c, g, zero), a.shape), unbroadcast(where(c, zero, g), b.shape)),
        saved=(),
        np_backward=lambda g: (np.where(c, g, zero.data), np.where(c, zero.data, g)),
    )


def to(a: Tensor, dtype: Any) -> Tensor:
    """A copy converted to `dtype` (the gradient is converted back)."""
    dt = np.dtype(dtype)
    if dt == a.dtype:
        return a
    if dt.kind != "f":
        return Tensor(a.data.astype(dt))
    return record(
        "to", a.data.astype(dt), (a,), lambda g: (g.to(a.dtype),), saved=(), np_backward=lambda g: (g.astype(a.dtype),)
    )


def clone(a: Tensor) -> Tensor:
    return record("clone", a.data.copy(), (a,), lambda g: (g,), saved=(), np_backward=lambda g: (g,))


# ----------------------------------------------------------------------------- comparisons (no gradient)


def _compare(fn: Any) -> Any:
    def compare(a: Tensor, b: Any) -> Tensor:
        return Tensor(fn(a.data, b.data if isinstance(b, Tensor) else b))

    return compare


eq, ne, lt, le, gt, ge = (
    _compare(f) for f in (np.equal, np.not_equal, np.less, np.less_equal, np.greater, np.greater_equal)
)
