"""Initializers: the moments of large draws match the formulas (and PyTorch); seeds reproduce weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import chainrule as cr
import chainrule.nn as nn
from chainrule.nn import init

SHAPE = (400, 500)  # 200 000 draws: the sample variance is within ~1% of the true one with overwhelming odds


def empty(*shape: int) -> cr.Tensor:
    return cr.zeros(*shape, dtype=cr.float64)


def assert_moments(x: np.ndarray, mean: float, var: float, rtol: float = 0.02) -> None:
    n = x.size
    assert abs(x.mean() - mean) < 6 * math.sqrt(var / n) + 1e-12, (x.mean(), mean)
    assert x.var() == pytest.approx(var, rel=rtol)


@pytest.mark.parametrize("nonlinearity,param", [
    ("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
    ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("selu", None),
])  # fmt: skip
def test_calculate_gain_matches_torch(nonlinearity: str, param: float | None) -> None:
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15
    )


def test_calculate_gain_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("shape", [(3, 4), (8, 3, 5), (6, 2, 3, 3)])
def test_fans_match_torch(shape: tuple[int, ...]) -> None:
    assert init._calculate_fan_in_and_fan_out(empty(*shape)) == torch.nn.init._calculate_fan_in_and_fan_out(
        torch.empty(shape)
    )


def test_uniform_and_normal() -> None:
    t = init.uniform_(empty(*SHAPE), -2.0, 3.0)
    assert t.data.min() >= -2 and t.data.max() < 3
    assert_moments(t.data, 0.5, 25 / 12)
    assert_moments(init.normal_(empty(*SHAPE), 1.5, 0.5).data, 1.5, 0.25)
    t = init.trunc_normal_(empty(*SHAPE), std=1.0, a=-1.0, b=1.0)
    assert t.data.min() >= -1 and t.data.max() <= 1
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    assert_moments(t.data, 0.0, 1 - 2 * phi / math.erf(1 / math.sqrt(2)))  # truncated-normal variance


def test_constants() -> None:
    assert np.all(init.zeros_(cr.ones(3, 4)).data == 0)
    assert np.all(init.ones_(cr.zeros(3)).data == 1)
    assert np.all(init.constant_(cr.zeros(2, 2), 0.25).data == 0.25)
    np.testing.assert_array_equal(init.eye_(cr.zeros(2, 3)).data, np.eye(2, 3))


@pytest.mark.parametrize("gain", [1.0, 2.0])
@pytest.mark.parametrize("shape", [SHAPE, (100, 50, 3, 3)])
def test_xavier(gain: float, shape: tuple[int, ...]) -> None:
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(empty(*shape))
    var = gain**2 * 2.0 / (fan_in + fan_out)
    t = init.xavier_uniform_(empty(*shape), gain=gain)
    assert np.abs(t.data).max() <= math.sqrt(3 * var)
    assert_moments(t.data, 0.0, var)
    assert_moments(init.xavier_normal_(empty(*shape), gain=gain).data, 0.0, var)
    theirs = torch.nn.init.xavier_uniform_(torch.empty(shape, dtype=torch.float64), gain=gain)
    assert theirs.var().item() == pytest.approx(var, rel=0.02)  # the same formula in PyTorch


@pytest.mark.parametrize(
    "kw",
    [{}, dict(a=math.sqrt(5)), dict(mode="fan_out"), dict(nonlinearity="relu"), dict(a=0.1, mode="fan_out")],
    ids=str,
)
def test_kaiming(kw: dict) -> None:
    shape = (200, 100, 3, 3)
    fan = 100 * 9 if kw.get("mode", "fan_in") == "fan_in" else 200 * 9
    gain = init.calculate_gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0))
    var = gain**2 / fan
    t = init.kaiming_uniform_(empty(*shape), **kw)
    assert np.abs(t.data).max() <= math.sqrt(3 * var)
    assert_moments(t.data, 0.0, var)
    assert_moments(init.kaiming_normal_(empty(*shape), **kw).data, 0.0, var)
    for fn in (torch.nn.init.kaiming_uniform_, torch.nn.init.kaiming_normal_):
        assert fn(torch.empty(shape, dtype=torch.float64), **kw).var().item() == pytest.approx(var, rel=0.02)


def test_kaiming_bad_mode() -> None:
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming_uniform_(empty(3, 3), mode="fan_avg")


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (8, 4, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_orthogonal(shape: tuple[int, ...], gain: float) -> None:
    w = init.orthogonal_(empty(*shape), gain=gain).data.reshape(shape[0], -1)
    small = min(w.shape)
    gram = w @ w.T if w.shape[0] == small else w.T @ w
    np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-12)


def test_orthogonal_is_haar_distributed() -> None:
    # the entries of a Haar-random n×n orthogonal matrix have mean 0 and variance 1/n
    draws = np.stack([init.orthogonal_(empty(20, 20), generator=cr.Generator(s)).data for s in range(300)])
    assert_moments(draws, 0.0, 1 / 20, rtol=0.03)
    assert abs(draws[:, 0, 0].mean()) < 6 * math.sqrt(1 / 20 / 300)  # no sign bias on the diagonal


@pytest.mark.parametrize(
    "fn", [init.uniform_, init.normal_, init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_,
           init.kaiming_normal_, init.orthogonal_, init.trunc_normal_],
)  # fmt: skip
def test_same_seed_same_weights(fn) -> None:
    a = fn(empty(6, 5), generator=cr.Generator(11)).data
    b = fn(empty(6, 5), generator=cr.Generator(11)).data
    c = fn(empty(6, 5), generator=cr.Generator(12)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    cr.manual_seed(4)
    d = fn(empty(6, 5)).data
    cr.manual_seed(4)
    np.testing.assert_array_equal(fn(empty(6, 5)).data, d)


def test_initializers_work_on_parameters_and_keep_dtype() -> None:
    p = nn.Parameter(np.zeros((4, 3), dtype=np.float32))
    init.kaiming_uniform_(p)
    assert p.dtype == np.float32 and p.requires_grad and p.is_leaf and np.any(p.data != 0)


# ----------------------------------------------------------------------------- layers' default initialization


def test_linear_default_init_matches_torch_distribution() -> None:
    ours = nn.Linear(400, 500, dtype=cr.float64)
    theirs = torch.nn.Linear(400, 500)
    bound = 1 / math.sqrt(400)
    # float32 weights may reach float32(bound) = 0.0500000007 once rounded; compare each in its own dtype.
    assert np.abs(ours.weight.data).max() <= bound
    assert np.abs(theirs.weight.detach().numpy()).max() <= np.float32(bound)
    for w in (ours.weight.data, theirs.weight.detach().double().numpy()):
        assert_moments(w, 0.0, bound**2 / 3)
    b = nn.Linear(400, 20000).bias.data
    assert b.dtype == np.float32 and np.abs(b).max() <= np.float32(bound)
    assert_moments(b.astype(np.float64), 0.0, bound**2 / 3, rtol=0.05)


def test_embedding_batchnorm_layernorm_default_init() -> None:
    e = nn.Embedding(1000, 200, padding_idx=3)
    assert np.all(e.weight.data[3] == 0)
    assert_moments(np.delete(e.weight.data, 3, axis=0).astype(np.float64), 0.0, 1.0)
    for ours, theirs in (
        (nn.BatchNorm1d(5), torch.nn.BatchNorm1d(5)),
        (nn.LayerNorm((2, 3)), torch.nn.LayerNorm((2, 3))),
    ):
        for k, v in theirs.state_dict().items():
            np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())


def test_layers_seeded() -> None:
    cr.manual_seed(7)
    a = nn.Sequential(nn.Linear(3, 4), nn.Embedding(5, 2)).state_dict()
    cr.manual_seed(7)
    b = nn.Sequential(nn.Linear(3, 4), nn.Embedding(5, 2)).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    g1, g2 = cr.Generator(1), cr.Generator(1)
    np.testing.assert_array_equal(nn.Linear(3, 4, generator=g1).weight.data, nn.Linear(3, 4, generator=g2).weight.data)
