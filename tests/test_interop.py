"""Weights exchange with PyTorch: equal outputs both ways, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import nn
from chainrule.errors import ChainruleError
from chainrule.interop import from_torch, to_torch, to_torch_state_dict


def _torch_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()


def _cr_mlp() -> nn.Module:
    g = cr.Generator(1)
    return nn.Sequential(
        nn.Linear(5, 8, dtype=cr.float64, generator=g),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(8, 3, dtype=cr.float64, generator=g),
    )


X = np.random.default_rng(0).standard_normal((7, 5))


def _cr_out(model: nn.Module) -> np.ndarray:
    return model(cr.tensor(X, dtype=cr.float64)).data


def _torch_out(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(X)).numpy()


def test_from_torch_module_builds_equal_model() -> None:
    tm = _torch_mlp()
    model = from_torch(tm)
    assert isinstance(model, nn.Sequential) and len(model) == 5
    assert isinstance(model[0], nn.Linear) and model[0].weight.dtype == np.float64
    np.testing.assert_allclose(_cr_out(model), _torch_out(tm), rtol=1e-13, atol=1e-14)


def test_from_torch_state_dict_into_model() -> None:
    tm = _torch_mlp()
    model = nn.Sequential(
        nn.Linear(5, 8, dtype=cr.float64), nn.ReLU(), nn.Linear(8, 8, dtype=cr.float64), nn.Tanh(), nn.Linear(8, 3)
    ).double()
    assert from_torch(tm.state_dict(), model) is model
    np.testing.assert_allclose(_cr_out(model), _torch_out(tm), rtol=1e-13, atol=1e-14)
    arrays = from_torch(tm.state_dict())
    assert list(arrays) == list(tm.state_dict()) and all(isinstance(v, np.ndarray) for v in arrays.values())


def test_to_torch_state_dict_loads_into_torch_model() -> None:
    model = _cr_mlp()
    tm = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Sigmoid(), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    ).double()
    sd = to_torch_state_dict(model)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    tm.load_state_dict(sd)
    np.testing.assert_allclose(_torch_out(tm), _cr_out(model), rtol=1e-13, atol=1e-14)


def test_to_torch_builds_equal_module_and_round_trips() -> None:
    model = _cr_mlp().eval()
    tm = to_torch(model)
    assert isinstance(tm, torch.nn.Sequential) and not tm.training
    assert tm[0].weight.dtype == torch.float64
    np.testing.assert_allclose(_torch_out(tm), _cr_out(model), rtol=1e-13, atol=1e-14)
    back = from_torch(tm)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2)


def test_unknown_layer_is_named() -> None:
    class Mine(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ChainruleError, match=r"layer '1' \(Mine\)"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), Mine()))


def test_flatten_arguments_copied_and_mismatched_weights_refused() -> None:
    tm = torch.nn.Sequential(torch.nn.Linear(2, 2, device="cpu"), torch.nn.Flatten(0, 1))
    model = from_torch(tm)  # both arguments exist in chainrule's Flatten
    assert (model[1].start_dim, model[1].end_dim) == (0, 1)
    with pytest.raises(ChainruleError, match="do not fit"):
        from_torch(_torch_mlp().state_dict(), nn.Sequential(nn.Linear(5, 4)))


def test_batchnorm_buffers_cross_with_num_batches_tracked() -> None:
    model = nn.Sequential(nn.Linear(3, 4, dtype=cr.float64), nn.BatchNorm1d(4, dtype=cr.float64))
    model[1].running_var.data[...] = 2.0
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).double()
    sd = to_torch_state_dict(model)
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in tm.state_dict().items()}  # 0-d stays 0-d
    tm.load_state_dict(sd)  # strict: every key matches, num_batches_tracked included
    np.testing.assert_array_equal(tm[1].running_var.numpy(), np.full(4, 2.0))
    with torch.no_grad():
        tm[1].running_mean.fill_(7.0)
        tm[1].num_batches_tracked.fill_(5)
    from_torch(tm.state_dict(), model)
    np.testing.assert_array_equal(model[1].running_mean.data, np.full(4, 7.0))
    assert int(model[1].num_batches_tracked.data) == 5


def _randomize(tm: torch.nn.Module) -> torch.nn.Module:
    """Random weights and running statistics, so that nothing matches by accident."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in tm.modules():
            for t in m.parameters(recurse=False):
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.5)
            if getattr(m, "running_var", None) is not None:
                m.running_mean.normal_(0, 1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return tm


def _torch_cnn() -> torch.nn.Module:
    T = torch.nn
    return _randomize(
        T.Sequential(
            T.Conv2d(2, 4, 3, padding=1),
            T.BatchNorm2d(4),
            T.ReLU(),
            T.MaxPool2d(2),
            T.Conv2d(4, 3, 3, padding="same", bias=False),
            T.BatchNorm2d(3, momentum=0.3),
            T.Tanh(),
            T.AdaptiveAvgPool2d(2),
            T.Flatten(),
            T.Linear(12, 5),
        ).double()
    )


def _both(tm: torch.nn.Module, model: nn.Module, x: np.ndarray, train: bool) -> None:
    """Equal outputs, input gradients and (in training mode) updated running statistics."""
    tm.train(train)
    model.train(train)
    tx = torch.from_numpy(x).requires_grad_()
    tout = tm(tx)
    tout.square().sum().backward()
    cx = cr.tensor(x, requires_grad=True)
    cout = model(cx)
    (cout * cout).sum().backward()
    np.testing.assert_allclose(cout.data, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cx.grad.data, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
    for k, v in tm.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k], v.numpy(), rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("train", [False, True])
def test_cnn_with_batchnorm_both_ways(train: bool) -> None:
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6))
    tm = _torch_cnn()
    model = from_torch(tm)
    assert isinstance(model[1], nn.BatchNorm2d) and model[4].padding == "same" and model[4].bias is None
    assert model[0].weight.dtype == np.float64 and model[5].momentum == 0.3
    _both(tm, model, x, train)
    back = to_torch(model)  # chainrule -> torch: a fresh torch model from the chainrule one
    assert isinstance(back[1], torch.nn.BatchNorm2d) and back[0].weight.dtype == torch.float64
    _both(back, model, x, train)


@pytest.mark.parametrize("train", [False, True])
def test_gru_and_lstm_both_ways(train: bool) -> None:
    x = np.random.default_rng(2).standard_normal((3, 5, 4))  # batch first
    g = cr.Generator(4)
    for model in (
        nn.GRU(4, 3, num_layers=2, batch_first=True, bidirectional=True, dtype=cr.float64, generator=g),
        nn.LSTM(4, 3, batch_first=True, dtype=cr.float64, generator=g),
        nn.RNN(4, 3, nonlinearity="relu", bias=False, batch_first=True, dtype=cr.float64, generator=g),
    ):
        model.train(train)
        tm = to_torch(model)
        assert type(tm).__name__ == type(model).__name__ and tm.batch_first and tm.training == train
        assert (tm.bidirectional, tm.num_layers, tm.bias) == (model.bidirectional, model.num_layers, model.bias)
        back = from_torch(tm)
        assert (back.bidirectional, back.num_layers, back.batch_first) == (model.bidirectional, model.num_layers, True)
        assert getattr(back, "nonlinearity", "tanh") == getattr(model, "nonlinearity", "tanh")
        with torch.no_grad():
            want = tm(torch.from_numpy(x))
        for m in (model, back):
            got = m(cr.tensor(x))
            flat_got = [got[0], *(got[1] if isinstance(got[1], tuple) else (got[1],))]
            flat_want = [want[0], *(want[1] if isinstance(want[1], tuple) else (want[1],))]
            for a, b in zip(flat_got, flat_want, strict=True):
                np.testing.assert_allclose(a.data, b.numpy(), rtol=1e-11, atol=1e-13)


def test_named_sequential_keeps_names_and_mode() -> None:
    from collections import OrderedDict

    tm = torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(5, 2), act=torch.nn.Sigmoid())).double().eval()
    model = from_torch(tm)
    assert list(model.state_dict()) == ["fc.weight", "fc.bias"] and not model.training and not model.fc.training
    np.testing.assert_allclose(_cr_out(model), _torch_out(tm), rtol=1e-13, atol=1e-14)
    assert list(to_torch(model).state_dict()) == ["fc.weight", "fc.bias"]


def test_each_layers_mode_is_carried_both_ways() -> None:
    """A model training with one BatchNorm frozen in eval mode keeps exactly that mix."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(4)))
    model.train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    tm = to_torch(model)
    assert [m.training for m in tm.modules()] == modes
    assert [m.training for m in from_torch(tm).modules()] == modes


@pytest.mark.parametrize(
    "layer, why",
    [
        (lambda: torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (lambda: torch.nn.Embedding(5, 2, max_norm=1.0), "max_norm"),
        (lambda: torch.nn.Embedding(5, 2, scale_grad_by_freq=True), "scale_grad_by_freq"),
        (lambda: torch.nn.LSTM(3, 4, proj_size=2), "proj_size"),
    ],
    ids=["Conv2d-reflect", "Embedding-max_norm", "Embedding-scale_grad_by_freq", "LSTM-proj_size"],
)
def test_arguments_chainrule_refuses_are_named_with_the_layer_path(layer, why) -> None:
    tm = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.ReLU(), layer()))
    with pytest.raises(ChainruleError, match=rf"layer '1\.1' \({type(tm[1][1]).__name__}\).*{why}"):
        from_torch(tm)


def test_shared_modules_and_tied_weights_stay_shared_both_ways() -> None:
    shared = torch.nn.Linear(3, 3)
    emb, head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied input and output embeddings
    tm = torch.nn.Sequential(emb, shared, torch.nn.Tanh(), shared, head).double()
    model = from_torch(tm)
    assert len(model) == 5 and model[1] is model[3] and model[0].weight is model[4].weight
    assert list(model.state_dict()) == list(tm.state_dict())
    idx = np.array([[0, 4], [2, 1]])
    with torch.no_grad():
        want = tm(torch.from_numpy(idx)).numpy()
    np.testing.assert_allclose(model(cr.tensor(idx)).data, want, rtol=1e-13, atol=1e-14)
    back = to_torch(model)
    assert back[1] is back[3] and back[0].weight is back[4].weight
    assert list(back.state_dict()) == list(tm.state_dict())
