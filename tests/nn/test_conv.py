"""Conv1d / Conv2d against PyTorch (float64, same weights through the state dict), gradcheck, init."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule.nn.conv import Conv1d, Conv2d
from chainrule.ops.conv import conv1d, conv2d

CONFIGS_2D = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(padding=(2, 1), stride=(2, 3), dilation=(2, 1)),
    dict(padding="same", dilation=2),
    dict(padding="same", kernel_size=4),  # asymmetric: the extra padding goes on the right
    dict(padding="valid", bias=False),
    dict(groups=2, stride=2, padding=1),
    dict(groups=2, kernel_size=(1, 3), stride=(1, 2)),
]


def _compare(cm, tm, x: np.ndarray) -> None:
    cm.load_state_dict(tm.state_dict())
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    oc, ot = cm(xc), tm(xt)
    np.testing.assert_allclose(oc.data, ot.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(oc.shape)
    oc.backward(cr.tensor(g))
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    tparams = dict(tm.named_parameters())
    for name, p in cm.named_parameters():
        np.testing.assert_allclose(p.grad.data, tparams[name].grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("cfg", CONFIGS_2D, ids=str)
def test_conv2d_matches_torch(cfg: dict) -> None:
    cfg = {"kernel_size": 3, **cfg}
    cm = Conv2d(4, 6, dtype=np.float64, **cfg)
    tm = torch.nn.Conv2d(4, 6, dtype=torch.float64, **cfg)
    _compare(cm, tm, np.random.default_rng(0).standard_normal((3, 4, 9, 8)))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("cfg", CONFIGS_2D, ids=str)
def test_conv1d_matches_torch(cfg: dict) -> None:
    cfg = {"kernel_size": 3, **cfg}
    cfg = {k: (v[-1] if isinstance(v, tuple) else v) for k, v in cfg.items()}
    cm = Conv1d(4, 6, dtype=np.float64, **cfg)
    tm = torch.nn.Conv1d(4, 6, dtype=torch.float64, **cfg)
    _compare(cm, tm, np.random.default_rng(0).standard_normal((3, 4, 11)))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    hw=st.tuples(st.integers(4, 9), st.integers(4, 9)),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
)
def test_conv2d_random_configs(n, groups, hw, k, stride, pad, dil) -> None:
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((n, 4, *hw)), rng.standard_normal((6, 4 // groups, *k)), rng.standard_normal(6)
    kw = dict(stride=stride, padding=pad, dilation=dil, groups=groups)
    tensors_c = [cr.tensor(a, requires_grad=True) for a in (x, w, b)]
    tensors_t = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    try:
        yt = torch.nn.functional.conv2d(*tensors_t, **kw)
    except RuntimeError:  # kernel larger than the padded input: chainrule must refuse too
        with pytest.raises(ValueError):
            conv2d(*tensors_c, **kw)
        return
    yc = conv2d(*tensors_c, **kw)
    np.testing.assert_allclose(yc.data, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(yc.shape)
    yc.backward(cr.tensor(g))
    yt.backward(torch.tensor(g))
    for a, b_ in zip(tensors_c, tensors_t):
        np.testing.assert_allclose(a.grad.data, b_.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_unbatched_input() -> None:
    cm, tm = Conv2d(2, 3, 3, padding=1, dtype=np.float64), torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    _compare(cm, tm, np.random.default_rng(0).standard_normal((2, 5, 6)))
    cm, tm = Conv1d(2, 3, 2, dtype=np.float64), torch.nn.Conv1d(2, 3, 2, dtype=torch.float64)
    _compare(cm, tm, np.random.default_rng(0).standard_normal((2, 7)))


def test_gradcheck_first_and_second_order() -> None:
    rng = np.random.default_rng(0)
    x = cr.tensor(rng.standard_normal((2, 4, 5, 4)), requires_grad=True)
    w = cr.tensor(rng.standard_normal((2, 2, 2, 3)), requires_grad=True)
    b = cr.tensor(rng.standard_normal(2), requires_grad=True)

    def f(x, w, b):
        return conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)

    assert cr.gradcheck(f, (x, w, b))
    assert cr.gradgradcheck(f, (x, w, b))
    x1 = cr.tensor(rng.standard_normal((2, 2, 7)), requires_grad=True)
    w1 = cr.tensor(rng.standard_normal((3, 2, 3)), requires_grad=True)
    assert cr.gradgradcheck(lambda x, w: conv1d(x, w, stride=2, padding=1) ** 2, (x1, w1))


def test_double_backward_matches_torch() -> None:
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))
    xc, wc = cr.tensor(x, requires_grad=True), cr.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    (gc,) = cr.grad((conv2d(xc, wc, padding=1, stride=2) ** 2).sum(), [xc], create_graph=True)
    yt = torch.nn.functional.conv2d(xt, wt, padding=1, stride=2)
    (gt,) = torch.autograd.grad((yt**2).sum(), [xt], create_graph=True)
    (gc * gc).sum().backward()
    (gt * gt).sum().backward()
    np.testing.assert_allclose(wc.grad.data, wt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=1e-10)


def test_float32_stays_float32() -> None:
    m = Conv2d(3, 4, 3)
    x = cr.randn(2, 3, 8, 8, requires_grad=True)
    y = m(x)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32 and m.weight.grad.dtype == np.float32


def test_state_dict_keys_shapes_and_init() -> None:
    m, t = Conv2d(6, 8, (3, 2), groups=2), torch.nn.Conv2d(6, 8, (3, 2), groups=2)
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: tuple(v.shape) for k, v in t.state_dict().items()}
    big = Conv2d(16, 64, 5, generator=cr.Generator(0))
    bound = 1 / np.sqrt(16 * 25)
    w = big.weight.data
    assert np.abs(w).max() <= bound and np.abs(big.bias.data).max() <= bound
    assert abs(w.mean()) < 0.02 * bound and abs(w.var() / (bound**2 / 3) - 1) < 0.05
    again = Conv2d(16, 64, 5, generator=cr.Generator(0))
    np.testing.assert_array_equal(again.weight.data, w)
    assert "Conv2d(6, 8, kernel_size=(3, 2), stride=(1, 1), groups=2)" == repr(m)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        Conv2d(4, 2, 3)(cr.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="same"):
        Conv2d(4, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv2d(cr.randn(1, 1, 2, 2), cr.randn(1, 1, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        Conv2d(4, 6, 3, groups=4)
