"""Every optimizer and option against torch.optim: 25-step trajectories in float64, parameter groups,
state-dict round trips mid-trajectory, dtype preservation and hyperparameter validation."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import chainrule as cr
import chainrule.functional as F
from chainrule import nn, optim

STEPS = 25

CASES = {
    "SGD": [
        {},
        {"lr": 0.1},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.05, "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05, "maximize": True},
    ],
    "Adagrad": [
        {},
        {"lr": 0.1, "lr_decay": 0.05},
        {"lr": 0.05, "weight_decay": 0.1},
        {"lr": 0.05, "initial_accumulator_value": 0.5},
        {"lr": 0.05, "eps": 1e-3},
        {"lr": 0.02, "maximize": True, "weight_decay": 0.01},
    ],
    "RMSprop": [
        {},
        {"lr": 0.005, "alpha": 0.9},
        {"lr": 0.005, "eps": 1e-4},
        {"lr": 0.005, "weight_decay": 0.1},
        {"lr": 0.005, "momentum": 0.9},
        {"lr": 0.005, "centered": True},
        {"lr": 0.002, "centered": True, "momentum": 0.5, "weight_decay": 0.05},
        {"lr": 0.002, "maximize": True},
    ],
    "Adam": [
        {},
        {"lr": 0.01, "betas": (0.8, 0.99)},
        {"lr": 0.01, "eps": 1e-4},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "amsgrad": True},
        {"lr": 0.01, "maximize": True},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05, "maximize": True},
    ],
    "AdamW": [
        {},
        {"lr": 0.01, "weight_decay": 0.3},
        {"lr": 0.01, "amsgrad": True, "betas": (0.7, 0.95)},
        {"lr": 0.01, "maximize": True, "eps": 1e-3},
    ],
    "Adamax": [
        {},
        {"lr": 0.01, "betas": (0.8, 0.99)},
        {"lr": 0.01, "eps": 1e-3},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "maximize": True},
    ],
    "NAdam": [
        {},
        {"lr": 0.01, "betas": (0.8, 0.99)},
        {"lr": 0.01, "momentum_decay": 0.02},
        {"lr": 0.01, "eps": 1e-3},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 0.01, "maximize": True},
    ],
}

# Two groups (first layer / last layer) with different options each.
GROUP_CASES = {
    "SGD": ({"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"lr": 0.02, "weight_decay": 0.1, "dampening": 0.2}),
    "Adagrad": ({"lr": 0.1, "lr_decay": 0.1}, {"weight_decay": 0.2, "eps": 1e-6}),
    "RMSprop": ({"lr": 0.003, "centered": True}, {"momentum": 0.7, "alpha": 0.95}),
    "Adam": ({"lr": 0.02, "amsgrad": True}, {"betas": (0.5, 0.9), "weight_decay": 0.1}),
    "AdamW": ({"lr": 0.02, "weight_decay": 0.5}, {"amsgrad": True}),
    "Adamax": ({"lr": 0.02, "betas": (0.6, 0.9)}, {"weight_decay": 0.1}),
    "NAdam": ({"lr": 0.02, "decoupled_weight_decay": True, "weight_decay": 0.2}, {"momentum_decay": 0.01}),
}

ALL = [(name, i, kw) for name, cases in CASES.items() for i, kw in enumerate(cases)]


pytestmark = pytest.mark.usefixtures("torch_float64")


def _data(task: str):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5))
    if task == "mse":
        y = rng.normal(size=(16, 3))
    else:
        y = rng.integers(0, 3, size=16)
    return x, y


def _models(seed: int = 0):
    """The same 5-8-3 MLP in torch and chainrule (float64, weights copied through the state dict)."""
    torch.manual_seed(seed)
    tm = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    cm = nn.Sequential(nn.Linear(5, 8, dtype=np.float64), nn.ReLU(), nn.Linear(8, 3, dtype=np.float64))
    cm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    return tm, cm


def _cr_loss(model, x, y, task):
    out = model(cr.tensor(x, dtype=np.float64))
    return F.mse_loss(out, y) if task == "mse" else F.cross_entropy(out, y)


def _torch_loss(model, x, y, task):
    out = model(torch.tensor(x))
    if task == "mse":
        return torch.nn.functional.mse_loss(out, torch.tensor(y))
    return torch.nn.functional.cross_entropy(out, torch.tensor(y))


def _train(opt, model, loss_fn, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        opt.step()


def _params_equal(tm, cm, tol=1e-10):
    tsd, csd = tm.state_dict(), cm.state_dict()
    assert set(tsd) == set(csd)
    for k in tsd:
        assert np.isfinite(csd[k]).all(), k
        np.testing.assert_allclose(csd[k], tsd[k].detach().numpy(), rtol=tol, atol=tol, err_msg=k)


def _groups(model, options):
    layers = [model[0], model[2]]
    return [{"params": list(m.parameters()), **o} for m, o in zip(layers, options)]


@pytest.mark.parametrize("name,i,kwargs", ALL, ids=[f"{n}-{i}" for n, i, _ in ALL])
def test_trajectory_matches_torch(name, i, kwargs):
    task = "ce" if i % 2 else "mse"  # both losses, alternating over the cases
    x, y = _data(task)
    tm, cm = _models()
    topt = getattr(torch.optim, name)(tm.parameters(), **kwargs)
    copt = getattr(optim, name)(cm.parameters(), **kwargs)
    for step in range(STEPS):
        topt.zero_grad()
        tl = _torch_loss(tm, x, y, task)
        tl.backward()
        topt.step()
        copt.zero_grad()
        cl = _cr_loss(cm, x, y, task)
        cl.backward()
        copt.step()
        assert abs(cl.item() - tl.item()) <= 1e-10 * max(1.0, abs(tl.item())), f"loss differs at step {step}"
    _params_equal(tm, cm)
    # the state has torch's names and values
    tsd, csd = topt.state_dict(), copt.state_dict()
    assert set(csd["state"]) == set(tsd["state"])
    for i, ts in tsd["state"].items():
        assert set(csd["state"][i]) == set(ts), (name, set(csd["state"][i]), set(ts))
        for k, v in ts.items():
            np.testing.assert_allclose(np.asarray(csd["state"][i][k]), v.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
    for cg, tg in zip(csd["param_groups"], tsd["param_groups"]):
        for k, v in cg.items():
            assert k in tg, k
            assert v == (tuple(tg[k]) if k == "betas" else tg[k]), k


@pytest.mark.parametrize("name", list(GROUP_CASES))
def test_param_groups_match_torch(name):
    x, y = _data("mse")
    tm, cm = _models(1)
    opts = GROUP_CASES[name]
    topt = getattr(torch.optim, name)(_groups(tm, opts))
    copt = getattr(optim, name)(_groups(cm, opts))
    assert len(copt.param_groups) == 2
    _train(topt, tm, lambda m: _torch_loss(m, x, y, "mse"), STEPS)
    _train(copt, cm, lambda m: _cr_loss(m, x, y, "mse"), STEPS)
    _params_equal(tm, cm)


def _to_json_and_npz(sd):
    """Serialize an optimizer state dict without pickle: arrays to .npz, the rest to JSON."""
    arrays, state = {}, {}
    for i, s in sd["state"].items():
        state[str(i)] = {}
        for k, v in s.items():
            if isinstance(v, np.ndarray):
                arrays[f"{i}.{k}"] = v
            else:
                state[str(i)][k] = v
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    text = json.dumps({"state": state, "param_groups": sd["param_groups"]})
    buf.seek(0)
    loaded = dict(np.load(buf, allow_pickle=False))
    back = json.loads(text)
    for key, arr in loaded.items():
        i, k = key.split(".", 1)
        back["state"][i][k] = arr
    return back


ROUND_TRIP = [
    ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.01}),
    ("RMSprop", {"lr": 0.002, "centered": True, "momentum": 0.5, "weight_decay": 0.05}),
    ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.05}),
    ("AdamW", {"lr": 0.01, "amsgrad": True}),
    ("Adamax", {"lr": 0.01, "weight_decay": 0.1}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
]


ROUND_TRIP_KWARGS = {name: kw for name, kw in ROUND_TRIP}


@pytest.mark.parametrize("name,kwargs", ROUND_TRIP)
def test_state_dict_round_trip_continues_identically(name, kwargs):
    x, y = _data("mse")
    loss = lambda m: _cr_loss(m, x, y, "mse")
    _, ref = _models(2)
    ref_opt = getattr(optim, name)(ref.parameters(), **kwargs)
    _train(ref_opt, ref, loss, STEPS)

    _, first = _models(2)
    opt = getattr(optim, name)(first.parameters(), **kwargs)
    _train(opt, first, loss, 10)
    saved_model = first.state_dict()
    saved_opt = _to_json_and_npz(opt.state_dict())
    _train(opt, first, loss, 3)  # the saved dict must not follow later steps

    _, second = _models(3)
    second.load_state_dict(saved_model)
    opt2 = getattr(optim, name)(second.parameters(), lr=123.0)
    opt2.load_state_dict(saved_opt)
    _train(opt2, second, loss, STEPS - 10)
    for k, v in ref.state_dict().items():
        assert np.isfinite(v).all()
        assert np.array_equal(second.state_dict()[k], v), k


@pytest.mark.parametrize("name", list(CASES))
def test_float32_params_stay_float32(name):
    lin = nn.Linear(4, 2)
    x = cr.tensor(np.ones((3, 4), dtype=np.float32))
    kwargs = {"lr": np.float64(0.01), "weight_decay": np.float64(0.1)}
    opt = getattr(optim, name)(lin.parameters(), **kwargs)
    for _ in range(3):
        opt.zero_grad()
        lin(x).sum().backward()
        opt.step()
    for p in lin.parameters():
        assert p.dtype == np.float32 and p._version > 0
    for s in opt.state.values():
        for v in s.values():
            assert not isinstance(v, np.ndarray) or v.dtype == np.float32


def test_closure_and_zero_grad():
    x, y = _data("mse")
    _, cm = _models()
    opt = optim.SGD(cm.parameters(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = _cr_loss(cm, x, y, "mse")
        loss.backward()
        return loss

    with cr.no_grad():  # step(closure) records the closure's graph even inside no_grad
        loss = opt.step(closure)
    assert isinstance(loss, cr.Tensor) and loss.item() > 0
    assert all(p.grad is not None for p in cm.parameters())
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.data.any() for p in cm.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in cm.parameters())
    assert opt.step() is None


def test_skips_params_without_grad_and_plain_gradient_descent():
    w = cr.tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    unused = cr.tensor([5.0], dtype=np.float64, requires_grad=True)
    opt = optim.SGD([w, unused], lr=0.5)
    (w * w).sum().backward()
    opt.step()
    assert np.array_equal(w.data, [1.0 - 0.5 * 2.0, 2.0 - 0.5 * 4.0])
    assert np.array_equal(unused.data, [5.0])


@pytest.mark.parametrize(
    "name,kwargs,option",
    [
        ("SGD", {"lr": -0.1}, "lr"),
        ("SGD", {"momentum": -0.5}, "momentum"),
        ("SGD", {"weight_decay": -1.0}, "weight_decay"),
        ("SGD", {"nesterov": True}, "nesterov"),
        ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov"),
        ("Adagrad", {"lr_decay": -1.0}, "lr_decay"),
        ("Adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        ("Adagrad", {"eps": -1.0}, "eps"),
        ("RMSprop", {"alpha": -0.1}, "alpha"),
        ("RMSprop", {"momentum": -0.1}, "momentum"),
        ("RMSprop", {"eps": -1e-8}, "eps"),
        ("Adam", {"betas": (1.0, 0.999)}, "betas[0]"),
        ("Adam", {"betas": (0.9, -0.1)}, "betas[1]"),
        ("Adam", {"lr": -1e-3}, "lr"),
        ("Adam", {"eps": -1.0}, "eps"),
        ("AdamW", {"weight_decay": -0.01}, "weight_decay"),
        ("Adamax", {"betas": (0.9, 1.5)}, "betas[1]"),
        ("NAdam", {"momentum_decay": -1.0}, "momentum_decay"),
        ("NAdam", {"lr": float("nan")}, "lr"),
    ],
)
def test_invalid_hyperparameters(name, kwargs, option):
    p = cr.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError) as info:
        getattr(optim, name)([p], **kwargs)
    assert name in str(info.value) and option in str(info.value)
    with pytest.raises(ValueError):  # torch rejects them too
        getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)], **kwargs)


def test_invalid_option_in_a_param_group_and_bad_params():
    a = cr.tensor([1.0], requires_grad=True)
    b = cr.tensor([2.0], requires_grad=True)
    with pytest.raises(ValueError, match="Adam: invalid lr"):
        optim.Adam([{"params": [a]}, {"params": [b], "lr": -1}])
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([{"params": [a]}, {"params": [a]}])
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([])
    with pytest.raises(TypeError):
        optim.SGD(a)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([a * 2])


def test_load_state_dict_mismatch_errors():
    _, cm = _models()
    opt = optim.Adam(cm.parameters())
    opt.zero_grad()
    cm(cr.tensor(np.ones((2, 5)))).sum().backward()
    opt.step()
    sd = opt.state_dict()
    other = optim.Adam(_groups(cm, ({}, {})))
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict(sd)
    small = optim.Adam(list(cm.parameters())[:3])
    with pytest.raises(ValueError, match="parameter group 0"):
        small.load_state_dict(sd)
    sd["state"][0]["exp_avg"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(sd)


def test_exports_and_repr():
    for name in ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "Optimizer", "lr_scheduler"]:
        assert name in optim.__all__ and hasattr(optim, name)
    text = repr(optim.AdamW([cr.tensor([1.0], requires_grad=True)]))
    assert text.startswith("AdamW (") and "Parameter Group 0" in text and "weight_decay: 0.01" in text


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("order", ["C", "F"])
def test_large_and_fortran_ordered_params_match_torch(name, order):
    """Parameters bigger than one cache-sized piece (updated piece by piece), and non-C-contiguous ones."""
    kwargs = dict(ROUND_TRIP_KWARGS[name], maximize=True)
    rng = np.random.default_rng(5)
    w0 = rng.normal(size=(301, 347))
    cp = cr.tensor(w0, requires_grad=True)
    cp.data = np.asarray(w0, order=order)
    tp = torch.tensor(w0, requires_grad=True)
    copt, topt = getattr(optim, name)([cp], **kwargs), getattr(torch.optim, name)([tp], **kwargs)
    for _ in range(5):
        g = np.cos(3 * cp.data) - 0.1 * cp.data
        cp.grad = cr.Tensor(np.asarray(g, order=order))
        tp.grad = torch.tensor(np.ascontiguousarray(g))
        copt.step()
        topt.step()
        assert cp.data.flags.f_contiguous == (order == "F")
    np.testing.assert_allclose(cp.data, tp.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_adagrad_initial_accumulator_value_per_group():
    # torch.optim.Adagrad uses the constructor's value for every group; here each group's own value counts
    a, b = cr.tensor([1.0], requires_grad=True), cr.tensor([1.0], requires_grad=True)
    opt = optim.Adagrad([{"params": [a]}, {"params": [b], "initial_accumulator_value": 3.0}], lr=0.5)
    a.grad, b.grad = cr.tensor([1.0]), cr.tensor([1.0])
    opt.step()
    assert opt.state[a]["sum"][0] == 1.0 and opt.state[b]["sum"][0] == 4.0
    np.testing.assert_allclose(b.data, [1.0 - 0.5 / (2.0 + 1e-10)])


def test_gradient_of_wrong_shape_is_an_error():
    p = cr.tensor([1.0, 2.0, 3.0], requires_grad=True)
    p.grad = cr.tensor([1.0])
    with pytest.raises(
        ValueError, match=r"Adam: parameter 0 of parameter group 0 \(shape \(3,\)\) has a gradient of shape \(1,\)"
    ):
        optim.Adam([p]).step()


@pytest.mark.parametrize("name,kwargs", ROUND_TRIP[::-1])
def test_float32_trajectory_close_to_torch(name, kwargs):
    rng = np.random.default_rng(7)
    w0 = rng.normal(size=(40, 30)).astype(np.float32)
    cp, tp = cr.tensor(w0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    copt, topt = getattr(optim, name)([cp], **kwargs), getattr(torch.optim, name)([tp], **kwargs)
    for _ in range(10):
        g = (np.sin(cp.data) + 0.1).astype(np.float32)
        cp.grad, tp.grad = cr.tensor(g), torch.tensor(g)
        copt.step()
        topt.step()
        assert cp.dtype == np.float32
    np.testing.assert_allclose(cp.data, tp.detach().numpy(), rtol=1e-5, atol=1e-5)


def _snapshot(opt):
    """Copies of every parameter's values and gradient and of every state entry."""
    params = [p for g in opt.param_groups for p in g["params"]]
    values = [(p.data.copy(), p.grad.data.copy()) for p in params]
    state = [{k: np.copy(v) for k, v in opt.state.get(p, {}).items()} for p in params]
    return values, state


@pytest.mark.parametrize("name,kwargs", [(n, kw) for n, cases in CASES.items() for kw in cases[:2]])
@pytest.mark.parametrize("size", [3, 40_000])  # 40_000: SGD's BLAS axpy path and chunked updates
@pytest.mark.parametrize("warm", [False, True])  # True: state made (Adam's flat multi-tensor layout) before
@pytest.mark.parametrize("fault", ["read-only", "gradient shape"])
def test_a_parameter_that_cant_be_updated_is_named_and_nothing_is_updated(name, kwargs, size, warm, fault):
    rng = np.random.default_rng(size)
    ps = [cr.tensor(rng.normal(size=(size,)), requires_grad=True) for _ in range(3)]
    opt = getattr(optim, name)([{"params": ps[:1]}, {"params": ps[1:]}], **kwargs)
    for p in ps:
        p.grad = cr.tensor(rng.normal(size=(size,)))
    if warm:
        opt.step()
    # the last parameter is at fault: the ones before it must not be updated either
    if fault == "read-only":
        ps[2].data.flags.writeable = False
    else:
        ps[2].grad = cr.tensor(rng.normal(size=(size + 1,)))
    before = _snapshot(opt)
    message = "read-only" if fault == "read-only" else rf"has a gradient of shape \({size + 1},\); nothing was updated"
    with pytest.raises(ValueError, match=rf"{name}: parameter 1 of parameter group 1 \(shape \({size},\)\).*{message}"):
        opt.step()
    after = _snapshot(opt)
    for (v0, g0), (v1, g1) in zip(before[0], after[0]):
        np.testing.assert_array_equal(v1, v0)
        np.testing.assert_array_equal(g1, g0)
    assert [sorted(s) for s in after[1]] == [sorted(s) for s in before[1]]
    for s0, s1 in zip(before[1], after[1]):
        for k in s0:
            np.testing.assert_array_equal(s1[k], s0[k], err_msg=k)
    if fault != "read-only":
        return
    ps[2].grad = None  # a read-only parameter without gradient is not updated: no error
    opt.step()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.9}),
        ("Adam", {"lr": 0.1}),
        ("AdamW", {"lr": 0.1, "weight_decay": 0.1}),
        ("NAdam", {"lr": 0.1}),
        ("Adamax", {"lr": 0.1}),
        ("RMSprop", {"lr": 0.01}),
        ("Adagrad", {"lr": 0.1}),
    ],
)
def test_editing_param_groups_mid_run_matches_torch(name, kwargs, torch_float64):
    """Options edited in param_groups between steps (lr, weight_decay, betas) take effect at the next step, and a group
    added mid-run by add_param_group starts from fresh state, as torch (including the multi-tensor Adam path)."""
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((2, 3))]
    grads = [[rng.standard_normal(w.shape) for w in init] for _ in range(8)]
    edits = {2: [(0, "lr", 0.01)], 5: [(1, "lr", 0.3), (0, "weight_decay", 0.2)], 6: [(0, "lr", 0.0)]}
    if "betas" in getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)]).defaults:
        edits[4] = [(0, "betas", (0.5, 0.9))]

    def run(lib, tensor):
        ps = [tensor(w.copy(), requires_grad=True) for w in init]
        opt = getattr(lib, name)([{"params": ps[:2]}], **kwargs)
        for t, gs in enumerate(grads):
            if t == 3:
                opt.add_param_group({"params": [ps[2]], "lr": 0.05})
            for group, key, value in edits.get(t, []):
                opt.param_groups[group][key] = value
            for p, g in zip(ps, gs):
                p.grad = tensor(g)
            opt.step()
        return [np.array(p.data) if lib is optim else p.detach().numpy() for p in ps]

    ours, theirs = run(optim, cr.tensor), run(torch.optim, torch.tensor)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_a_parameter_in_two_groups_is_refused_as_torch():
    """add_param_group with a parameter of another group: ValueError in both. The same parameter twice in one list is
    refused too (torch only warns 'duplicate parameters; in future, this will cause an error')."""
    a, b = cr.tensor([1.0], requires_grad=True), cr.tensor([2.0], requires_grad=True)
    ta = torch.tensor([1.0], requires_grad=True)
    topt, opt = torch.optim.SGD([ta], lr=0.1), optim.SGD([a], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        topt.add_param_group({"params": [ta]})
    with pytest.raises(ValueError, match="more than once"):
        opt.add_param_group({"params": [b, a]})
    assert len(opt.param_groups) == 1
    with pytest.warns(UserWarning, match="duplicate parameters"):
        torch.optim.SGD([ta, ta], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([a, a], lr=0.1)
