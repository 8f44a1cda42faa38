"""Layers and activations against PyTorch in float64: outputs, input and parameter gradients, running stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
import chainrule.functional as F
import chainrule.nn as nn

TOL = dict(rtol=1e-10, atol=1e-12)


def close(a, b, **kw) -> None:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a.data if isinstance(a, cr.Tensor) else a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b.data if isinstance(b, cr.Tensor) else b)
    np.testing.assert_allclose(a, b, **(kw or TOL))


def compare(ours: nn.Module, theirs: torch.nn.Module, x: np.ndarray, train: bool = True, steps: int = 1) -> None:
    """Same weights (torch -> chainrule state dict), same input and upstream gradient: everything must agree."""
    theirs = theirs.double()
    ours.double()
    ours.load_state_dict(theirs.state_dict())
    ours.train(train)
    theirs.train(train)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        xc = cr.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        yc, yt = ours(xc), theirs(xt)
        close(yc, yt)
        g = rng.standard_normal(yt.shape)
        yc.backward(cr.tensor(g))
        yt.backward(torch.tensor(g))
        close(xc.grad, xt.grad)
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, tparams[name].grad)
    tstate = theirs.state_dict()
    for k, v in ours.state_dict().items():
        assert v.shape == tuple(tstate[k].shape), k
        assert v.dtype == tstate[k].numpy().dtype, k
        close(v, tstate[k])


def randn(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------- activations

ACTIVATIONS = [
    (nn.ReLU(), torch.nn.ReLU()),
    (nn.LeakyReLU(), torch.nn.LeakyReLU()),
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (nn.ELU(), torch.nn.ELU()),
    (nn.ELU(alpha=0.5), torch.nn.ELU(alpha=0.5)),
    (nn.GELU(), torch.nn.GELU()),
    (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
    (nn.SiLU(), torch.nn.SiLU()),
    (nn.Softplus(), torch.nn.Softplus()),
    (nn.Softplus(beta=2.0, threshold=3.0), torch.nn.Softplus(beta=2.0, threshold=3.0)),
    (nn.Sigmoid(), torch.nn.Sigmoid()),
    (nn.LogSigmoid(), torch.nn.LogSigmoid()),
    (nn.Tanh(), torch.nn.Tanh()),
    (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
    (nn.Softmax(dim=-1), torch.nn.Softmax(dim=-1)),
    (nn.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1)),
    (nn.LogSoftmax(dim=0), torch.nn.LogSoftmax(dim=0)),
]


@pytest.mark.parametrize("ours,theirs", ACTIVATIONS, ids=lambda m: repr(m))
def test_activation_matches_torch(ours: nn.Module, theirs: torch.nn.Module) -> None:
    x = randn(4, 6) * 4
    x[0, :3] = [0.0, 25.0, -30.0]  # kink at 0, softplus threshold, saturation
    compare(ours, theirs, x)


@pytest.mark.parametrize("name", ["gelu", "elu", "silu", "softplus", "logsigmoid"])
def test_activation_second_derivative_matches_torch(name: str) -> None:
    x = randn(7) * 2
    xc = cr.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    (gc,) = cr.grad(getattr(F, name)(xc).sum(), xc, create_graph=True)
    (gt,) = torch.autograd.grad(getattr(torch.nn.functional, name)(xt).sum(), xt, create_graph=True)
    close(gc, gt)
    (ggc,) = cr.grad(gc.sum(), xc, allow_unused=True)
    (ggt,) = torch.autograd.grad(gt.sum(), xt, allow_unused=True)
    if ggt is None:
        ggt = torch.zeros_like(xt)
    close(ggc if ggc is not None else np.zeros_like(x), ggt)


def test_gelu_tanh_second_derivative() -> None:
    x = randn(5)
    xc = cr.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    (gc,) = cr.grad(F.gelu(xc, "tanh").sum(), xc, create_graph=True)
    (gt,) = torch.autograd.grad(torch.nn.functional.gelu(xt, approximate="tanh").sum(), xt, create_graph=True)
    close(cr.grad(gc.sum(), xc)[0], torch.autograd.grad(gt.sum(), xt)[0])


def test_softmax_default_dim_is_pytorchs_legacy_choice() -> None:
    x = randn(2, 3, 4)
    close(nn.Softmax()(cr.tensor(x)), torch.softmax(torch.tensor(x), 0))
    close(nn.LogSoftmax()(cr.tensor(randn(2, 3))), torch.log_softmax(torch.tensor(randn(2, 3)), 1))


def test_gelu_rejects_unknown_approximation() -> None:
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


# ----------------------------------------------------------------------------- linear, embedding


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 3)])
def test_linear_matches_torch(bias: bool, shape: tuple[int, ...]) -> None:
    compare(nn.Linear(3, 4, bias=bias), torch.nn.Linear(3, 4, bias=bias), randn(*shape))


@pytest.mark.parametrize("padding_idx", [None, 0, -1])
def test_embedding_matches_torch(padding_idx: int | None) -> None:
    torch.manual_seed(0)
    theirs = torch.nn.Embedding(6, 3, padding_idx=padding_idx).double()
    ours = nn.Embedding(6, 3, padding_idx=padding_idx).double()
    assert ours.padding_idx == theirs.padding_idx
    if padding_idx is not None:
        assert np.all(ours.weight.data[ours.padding_idx] == 0)
    ours.load_state_dict(theirs.state_dict())
    idx = np.array([[0, 1, 5, 1], [5, 2, 0, 0]])
    yc, yt = ours(cr.tensor(idx)), theirs(torch.tensor(idx))
    close(yc, yt)
    g = randn(2, 4, 3)
    yc.backward(cr.tensor(g))
    yt.backward(torch.tensor(g))
    close(ours.weight.grad, theirs.weight.grad)


def test_embedding_index_out_of_range() -> None:
    with pytest.raises(IndexError, match="index 7 is out of range for 6"):
        nn.Embedding(6, 2)(cr.tensor([1, 7]))


# ----------------------------------------------------------------------------- dropout


def test_dropout_train_and_eval() -> None:
    x = cr.ones(2000, 50, dtype=cr.float64, requires_grad=True)
    d = nn.Dropout(0.3, generator=cr.Generator(1))
    y = d(x)
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y.data[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, y.data)  # d y / d x is the same mask and scale
    d.eval()
    assert d(x) is x
    assert F.dropout(x, 0.5, training=False) is x


def test_dropout_seeded_and_edge_probabilities() -> None:
    x = cr.randn(10, 10)
    a = F.dropout(x, 0.5, generator=cr.Generator(3))
    b = F.dropout(x, 0.5, generator=cr.Generator(3))
    np.testing.assert_array_equal(a.data, b.data)
    cr.manual_seed(5)
    c = nn.Dropout()(x)
    cr.manual_seed(5)
    np.testing.assert_array_equal(nn.Dropout()(x).data, c.data)
    assert np.all(F.dropout(x, 1.0).data == 0)
    np.testing.assert_array_equal(F.dropout(x, 0.0).data, x.data)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


# ----------------------------------------------------------------------------- normalization

BN_CONFIGS = [
    dict(),
    dict(momentum=0.3, eps=1e-3),
    dict(momentum=None),
    dict(affine=False),
    dict(track_running_stats=False),
    dict(affine=False, track_running_stats=False),
]


@pytest.mark.parametrize("kw", BN_CONFIGS, ids=str)
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm1d_matches_torch(kw: dict, shape: tuple[int, ...], train: bool) -> None:
    torch.manual_seed(0)
    theirs = torch.nn.BatchNorm1d(3, **kw)
    if theirs.affine:  # non-trivial affine parameters and running stats
        torch.nn.init.normal_(theirs.weight)
        torch.nn.init.normal_(theirs.bias)
    if theirs.track_running_stats:
        theirs.running_mean.normal_()
        theirs.running_var.uniform_(0.5, 2)
    compare(nn.BatchNorm1d(3, **kw), theirs, randn(*shape) * 3 + 1, train=train, steps=3)


@pytest.mark.parametrize("kw", BN_CONFIGS[:4], ids=str)
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm2d_matches_torch(kw: dict, train: bool) -> None:
    torch.manual_seed(1)
    theirs = torch.nn.BatchNorm2d(2, **kw)
    if theirs.affine:
        torch.nn.init.normal_(theirs.weight)
    compare(nn.BatchNorm2d(2, **kw), theirs, randn(3, 2, 4, 5) + 2, train=train, steps=2)


def test_batchnorm_buffers_and_state_dict_round_trip() -> None:
    bn = nn.BatchNorm1d(4)
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert sd["num_batches_tracked"].dtype == np.int64 and sd["num_batches_tracked"].shape == ()
    for _ in range(3):
        bn(cr.randn(6, 4))
    assert int(bn.num_batches_tracked.data) == 3
    theirs = torch.nn.BatchNorm1d(4)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in bn.state_dict().items()})
    assert int(theirs.num_batches_tracked) == 3
    close(theirs.running_var, bn.running_var)
    bn.double()
    assert bn.num_batches_tracked.dtype == np.int64 and bn.running_mean.dtype == np.float64
    assert list(nn.BatchNorm1d(4, track_running_stats=False).state_dict()) == ["weight", "bias"]


def test_batchnorm_errors() -> None:
    with pytest.raises(cr.errors.ChainruleError, match="2D or 3D"):
        nn.BatchNorm1d(3)(cr.randn(2, 3, 4, 5))
    with pytest.raises(cr.errors.ChainruleError, match="4D"):
        nn.BatchNorm2d(3)(cr.randn(2, 3))
    with pytest.raises(cr.errors.ChainruleError, match="channels"):
        nn.BatchNorm1d(3)(cr.randn(2, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(cr.randn(1, 3))
    nn.BatchNorm1d(3).eval()(cr.randn(1, 3))  # fine in eval mode


@pytest.mark.parametrize(
    "shape,normalized,kw",
    [
        ((4, 5), 5, {}),
        ((2, 3, 4), (3, 4), {}),
        ((2, 3, 4), [4], dict(eps=1e-3)),
        ((3, 6), 6, dict(elementwise_affine=False)),
        ((3, 6), 6, dict(bias=False)),
    ],
)
@pytest.mark.parametrize("train", [True, False])
def test_layernorm_matches_torch(shape: tuple, normalized, kw: dict, train: bool) -> None:
    torch.manual_seed(2)
    theirs = torch.nn.LayerNorm(normalized, **kw)
    if theirs.weight is not None:
        torch.nn.init.normal_(theirs.weight)
    if theirs.bias is not None:
        torch.nn.init.normal_(theirs.bias)
    compare(nn.LayerNorm(normalized, **kw), theirs, randn(*shape) * 2 - 1, train=train)


def test_layernorm_second_derivative_matches_torch() -> None:
    x = randn(3, 4)
    w = randn(4)
    xc, wc = cr.tensor(x, requires_grad=True), cr.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    gc = cr.grad((F.layer_norm(xc, (4,), wc) ** 3).sum(), [xc, wc], create_graph=True)
    gt = torch.autograd.grad((torch.nn.functional.layer_norm(xt, (4,), wt) ** 3).sum(), [xt, wt], create_graph=True)
    for a, b in zip(gc, gt):
        close(a, b, rtol=1e-9, atol=1e-10)
    close(cr.grad((gc[0] ** 2).sum(), xc)[0], torch.autograd.grad((gt[0] ** 2).sum(), xt)[0], rtol=1e-9, atol=1e-10)


def test_layernorm_wrong_shape() -> None:
    with pytest.raises(cr.errors.ChainruleError, match=r"\(2, 3\) does not end in \(4,\)"):
        nn.LayerNorm(4)(cr.randn(2, 3))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 6), c=st.integers(1, 4), length=st.integers(1, 4), seed=st.integers(0, 1000))
def test_batchnorm_functional_random_shapes(n: int, c: int, length: int, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal((n, c, length))
    w, b = randn(c, seed=seed + 1), randn(c, seed=seed + 2)
    args_c = [cr.tensor(a, requires_grad=True) for a in (x, w, b)]
    args_t = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    rm_c, rv_c = cr.zeros(c, dtype=cr.float64), cr.ones(c, dtype=cr.float64)
    rm_t, rv_t = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    yc = F.batch_norm(args_c[0], rm_c, rv_c, args_c[1], args_c[2], training=True, momentum=0.2)
    yt = torch.nn.functional.batch_norm(args_t[0], rm_t, rv_t, args_t[1], args_t[2], training=True, momentum=0.2)
    close(yc, yt, rtol=1e-9, atol=1e-10)
    (yc * yc).sum().backward()
    (yt * yt).sum().backward()
    for a, b in zip(args_c, args_t):
        close(a.grad, b.grad, rtol=1e-8, atol=1e-9)
    close(rm_c, rm_t)
    close(rv_c, rv_t)


# ----------------------------------------------------------------------------- a whole model, both directions


def _torch_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.GELU(),
        torch.nn.Dropout(0.0),
        torch.nn.LayerNorm(8),
        torch.nn.Linear(8, 3),
    )


def _our_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(0.0), nn.LayerNorm(8), nn.Linear(8, 3)
    )


@pytest.mark.parametrize("train", [True, False])
def test_model_state_dict_loads_both_ways(train: bool) -> None:
    torch.manual_seed(0)
    theirs = _torch_mlp().double()
    x = randn(6, 4)
    theirs.train()
    theirs(torch.tensor(x))  # move the running statistics
    ours = _our_mlp().double()
    ours.load_state_dict(theirs.state_dict())
    compare(ours, theirs, x, train=train)
    # chainrule -> torch: a fresh torch model takes our (NumPy) state dict unchanged
    back = _torch_mlp().double()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    back.train(train)
    ours.train(train)
    close(ours(cr.tensor(x)), back(torch.tensor(x)))


# ----------------------------------------------------------------------------- finite differences


def _f64(*shape: int, seed: int = 0, scale: float = 1.0) -> cr.Tensor:
    return cr.tensor(randn(*shape, seed=seed) * scale, requires_grad=True)


@pytest.mark.parametrize(
    "fn",
    [
        F.gelu,
        lambda x: F.gelu(x, "tanh"),
        F.elu,
        F.silu,
        lambda x: F.softplus(x, beta=2.0),
        F.log_sigmoid,
        lambda x: F.leaky_relu(x, 0.1),
        lambda x: F.layer_norm(x, (4,)),
        lambda x: F.batch_norm(x, None, None, training=True),
    ],
)
def test_fused_ops_gradcheck_and_gradgradcheck(fn) -> None:
    x = _f64(3, 4, scale=2.0)
    assert cr.gradcheck(fn, [x])
    assert cr.gradgradcheck(fn, [x])


def test_normalization_with_affine_gradgradcheck() -> None:
    x, w, b = _f64(5, 3, 2), _f64(3, seed=1), _f64(3, seed=2)
    assert cr.gradgradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, w, b])
    x, w, b = _f64(2, 3, 4), _f64(3, 4, seed=1), _f64(3, 4, seed=2)
    assert cr.gradgradcheck(lambda x, w, b: F.layer_norm(x, (3, 4), w, b), [x, w, b])


def test_embedding_gradgradcheck() -> None:
    w = _f64(5, 3)
    idx = cr.tensor([[0, 2], [2, 4]])
    # (no padding_idx here: by design its row gets no gradient although the output depends on it)
    assert cr.gradcheck(lambda w: F.embedding(idx, w) ** 2, [w])
    assert cr.gradgradcheck(lambda w: F.embedding(idx, w) ** 2, [w])


def test_embedding_from_pretrained() -> None:
    w = randn(4, 3)
    e = nn.Embedding.from_pretrained(w)
    assert e.weight.dtype == np.float64 and not e.weight.requires_grad
    np.testing.assert_array_equal(e(cr.tensor([3, 0])).data, w[[3, 0]])
    assert nn.Embedding.from_pretrained(cr.tensor(w), freeze=False).weight.requires_grad


def test_nn_functional_is_chainrule_functional() -> None:
    import chainrule.nn.functional as nnF

    assert nnF.cross_entropy is F.cross_entropy and nnF.gelu is F.gelu and set(nnF.__all__) == set(F.__all__)


_TORCH_ACT = {
    "relu": torch.nn.functional.relu,
    "leaky_relu": torch.nn.functional.leaky_relu,
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
    "log_sigmoid": torch.nn.functional.logsigmoid,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(_TORCH_ACT)),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]),
    seed=st.integers(0, 1000),
)
def test_activations_random_inputs(name: str, shape: list[int], scale: float, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yc, yt = getattr(F, name)(xc), _TORCH_ACT[name](xt)
    close(yc, yt, rtol=1e-12, atol=1e-14)
    yc.sum().backward()
    yt.sum().backward()
    close(xc.grad, xt.grad, rtol=1e-12, atol=1e-14)
