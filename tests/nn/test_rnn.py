"""RNN / GRU / LSTM against PyTorch (float64, weights through the state dict), gradcheck, init, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule.nn.rnn import GRU, LSTM, RNN

KINDS = {
    "rnn_tanh": (RNN, torch.nn.RNN, {}),
    "rnn_relu": (RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "gru": (GRU, torch.nn.GRU, {}),
    "lstm": (LSTM, torch.nn.LSTM, {}),
}
CONFIGS = [
    dict(),
    dict(bidirectional=True),
    dict(num_layers=2),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=2, bias=False, batch_first=True),
]


def _run(kind: str, cfg: dict, shape: tuple[int, ...], with_h0: bool, train_eval: str = "train") -> None:
    cls, tcls, extra = KINDS[kind]
    cm = cls(3, 4, dtype=np.float64, **extra, **cfg)
    tm = tcls(3, 4, dtype=torch.float64, **extra, **cfg)
    cm.load_state_dict(tm.state_dict())
    cm.train(train_eval == "train")
    tm.train(train_eval == "train")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    dirs = 2 if cfg.get("bidirectional") else 1
    batch = (shape[0 if cfg.get("batch_first") else 1],) if len(shape) == 3 else ()
    h_shape = (dirs * cfg.get("num_layers", 1), *batch, 4)
    hc = ht = None
    leaves_c, leaves_t = [xc], [xt]
    if with_h0:
        hs = [rng.standard_normal(h_shape) for _ in range(2 if kind == "lstm" else 1)]
        hc = [cr.tensor(h, requires_grad=True) for h in hs]
        ht = [torch.tensor(h, requires_grad=True) for h in hs]
        leaves_c, leaves_t = leaves_c + hc, leaves_t + ht
        hc, ht = (tuple(hc), tuple(ht)) if kind == "lstm" else (hc[0], ht[0])
    oc, sc = cm(xc, hc)
    ot, st = tm(xt, ht)
    outs_c = [oc, *(sc if kind == "lstm" else (sc,))]
    outs_t = [ot, *(st if kind == "lstm" else (st,))]
    loss_c, loss_t = 0.0, 0.0
    for a, b in zip(outs_c, outs_t):
        np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-12, atol=1e-12)
        w = rng.standard_normal(a.shape)
        loss_c = loss_c + (a * cr.tensor(w)).sum()
        loss_t = loss_t + (b * torch.tensor(w)).sum()
    loss_c.backward()
    loss_t.backward()
    for a, b in zip(leaves_c, leaves_t):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-11, atol=1e-12)
    tparams = dict(tm.named_parameters())
    assert [k for k, _ in cm.named_parameters()] == list(tparams)
    for name, p in cm.named_parameters():
        np.testing.assert_allclose(p.grad.data, tparams[name].grad.numpy(), rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torch(kind: str, cfg: dict) -> None:
    shape = (2, 5, 3) if cfg.get("batch_first") else (5, 2, 3)
    _run(kind, cfg, shape, with_h0=False)
    _run(kind, cfg, shape, with_h0=True)


@pytest.mark.parametrize("kind", list(KINDS))
def test_unbatched_and_eval_mode(kind: str) -> None:
    _run(kind, dict(num_layers=2, bidirectional=True), (4, 3), with_h0=True)
    _run(kind, dict(num_layers=2, bidirectional=True), (4, 3), with_h0=False, train_eval="eval")
    _run(kind, dict(num_layers=2, dropout=0.5), (4, 2, 3), with_h0=False, train_eval="eval")


def test_dropout_between_layers_in_training() -> None:
    m = LSTM(3, 4, num_layers=2, dropout=0.5, generator=cr.Generator(1)).double()
    x = cr.tensor(np.random.default_rng(0).standard_normal((6, 2, 3)))
    a, b = m(x)[0].data, m(x)[0].data
    assert not np.allclose(a, b)  # a fresh mask each call
    m.eval()
    np.testing.assert_array_equal(m(x)[0].data, m(x)[0].data)
    m1 = LSTM(3, 4, num_layers=1, dropout=0.5)  # no layer after the first: dropout has no effect
    np.testing.assert_array_equal(m1(x.float())[0].data, m1(x.float())[0].data)


def test_gradcheck_gru_and_lstm() -> None:
    rng = np.random.default_rng(0)
    x = cr.tensor(rng.standard_normal((3, 2, 2)), requires_grad=True)
    h = cr.tensor(rng.standard_normal((2, 2, 3)), requires_grad=True)
    c = cr.tensor(rng.standard_normal((2, 2, 3)), requires_grad=True)
    gru = GRU(2, 3, bidirectional=True, dtype=np.float64)
    lstm = LSTM(2, 3, bidirectional=True, dtype=np.float64)
    assert cr.gradcheck(lambda x, h: gru(x, h)[0], (x, h))
    assert cr.gradcheck(lambda x, h, c: lstm(x, (h, c))[1][1], (x, h, c))
    assert cr.gradgradcheck(lambda x: gru(x)[0] ** 2, (x,))


def test_init_state_dict_and_dtype() -> None:
    for cls, tcls in ((RNN, torch.nn.RNN), (GRU, torch.nn.GRU), (LSTM, torch.nn.LSTM)):
        m, t = cls(5, 7, num_layers=2, bidirectional=True), tcls(5, 7, num_layers=2, bidirectional=True)
        assert {k: v.shape for k, v in m.state_dict().items()} == {k: tuple(v.shape) for k, v in t.state_dict().items()}
    big = LSTM(64, 100, generator=cr.Generator(3))
    w, k = big.weight_hh_l0.data, 1 / np.sqrt(100)
    assert w.dtype == np.float32 and np.abs(w).max() <= k
    assert abs(w.mean()) < 0.02 * k and abs(w.var() / (k * k / 3) - 1) < 0.05
    np.testing.assert_array_equal(LSTM(64, 100, generator=cr.Generator(3)).weight_hh_l0.data, w)
    out, (h, c) = big(cr.randn(3, 2, 64))
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert repr(GRU(2, 3, num_layers=2, batch_first=True)) == "GRU(2, 3, num_layers=2, batch_first=True)"


def test_errors() -> None:
    m = GRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="3 features"):
        m(cr.randn(5, 2, 6))
    with pytest.raises(ValueError, match=r"h_0 of shape \(2, 2, 4\)"):
        m(cr.randn(5, 2, 3), cr.randn(1, 2, 4))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 4, nonlinearity="sigmoid")
