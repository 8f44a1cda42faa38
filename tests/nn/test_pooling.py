"""Max / average / adaptive pooling against PyTorch (float64), gradcheck and double backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import chainrule as cr
from chainrule.nn.pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from chainrule.ops import conv as C

POOL_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=1),
    dict(kernel_size=3, stride=1),
]


def _check(cf, tf, shape: tuple[int, ...], seed: int = 0) -> None:
    x = np.random.default_rng(seed).standard_normal(shape)
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    oc, ot = cf(xc), tf(xt)
    assert oc.shape == tuple(ot.shape)
    np.testing.assert_allclose(oc.data, ot.detach().numpy(), rtol=1e-13, atol=1e-14)
    g = np.random.default_rng(seed + 1).standard_normal(oc.shape)
    oc.backward(cr.tensor(g))
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=1e-13, atol=1e-14)


def _one_d(cfg: dict) -> dict:
    return {k: (v[-1] if isinstance(v, tuple) else v) for k, v in cfg.items()}


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_max_pool_matches_torch(cfg: dict) -> None:
    _check(MaxPool2d(**cfg), torch.nn.MaxPool2d(**cfg), (2, 3, 9, 10))
    _check(MaxPool1d(**_one_d(cfg)), torch.nn.MaxPool1d(**_one_d(cfg)), (2, 3, 11))
    dil = {**cfg, "dilation": 2}
    _check(lambda x: C.max_pool2d(x, **dil), lambda x: F.max_pool2d(x, **dil), (2, 3, 10, 9))


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool_matches_torch(cfg: dict, include_pad: bool) -> None:
    cfg = {**cfg, "count_include_pad": include_pad}
    _check(AvgPool2d(**cfg), torch.nn.AvgPool2d(**cfg), (2, 3, 9, 10))
    _check(AvgPool1d(**_one_d(cfg)), torch.nn.AvgPool1d(**_one_d(cfg)), (2, 3, 11))


def test_avg_pool_divisor_override_and_unbatched() -> None:
    _check(AvgPool2d(3, 2, 1, divisor_override=4), torch.nn.AvgPool2d(3, 2, 1, divisor_override=4), (2, 7, 8))
    _check(MaxPool2d(2), torch.nn.MaxPool2d(2), (3, 6, 7))
    _check(MaxPool1d(2), torch.nn.MaxPool1d(2), (3, 7))


@pytest.mark.parametrize("size", [1, (3, 4), (5, None), (4, 7), (9, 10)], ids=str)
def test_adaptive_avg_pool_matches_torch(size) -> None:
    _check(AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), (2, 3, 9, 10))
    if isinstance(size, int):
        _check(AdaptiveAvgPool1d(size), torch.nn.AdaptiveAvgPool1d(size), (2, 3, 11))
        _check(AdaptiveAvgPool1d(4), torch.nn.AdaptiveAvgPool1d(4), (2, 3, 11))


def test_max_pool_ties_go_to_first_maximum_and_indices() -> None:
    x = np.zeros((1, 2, 4, 4))
    x[0, 1, 1, 1] = x[0, 1, 0, 1] = 5.0
    _check(lambda t: C.max_pool2d(t, 2), lambda t: F.max_pool2d(t, 2), x.shape)  # random data
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    C.max_pool2d(xc, 2).sum().backward()
    F.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_array_equal(xc.grad.data, xt.grad.numpy())
    r = np.random.default_rng(0).standard_normal((2, 3, 9, 10))
    _, ic = C.max_pool2d(cr.tensor(r), 3, 2, 1, 2, ceil_mode=True, return_indices=True)
    _, it = F.max_pool2d(torch.tensor(r), 3, 2, 1, 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(ic.data, it.numpy())
    _, ic = MaxPool1d(3, 2, return_indices=True)(cr.tensor(r[0]))
    _, it = torch.nn.MaxPool1d(3, 2, return_indices=True)(torch.tensor(r[0]))
    np.testing.assert_array_equal(ic.data, it.numpy())


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=str)
def test_max_pool_windows_with_nan_send_the_gradient_to_their_last_nan(cfg: dict) -> None:
    """PyTorch takes a value that exceeds the one held or is NaN: a window holding NaN gives NaN and its gradient
    goes to its last NaN (chainrule sent it to the first maximum of the other values, or dropped it)."""
    rng = np.random.default_rng(1)
    for nd, shape in ((2, (2, 2, 7, 8)), (1, (2, 2, 9))):
        x = rng.integers(-2, 3, shape).astype(np.float64)  # ties, too
        x.reshape(-1)[rng.permutation(x.size)[: x.size // 6]] = np.nan
        c = cfg if nd == 2 else _one_d(cfg)
        ours, ref = (MaxPool2d, torch.nn.MaxPool2d) if nd == 2 else (MaxPool1d, torch.nn.MaxPool1d)
        for dtype in (np.float32, np.float64):
            xc, xt = cr.tensor(x.astype(dtype), requires_grad=True), torch.tensor(x.astype(dtype), requires_grad=True)
            oc, ot = ours(**c)(xc), ref(**c)(xt)
            np.testing.assert_array_equal(oc.data, ot.detach().numpy())
            g = np.arange(1, oc.data.size + 1, dtype=dtype).reshape(oc.shape)  # integers: sums exact in any order
            oc.backward(cr.tensor(g))
            ot.backward(torch.tensor(g))
            np.testing.assert_array_equal(xc.grad.data, xt.grad.numpy())
        _, ic = ours(**c, return_indices=True)(cr.tensor(x))
        _, it = ref(**c, return_indices=True)(torch.tensor(x))
        np.testing.assert_array_equal(ic.data, it.numpy())


def test_pooling_gradcheck_and_double_backward() -> None:
    rng = np.random.default_rng(3)
    x = cr.tensor(rng.standard_normal((1, 2, 5, 6)), requires_grad=True)
    for fn in (
        lambda t: C.max_pool2d(t, 3, 2, 1, ceil_mode=True) ** 2,
        lambda t: C.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False) ** 2,
        lambda t: C.adaptive_avg_pool2d(t, (2, 4)) ** 2,
        lambda t: C.max_pool1d(t.reshape(2, 30), 4, 3, 2) ** 2,
    ):
        assert cr.gradcheck(fn, (x,))
        assert cr.gradgradcheck(fn, (x,))


def test_pool_errors() -> None:
    with pytest.raises(ValueError, match="half of the kernel"):
        C.max_pool2d(cr.randn(1, 1, 6, 6), 2, padding=2)
    with pytest.raises(ValueError, match="dims"):
        C.avg_pool2d(cr.randn(6, 6), 2)


def test_large_inputs_take_the_threaded_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRULE_NUM_THREADS", "2")
    relu_like = np.maximum(np.random.default_rng(5).standard_normal((32, 16, 26, 26)), 0)  # many tied zero windows
    x = np.ascontiguousarray(relu_like)
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    oc, ot = C.max_pool2d(xc, 2), F.max_pool2d(xt, 2)
    np.testing.assert_array_equal(oc.data, ot.detach().numpy())
    g = np.random.default_rng(6).standard_normal(oc.shape)
    oc.backward(cr.tensor(g))
    ot.backward(torch.tensor(g))
    np.testing.assert_array_equal(xc.grad.data, xt.grad.numpy())
    w = np.random.default_rng(7).standard_normal((8, 16, 3, 3))
    yc = C.conv2d(cr.tensor(x), cr.tensor(w), padding=1)
    yt = F.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    np.testing.assert_allclose(yc.data, yt.numpy(), rtol=1e-12, atol=1e-12)
