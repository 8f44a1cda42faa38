"""Adam's multi-tensor update: a group's parameters and state live on flat arrays. Whatever replaces them
behind the optimizer's back (p.data assigned, state dicts loaded, copies, missing gradients, options
switched on later) must leave the trajectory equal to torch.optim's, in float64 at 1e-10."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import chainrule as cr
import chainrule.functional as F
from chainrule import nn, optim

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("torch_float64")


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    tm = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    cm = nn.Sequential(nn.Linear(5, 8, dtype=np.float64), nn.ReLU(), nn.Linear(8, 3, dtype=np.float64))
    cm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    return tm, cm


X = np.random.default_rng(0).normal(size=(16, 5))
Y = np.random.default_rng(1).integers(0, 3, size=16)


def _step(tm, topt, cm, copt):
    topt.zero_grad()
    torch.nn.functional.cross_entropy(tm(torch.tensor(X)), torch.tensor(Y)).backward()
    topt.step()
    copt.zero_grad()
    F.cross_entropy(cm(cr.tensor(X, dtype=np.float64)), Y).backward()
    copt.step()


def _same(tm, cm):
    tsd, csd = tm.state_dict(), cm.state_dict()
    for k in tsd:
        np.testing.assert_allclose(csd[k], tsd[k].detach().numpy(), rtol=TOL, atol=TOL, err_msg=k)


def _make(name="Adam", **kw):
    tm, cm = _pair()
    return tm, getattr(torch.optim, name)(tm.parameters(), **kw), cm, getattr(optim, name)(cm.parameters(), **kw)


@pytest.mark.parametrize("kw", [{}, {"amsgrad": True, "weight_decay": 0.1}, {"maximize": True}])
def test_parameters_and_state_are_views_of_one_array_updated_in_place(kw):
    tm, topt, cm, copt = _make(lr=0.01, **kw)
    _step(tm, topt, cm, copt)
    params = list(cm.parameters())
    held = [p.data for p in params]
    state = [copt.state[p]["exp_avg"] for p in params]
    base = params[0].data.base
    assert base is not None and all(np.shares_memory(p.data, base) for p in params)
    for _ in range(4):
        _step(tm, topt, cm, copt)
    assert all(p.data is h for p, h in zip(params, held))  # updated in place, never replaced
    assert all(copt.state[p]["exp_avg"] is s for p, s in zip(params, state))
    assert all(copt.state[p]["step"] == 5 for p in params)
    assert all(p._version > 0 for p in params)
    _same(tm, cm)


def test_parameter_data_replaced_by_load_state_dict_or_assignment():
    tm, topt, cm, copt = _make(lr=0.01)
    for _ in range(3):
        _step(tm, topt, cm, copt)
    new = {k: v.detach().numpy() * 0.5 for k, v in tm.state_dict().items()}
    tm.load_state_dict({k: torch.tensor(v) for k, v in new.items()})
    cm.load_state_dict(new)
    cm[0].bias.data = cm[0].bias.data.copy()  # a fresh array, no longer a view of the flat one
    for _ in range(3):
        _step(tm, topt, cm, copt)
    _same(tm, cm)


def test_optimizer_load_state_dict_and_deepcopy_continue_identically():
    tm, topt, cm, copt = _make(lr=0.02, amsgrad=True)
    for _ in range(3):
        _step(tm, topt, cm, copt)
    saved_t, saved_c = copy.deepcopy(topt.state_dict()), copt.state_dict()
    for _ in range(2):
        _step(tm, topt, cm, copt)
    topt.load_state_dict(saved_t)
    copt.load_state_dict(saved_c)
    for _ in range(3):
        _step(tm, topt, cm, copt)
    _same(tm, cm)
    # a deep copy of model and optimizer together trains on its own, like the original
    cm2, copt2 = copy.deepcopy((cm, copt))
    tm2, topt2 = copy.deepcopy((tm, topt))
    for _ in range(3):
        _step(tm2, topt2, cm2, copt2)
    _same(tm2, cm2)
    _same(tm, cm)  # the originals did not move


def test_missing_gradient_and_uneven_steps_fall_back_per_parameter():
    tm, topt, cm, copt = _make(lr=0.01)
    _step(tm, topt, cm, copt)
    # one step where the last layer has no gradient: torch leaves it (and its step count) alone
    topt.zero_grad()
    copt.zero_grad()
    torch.nn.functional.cross_entropy(tm(torch.tensor(X)), torch.tensor(Y)).backward()
    F.cross_entropy(cm(cr.tensor(X, dtype=np.float64)), Y).backward()
    tm[2].weight.grad = tm[2].bias.grad = None
    cm[2].weight.grad = cm[2].bias.grad = None
    topt.step()
    copt.step()
    assert copt.state[cm[0].weight]["step"] == 2 and copt.state[cm[2].weight]["step"] == 1
    for _ in range(3):  # steps now differ between parameters: updated one by one, still torch's values
        _step(tm, topt, cm, copt)
    _same(tm, cm)


def test_group_options_changed_between_steps():
    tm, topt, cm, copt = _make("AdamW", lr=0.01)
    for _ in range(2):
        _step(tm, topt, cm, copt)
    for opt in (topt, copt):
        opt.param_groups[0].update(lr=0.03, weight_decay=0.2, maximize=True)
    for _ in range(3):
        _step(tm, topt, cm, copt)
    _same(tm, cm)


def test_amsgrad_switched_on_later_matches_the_per_parameter_update(monkeypatch):
    # torch.optim can't switch AMSGrad on mid-run; the reference is chainrule's own per-parameter update
    results = []
    for flat in (True, False):
        if not flat:
            monkeypatch.setattr(optim.Adam, "_apply_flat", lambda self, *a, **k: False)
        tm, topt, cm, copt = _make(lr=0.01)
        for k in range(5):
            if k == 2:
                copt.param_groups[0]["amsgrad"] = True
            copt.zero_grad()
            F.cross_entropy(cm(cr.tensor(X, dtype=np.float64)), Y).backward()
            copt.step()
        assert "max_exp_avg_sq" in copt.state[cm[0].weight]
        results.append(cm.state_dict())
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_mixed_dtypes_and_fortran_order_fall_back():
    a = cr.tensor(np.ones((3, 2)), requires_grad=True)
    b = cr.tensor(np.ones(4, np.float32), requires_grad=True)
    c = cr.tensor(np.ones((2, 3)), requires_grad=True)
    c.data = np.asfortranarray(c.data)
    ta, tb, tc = (torch.tensor(t.data.copy(), requires_grad=True) for t in (a, b, c))
    copt, topt = optim.Adam([a, b, c], lr=0.1), torch.optim.Adam([ta, tb, tc], lr=0.1)
    for k in range(3):
        for t, tt in ((a, ta), (b, tb), (c, tc)):
            g = np.full(t.shape, k + 1.0, t.dtype)
            t.grad, tt.grad = cr.tensor(g), torch.tensor(g)
        copt.step()
        topt.step()
    assert b.dtype == np.float32 and c.data.flags.f_contiguous
    for t, tt in ((a, ta), (b, tb), (c, tc)):
        np.testing.assert_allclose(t.data, tt.detach().numpy(), rtol=1e-6)


def test_arrays_held_elsewhere_are_updated_in_place_not_moved():
    # from_numpy shares memory with the caller's array (as torch.from_numpy): the caller sees every update
    a, b = np.ones((3, 2)), np.ones(4)
    pa, pb = cr.from_numpy(a), cr.from_numpy(b)
    pa.requires_grad = pb.requires_grad = True
    ta, tb = torch.ones((3, 2), requires_grad=True), torch.ones(4, requires_grad=True)
    copt, topt = optim.Adam([pa, pb], lr=0.1), torch.optim.Adam([ta, tb], lr=0.1)
    for k in range(3):
        for t, tt in ((pa, ta), (pb, tb)):
            g = np.full(t.shape, k - 0.5)
            t.grad, tt.grad = cr.tensor(g), torch.tensor(g)
        copt.step()
        topt.step()
    assert pa.data is a and pb.data is b
    np.testing.assert_allclose(a, ta.detach().numpy(), rtol=TOL)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=TOL)
    # a state array kept by the caller keeps being the one updated
    tm, topt, cm, copt = _make(lr=0.01)
    _step(tm, topt, cm, copt)
    held = copt.state[cm[0].weight]["exp_avg"]
    cm[0].bias.data = cm[0].bias.data.copy()  # forces a new layout on the next step
    for _ in range(2):
        _step(tm, topt, cm, copt)
    assert copt.state[cm[0].weight]["exp_avg"] is held
    np.testing.assert_allclose(held, topt.state[tm[0].weight]["exp_avg"].numpy(), rtol=1e-9, atol=1e-12)
    _same(tm, cm)
