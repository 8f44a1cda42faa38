"""Finite-difference checks: every op passes gradcheck; a representative set passes gradgradcheck
and matches PyTorch's double backward; a wrong backward rule is caught with a clear message."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule.tensor import Tensor, record

rng = np.random.default_rng(0)


def _normal(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


def _positive(*shape: int) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


def _distinct(*shape: int) -> np.ndarray:
    """Values at least 0.1 apart, so kinks (max, abs, relu, clamp) are far from every finite difference."""
    n = int(np.prod(shape))
    return (rng.permutation(n) - n / 2 + 0.25).reshape(shape) * 0.37


IDX = np.array([2, 0, 2, 1])

# name: (fn taking chainrule tensors, input arrays)
CASES = {
    "add": (lambda x, y: x + y, [_normal(2, 3), _normal(3)]),
    "radd": (lambda x: 1.5 + x, [_normal(2)]),
    "sub": (lambda x, y: x - y, [_normal(2, 1), _normal(3)]),
    "rsub": (lambda x: 1.5 - x, [_normal(2)]),
    "mul": (lambda x, y: x * y, [_normal(2, 3), _normal(2, 1)]),
    "div": (lambda x, y: x / y, [_normal(3), _positive(2, 3)]),
    "rdiv": (lambda x: 2.0 / x, [_positive(3)]),
    "pow": (lambda x, y: x**y, [_positive(2, 3), _normal(3)]),
    "pow_scalar": (lambda x: x**2.5, [_positive(4)]),
    "rpow": (lambda x: 1.7**x, [_normal(4)]),
    "matmul_2d": (lambda x, y: x @ y, [_normal(2, 3), _normal(3, 4)]),
    "matmul_1d": (lambda x, y: x @ y, [_normal(3), _normal(3)]),
    "matmul_batched": (lambda x, y: x @ y, [_normal(2, 1, 2, 3), _normal(3, 3, 2)]),
    "matmul_vec_batch": (lambda x, y: cr.matmul(x, y), [_normal(3), _normal(2, 3, 2)]),
    "neg": (lambda x: -x, [_normal(3)]),
    "abs": (lambda x: x.abs(), [_distinct(2, 3)]),
    "exp": (lambda x: x.exp(), [_normal(2, 3)]),
    "log": (lambda x: x.log(), [_positive(2, 3)]),
    "log1p": (lambda x: x.log1p(), [_positive(3)]),
    "sqrt": (lambda x: x.sqrt(), [_positive(3)]),
    "sin": (lambda x: x.sin(), [_normal(3)]),
    "cos": (lambda x: x.cos(), [_normal(3)]),
    "tanh": (lambda x: x.tanh(), [_normal(3)]),
    "sigmoid": (lambda x: x.sigmoid(), [_normal(2, 3)]),
    "relu": (lambda x: x.relu(), [_distinct(2, 3)]),
    "linear_relu": (lambda x, w, b: cr.ops.linear_relu(x, w, b), [_distinct(4, 3), _normal(5, 3), _normal(5)]),
    "clamp": (lambda x: x.clamp(-0.5, 0.5), [_distinct(3, 3)]),
    "maximum": (lambda x, y: cr.maximum(x, y), [_distinct(2, 3), _distinct(3) + 0.05]),
    "minimum": (lambda x, y: cr.minimum(x, y), [_distinct(2, 3), _distinct(3) + 0.05]),
    "where": (lambda x, y: cr.where(x > 0, x, y), [_distinct(2, 3), _normal(3)]),
    "sign": (lambda x: x.sign() * x, [_distinct(3)]),
    "sum": (lambda x: x.sum(), [_normal(2, 3)]),
    "sum_dim": (lambda x: x.sum((0, 2), keepdim=True), [_normal(2, 3, 2)]),
    "mean": (lambda x: x.mean(-1), [_normal(2, 3)]),
    "var": (lambda x: x.var(0), [_normal(3, 2)]),
    "std": (lambda x: x.std(1, correction=0), [_normal(2, 3)]),
    "amax": (lambda x: x.amax(1), [_distinct(2, 3)]),
    "amin": (lambda x: x.amin(), [_distinct(2, 3)]),
    "max": (lambda x: x.max(), [_distinct(2, 3)]),
    "max_dim": (lambda x: x.max(dim=0).values, [_distinct(2, 3)]),
    "min_dim": (lambda x: x.min(1, keepdim=True)[0], [_distinct(2, 3)]),
    "logsumexp": (lambda x: x.logsumexp(1), [_normal(2, 3)]),
    "softmax": (lambda x: x.softmax(0), [_normal(3, 2)]),
    "log_softmax": (lambda x: x.log_softmax(-1), [_normal(2, 3)]),
    "reshape": (lambda x: x.reshape(3, 2) * x.view(-1).reshape(3, 2), [_normal(2, 3)]),
    "flatten": (lambda x: x.flatten(1), [_normal(2, 2, 2)]),
    "squeeze": (lambda x: x.squeeze(1).unsqueeze(0), [_normal(2, 1, 3)]),
    "transpose": (lambda x: x.transpose(0, 2), [_normal(2, 1, 3)]),
    "permute": (lambda x: x.permute(2, 0, 1), [_normal(2, 1, 3)]),
    "T": (lambda x: x.T, [_normal(2, 3)]),
    "expand": (lambda x: x.expand(2, 3, 4), [_normal(3, 1)]),
    "broadcast_to": (lambda x: cr.broadcast_to(x, (2, 3)), [_normal(3)]),
    "cat": (lambda x, y: cr.cat([x, y, x], dim=1), [_normal(2, 1), _normal(2, 3)]),
    "stack": (lambda x, y: cr.stack([x, y], dim=-1), [_normal(2, 3), _normal(2, 3)]),
    "split": (lambda x: x.split([1, 2], dim=1), [_normal(2, 3)]),
    "chunk": (lambda x: x.chunk(2), [_normal(3, 2)]),
    "pad": (lambda x: cr.pad(x, (1, 0, 2, 1), value=3.0), [_normal(2, 3)]),
    "flip": (lambda x: x.flip((0, 1)), [_normal(2, 3)]),
    "getitem_basic": (lambda x: x[1:, None, ..., ::2], [_normal(3, 2, 4)]),
    "getitem_int": (lambda x: x[-1, 1], [_normal(3, 2, 4)]),
    "getitem_array_repeats": (lambda x: x[IDX, :, [0, 1, 0, 0]], [_normal(3, 2, 2)]),
    "getitem_mask": (lambda x: x[x > 0], [_distinct(3, 4)]),
    "gather": (lambda x: x.gather(1, cr.tensor([[0, 0, 2], [1, 2, 2]])), [_normal(2, 3)]),
    "index_select": (lambda x: cr.index_select(x, 0, cr.tensor(IDX)), [_normal(3, 2)]),
    "comparisons": (lambda x, y: x * (x > y) + y * (x <= y) - x * (x == y) + (x != 0) * y, [_distinct(4), _normal(4)]),
    "argmax_argmin": (lambda x: x.gather(1, x.argmax(1, keepdim=True)) - x[:, x.argmin(0)], [_distinct(2, 3)]),
}


def _inputs(arrays) -> list[Tensor]:
    return [cr.tensor(a, dtype=cr.float64, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name: str) -> None:
    fn, arrays = CASES[name]
    assert cr.gradcheck(fn, _inputs(arrays))


@pytest.mark.parametrize("name", list(CASES))
def test_gradgradcheck_every_op(name: str) -> None:
    fn, arrays = CASES[name]
    assert cr.gradgradcheck(fn, _inputs(arrays))


def test_gradcheck_on_zero_dim_and_size_one() -> None:
    assert cr.gradcheck(lambda x, y: (x * y).exp().sum(0), _inputs([np.array(0.3), _normal(1, 1)]))


def test_gradcheck_with_non_differentiable_input() -> None:
    x = cr.tensor(_normal(3), dtype=cr.float64, requires_grad=True)
    c = cr.tensor(_normal(3), dtype=cr.float64)
    assert cr.gradcheck(lambda a, b: a * b, (x, c))
    assert cr.gradcheck(lambda a, k, b: (a**k * b).sum(), (x, 3, c))
    assert cr.gradgradcheck(lambda a, k, b: (a**k * b).sum(), (x, 3, c))


# ----------------------------------------------------------------------------- second order

# name: (fn on chainrule *or* torch tensors, input arrays)
SECOND = {
    "mul": (lambda x, y: x * y * x, [_normal(2, 3), _normal(3)]),
    "div": (lambda x, y: x / y, [_normal(2, 3), _positive(2, 1)]),
    "pow": (lambda x, y: x**y, [_positive(2, 3), _normal(3)]),
    "pow_scalar": (lambda x: x**3 + x**0.5, [_positive(4)]),
    "exp": (lambda x: x.exp(), [_normal(2, 3)]),
    "log": (lambda x: x.log(), [_positive(2, 3)]),
    "tanh": (lambda x: x.tanh(), [_normal(2, 3)]),
    "sigmoid": (lambda x: x.sigmoid(), [_normal(2, 3)]),
    "matmul": (lambda x, y: (x @ y) * (x @ y), [_normal(2, 3), _normal(3, 2)]),
    "matmul_batched": (lambda x, y: (x @ y).tanh(), [_normal(2, 2, 3), _normal(3)]),
    "sum": (lambda x: x.sum(1) * x.sum(), [_normal(2, 3)]),
    "mean": (lambda x: x.mean(0, keepdim=True) * x, [_normal(2, 3)]),
    "softmax": (lambda x: x.softmax(1), [_normal(2, 3)]),
    "log_softmax": (lambda x: x.log_softmax(0), [_normal(3, 2)]),
    "logsumexp": (lambda x: x.logsumexp(1), [_normal(2, 3)]),
    "getitem": (lambda x: x[[0, 0, 1], 1:] * x[1, 1:], [_normal(2, 3)]),
    "var_std": (lambda x: x.var(0) * x.std(1).sum(), [_normal(3, 2)]),
}


@pytest.mark.parametrize("name", list(SECOND))
def test_gradgradcheck(name: str) -> None:
    fn, arrays = SECOND[name]
    assert cr.gradgradcheck(fn, _inputs(arrays))


@pytest.mark.parametrize("name", list(SECOND))
def test_double_backward_matches_torch(name: str) -> None:
    """d/dx <v, d<w, f(x)>/dx>: the Hessian-vector products of both libraries agree."""
    fn, arrays = SECOND[name]
    xs = _inputs(arrays)
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, ref = fn(*xs), fn(*ts)
    w = _normal(*out.shape)
    gs = cr.grad(out, xs, cr.tensor(w), create_graph=True)
    tgs = torch.autograd.grad(ref, ts, torch.tensor(w), create_graph=True)
    vs = [_normal(*a.shape) for a in arrays]
    for g, tg in zip(gs, tgs):
        assert g.requires_grad
        np.testing.assert_allclose(g.data, tg.detach().numpy(), rtol=1e-10, atol=1e-12)
    s = cr.stack([(g * cr.tensor(v)).sum() for g, v in zip(gs, vs)]).sum()
    ts_ = torch.stack([(tg * torch.tensor(v)).sum() for tg, v in zip(tgs, vs)]).sum()
    hv = cr.grad(s, xs, allow_unused=True)
    thv = torch.autograd.grad(ts_, ts, allow_unused=True)
    for h, th, a in zip(hv, thv, arrays):
        h = np.zeros(a.shape) if h is None else h.data
        th = np.zeros(a.shape) if th is None else th.numpy()
        np.testing.assert_allclose(h, th, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- failures are reported


def _wrong_square(x: Tensor) -> Tensor:
    """x², with a deliberately wrong derivative 3x (instead of 2x)."""
    return record("wrong_square", x.data**2, (x,), lambda g: (g * x * 3.0,))


def _detached_square(x: Tensor) -> Tensor:
    """x², with the right first derivative 2x computed from a constant: its second derivative is lost."""
    return record("detached_square", x.data**2, (x,), lambda g: (g * Tensor(2.0 * x.data),))


def test_gradcheck_reports_wrong_backward() -> None:
    x = cr.tensor([0.5, 1.0, -2.0], dtype=cr.float64, requires_grad=True)
    c = cr.tensor([1.0, 2.0], dtype=cr.float64, requires_grad=True)
    with pytest.raises(cr.GradcheckError) as info:
        cr.gradcheck(lambda a, b: a.sum() + _wrong_square(b), (c, x))
    msg = str(info.value)
    assert "input 1" in msg and "(3,)" in msg and "element (0,)" in msg and "analytical" in msg
    assert cr.gradcheck(lambda a: _wrong_square(a), x, raise_exception=False) is False


def test_gradcheck_message_values() -> None:
    x = cr.tensor([[1.0, 2.0]], dtype=cr.float64, requires_grad=True)
    pattern = r"input 0 \(shape \(1, 2\)\), element \(0, 0\): analytical (\S+) vs numerical (\S+)"
    with pytest.raises(cr.GradcheckError, match=pattern) as info:
        cr.gradcheck(lambda a: _wrong_square(a).sum(), x)
    analytical, numerical = (float(v) for v in re.search(pattern, str(info.value)).groups())
    assert analytical / numerical == pytest.approx(1.5, rel=1e-6)  # 3x instead of 2x (times the same weight)


def test_gradgradcheck_catches_a_lost_second_derivative() -> None:
    x = cr.tensor([0.5, 1.0], dtype=cr.float64, requires_grad=True)
    assert cr.gradcheck(_detached_square, x)
    with pytest.raises(cr.GradcheckError, match="analytical.*numerical"):
        cr.gradgradcheck(_detached_square, x)


def test_gradcheck_needs_float64() -> None:
    with pytest.raises(TypeError, match="float64"):
        cr.gradcheck(lambda a: a * 2, cr.ones(2, requires_grad=True))
