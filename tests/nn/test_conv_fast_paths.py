"""Fast paths of the conv/pool kernels (2x2 max-pool tournament, tiled scatter, chunked weight gradient,
bias gradient as a product) give PyTorch's results exactly, in both memory layouts, to second order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import chainrule as cr
from chainrule.ops import conv as C


@pytest.mark.parametrize("kernel", [2, (1, 4), (4, 1)], ids=str)
@pytest.mark.parametrize("hw", [(8, 8), (9, 7)], ids=str)
@pytest.mark.parametrize("batch_innermost", [False, True])
def test_max_pool_four_offsets_ties_match_torch(kernel, hw, batch_innermost: bool) -> None:
    rng = np.random.default_rng(0)
    x = np.maximum(rng.integers(-3, 3, (5, 3, *hw)), 0).astype(np.float64)  # many tied windows, all tie patterns
    if batch_innermost:  # the layout of a conv output
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    xc = cr.tensor(x, requires_grad=True)
    xc.data = x  # keep the layout
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    oc, ot = C.max_pool2d(xc, kernel), F.max_pool2d(xt, kernel)
    np.testing.assert_array_equal(oc.data, ot.detach().numpy())
    g = rng.standard_normal(oc.shape)
    oc.backward(cr.tensor(g))
    ot.backward(torch.tensor(g))
    np.testing.assert_array_equal(xc.grad.data, xt.grad.numpy())
    _, ic = C.max_pool2d(cr.tensor(x), kernel, return_indices=True)
    _, it = F.max_pool2d(torch.tensor(np.ascontiguousarray(x)), kernel, return_indices=True)
    np.testing.assert_array_equal(ic.data, it.numpy())


def test_max_pool_2x2_and_conv_second_order() -> None:
    rng = np.random.default_rng(1)
    x = cr.tensor(rng.standard_normal((2, 2, 6, 5)), requires_grad=True)
    w = cr.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    b = cr.tensor(rng.standard_normal(3), requires_grad=True)
    fn = lambda x, w, b: C.max_pool2d(C.conv2d(x, w, b).relu(), 2) ** 2  # noqa: E731
    assert cr.gradcheck(fn, (x, w, b))
    assert cr.gradgradcheck(fn, (x, w, b))


def test_cnn_gradients_match_torch_in_float64() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 1, 28, 28))
    w1, b1 = rng.standard_normal((16, 1, 3, 3)), rng.standard_normal(16)
    w2, b2 = rng.standard_normal((32, 16, 3, 3)) * 0.1, rng.standard_normal(32)
    pc = [cr.tensor(a, requires_grad=True) for a in (w1, b1, w2, b2)]
    pt = [torch.tensor(a, requires_grad=True) for a in (w1, b1, w2, b2)]

    def net(f, lib, x, p):
        h = lib.max_pool2d(f(lib.conv2d(x, p[0], p[1])), 2)
        return lib.max_pool2d(f(lib.conv2d(h, p[2], p[3])), 2).sum()

    net(lambda t: t.relu(), C, cr.tensor(x), pc).backward()
    net(torch.relu, F, torch.tensor(x), pt).backward()
    for a, b in zip(pc, pt):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-12, atol=1e-10)
