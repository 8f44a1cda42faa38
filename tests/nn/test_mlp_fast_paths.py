"""The fast paths of the W2 MLP step against PyTorch in float64: linear's transposed (column-major) products
and gradients for every input layout, the fused cross-entropy's one-comparison target check, and SGD's lean
classic-momentum update (chunked, and its fallbacks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainrule as cr
import chainrule.functional as F
from chainrule import nn, optim
from chainrule.errors import DataError

TOL = dict(rtol=1e-10, atol=1e-12)


def _layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """The same values row-major, column-major and as a strided (non-contiguous) view."""
    wide = np.zeros((a.shape[0], 2 * a.shape[1]))
    wide[:, ::2] = a
    return {"C": np.ascontiguousarray(a), "F": np.asfortranarray(a), "strided": wide[:, ::2]}


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("n_out", [3, 40])  # <= 32 and > 32 columns: both ways of forming the weight gradient
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_for_every_input_layout(layout: str, n_out: int, bias: bool) -> None:
    rng = np.random.default_rng(n_out)
    x = _layouts(rng.standard_normal((7, 5)))[layout]
    w, b = rng.standard_normal((n_out, 5)), rng.standard_normal(n_out)
    g = rng.standard_normal((7, n_out))
    cx, cw, cb = cr.tensor(x, requires_grad=True), cr.tensor(w, requires_grad=True), cr.tensor(b, requires_grad=True)
    tx, tw, tb = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (x, w, b))
    out = F.linear(cx, cw, cb if bias else None)
    ref = torch.nn.functional.linear(tx, tw, tb if bias else None)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), **TOL)
    for grad in _layouts(g).values():  # a row-major, column-major or strided incoming gradient
        for t in (cx, cw, cb, tx, tw, tb):
            t.grad = None
        F.linear(cx, cw, cb if bias else None).backward(grad)
        torch.nn.functional.linear(tx, tw, tb if bias else None).backward(torch.tensor(np.ascontiguousarray(grad)))
        np.testing.assert_allclose(cx.grad.data, tx.grad.numpy(), **TOL)
        np.testing.assert_allclose(cw.grad.data, tw.grad.numpy(), **TOL)
        assert cw.grad.data.flags.c_contiguous  # the optimizers' flat fast paths need the parameter's layout
        if bias:
            np.testing.assert_allclose(cb.grad.data, tb.grad.numpy(), **TOL)
        else:
            assert cb.grad is None


def test_linear_batched_input_and_float32() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    cx, cw, cb = (cr.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    F.linear(cx, cw, cb).sum().backward()
    torch.nn.functional.linear(tx, tw, tb).sum().backward()
    for c, t in ((cx, tx), (cw, tw), (cb, tb)):
        np.testing.assert_allclose(c.grad.data, t.grad.numpy(), **TOL)
    x32 = cr.tensor(rng.standard_normal((6, 5)).astype(np.float32), requires_grad=True)
    lin = nn.Linear(5, 3)
    out = lin(x32)
    out.sum().backward()
    assert out.dtype == np.float32 and x32.grad.dtype == np.float32 and lin.weight.grad.dtype == np.float32
    ref = x32.data.astype(np.float64) @ lin.weight.data.T.astype(np.float64) + lin.bias.data
    np.testing.assert_allclose(out.data, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.bias.grad.data, np.full(3, 6.0), rtol=1e-6)


def test_linear_second_derivatives_with_column_major_activations() -> None:
    rng = np.random.default_rng(2)
    x = cr.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w1, w2 = cr.tensor(rng.standard_normal((5, 3)), requires_grad=True), cr.tensor(rng.standard_normal((2, 5)))
    b1 = cr.tensor(rng.standard_normal(5), requires_grad=True)

    def f(x: cr.Tensor, w1: cr.Tensor, b1: cr.Tensor) -> cr.Tensor:
        return F.linear(F.linear(x, w1, b1).tanh(), w2)  # the inner output is column-major

    assert cr.gradcheck(f, (x, w1, b1))
    assert cr.gradgradcheck(f, (x, w1, b1))


def _mlp_pair(sizes: list[int], seed: int):
    """The same Linear/ReLU MLP in torch and chainrule (float64, weights copied through the state dict)."""

    def layers(linear, relu, **kw):
        mods = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods += [linear(a, b, **kw)] + ([relu()] if i < len(sizes) - 2 else [])
        return mods

    torch.manual_seed(seed)
    tm = torch.nn.Sequential(*layers(torch.nn.Linear, torch.nn.ReLU)).double()
    cm = nn.Sequential(*layers(nn.Linear, nn.ReLU, dtype=np.float64))
    cm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    return tm, cm


def test_mlp_training_steps_match_torch() -> None:
    """The W2 step (Linear/ReLU MLP, cross-entropy, SGD with momentum) on a small MLP, 4 steps, float64."""
    tm, cm = _mlp_pair([12, 40, 40, 5], seed=3)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((16, 12)), rng.integers(0, 5, 16)
    topt = torch.optim.SGD(tm.parameters(), lr=0.05, momentum=0.9)
    copt = optim.SGD(cm.parameters(), lr=0.05, momentum=0.9)
    for _ in range(4):
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
        tl.backward()
        copt.zero_grad()
        cl = F.cross_entropy(cm(cr.tensor(x)), y)
        cl.backward()
        np.testing.assert_allclose(cl.item(), tl.item(), **TOL)
        for (name, p), tp in zip(cm.named_parameters(), tm.parameters()):
            np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), err_msg=name, **TOL)
        topt.step()
        copt.step()
    for p, tp in zip(cm.parameters(), tm.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOL)


# ----------------------------------------------------------------------------- cross-entropy


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_cross_entropy_fused_path_matches_torch(reduction: str, layout: str) -> None:
    rng = np.random.default_rng(4)
    logits = _layouts(rng.standard_normal((9, 6)) * 4)[layout]
    y = rng.integers(0, 6, 9)
    cx, tx = cr.tensor(logits, requires_grad=True), torch.tensor(np.ascontiguousarray(logits), requires_grad=True)
    cl = F.cross_entropy(cx, y, reduction=reduction)
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(y), reduction=reduction)
    np.testing.assert_allclose(cl.data, tl.detach().numpy(), **TOL)
    g = rng.standard_normal(cl.shape)
    cl.backward(g)
    tl.backward(torch.tensor(g))
    np.testing.assert_allclose(cx.grad.data, tx.grad.numpy(), **TOL)


def test_cross_entropy_retain_graph_backward_twice() -> None:
    x = cr.tensor(np.random.default_rng(5).standard_normal((4, 3)), requires_grad=True)
    loss = F.cross_entropy(x, [0, 2, 1, 2])
    loss.backward(retain_graph=True)
    first = x.grad.data.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad.data, 2 * first, **TOL)


@pytest.mark.parametrize("bad", [-1, 3, 2**40, -(2**62)])
def test_cross_entropy_out_of_range_targets_are_named(bad: int) -> None:
    x = cr.tensor(np.zeros((3, 3)), requires_grad=True)
    with pytest.raises(DataError, match=f"target {bad} is out of range for 3 classes"):
        F.cross_entropy(x, np.array([0, bad, 1]))


def test_cross_entropy_ignore_index_among_the_classes_is_still_ignored() -> None:
    rng = np.random.default_rng(6)
    logits, y = rng.standard_normal((6, 4)), np.array([0, 1, 2, 3, 1, 1])
    cx, tx = cr.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    cl = F.cross_entropy(cx, y, ignore_index=1)
    tl = torch.nn.functional.cross_entropy(tx, torch.tensor(y), ignore_index=1)
    cl.backward()
    tl.backward()
    np.testing.assert_allclose(cl.item(), tl.item(), **TOL)
    np.testing.assert_allclose(cx.grad.data, tx.grad.numpy(), **TOL)
    assert np.all(cx.grad.data[[1, 4, 5]] == 0)


# ----------------------------------------------------------------------------- SGD momentum


def test_sgd_momentum_large_parameter_is_chunked_and_matches_torch() -> None:
    """Parameters of 3 cache-sized chunks plus a remainder, of one chunk and small ones (float32, as in W2)."""
    rng = np.random.default_rng(7)
    values = [rng.standard_normal(shape).astype(np.float32) for shape in ((3 * 65536 + 100,), (70, 70), (5,), ())]
    cps = [cr.tensor(v, requires_grad=True) for v in values]
    tps = [torch.tensor(v, requires_grad=True) for v in values]
    copt, topt = optim.SGD(cps, lr=0.01, momentum=0.9), torch.optim.SGD(tps, lr=0.01, momentum=0.9)
    for _ in range(3):
        for cp, tp in zip(cps, tps):
            g = rng.standard_normal(cp.shape).astype(np.float32)
            cp.grad, tp.grad = cr.tensor(g), torch.tensor(g)
        copt.step()
        topt.step()
        for cp, tp in zip(cps, tps):
            np.testing.assert_allclose(cp.data, tp.detach().numpy(), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(
                copt.state[cp]["momentum_buffer"], topt.state[tp]["momentum_buffer"].numpy(), rtol=1e-6, atol=1e-7
            )
            assert cp.dtype == np.float32


def test_sgd_momentum_with_a_column_major_gradient_falls_back() -> None:
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 6))
    cp, tp = cr.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    copt, topt = optim.SGD([cp], lr=0.1, momentum=0.5), torch.optim.SGD([tp], lr=0.1, momentum=0.5)
    for _ in range(3):
        g = np.asfortranarray(rng.standard_normal((4, 6)))
        cp.grad, tp.grad = cr.Tensor(g), torch.tensor(np.ascontiguousarray(g))
        copt.step()
        topt.step()
    np.testing.assert_allclose(cp.data, tp.detach().numpy(), **TOL)
    bad = cr.Tensor(np.zeros((6, 4)))
    cp.grad = bad
    with pytest.raises(ValueError, match="shape"):
        copt.step()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_large_float64_parameter_through_blas_axpy_matches_torch(momentum: float) -> None:
    """Parameters above _blas.AXPY_MIN elements are updated by BLAS's axpy (one rounding per multiply-add)."""
    from chainrule import _blas

    rng = np.random.default_rng(9)
    w = rng.standard_normal(_blas.AXPY_MIN + 3)
    cp, tp = cr.tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    copt, topt = optim.SGD([cp], lr=0.01, momentum=momentum), torch.optim.SGD([tp], lr=0.01, momentum=momentum)
    for _ in range(4):
        g = rng.standard_normal(w.shape)
        cp.grad, tp.grad = cr.tensor(g), torch.tensor(g)
        version = cp._version
        copt.step()
        topt.step()
        assert cp._version > version  # an in-place change, as for the NumPy path
    np.testing.assert_allclose(cp.data, tp.detach().numpy(), **TOL)
