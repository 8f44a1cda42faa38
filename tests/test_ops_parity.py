"""Every differentiable op against PyTorch in float64: forward values, output dtype and gradients.

Each case is written once as `fn(lib, *tensors)` and run with `lib = chainrule` and `lib = torch`,
so the test also checks that the names, arguments and defaults are PyTorch's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import chainrule as cr

SETTINGS = settings(max_examples=25, deadline=None)
RTOL, ATOL = 1e-10, 1e-12

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)
nd_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)


def values(shape, lo: float = -3.0, hi: float = 3.0, unique: bool = False):
    elements = st.floats(lo, hi, allow_nan=False, allow_subnormal=False)
    return hnp.arrays(np.float64, shape, elements=elements, unique=unique)


def _list(x):
    return list(x) if isinstance(x, tuple | list) else [x]


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check(fn, *arrays, rtol: float = RTOL, atol: float = ATOL, grad: bool = True, seed: int = 0) -> None:
    """Run `fn` on chainrule and torch tensors made from `arrays`; compare values, dtypes and gradients."""
    xs = [cr.tensor(a, dtype=cr.float64, requires_grad=grad) for a in arrays]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=grad) for a in arrays]
    outs, refs = _list(fn(cr, *xs)), _list(fn(torch, *ts))
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        assert isinstance(o, cr.Tensor)
        assert o.shape == tuple(r.shape), (o.shape, r.shape)
        assert o.dtype.name == _dtype_name(r), (o.dtype, r.dtype)
        assert o.requires_grad == r.requires_grad
        np.testing.assert_allclose(o.data, r.detach().numpy(), rtol=rtol, atol=atol)
    if not grad:
        return
    rng = np.random.default_rng(seed)
    pairs = [(o, r) for o, r in zip(outs, refs) if r.requires_grad]
    if not pairs:  # e.g. comparisons: checked above that neither library records a gradient
        return
    ws = [rng.standard_normal(r.shape) for _, r in pairs]
    got = cr.grad([o for o, _ in pairs], xs, [cr.tensor(w) for w in ws], allow_unused=True)
    want = torch.autograd.grad([r for _, r in pairs], ts, [torch.tensor(w) for w in ws], allow_unused=True)
    for x, g, w in zip(arrays, got, want):
        g = np.zeros(np.shape(x)) if g is None else g.data
        w = np.zeros(np.shape(x)) if w is None else w.numpy()
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _dim(draw, ndim: int):
    return draw(st.integers(-ndim, ndim - 1)) if ndim else draw(st.sampled_from([0, -1]))


# ----------------------------------------------------------------------------- elementwise

UNARY = {
    "neg": (lambda m, x: -x, -3, 3),
    "abs": (lambda m, x: m.abs(x), -3, 3),
    "abs_method": (lambda m, x: abs(x).abs(), -3, 3),
    "exp": (lambda m, x: m.exp(x), -3, 3),
    "log": (lambda m, x: m.log(x), 0.1, 3),
    "log1p": (lambda m, x: x.log1p(), -0.9, 3),
    "sqrt": (lambda m, x: m.sqrt(x), 0.1, 3),
    "sin": (lambda m, x: m.sin(x), -3, 3),
    "cos": (lambda m, x: x.cos(), -3, 3),
    "tanh": (lambda m, x: m.tanh(x), -3, 3),
    "sigmoid": (lambda m, x: m.sigmoid(x), -30, 30),
    "relu": (lambda m, x: m.relu(x), -3, 3),
    "sign": (lambda m, x: m.sign(x), -3, 3),
    "clamp": (lambda m, x: m.clamp(x, -1.0, 1.5), -3, 3),
    "clamp_min": (lambda m, x: x.clamp(min=0.5), -3, 3),
    "clamp_max": (lambda m, x: x.clamp(max=-0.2), -3, 3),
    "square": (lambda m, x: x**2, -3, 3),
    "cube": (lambda m, x: x**3, -3, 3),
    "pow_half": (lambda m, x: x**0.5, 0.1, 3),
    "pow_neg": (lambda m, x: x**-1.5, 0.1, 3),
    "pow_zero": (lambda m, x: x**0, -3, 3),
    "rpow": (lambda m, x: 2.0**x, -3, 3),
    "radd": (lambda m, x: 2.5 + x, -3, 3),
    "add_scalar": (lambda m, x: x + 2, -3, 3),
    "rsub": (lambda m, x: 1.5 - x, -3, 3),
    "sub_scalar": (lambda m, x: x - 1.5, -3, 3),
    "rmul": (lambda m, x: 3 * x, -3, 3),
    "mul_scalar": (lambda m, x: x * -0.25, -3, 3),
    "rdiv": (lambda m, x: 2.0 / x, 0.1, 3),
    "div_scalar": (lambda m, x: x / 3, -3, 3),
    "chain": (lambda m, x: (x * x).sigmoid().log() - x.tanh() * 0.5, -3, 3),
}


@pytest.mark.parametrize("name", list(UNARY))
@SETTINGS
@given(data=st.data())
def test_unary(name: str, data) -> None:
    fn, lo, hi = UNARY[name]
    x = data.draw(values(data.draw(shapes), lo, hi))
    check(fn, x)


def test_unary_on_ties_and_zeros() -> None:
    """Kinks: abs, relu, sign at 0 and clamp at its bounds take PyTorch's one-sided choice."""
    x = np.array([-1.0, 0.0, 1.0, 1.5, -2.0, 0.5])
    for name in ("abs", "relu", "sign", "clamp", "clamp_min", "clamp_max", "pow_zero"):
        check(UNARY[name][0], x)


BINARY = {
    "add": lambda m, x, y: x + y,
    "sub": lambda m, x, y: x - y,
    "mul": lambda m, x, y: x * y,
    "div": lambda m, x, y: x / y,
    "pow": lambda m, x, y: x**y,
    "maximum": lambda m, x, y: m.maximum(x, y),
    "minimum": lambda m, x, y: m.minimum(x, y),
    "where": lambda m, x, y: m.where(x > y, x, y),
    "max_other": lambda m, x, y: m.max(x, y) - x.min(y),
    "method_chain": lambda m, x, y: x.mul(y).add(x).sub(y).div(y.abs() + 1),
}


@pytest.mark.parametrize("name", list(BINARY))
@SETTINGS
@given(data=st.data())
def test_binary_broadcasting(name: str, data) -> None:
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3))
    lo = 0.2 if name in ("div", "pow") else -3.0
    x = data.draw(values(bs.input_shapes[0], lo, 3.0))
    y = data.draw(values(bs.input_shapes[1], lo, 3.0))
    check(BINARY[name], x, y)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
@SETTINGS
@given(data=st.data())
def test_python_scalar_on_either_side(name: str, data) -> None:
    x = data.draw(values(data.draw(shapes), 0.2, 3.0))
    c = data.draw(st.one_of(st.integers(1, 3), st.floats(0.2, 3.0)))
    fn = BINARY[name]
    check(lambda m, a: fn(m, a, c), x)
    check(lambda m, a: fn(m, c, a), x)


def test_maximum_minimum_ties_split_gradient() -> None:
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0])
    check(BINARY["maximum"], x, y)
    check(BINARY["minimum"], x, y)


@SETTINGS
@given(data=st.data())
def test_where_three_way_broadcast(data) -> None:
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3))
    cond = data.draw(hnp.arrays(np.bool_, bs.input_shapes[0]))
    x, y = data.draw(values(bs.input_shapes[1])), data.draw(values(bs.input_shapes[2]))
    check(lambda m, a, b: m.where(m.tensor(cond), a, b), x, y)
    check(lambda m, a: m.where(m.tensor(cond), a, 0.0), x)


def test_scalar_keeps_tensor_dtype() -> None:
    x = cr.ones(3)
    for y in (x + 1, 1 + x, x * 2.5, 2.5 * x, x / 3, 3 / x, x - 1.0, 1.0 - x, x**2, 2**x, -x):
        assert y.dtype == cr.float32
    assert (cr.ones(2, dtype=cr.float64) * 2.0).dtype == cr.float64


@pytest.mark.parametrize(
    "fn",
    [
        lambda m: m.arange(3) * 0.5,
        lambda m: 1.5 + m.arange(3),
        lambda m: m.arange(3) + m.ones(3),
        lambda m: m.ones(3, dtype=m.float64) * m.arange(3),
        lambda m: m.tensor([True, False]) * m.ones(2),
        lambda m: m.arange(3) * 2,
        lambda m: m.tensor([True, False]) + m.arange(2),
        lambda m: m.maximum(m.arange(3), m.ones(3) * 1.5),
        lambda m: m.ones(2, 3)[[]],
        lambda m: m.arange(4) / 2,
        lambda m: m.where(m.arange(3) > 0, 1.0, 0.0),
        lambda m: m.where(m.arange(3) > 0, 2, -1),
        lambda m: 3 / m.arange(1, 4),
        lambda m: m.arange(4) / m.ones(4, dtype=m.float64),
    ],
)
def test_dtype_promotion_matches_torch(fn) -> None:
    got, want = fn(cr), fn(torch)
    assert got.dtype.name == _dtype_name(want) and got.shape == tuple(want.shape)
    np.testing.assert_array_equal(got.data, want.numpy())


def test_binary_shape_mismatch_names_op_and_shapes() -> None:
    for op, fn in (("add", lambda a, b: a + b), ("mul", lambda a, b: a * b), ("matmul", lambda a, b: a @ b)):
        with pytest.raises(ValueError, match=rf"{op}.*\(2, 3\).*\(4,\)"):
            fn(cr.ones(2, 3), cr.ones(4))


# ----------------------------------------------------------------------------- matmul


@SETTINGS
@given(data=st.data())
def test_matmul(data) -> None:
    n, k, m_, b1, b2 = (data.draw(st.integers(1, 4)) for _ in range(5))
    case = data.draw(st.sampled_from(["1x1", "1x2", "2x1", "2x2", "batch", "bcast", "1xb", "bx1", "bx2"]))
    sa, sb = {
        "1x1": ((k,), (k,)),
        "1x2": ((k,), (k, m_)),
        "2x1": ((n, k), (k,)),
        "2x2": ((n, k), (k, m_)),
        "batch": ((b1, n, k), (b1, k, m_)),
        "bcast": ((b1, 1, n, k), (b2, k, m_)),
        "1xb": ((k,), (b1, k, m_)),
        "bx1": ((b1, b2, n, k), (k,)),
        "bx2": ((b1, n, k), (k, m_)),
    }[case]
    x, y = data.draw(values(sa)), data.draw(values(sb))
    check(lambda m, a, b: a @ b, x, y)
    check(lambda m, a, b: m.matmul(a, b), x, y)


@SETTINGS
@given(data=st.data())
def test_linear(data) -> None:
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x, w, b = data.draw(values(lead + (n_in,))), data.draw(values((n_out, n_in))), data.draw(values((n_out,)))
    check(lambda m, *t: (torch.nn.functional if m is torch else cr.ops).linear(*t), x, w, b)
    check(lambda m, *t: (torch.nn.functional if m is torch else cr.ops).linear(*t), x, w)


@SETTINGS
@given(data=st.data())
def test_linear_relu(data) -> None:
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x, w, b = data.draw(values(lead + (n_in,))), data.draw(values((n_out, n_in))), data.draw(values((n_out,)))

    def fn(m, *t):
        return torch.relu(torch.nn.functional.linear(*t)) if m is torch else cr.ops.linear_relu(*t)

    check(fn, x, w, b)
    check(fn, x, w)


# ----------------------------------------------------------------------------- reductions


def _dims(data, ndim: int):
    """None, one dim or a tuple of distinct dims (negative ones included)."""
    kind = data.draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int" or ndim == 0:
        return _dim(data.draw, ndim)
    picked = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(d - ndim if data.draw(st.booleans()) else d for d in picked)


@pytest.mark.parametrize("name", ["sum", "mean", "amax", "amin", "logsumexp"])
@SETTINGS
@given(data=st.data())
def test_reduce_dims(name: str, data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape))
    dim, keepdim = _dims(data, len(shape)), data.draw(st.booleans())
    if dim is None:
        if name != "logsumexp":
            check(lambda m, a: getattr(a, name)(), x)
        dim = tuple(range(len(shape)))
    check(lambda m, a: getattr(m, name)(a, dim, keepdim=keepdim), x)
    check(lambda m, a: getattr(a, name)(dim=dim, keepdim=keepdim), x)


@pytest.mark.parametrize("name", ["sum", "mean", "var", "std", "amax", "amin"])
def test_empty_dim_list_reduces_all(name: str) -> None:
    x = np.random.default_rng(2).standard_normal((2, 3))
    for empty in ((), []):
        # PyTorch's own var/std backward with dim=() gives inf: compare with its dim=None instead
        check(lambda m, a: getattr(a, name)(dim=empty) if m is cr or name in ("sum", "mean") else getattr(a, name)(), x)


@pytest.mark.parametrize("name", ["var", "std"])
@SETTINGS
@given(data=st.data())
def test_var_std(name: str, data) -> None:
    shape = data.draw(nd_shapes)
    # distinct values on a 0.001 grid: a slice whose spread is tiny next to its mean (1e-10 ± 1e-18) is
    # ill-conditioned, and the two libraries' summation orders then differ far beyond 1e-10 in x - mean
    grid = st.integers(-3000, 3000).map(lambda i: i / 1000)
    x = data.draw(hnp.arrays(np.float64, shape, elements=grid, unique=True))
    dim, keepdim = _dims(data, len(shape)), data.draw(st.booleans())
    correction = data.draw(st.sampled_from([0, 1]))
    n = int(np.prod(shape if dim is None else [shape[d] for d in np.atleast_1d(dim)]))
    assume(n > correction)  # N - correction = 0 gives nan, as in PyTorch (tested below)
    check(lambda m, a: getattr(a, name)(dim, correction=correction, keepdim=keepdim), x)
    if x.size > 1:
        check(lambda m, a: getattr(m, name)(a), x)


def test_var_std_degenerate() -> None:
    """One element with correction=1 is nan (like PyTorch); a constant row has std gradient 0 (like PyTorch)."""
    check(lambda m, a: a.var(), np.array([2.0]))
    check(lambda m, a: a.std(dim=1), np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]]))


@pytest.mark.parametrize("which", ["max", "min"])
@SETTINGS
@given(data=st.data())
def test_max_min(which: str, data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape, unique=True))
    dim, keepdim = _dim(data.draw, len(shape)), data.draw(st.booleans())
    check(lambda m, a: getattr(a, which)(), x)
    check(lambda m, a: getattr(m, which)(a, dim, keepdim=keepdim), x)  # (values, indices)
    check(lambda m, a: getattr(a, which)(dim=dim), x)
    arg = "arg" + which
    check(lambda m, a: getattr(m, arg)(a), x, grad=False)
    check(lambda m, a: getattr(a, arg)(dim, keepdim=keepdim), x, grad=False)


def test_full_max_min_ties_split_gradient() -> None:
    x = np.array([[1.0, 3.0, 3.0], [3.0, 0.0, -1.0]])
    for fn in (lambda m, a: a.max(), lambda m, a: a.min(), lambda m, a: m.amax(a, 1), lambda m, a: a.amin(0)):
        check(fn, x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@SETTINGS
@given(data=st.data())
def test_softmax(name: str, data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape, -10, 10))
    dim = _dim(data.draw, len(shape))
    check(lambda m, a: getattr(m, name)(a, dim), x)
    check(lambda m, a: getattr(a, name)(dim=dim), x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp", "sigmoid"])
def test_stable_for_inputs_of_magnitude_1e4(name: str) -> None:
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1], [-1e4, -1e4 + 2, -1e4 + 1, -1e4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warning from NumPy
        for dim in (0, 1):
            check(lambda m, a: getattr(a, name)(dim=dim) if name != "sigmoid" else a.sigmoid() * dim, x)
        for dtype in (cr.float32, cr.float64):
            out = getattr(cr.tensor(x, dtype=dtype), name)(*([1] if name != "sigmoid" else []))
            assert np.isfinite(out.data).all()


# ----------------------------------------------------------------------------- shape ops


@SETTINGS
@given(data=st.data())
def test_reshape_view_flatten(data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape))
    new = data.draw(st.permutations(shape)) if shape else ()
    check(lambda m, a: a.reshape(new), x)
    check(lambda m, a: a.view(*new, 1), x)
    check(lambda m, a: m.reshape(a, (-1,)), x)
    check(lambda m, a: a.flatten(), x)
    if shape:
        s, e = sorted(data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=2, max_size=2)))
        check(lambda m, a: m.flatten(a, s, e - len(shape)), x)


@SETTINGS
@given(data=st.data())
def test_squeeze_unsqueeze(data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape))
    sd = _dim(data.draw, len(shape))
    check(lambda m, a: a.squeeze(), x)
    check(lambda m, a: m.squeeze(a, sd), x)
    d = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(lambda m, a: m.unsqueeze(a, d), x)
    check(lambda m, a: a.unsqueeze(d).squeeze(d), x)


@SETTINGS
@given(data=st.data())
def test_transpose_permute_T(data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape))
    d0, d1 = _dim(data.draw, len(shape)), _dim(data.draw, len(shape))
    check(lambda m, a: m.transpose(a, d0, d1), x)
    perm = data.draw(st.permutations(range(len(shape))))
    check(lambda m, a: m.permute(a, tuple(perm)), x)
    if perm:
        check(lambda m, a: a.permute(*perm), x)
    if len(shape) == 2:
        check(lambda m, a: a.T, x)


@SETTINGS
@given(data=st.data())
def test_expand_broadcast_to(data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape))
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    target = lead + tuple(data.draw(st.integers(1, 3)) if n == 1 else n for n in shape)
    check(lambda m, a: a.expand(target), x)
    if target:
        check(lambda m, a: a.expand(*target), x)
    check(lambda m, a: a.expand(lead + (-1,) * len(shape)), x)
    check(lambda m, a: m.broadcast_to(a, target), x)


@SETTINGS
@given(data=st.data())
def test_cat_stack(data) -> None:
    shape = data.draw(nd_shapes)
    dim = _dim(data.draw, len(shape))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    arrays = [data.draw(values(shape[: dim % len(shape)] + (k,) + shape[dim % len(shape) + 1 :])) for k in sizes]
    check(lambda m, *ts: m.cat(ts, dim), *arrays)
    same = [data.draw(values(shape)) for _ in sizes]
    sdim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(lambda m, *ts: m.stack(list(ts), dim=sdim), *same)


@SETTINGS
@given(data=st.data())
def test_split_chunk(data) -> None:
    shape = data.draw(nd_shapes)
    x = data.draw(values(shape))
    dim = _dim(data.draw, len(shape))
    n = shape[dim]
    size, chunks = data.draw(st.integers(1, n + 1)), data.draw(st.integers(1, n + 1))
    check(lambda m, a: a.split(size, dim), x)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    sections = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    check(lambda m, a: m.split(a, sections, dim=dim), x)
    check(lambda m, a: a.chunk(chunks, dim), x)


@SETTINGS
@given(data=st.data())
def test_pad_flip(data) -> None:
    shape = data.draw(nd_shapes)
    x = data.draw(values(shape))
    widths = data.draw(st.lists(st.integers(0, 2), min_size=1, max_size=len(shape)))
    widths = widths + widths[::-1]
    check(lambda m, a: (torch.nn.functional if m is torch else m).pad(a, widths, value=0.5), x)
    fd = _dim(data.draw, len(shape))
    check(lambda m, a: a.flip(fd), x)
    dims = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    check(lambda m, a: m.flip(a, dims), x)


# ----------------------------------------------------------------------------- indexing


def _on(m, index):
    """An index with NumPy arrays turned into `m.tensor`s."""
    if isinstance(index, tuple):
        return tuple(_on(m, i) for i in index)
    return m.tensor(index) if isinstance(index, np.ndarray) else index


@SETTINGS
@given(data=st.data())
def test_getitem_basic(data) -> None:
    shape = data.draw(shapes)
    x = data.draw(values(shape))
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    items = index if isinstance(index, tuple) else (index,)
    assume(all(not isinstance(i, slice) or (i.step or 1) > 0 for i in items))  # PyTorch has no negative steps
    check(lambda m, a: a[index], x)


@SETTINGS
@given(data=st.data())
def test_getitem_integer_arrays_with_repeats(data) -> None:
    shape = data.draw(nd_shapes)
    x = data.draw(values(shape))
    index = data.draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(min_dims=1, max_side=5)))
    check(lambda m, a: a[_on(m, index)], x)
    first = data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=6))
    check(lambda m, a: a[first], x)  # a Python list, usually with repeats
    check(lambda m, a: a[..., None][_on(m, np.array(first))], x)


@SETTINGS
@given(data=st.data())
def test_getitem_boolean_mask(data) -> None:
    shape = data.draw(nd_shapes)
    x = data.draw(values(shape))
    k = data.draw(st.integers(1, len(shape)))
    mask = data.draw(hnp.arrays(np.bool_, shape[:k]))
    check(lambda m, a: a[m.tensor(mask)], x)
    check(lambda m, a: a[a > 0], x)


@pytest.mark.parametrize(
    "index",
    [
        (1, slice(None), [0, 0, 2]),
        (Ellipsis, np.array([3, 0, 3])),
        (slice(1, None, 2), None, np.array([[0, 1], [1, 1]])),
        (np.array([0, 1, 1]), slice(None), np.array([2, 2, 0])),
        (-1, Ellipsis, None, 2),
        np.array([True, False, True]),
        (np.array(1), slice(None), np.array([0, 1])),
        (np.array([0, 2]), np.array(3), slice(1, 3)),
    ],
)
def test_getitem_mixed(index) -> None:
    x = np.random.default_rng(1).standard_normal((3, 4, 5))
    check(lambda m, a: a[_on(m, index)], x)


@SETTINGS
@given(data=st.data())
def test_gather_index_select(data) -> None:
    shape = data.draw(nd_shapes)
    x = data.draw(values(shape))
    dim = _dim(data.draw, len(shape))
    ishape = tuple(data.draw(st.integers(1, n)) for n in shape)
    ishape = ishape[: dim % len(shape)] + (data.draw(st.integers(1, 5)),) + ishape[dim % len(shape) + 1 :]
    idx = data.draw(hnp.arrays(np.int64, ishape, elements=st.integers(0, shape[dim] - 1)))
    check(lambda m, a: m.gather(a, dim, m.tensor(idx)), x)
    check(lambda m, a: a.gather(dim, m.tensor(idx)), x)
    sel = data.draw(hnp.arrays(np.int64, (data.draw(st.integers(1, 5)),), elements=st.integers(0, shape[dim] - 1)))
    check(lambda m, a: m.index_select(a, dim, m.tensor(sel)), x)
    check(lambda m, a: a.index_select(dim, m.tensor(sel)), x)


# ----------------------------------------------------------------------------- comparisons

COMPARE = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


@pytest.mark.parametrize("name", list(COMPARE))
@SETTINGS
@given(data=st.data())
def test_comparisons_carry_no_gradient(name: str, data) -> None:
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    elements = st.sampled_from([-1.0, 0.0, 0.5, 1.0])  # small set: many ties
    x = data.draw(hnp.arrays(np.float64, bs.input_shapes[0], elements=elements))
    y = data.draw(hnp.arrays(np.float64, bs.input_shapes[1], elements=elements))
    op = COMPARE[name]
    check(lambda m, a, b: op(a, b), x, y)  # outputs are bool and do not require grad
    check(lambda m, a: (op(a, 0.5), op(0.5, a), getattr(a, name)(1.0)), x)


@pytest.mark.parametrize("name", ["exp", "log", "log1p", "sqrt", "sin", "cos", "tanh", "sigmoid"])
def test_unary_of_integers_gives_default_float(name: str) -> None:
    ours, theirs = getattr(cr.tensor([1, 2, 3]), name)(), getattr(torch.tensor([1, 2, 3]), name)()
    assert ours.dtype == np.float32 and theirs.dtype == torch.float32
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-6)
    assert getattr(cr.tensor([True, False]), name)().dtype == np.float32


@pytest.mark.parametrize("n", [10, 70_000])  # a float mask below 65536 elements, a bool one above
def test_relu_large_and_small_masks_match_torch(n: int) -> None:
    a = np.random.default_rng(n).standard_normal(n)
    a[:3] = [0.0, -0.0, np.nan]  # the gradient is 0 at ±0 and passes at NaN, as PyTorch's
    x, t = cr.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    y, r = cr.ops.relu(x), torch.relu(t)
    np.testing.assert_array_equal(y.data, r.detach().numpy())
    w = np.random.default_rng(1).standard_normal(n)
    (gx,) = cr.grad(y, x, cr.tensor(w), create_graph=True)
    (gt,) = torch.autograd.grad(r, t, torch.tensor(w), create_graph=True)
    np.testing.assert_array_equal(gx.data, gt.detach().numpy())
    assert gx.dtype == cr.float64
    x.grad = None
    (y * y).sum().backward()
    (r * r).sum().backward()
    np.testing.assert_allclose(x.grad.data, t.grad.numpy(), rtol=1e-15, equal_nan=True)


def test_relu_refuses_bool_and_keeps_integer_dtypes_as_torch() -> None:
    """torch.relu of a bool tensor raises ("Boolean inputs not supported for relu"); integers keep their dtype."""
    b = np.array([[[[True, False], [False, True]]]])
    with pytest.raises(RuntimeError, match="Boolean inputs not supported for relu"):
        torch.relu(torch.tensor(b))
    w = cr.from_numpy(np.ones((2, 2), bool))
    calls = {
        "ops.relu": cr.ops.relu,
        "functional.relu": cr.functional.relu,
        "nn.ReLU": cr.nn.ReLU(),
        "Tensor.relu": lambda x: x.relu(),
        "ReLU then MaxPool2d (fused)": cr.nn.Sequential(cr.nn.ReLU(), cr.nn.MaxPool2d(2)),
        "Linear then ReLU (fused linear_relu)": lambda x: cr.ops.linear_relu(x, w),
    }
    p = cr.tensor(np.ones(2), requires_grad=True)
    calls["capture"] = lambda x: cr.capture(lambda x: (cr.ops.relu(x) * p).sum(), cr.optim.SGD([p]))(x.data)
    for f in calls.values():
        with pytest.raises(TypeError, match="relu: bool tensors are not supported"):
            f(cr.tensor(b))
    for dtype in (np.int64, np.int32, np.int8, np.uint8):
        a = np.array([3, 0, -2] if dtype != np.uint8 else [3, 0, 254], dtype)
        ours, theirs = cr.ops.relu(cr.from_numpy(a)), torch.relu(torch.from_numpy(a))
        assert ours.dtype == a.dtype and str(theirs.dtype) == f"torch.{a.dtype}"
        np.testing.assert_array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [12, 70_000])
@pytest.mark.parametrize("op", ["relu", "linear_relu", "sequential"])
def test_relu_gradient_is_zero_where_x_le_0_even_for_an_inf_or_nan_gradient(op: str, n: int, dtype: type) -> None:
    """sqrt(relu(x)) sends inf (and 0·inf NaN) to relu where x <= 0; PyTorch's threshold_backward gives 0 there."""
    a = np.random.default_rng(n).standard_normal(n).astype(dtype)
    a[:4] = [-1.0, 0.0, np.nan, 2.0]
    v = np.random.default_rng(1).standard_normal(n).astype(dtype)
    v[4:8] = [np.inf, -np.inf, np.nan, 1.0]  # upstream gradients of the second term

    def f(m, x):
        if op == "relu":
            y = m.relu(x)
        else:
            w = m.ones((1, 1), dtype=x.dtype)
            if op == "linear_relu":
                y = (
                    m.relu(torch.nn.functional.linear(x[:, None], w))
                    if m is torch
                    else cr.ops.linear_relu(x[:, None], w)
                )
            else:
                lin = (torch.nn if m is torch else cr.nn).Linear(1, 1, bias=False).to(x.dtype)
                lin.weight.data[...] = 1.0
                y = (torch.nn if m is torch else cr.nn).Sequential(lin, (torch.nn if m is torch else cr.nn).ReLU())(
                    x[:, None]
                )
            y = y[:, 0]
        return y.sqrt().sum() + (y * m.tensor(v)).sum()

    x, t = cr.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    with np.errstate(all="ignore"):
        f(cr, x).backward()
        (gx,) = cr.grad(f(cr, x), x, create_graph=True)
    f(torch, t).backward()
    (gt,) = torch.autograd.grad(f(torch, t), t, create_graph=True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for ours, theirs in ((x.grad.data, t.grad.numpy()), (gx.data, gt.detach().numpy())):
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
        np.testing.assert_array_equal(ours == 0, theirs == 0)  # zeros and NaNs exactly where PyTorch has them
    assert x.grad.data[0] == 0.0 and x.grad.data[1] == 0.0 and x.grad.data.dtype == dtype
