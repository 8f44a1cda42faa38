"""Every loss and option against PyTorch in float64 (values and gradients), plus the error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
import chainrule.functional as F
import chainrule.nn as nn
from chainrule.errors import ChainruleError

TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]


def close(a, b, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a.data if isinstance(a, cr.Tensor) else a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b.data if isinstance(b, cr.Tensor) else b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def check(ours, theirs, inputs: list[np.ndarray], consts: tuple = (), grad_inputs: int = 1) -> None:
    """ours(*tensors, *consts) vs theirs(...): value and gradient wrt the first `grad_inputs` tensors."""
    tc = [cr.tensor(a, requires_grad=i < grad_inputs) for i, a in enumerate(inputs)]
    tt = [torch.tensor(a, requires_grad=i < grad_inputs) for i, a in enumerate(inputs)]
    cc = [cr.tensor(c) if isinstance(c, np.ndarray) else c for c in consts]
    ct = [torch.tensor(c) if isinstance(c, np.ndarray) else c for c in consts]
    lc, lt = ours(*tc, *cc), theirs(*tt, *ct)
    close(lc, lt)
    g = rng(9).standard_normal(lt.shape)
    lc.backward(cr.tensor(g))
    lt.backward(torch.tensor(g))
    for a, b in zip(tc[:grad_inputs], tt[:grad_inputs]):
        close(a.grad, b.grad)


# ----------------------------------------------------------------------------- regression


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "ours,theirs",
    [
        (nn.MSELoss, torch.nn.MSELoss),
        (nn.L1Loss, torch.nn.L1Loss),
        (nn.HuberLoss, torch.nn.HuberLoss),
        (nn.SmoothL1Loss, torch.nn.SmoothL1Loss),
    ],
)
def test_regression_losses(ours, theirs, reduction: str) -> None:
    x, y = rng().standard_normal((5, 3)) * 2, rng(1).standard_normal((5, 3))
    check(ours(reduction=reduction), theirs(reduction=reduction), [x, y], grad_inputs=2)


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_delta(delta: float) -> None:
    x, y = rng().standard_normal(20) * 2, rng(1).standard_normal(20)
    check(nn.HuberLoss(delta=delta), torch.nn.HuberLoss(delta=delta), [x, y])


@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
def test_smooth_l1_beta(beta: float) -> None:
    x, y = rng().standard_normal(20) * 2, rng(1).standard_normal(20)
    check(nn.SmoothL1Loss(beta=beta), torch.nn.SmoothL1Loss(beta=beta), [x, y])


def test_reference_example_loss_is_half_summed_mse() -> None:
    y_pred = cr.tensor([0.2, 0.7], dtype=cr.float64, requires_grad=True)
    y = cr.tensor([0.5, 0.5], dtype=cr.float64)
    loss = 0.5 * F.mse_loss(y_pred, y, reduction="sum")
    assert loss.item() == pytest.approx(0.5 * (0.3**2 + 0.2**2), rel=1e-15)
    loss.backward()
    close(y_pred.grad, y_pred.data - y.data)  # d/dŷ ½(y − ŷ)² = ŷ − y
    assert 'reduction="sum"' in nn.MSELoss.__doc__ and 'reduction="sum"' in F.mse_loss.__doc__


# ----------------------------------------------------------------------------- binary


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("extremes", [False, True])
def test_bce(reduction: str, weighted: bool, extremes: bool) -> None:
    p = rng().uniform(0.01, 0.99, (6, 2))
    t = rng(1).uniform(0, 1, (6, 2))
    if extremes:  # log clamped at -100; the gradient wrt the target is then only checked away from 0 and 1
        p[0], t[0] = [0.0, 1.0], [0.0, 1.0]
        p[1], t[1] = [0.0, 1.0], [1.0, 0.0]
    w = rng(2).uniform(0.5, 2, (6, 2)) if weighted else None
    ours = nn.BCELoss(weight=None if w is None else cr.tensor(w), reduction=reduction)
    theirs = torch.nn.BCELoss(weight=None if w is None else torch.tensor(w), reduction=reduction)
    check(ours, theirs, [p, t], grad_inputs=1 if extremes else 2)


def test_bce_rejects_non_probabilities() -> None:
    with pytest.raises(ChainruleError, match=r"binary_cross_entropy.*1\.5.*\(2,\)"):
        F.binary_cross_entropy(cr.tensor([0.5, 1.5]), cr.tensor([0.0, 1.0]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("weight", [False, True])
def test_bce_with_logits(reduction: str, pos_weight: bool, weight: bool) -> None:
    x = rng().standard_normal((5, 3)) * 5
    x[0] = [-800.0, 800.0, 0.0]  # stable at extremes
    t = rng(1).uniform(0, 1, (5, 3))
    pw = rng(2).uniform(0.5, 3, 3) if pos_weight else None
    w = rng(3).uniform(0.5, 2, (5, 3)) if weight else None
    wrap = lambda a, f: None if a is None else f(a)
    ours = nn.BCEWithLogitsLoss(wrap(w, cr.tensor), reduction, wrap(pw, cr.tensor))
    theirs = torch.nn.BCEWithLogitsLoss(wrap(w, torch.tensor), reduction=reduction, pos_weight=wrap(pw, torch.tensor))
    check(ours, theirs, [x, t], grad_inputs=2)


# ----------------------------------------------------------------------------- multi-class


def _targets(n: int, c: int, seed: int = 1, shape: tuple | None = None) -> np.ndarray:
    return rng(seed).integers(0, c, shape or (n,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(weight=True),
        dict(ignore_index=2),
        dict(weight=True, ignore_index=1),
        dict(label_smoothing=0.1),
        dict(label_smoothing=0.2, weight=True),
        dict(label_smoothing=0.3, weight=True, ignore_index=0),
    ],
    ids=str,
)
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5), (4,)], ids=str)
def test_cross_entropy_class_indices(reduction: str, kw: dict, shape: tuple) -> None:
    c = shape[1] if len(shape) > 1 else shape[0]
    x = rng().standard_normal(shape) * 2
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = rng(1).integers(0, c, tshape)
    kw = dict(kw)
    w = rng(2).uniform(0.5, 2, c) if kw.pop("weight", False) else None
    ours = nn.CrossEntropyLoss(weight=None if w is None else cr.tensor(w), reduction=reduction, **kw)
    theirs = torch.nn.CrossEntropyLoss(weight=None if w is None else torch.tensor(w), reduction=reduction, **kw)
    check(ours, theirs, [x], consts=(t,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_fused_path_and_second_derivative(reduction: str) -> None:
    x = rng().standard_normal((5, 3))
    t = _targets(5, 3)
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    lc = F.cross_entropy(xc, cr.tensor(t), reduction=reduction)
    assert lc.grad_fn == "cross_entropy"  # the fused node
    lt = TF.cross_entropy(xt, torch.tensor(t), reduction=reduction)
    close(lc, lt)
    (gc,) = cr.grad(lc.sum(), xc, create_graph=True)
    (gt,) = torch.autograd.grad(lt.sum(), xt, create_graph=True)
    close(gc, gt)
    close(cr.grad((gc**2).sum(), xc)[0], torch.autograd.grad((gt**2).sum(), xt)[0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kw", [{}, dict(weight=True), dict(label_smoothing=0.25), dict(weight=True, label_smoothing=0.1)]
)
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4)], ids=str)
def test_cross_entropy_class_probabilities(reduction: str, kw: dict, shape: tuple) -> None:
    x = rng().standard_normal(shape)
    p = rng(1).uniform(0, 1, shape)
    p /= p.sum(1, keepdims=True)
    kw = dict(kw)
    w = rng(2).uniform(0.5, 2, shape[1]) if kw.pop("weight", False) else None
    ours = nn.CrossEntropyLoss(weight=None if w is None else cr.tensor(w), reduction=reduction, **kw)
    theirs = torch.nn.CrossEntropyLoss(weight=None if w is None else torch.tensor(w), reduction=reduction, **kw)
    check(ours, theirs, [x, p], grad_inputs=2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kw", [{}, dict(weight=True), dict(ignore_index=0), dict(weight=True, ignore_index=2)], ids=str
)
@pytest.mark.parametrize("shape", [(6, 4), (2, 4, 3)], ids=str)
def test_nll_loss(reduction: str, kw: dict, shape: tuple) -> None:
    x = rng().standard_normal(shape)
    t = rng(1).integers(0, shape[1], shape[:1] + shape[2:])
    kw = dict(kw)
    w = rng(2).uniform(0.5, 2, shape[1]) if kw.pop("weight", False) else None
    ours = nn.NLLLoss(weight=None if w is None else cr.tensor(w), reduction=reduction, **kw)
    theirs = torch.nn.NLLLoss(weight=None if w is None else torch.tensor(w), reduction=reduction, **kw)
    check(ours, theirs, [x], consts=(t,))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(2, 5), seed=st.integers(0, 10_000), smoothing=st.sampled_from([0.0, 0.15]))
def test_cross_entropy_random_shapes(n: int, c: int, seed: int, smoothing: float) -> None:
    x = rng(seed).standard_normal((n, c)) * 3
    t = rng(seed + 1).integers(0, c, n)
    check(
        lambda a, b: F.cross_entropy(a, b, label_smoothing=smoothing),
        lambda a, b: TF.cross_entropy(a, b, label_smoothing=smoothing),
        [x],
        consts=(t,),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction: str, log_target: bool) -> None:
    inp = np.log(rng().dirichlet(np.ones(4), size=5))
    tgt = rng(1).dirichlet(np.ones(4), size=5)
    if log_target:
        tgt = np.log(tgt)
    ours = nn.KLDivLoss(reduction=reduction, log_target=log_target)
    theirs = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)
    check(ours, theirs, [inp, tgt], grad_inputs=2)
    if not log_target:  # 0·log 0 = 0 (the target's own gradient is infinite there, so only the input's is checked)
        tgt[0, 0] = 0.0
        check(ours, theirs, [inp, tgt], grad_inputs=1)


# ----------------------------------------------------------------------------- errors


def test_cross_entropy_out_of_range_class_names_loss_shapes_and_value() -> None:
    with pytest.raises(ChainruleError) as e:
        nn.CrossEntropyLoss()(cr.randn(3, 4), cr.tensor([0, 4, 1]))
    msg = str(e.value)
    assert "cross_entropy" in msg and "target 4" in msg and "(3, 4)" in msg and "(3,)" in msg
    with pytest.raises(ChainruleError, match="target -2"):
        F.cross_entropy(cr.randn(3, 4), cr.tensor([0, -2, 1]))
    with pytest.raises(ChainruleError, match=r"nll_loss: target 7 .*\(2, 5\)"):
        F.nll_loss(cr.randn(2, 5), cr.tensor([7, 1]))
    F.cross_entropy(cr.randn(3, 4), cr.tensor([0, -100, 1]))  # ignore_index is not out of range


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_all_targets_ignored_gives_nan_with_zero_gradient(smoothing: float) -> None:
    x = np.ones((2, 3))
    check(
        lambda a, b: F.cross_entropy(a, b, ignore_index=1, label_smoothing=smoothing),
        lambda a, b: TF.cross_entropy(a, b, ignore_index=1, label_smoothing=smoothing),
        [x],
        consts=(np.array([1, 1]),),
    )


def test_wrong_target_shapes_name_loss_and_shapes() -> None:
    with pytest.raises(ChainruleError, match=r"cross_entropy.*\(4, 3\).*\(4,\).*\(4, 1\)"):
        F.cross_entropy(cr.randn(4, 3), cr.tensor([[0], [1], [2], [0]]))
    with pytest.raises(ChainruleError, match=r"mse_loss: input shape \(4, 1\) and target shape \(4,\)"):
        nn.MSELoss()(cr.randn(4, 1), cr.randn(4))
    for fn in (F.l1_loss, F.huber_loss, F.smooth_l1_loss, F.binary_cross_entropy_with_logits, F.kl_div):
        with pytest.raises(ChainruleError, match=fn.__name__):
            fn(cr.randn(3), cr.randn(2))
    with pytest.raises(ChainruleError, match=r"class-probability target .* \(2, 3\)"):
        F.cross_entropy(cr.randn(2, 3), cr.randn(2, 4))
    with pytest.raises(ChainruleError, match="integers"):
        F.nll_loss(cr.randn(2, 3), cr.randn(2))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(cr.randn(2), cr.randn(2), reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(cr.randn(2, 3), cr.tensor([0, 1]), reduction="avg")


def test_loss_reprs() -> None:
    assert repr(nn.MSELoss()) == "MSELoss()"
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert nn.CrossEntropyLoss(weight=cr.ones(3)).state_dict()["weight"].shape == (3,)


# ----------------------------------------------------------------------------- finite differences, second order


def _x(*shape: int, seed: int = 0) -> cr.Tensor:
    return cr.tensor(rng(seed).standard_normal(shape), requires_grad=True)


_T = cr.tensor(np.array([2, 0, 1, 1]))
_W = cr.tensor(np.array([0.5, 2.0, 1.5]))
_P = cr.tensor(rng(5).dirichlet(np.ones(3), size=4))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.cross_entropy(x, _T),
        lambda x: F.cross_entropy(x, _T, weight=_W, ignore_index=0, label_smoothing=0.1),
        lambda x: F.cross_entropy(x, _P, label_smoothing=0.2),
        lambda x: F.nll_loss(x.log_softmax(1), _T, weight=_W, reduction="sum"),
        lambda x: F.binary_cross_entropy(x.sigmoid(), _P, weight=_W),
        lambda x: F.binary_cross_entropy_with_logits(x, _P, pos_weight=_W),
        lambda x: F.kl_div(x.log_softmax(1), _P, reduction="batchmean"),
        lambda x: F.kl_div(x.log_softmax(1), _P.log(), log_target=True),
        lambda x: F.huber_loss(x, _P, delta=0.5),
        lambda x: F.smooth_l1_loss(x, _P, beta=0.5),
        lambda x: F.mse_loss(x, _P, reduction="none"),
    ],
)
def test_losses_gradcheck_and_gradgradcheck(fn) -> None:
    x = _x(4, 3)
    assert cr.gradcheck(fn, [x])
    assert cr.gradgradcheck(fn, [x])


def test_one_hot_matches_torch() -> None:
    t = np.array([[0, 2], [1, 3]])
    np.testing.assert_array_equal(F.one_hot(cr.tensor(t)).data, TF.one_hot(torch.tensor(t)).numpy())
    np.testing.assert_array_equal(F.one_hot(cr.tensor(t), 6).data, TF.one_hot(torch.tensor(t), 6).numpy())
    with pytest.raises(ChainruleError, match="class 3 is out of range for 3"):
        F.one_hot(cr.tensor(t), 3)
