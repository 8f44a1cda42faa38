"""Every learning-rate scheduler's sequence equals torch.optim.lr_scheduler's (exactly, over ~50 steps),
and state dicts (through JSON) resume a schedule identically."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import optim
from chainrule.optim import lr_scheduler as crs

STEPS = 50
LRS = (0.1, 0.05)

CASES = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}),
    ("StepLR", {"step_size": 3}),
    ("MultiStepLR", {"milestones": [5, 12, 12, 30], "gamma": 0.3}),
    ("ExponentialLR", {"gamma": 0.93}),
    ("CosineAnnealingLR", {"T_max": 10}),
    ("CosineAnnealingLR", {"T_max": 17, "eta_min": 0.01}),
    ("LinearLR", {}),
    ("LinearLR", {"start_factor": 0.25, "end_factor": 0.8, "total_iters": 20}),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 40}),
    ("OneCycleLR", {"max_lr": [1.0, 0.5], "total_steps": STEPS}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": STEPS, "anneal_strategy": "linear", "pct_start": 0.25}),
    ("OneCycleLR", {"max_lr": 0.3, "epochs": 5, "steps_per_epoch": 10, "three_phase": True, "div_factor": 10.0}),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": STEPS, "cycle_momentum": False, "final_div_factor": 100.0}),
    ("LambdaLR", {"lr_lambda": lambda e: 0.95**e}),
    ("LambdaLR", {"lr_lambda": [lambda e: 1.0 / (1 + e), lambda e: (e % 4 + 1) / 4]}),
]

PLATEAU_CASES = [
    {},
    {"patience": 2, "factor": 0.5},
    {"patience": 1, "cooldown": 2, "factor": 0.5, "min_lr": 0.01},
    {"mode": "max", "patience": 0, "threshold": 0.05, "min_lr": [0.02, 0.001]},
    {"threshold_mode": "abs", "threshold": 0.02, "patience": 3, "factor": 0.2, "eps": 1e-3},
]


def _metric(i: int) -> float:
    return 1.0 / (1 + i) + 0.05 * ((i * 7) % 5) / 5 if i < 15 else 0.3 + 0.01 * np.sin(i)


def _optimizers(kind: str = "SGD"):
    tps = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    cps = [cr.zeros(2, requires_grad=True), cr.zeros(3, requires_grad=True)]
    if kind == "SGD":
        kw = {"momentum": 0.9}
    else:
        kw = {}
    topt = getattr(torch.optim, kind)([{"params": [p], "lr": lr} for p, lr in zip(tps, LRS)], **kw)
    copt = getattr(optim, kind)([{"params": [p], "lr": lr} for p, lr in zip(cps, LRS)], **kw)
    return topt, copt


def _groups(opt, key):
    return [g[key] for g in opt.param_groups]


def _sequences(name, kwargs, kind="SGD"):
    topt, copt = _optimizers(kind)
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    cs = getattr(crs, name)(copt, **kwargs)
    tseq, cseq = [ts.get_last_lr()], [cs.get_last_lr()]
    momentum = "betas" if kind == "Adam" else "momentum"
    tmom, cmom = [_groups(topt, momentum)], [_groups(copt, momentum)]
    n = STEPS - 1 if name == "OneCycleLR" else STEPS
    for i in range(n):
        topt.step()
        copt.step()
        if name == "ReduceLROnPlateau":
            ts.step(_metric(i))
            cs.step(_metric(i))
        else:
            ts.step()
            cs.step()
        tseq.append(ts.get_last_lr())
        cseq.append(cs.get_last_lr())
        assert _groups(copt, "lr") == cseq[-1]
        tmom.append(_groups(topt, momentum))
        cmom.append(_groups(copt, momentum))
    return tseq, cseq, tmom, cmom


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_lr_sequence_matches_torch(name, kwargs):
    tseq, cseq, tmom, cmom = _sequences(name, kwargs)
    assert cseq == tseq
    assert cmom == tmom
    assert len({tuple(s) for s in tseq}) > 1  # the schedule does change the lr


@pytest.mark.parametrize("kwargs", PLATEAU_CASES)
def test_reduce_lr_on_plateau_matches_torch(kwargs):
    tseq, cseq, _, _ = _sequences("ReduceLROnPlateau", kwargs)
    assert cseq == tseq


def test_reduce_lr_on_plateau_reduces():
    _, cseq, _, _ = _sequences("ReduceLROnPlateau", PLATEAU_CASES[1])
    assert cseq[-1][0] < LRS[0]


def test_one_cycle_cycles_adam_beta1():
    kwargs = {"max_lr": 0.01, "total_steps": STEPS, "base_momentum": 0.8, "max_momentum": [0.95, 0.9]}
    tseq, cseq, tmom, cmom = _sequences("OneCycleLR", kwargs, kind="Adam")
    assert cseq == tseq
    assert cmom == [[tuple(b) for b in m] for m in tmom]
    assert len({m[0][0] for m in cmom}) > 2


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("StepLR", {"step_size": 4, "gamma": 0.5}),
        ("MultiStepLR", {"milestones": [3, 9]}),
        ("ExponentialLR", {"gamma": 0.9}),
        ("CosineAnnealingLR", {"T_max": 8, "eta_min": 0.001}),
        ("LinearLR", {"total_iters": 7}),
    ],
)
def test_resume_with_last_epoch_and_closed_form(name, kwargs):
    """Constructing with last_epoch >= 0 (after initial_lr is set) and step(epoch) behave like torch."""
    topt, copt = _optimizers()
    for opt in (topt, copt):
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    ts = getattr(torch.optim.lr_scheduler, name)(topt, last_epoch=5, **kwargs)
    cs = getattr(crs, name)(copt, last_epoch=5, **kwargs)
    assert cs.get_last_lr() == ts.get_last_lr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [7, 8, 20, 3, 11]:
            topt.step()
            ts.step(epoch)
            cs.step(epoch)
            assert cs.get_last_lr() == ts.get_last_lr(), epoch
        for _ in range(10):
            topt.step()
            ts.step()
            cs.step()
            assert cs.get_last_lr() == ts.get_last_lr()


def _run(opt, sched, name, start, stop, out):
    for i in range(start, stop):
        opt.step()
        sched.step(_metric(i)) if name == "ReduceLROnPlateau" else sched.step()
        out.append(sched.get_last_lr())


ROUND_TRIP = [c for c in CASES if c[0] != "LambdaLR" or not isinstance(c[1]["lr_lambda"], list)] + [
    ("ReduceLROnPlateau", PLATEAU_CASES[2])
]


@pytest.mark.parametrize("name,kwargs", ROUND_TRIP, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROUND_TRIP)])
def test_state_dict_round_trip(name, kwargs):
    n = STEPS - 1 if name == "OneCycleLR" else STEPS
    _, opt = _optimizers()
    sched = getattr(crs, name)(opt, **kwargs)
    ref: list = []
    _run(opt, sched, name, 0, n, ref)

    _, opt = _optimizers()
    sched = getattr(crs, name)(opt, **kwargs)
    got: list = []
    _run(opt, sched, name, 0, 20, got)
    saved_sched = json.loads(json.dumps(sched.state_dict()))
    saved_opt = json.loads(json.dumps(opt.state_dict()))  # no arrays: SGD state is empty without grads
    assert "optimizer" not in saved_sched

    _, opt2 = _optimizers()
    sched2 = getattr(crs, name)(opt2, **kwargs)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    _run(opt2, sched2, name, 20, n, got)
    assert got == ref


def test_lambda_lr_state_dict_has_no_function():
    class Warmup:
        def __init__(self, n):
            self.n = n

        def __call__(self, e):
            return min(1.0, (e + 1) / self.n)

    _, opt = _optimizers()
    sched = crs.LambdaLR(opt, [lambda e: 0.5**e, Warmup(4)])
    for _ in range(3):
        sched.step()
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [None, {"n": 4}]
    json.dumps(sd)
    w = Warmup(10)
    other = crs.LambdaLR(_optimizers()[1], [lambda e: 0.5**e, w])
    other.load_state_dict(sd)
    assert w.n == 4 and other.last_epoch == 3


def test_scheduler_errors():
    _, opt = _optimizers()
    with pytest.raises(TypeError):
        crs.StepLR(object(), 3)
    with pytest.raises(ValueError, match="start_factor"):
        crs.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="factor"):
        crs.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        crs.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        crs.OneCycleLR(optim.Adagrad([cr.zeros(1, requires_grad=True)]), max_lr=0.1, total_steps=5)
    with pytest.raises(KeyError, match="initial_lr"):
        crs.StepLR(opt, 3, last_epoch=4)
    # PyTorch takes these and raises ZeroDivisionError at a step (mid-training, under the CLI: a traceback)
    with pytest.raises(ValueError, match="StepLR: step_size must be a positive number of epochs, got 0"):
        crs.StepLR(opt, 0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be positive, got 0"):
        crs.CosineAnnealingLR(opt, 0)
    sched = crs.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total steps"):
        sched.step()


@pytest.mark.parametrize(
    "opt_name,opt_kwargs,name,kwargs",
    [
        ("Adam", {}, "OneCycleLR", {"max_lr": 0.05, "total_steps": 26}),
        ("SGD", {"lr": 0.1, "momentum": 0.9}, "OneCycleLR", {"max_lr": 0.2, "total_steps": 26, "three_phase": True}),
        ("SGD", {"lr": 0.1, "momentum": 0.5}, "CosineAnnealingLR", {"T_max": 7, "eta_min": 0.01}),
        ("RMSprop", {"lr": 0.01}, "StepLR", {"step_size": 5, "gamma": 0.5}),
    ],
)
def test_training_with_scheduler_matches_torch(opt_name, opt_kwargs, name, kwargs):
    """Optimizer + scheduler together (the scheduler also cycles momentum / beta1) over 25 steps."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rng = np.random.default_rng(1)
        x, y, w0 = rng.normal(size=(12, 4)), rng.normal(size=(12, 2)), rng.normal(size=(4, 2))
        tw, cw = torch.tensor(w0, requires_grad=True), cr.tensor(w0, requires_grad=True)
        topt, copt = getattr(torch.optim, opt_name)([tw], **opt_kwargs), getattr(optim, opt_name)([cw], **opt_kwargs)
        ts = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
        cs = getattr(crs, name)(copt, **kwargs)
        for _ in range(25):
            topt.zero_grad()
            ((torch.tensor(x) @ tw - torch.tensor(y)) ** 2).mean().backward()
            topt.step()
            ts.step()
            copt.zero_grad()
            ((cr.tensor(x) @ cw - cr.tensor(y)) ** 2).mean().backward()
            copt.step()
            cs.step()
        np.testing.assert_allclose(cw.data, tw.detach().numpy(), rtol=1e-10, atol=1e-10)
        assert cs.get_last_lr() == ts.get_last_lr()
    finally:
        torch.set_default_dtype(prev)
