"""The fast paths for scalar models give exactly the results of the general ones.

NumPy-scalar arithmetic for 0-d operands, `np_backward` (the NumPy pass of backward without
create_graph), the in-place clock behind the version checks and SGD's plain step.
"""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr

UNARY = ["neg", "abs", "exp", "log", "log1p", "sqrt", "sin", "cos", "tanh", "sigmoid", "sign", "clone"]
BINARY = ["add", "sub", "mul", "div", "maximum", "minimum"]


def _grads(fn, arrays, create_graph: bool) -> list[np.ndarray]:
    """d(sum(fn(*xs)))/d(xs): with create_graph the Tensor rules run, without it the NumPy rules."""
    xs = [cr.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    w = cr.tensor(np.linspace(0.5, 1.5, out.data.size).reshape(out.shape).astype(out.dtype))
    return [g.data for g in cr.grad(out, xs, w, create_graph=create_graph)]


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)  # bit for bit (no tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("shape", [(), (3,)])
def test_unary_numpy_rule_equals_tensor_rule(name: str, shape: tuple, dtype) -> None:
    x = np.asarray(np.random.default_rng(0).uniform(0.2, 2.0, shape), dtype=dtype)
    fn = lambda a: getattr(a, name)()  # noqa: E731
    for g_np, g_t in zip(_grads(fn, [x], False), _grads(fn, [x], True)):
        _same(g_np, g_t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("shapes", [((), ()), ((2, 3), (3,)), ((), (2,)), ((2, 1), (1, 3))])
def test_binary_numpy_rule_equals_tensor_rule(name: str, shapes: tuple, dtype) -> None:
    rng = np.random.default_rng(1)
    a, b = (np.asarray(rng.uniform(0.5, 2.0, s), dtype=dtype) for s in shapes)
    fn = getattr(cr.ops, name)
    for g_np, g_t in zip(_grads(fn, [a, b], False), _grads(fn, [a, b], True)):
        _same(g_np, g_t)


@pytest.mark.parametrize("exponent", [2, 0, 3, 0.5, -1, 2.5])
@pytest.mark.parametrize("shape", [(), (4,)])
def test_pow_numpy_rule_equals_tensor_rule(exponent: float, shape: tuple) -> None:
    x = np.random.default_rng(2).uniform(0.5, 2.0, shape)
    fn = lambda a: a**exponent  # noqa: E731
    _same(_grads(fn, [x], False)[0], _grads(fn, [x], True)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalar_arithmetic_equals_the_ufuncs(dtype) -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        x, y = (np.asarray(v, dtype=dtype) for v in rng.standard_normal(2) * 10.0 ** rng.integers(-3, 3, 2))
        a, b = cr.tensor(x), cr.tensor(y)
        for got, want in [
            (a + b, np.add(x, y)),
            (a - b, np.subtract(x, y)),
            (a * b, np.multiply(x, y)),
            (a / b, np.true_divide(x, y)),
            (a**2, np.square(x)),
            (0.3 * a, np.multiply(np.asarray(0.3, dtype), x)),
            (a.sigmoid(), 1.0 / (1.0 + np.exp(-x))),
        ]:
            assert isinstance(got.data, np.ndarray) and got.data.ndim == 0
            _same(got.data, np.asarray(want, dtype=dtype))


def test_int_scalars_keep_the_ufunc_path() -> None:
    big = cr.tensor(2**62)
    assert (big * cr.tensor(4)).item() == np.multiply(np.int64(2**62), np.int64(4), dtype=np.int64)  # wraps silently
    assert (cr.tensor(3) ** 2).dtype == np.int64


def test_reference_step_matches_the_hand_derived_chain_rule() -> None:
    """The reference example, 50 SGD steps on float64 scalars, against the chain rule written out on floats."""
    w1 = cr.tensor(0.5, dtype=cr.float64, requires_grad=True)
    w2 = cr.tensor(0.3, dtype=cr.float64, requires_grad=True)
    x, y, lr = cr.tensor(2.0, dtype=cr.float64), 0.5, 0.01
    opt = cr.optim.SGD([w1, w2], lr=lr)
    v1, v2 = 0.5, 0.3
    for _ in range(50):
        opt.zero_grad()
        loss = 0.5 * (y - w2 * (w1 * x).sigmoid()) ** 2
        loss.backward()
        opt.step()
        h = 1.0 / (1.0 + np.exp(-(v1 * 2.0)))
        d = -(y - v2 * h)
        v1, v2 = v1 - lr * (d * v2 * h * (1.0 - h) * 2.0), v2 - lr * (d * h)
    assert w1.dtype == np.float64 and w1.grad.dtype == np.float64
    np.testing.assert_allclose([w1.item(), w2.item()], [v1, v2], rtol=1e-13)


def test_inplace_clock_catches_changes_after_recording_only() -> None:
    w = cr.tensor([1.0, 2.0], requires_grad=True)
    x = cr.tensor([3.0, 4.0])
    x.mul_(2)  # before recording: fine
    (w * x).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [6.0, 8.0])
    y = (w * x).sum()
    other = cr.tensor([0.0])
    other.add_(1.0)  # an unrelated in-place change: checked, nothing to report
    y.backward(retain_graph=True)
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()
    a = cr.tensor([[1.0, 2.0]], requires_grad=True)
    z = (x * a.reshape(2)).sum()  # saves a view of a
    with cr.no_grad():
        a.sub_(0.1)  # a change through the base of the saved view
    with pytest.raises(RuntimeError, match="in-place"):
        z.backward()


def test_version_grows_at_every_inplace_change() -> None:
    t = cr.tensor([1.0])
    versions = [t._version]
    for op in (lambda: t.add_(1.0), lambda: t.mul_(2.0), lambda: t.zero_()):
        op()
        versions.append(t._version)
    t._version += 1  # the idiom optimizers and initializers use
    versions.append(t._version)
    assert versions[0] == 0 and all(a < b for a, b in zip(versions, versions[1:]))


@pytest.mark.parametrize("shape", [(), (3,), (100,)])
def test_sgd_plain_step_equals_the_general_update(shape: tuple) -> None:
    rng = np.random.default_rng(4)
    w0, g = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    plain, general = cr.tensor(w0, requires_grad=True), cr.tensor(w0, requires_grad=True)
    plain.grad, general.grad = cr.tensor(g), cr.tensor(g)
    cr.optim.SGD([plain], lr=0.1).step()
    opt = cr.optim.SGD([general], lr=0.1, maximize=True)  # the general path, with the gradient negated
    general.grad = cr.tensor(-g)
    opt.step()
    _same(plain.data, general.data)
    _same(plain.data, (w0 - np.float32(0.1) * g).astype(np.float32))
    assert plain._version > 0
