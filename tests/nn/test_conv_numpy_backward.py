"""The NumPy backward rules of conv2d and the pooling ops (used without create_graph) give the same gradients
as the recorded Tensor rules (used with create_graph) and as PyTorch: bias folded into the weight-gradient
product, grouped, strided, padded and dilated convolutions, the chunked weight-gradient product, an input that
needs no gradient, and 2x2 max-pooling with ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import chainrule as cr
from chainrule.ops import conv as C

CASES = [
    # (N, C_in, H, W), (C_out, kH, kW), stride, padding, dilation, groups
    ((3, 1, 12, 12), (4, 3, 3), 1, 0, 1, 1),  # small result, long contraction: the chunked product
    ((2, 4, 9, 8), (6, 3, 2), 1, 1, 1, 2),
    ((2, 3, 10, 11), (5, 3, 3), 2, 1, 2, 1),
    ((1, 2, 7, 7), (4, 1, 1), 1, 0, 1, 1),
    ((4, 16, 8, 8), (32, 3, 3), 1, 0, 1, 1),  # the CNN's second layer, smaller
]


def _grads(x, w, b, stride, padding, dilation, groups, g, create_graph: bool) -> list[np.ndarray]:
    params = [p for p in (x, w, b) if p is not None and p.requires_grad]
    out = C.conv2d(x, w, b, stride, padding, dilation, groups)
    return [t.data for t in cr.grad(out, params, cr.tensor(g), create_graph=create_graph)]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_grad", [True, False])
def test_conv2d_numpy_rule_equals_tensor_rule_and_torch(case, bias: bool, x_grad: bool) -> None:
    shape, (o, kh, kw), stride, padding, dilation, groups = case
    rng = np.random.default_rng(0)
    xa = rng.standard_normal(shape)
    wa = rng.standard_normal((o, shape[1] // groups, kh, kw))
    ba = rng.standard_normal(o) if bias else None
    x = cr.tensor(xa, requires_grad=x_grad)
    w = cr.tensor(wa, requires_grad=True)
    b = cr.tensor(ba, requires_grad=True) if bias else None
    out_shape = C.conv2d(x, w, b, stride, padding, dilation, groups).shape
    g = rng.standard_normal(out_shape)
    fast = _grads(x, w, b, stride, padding, dilation, groups, g, create_graph=False)
    slow = _grads(x, w, b, stride, padding, dilation, groups, g, create_graph=True)
    xt = torch.tensor(xa, requires_grad=x_grad)
    wt = torch.tensor(wa, requires_grad=True)
    bt = torch.tensor(ba, requires_grad=True) if bias else None
    ot = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    ref = torch.autograd.grad(ot, [p for p in (xt, wt, bt) if p is not None and p.requires_grad], torch.tensor(g))
    assert len(fast) == len(slow) == len(ref) == 1 + bias + x_grad
    for f, s, r in zip(fast, slow, ref):
        assert f.shape == s.shape == tuple(r.shape)
        np.testing.assert_allclose(f, s, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(f, r.numpy(), rtol=1e-12, atol=1e-11)


def test_conv2d_float32_bias_gradient_rides_in_the_product() -> None:
    rng = np.random.default_rng(1)
    x = cr.tensor(rng.standard_normal((8, 1, 14, 14)).astype(np.float32))
    conv = cr.nn.Conv2d(1, 4, 3)
    out = conv(x)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(cr.tensor(g))
    assert conv.weight.grad.dtype == conv.bias.grad.dtype == np.float32
    assert conv.bias.grad.shape == (4,)
    np.testing.assert_allclose(conv.bias.grad.data, g.astype(np.float64).sum((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert x.grad is None


@pytest.mark.parametrize("batch_innermost", [False, True])
@pytest.mark.parametrize("hw", [(8, 8), (11, 11)], ids=str)
def test_max_pool_numpy_rule_equals_tensor_rule(batch_innermost: bool, hw) -> None:
    rng = np.random.default_rng(2)
    a = np.maximum(rng.integers(-2, 3, (4, 3, *hw)), 0).astype(np.float64)  # ties, as after a ReLU
    if batch_innermost:
        a = np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    x = cr.tensor(a, requires_grad=True)
    x.data = a  # keep the layout
    out = C.max_pool2d(x, 2)
    g = cr.tensor(rng.standard_normal(out.shape))
    (fast,) = cr.grad(C.max_pool2d(x, 2), [x], g)
    (slow,) = cr.grad(C.max_pool2d(x, 2), [x], g, create_graph=True)
    xt = torch.tensor(np.ascontiguousarray(a), requires_grad=True)
    (ref,) = torch.autograd.grad(F.max_pool2d(xt, 2), [xt], torch.tensor(g.data))
    np.testing.assert_array_equal(fast.data, slow.data)
    np.testing.assert_array_equal(fast.data, ref.numpy())
