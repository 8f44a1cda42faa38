"""chainrule.nn.utils.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
from chainrule.errors import TrainingError
from chainrule.nn import utils

SHAPES = [(3, 4), (5,), (2, 2, 2), ()]


def _pairs(scale: float, dtype=np.float64, seed: int = 0, with_none: bool = True):
    rng = np.random.default_rng(seed)
    tps, cps = [], []
    for i, shape in enumerate(SHAPES):
        w = rng.normal(size=shape).astype(dtype)
        g = (scale * rng.normal(size=shape)).astype(dtype)
        tp = torch.tensor(w, requires_grad=True)
        cp = cr.tensor(w, requires_grad=True)
        if not (with_none and i == 1):  # one parameter without a gradient
            tp.grad = torch.tensor(g)
            cp.grad = cr.tensor(g.copy())
        tps.append(tp)
        cps.append(cp)
    return tps, cps


def _grads_equal(tps, cps, tol):
    for tp, cp in zip(tps, cps):
        assert (tp.grad is None) == (cp.grad is None)
        if tp.grad is not None:
            np.testing.assert_allclose(cp.grad.data, tp.grad.numpy(), rtol=tol, atol=tol)
            assert cp.grad.dtype == cp.dtype


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, 0.5, math.inf, -math.inf, 0.0, "inf"])
@pytest.mark.parametrize("scale,max_norm", [(1.0, 0.5), (0.01, 10.0), (5.0, 1.0)])
def test_clip_grad_norm_matches_torch(norm_type, scale, max_norm):
    nt = float(norm_type)
    tps, cps = _pairs(scale)
    tn = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=nt)
    cn = utils.clip_grad_norm_(cps, max_norm, norm_type=norm_type)
    assert isinstance(cn, cr.Tensor) and cn.shape == () and cn.dtype == np.float64
    np.testing.assert_allclose(cn.item(), tn.item(), rtol=1e-12)
    _grads_equal(tps, cps, 1e-12)


def test_clip_grad_norm_float32_and_single_tensor():
    tps, cps = _pairs(3.0, dtype=np.float32, with_none=False)
    tn = torch.nn.utils.clip_grad_norm_(tps, 1.0)
    cn = utils.clip_grad_norm_(cps, 1.0)
    assert cn.dtype == np.float32
    np.testing.assert_allclose(cn.item(), tn.item(), rtol=1e-6)
    _grads_equal(tps, cps, 1e-6)
    tn = torch.nn.utils.clip_grad_norm_(tps[0], 0.1, norm_type=1)
    cn = utils.clip_grad_norm_(cps[0], 0.1, norm_type=1)
    np.testing.assert_allclose(cn.item(), tn.item(), rtol=1e-6)
    _grads_equal(tps, cps, 1e-6)


def test_clip_grad_norm_no_grads_and_nonfinite():
    p = cr.tensor([1.0, 2.0], requires_grad=True)
    total = utils.clip_grad_norm_([p], 1.0)
    assert total.item() == 0.0 and total.item() == torch.nn.utils.clip_grad_norm_([], 1.0).item()
    p.grad = cr.tensor([np.inf, 1.0])
    with pytest.raises(TrainingError, match="non-finite") as info:
        utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert isinstance(info.value, RuntimeError)  # as torch's
    tp = torch.tensor([1.0, 2.0], requires_grad=True)
    tp.grad = torch.tensor([np.inf, 1.0])
    np.testing.assert_array_equal(
        utils.clip_grad_norm_([p], 1.0).data, torch.nn.utils.clip_grad_norm_([tp], 1.0).numpy()
    )
    np.testing.assert_array_equal(p.grad.data, tp.grad.numpy())  # nan where inf * 0, as torch


@pytest.mark.parametrize("clip_value", [0.1, 0.5, 10.0])
def test_clip_grad_value_matches_torch(clip_value):
    tps, cps = _pairs(1.0)
    assert torch.nn.utils.clip_grad_value_(tps, clip_value) is None
    assert utils.clip_grad_value_(cps, clip_value) is None
    _grads_equal(tps, cps, 0)
    assert all(np.abs(p.grad.data).max() <= clip_value for p in cps if p.grad is not None)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    size=st.integers(1, 6),
    scale=st.floats(1e-3, 1e3),
    max_norm=st.floats(1e-2, 1e2),
    norm_type=st.sampled_from([1.0, 2.0, 4.0, math.inf]),
    seed=st.integers(0, 2**16),
)
def test_clip_grad_norm_random(n, size, scale, max_norm, norm_type, seed):
    rng = np.random.default_rng(seed)
    gs = [scale * rng.normal(size=(size, i + 1)) for i in range(n)]
    tps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in gs]
    cps = [cr.zeros(*g.shape, dtype=np.float64, requires_grad=True) for g in gs]
    for tp, cp, g in zip(tps, cps, gs):
        tp.grad, cp.grad = torch.tensor(g), cr.tensor(g.copy())
    tn = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type)
    cn = utils.clip_grad_norm_(cps, max_norm, norm_type)
    np.testing.assert_allclose(cn.item(), tn.item(), rtol=1e-12)
    _grads_equal(tps, cps, 1e-12 * scale)
    assert utils.get_total_norm([p.grad for p in cps], norm_type).item() <= max_norm * (1 + 1e-9)
