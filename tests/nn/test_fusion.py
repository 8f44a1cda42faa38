"""nn.Sequential runs Linear + ReLU as one linear_relu node: same values and gradients as the two modules,
bit for bit, and never where it would change what user code sees (hooks, subclasses, explain's graph)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import nn
from chainrule.explain import trace


def _mlp(seed: int = 0, dtype=cr.float32) -> nn.Sequential:
    cr.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


def _ops(t: cr.Tensor) -> list[str]:
    seen, stack, ops = set(), [t], []
    while stack:
        n = stack.pop()
        if id(n) in seen or n.is_leaf:
            continue
        seen.add(id(n))
        ops.append(n._op)
        stack.extend(n._prev)
    return sorted(ops)


def _step(model: nn.Module, x: np.ndarray, fuse: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    model.zero_grad()
    with nn.fusion(fuse):
        out = model(cr.from_numpy(x))
    (out * out).sum().backward()
    return out.data.copy(), [p.grad.data.copy() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [cr.float32, cr.float64])
def test_fused_equals_unfused_bit_for_bit(dtype) -> None:
    model = _mlp(dtype=dtype)
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(dtype)
    x[0, :] = 0.0  # rows where units sit exactly at 0 (relu's gradient there is 0, as PyTorch's)
    out_f, grads_f = _step(model, x, True)
    out_u, grads_u = _step(model, x, False)
    np.testing.assert_array_equal(out_f, out_u)
    for a, b in zip(grads_f, grads_u):
        np.testing.assert_array_equal(a, b)
    with nn.fusion(True):
        assert _ops(model(cr.from_numpy(x))) == ["linear", "linear_relu", "linear_relu"]
    with nn.fusion(False):
        assert _ops(model(cr.from_numpy(x))) == ["linear", "linear", "linear", "relu", "relu"]


def test_fused_mlp_matches_torch() -> None:
    model = _mlp(dtype=cr.float64)
    ref = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).double()
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((4, 6))
    out, grads = _step(model, x, True)
    tout = ref(torch.from_numpy(x))
    (tout * tout).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-14)
    for g, p in zip(grads, ref.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_second_order_gradients_through_the_fused_node() -> None:
    model = _mlp(dtype=cr.float64)
    x = cr.tensor(np.random.default_rng(3).standard_normal((3, 6)), requires_grad=True)
    got = []
    for fuse in (True, False):
        with nn.fusion(fuse):
            y = model(x).tanh().sum()
        (gx,) = cr.grad(y, x, create_graph=True)
        (ggx,) = cr.grad((gx * gx).sum(), x)
        got.append(ggx.data)
    np.testing.assert_allclose(got[0], got[1], rtol=1e-12, atol=1e-14)


def test_hooks_and_subclasses_are_not_fused() -> None:
    model = _mlp()
    seen = []
    handle = model[0].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    out = model(cr.ones(2, 6))
    assert seen == [(2, 8)]  # the Linear ran as a module: its hook saw its output
    assert _ops(out) == ["linear", "linear", "linear_relu", "relu"]
    handle.remove()

    class Shifted(nn.ReLU):
        def forward(self, x):
            return super().forward(x) + 1.0

    m2 = nn.Sequential(nn.Linear(3, 2), Shifted())
    with cr.no_grad():
        assert np.all(m2(cr.ones(1, 3)).data >= 1.0)


def test_fusion_switch_restores_and_no_grad_runs_fused() -> None:
    model = _mlp()
    with nn.fusion(False):
        with nn.fusion(True):
            pass
        with cr.no_grad():
            a = model(cr.ones(2, 6)).data
    with cr.no_grad():
        b = model(cr.ones(2, 6)).data
    np.testing.assert_array_equal(a, b)


def test_explain_shows_linear_and_relu_apart() -> None:
    model = _mlp(dtype=cr.float64)
    tr = trace(model, np.ones((2, 6)), np.zeros((2, 3)), lambda o, t: ((o - t) ** 2).mean(), gradcheck=False)
    ops = [n.op for n in tr.nodes]
    assert "linear_relu" not in ops and ops.count("relu") == 2 and ops.count("linear") == 3


def test_gradient_at_nan_and_zero_inputs_is_pytorchs() -> None:
    """relu's gradient passes where not z <= 0, NaN included (PyTorch's threshold_backward), fused or not."""
    x = np.array([[np.nan, 1.0], [0.0, -1.0], [2.0, 0.5]])
    w, b = np.array([[1.0, 0.0], [0.5, 1.0]]), np.array([0.0, -0.5])
    ref_w, ref_b = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    torch.relu(torch.nn.functional.linear(torch.tensor(x), ref_w, ref_b)).sum().backward()
    for fused in (True, False):
        cw, cb = cr.tensor(w, requires_grad=True), cr.tensor(b, requires_grad=True)
        z = cr.ops.linear_relu(cr.tensor(x), cw, cb) if fused else cr.ops.linear(cr.tensor(x), cw, cb).relu()
        z.sum().backward()
        np.testing.assert_array_equal(cb.grad.data, ref_b.grad.numpy())
        np.testing.assert_array_equal(cw.grad.data, ref_w.grad.numpy())


def _relu_pool_input(shape: tuple, dtype, seed: int) -> np.ndarray:
    """Random values with the cases where order could matter: windows all negative or all zero, tied maxima,
    NaN, ±inf, -0.0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(dtype)  # few distinct values: many tied maxima
    flat = x.reshape(-1)
    idx = rng.permutation(flat.size)
    flat[idx[:3]], flat[idx[3:6]], flat[idx[6:9]], flat[idx[9:12]] = np.nan, -np.inf, np.inf, -0.0
    x[..., :2] = -1.0  # whole windows at or below 0
    x[..., 2:4] = 0.0
    return x


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the test's own sum of +inf and -inf terms
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "pool, shape",
    [
        (lambda: nn.MaxPool2d(2), (2, 3, 8, 9)),
        (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 9, 8)),
        (lambda: nn.MaxPool2d((2, 3), dilation=2), (3, 10, 11)),  # unbatched
        (lambda: nn.MaxPool1d(2), (2, 3, 13)),
        (lambda: nn.MaxPool1d(3, stride=1, padding=1), (3, 7)),
    ],
)
def test_relu_then_max_pool_runs_pooled_first_bit_for_bit(pool, shape, dtype) -> None:
    """ReLU followed by a max pool is run as pool then relu: the same values and gradients, bit for bit (NaN where
    PyTorch has NaN), including tied windows, windows at or below zero, NaN and infinities; and PyTorch's."""
    model = nn.Sequential(nn.ReLU(), pool())
    x = _relu_pool_input(shape, dtype, seed=len(shape))
    g = np.random.default_rng(5).standard_normal(model(cr.from_numpy(x)).shape).astype(dtype)
    got = []
    for fuse in (True, False):
        xt = cr.tensor(x, requires_grad=True)
        with nn.fusion(fuse):
            out = model(xt)
        last, before = out, out._prev[0]
        while last._op in ("reshape", "squeeze"):  # unbatched and 1-d pooling reshape around the pool
            last, before = before, before._prev[0]
        while before._op in ("reshape", "unsqueeze"):
            before = before._prev[0]
        ops = (last._op.rstrip("12d"), before._op.rstrip("12d"))
        assert ops == (("relu", "max_pool") if fuse else ("max_pool", "relu")), ops
        (out * cr.from_numpy(g)).sum().backward()
        got.append((out.data, xt.grad.data))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])
    tp = pool()
    ref_pool = (torch.nn.MaxPool2d if isinstance(tp, nn.MaxPool2d) else torch.nn.MaxPool1d)(
        tp.kernel_size, tp.stride, tp.padding, tp.dilation, ceil_mode=tp.ceil_mode
    )
    xr = torch.tensor(x, requires_grad=True)
    tout = ref_pool(torch.relu(xr))
    (tout * torch.from_numpy(g)).sum().backward()
    np.testing.assert_array_equal(got[0][0], tout.detach().numpy())
    # overlapping windows add several gradients into one input: PyTorch adds them in another order
    np.testing.assert_allclose(got[0][1], xr.grad.numpy(), rtol=4 * np.finfo(dtype).eps, atol=0)


def test_relu_before_max_pool_runs_as_written_where_it_could_show() -> None:
    """Not reordered: return_indices (the indices of the relu'd map differ where a window is <= 0), hooks on either
    module, a subclass, fusion off; the graph then shows relu before the pool."""
    x = cr.tensor(np.random.default_rng(0).standard_normal((1, 2, 4, 4)), requires_grad=True)

    def first_op(model: nn.Module) -> str:
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        return out._prev[0]._op  # the pool's input: relu when run as written

    assert first_op(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))) != "relu"
    assert first_op(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2, return_indices=True))) == "relu"
    hooked = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    hooked[1].register_forward_pre_hook(lambda m, args: None)
    assert first_op(hooked) == "relu"
    hooked = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    hooked[0].register_forward_hook(lambda m, args, out: None)
    assert first_op(hooked) == "relu"

    class MyPool(nn.MaxPool2d):
        pass

    assert first_op(nn.Sequential(nn.ReLU(), MyPool(2))) == "relu"
    with nn.fusion(False):
        assert first_op(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))) == "relu"


def test_a_replaced_forward_is_not_fused(monkeypatch) -> None:
    """A forward set on the instance or the class runs, as calling the module would."""
    model, x = _mlp(), cr.ones(2, 6)
    model[0].forward = lambda inp: cr.ops.linear(inp, model[0].weight, model[0].bias) * 0.0
    model[3].forward = lambda inp: inp - 1.0
    assert _ops(model(x)) == ["linear", "linear", "linear", "mul", "relu", "sub"]
    np.testing.assert_array_equal(model[:2](x).data, np.zeros((2, 8), np.float32))
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, inp: inp)
    assert _ops(_mlp()(x)) == ["linear", "linear", "linear"]


def test_a_weight_that_is_not_a_parameter() -> None:
    """A Linear whose weight was replaced by a plain tensor attribute (as weight-norm style code does)."""
    model = _mlp()
    w = model[0].weight
    del model[0].weight
    model[0].weight = w.detach() * 2.0
    x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
    out_f, grads_f = _step(model, x, True)
    out_u, grads_u = _step(model, x, False)
    np.testing.assert_array_equal(out_f, out_u)
    for a, b in zip(grads_f, grads_u):
        np.testing.assert_array_equal(a, b)
