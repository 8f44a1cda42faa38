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


class BatchNorm1d(nn.Module):
    """The state of a BatchNorm1d layer, enough to exchange weights (the real layer comes from helper nn)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(np.linspace(0.5, 1.5, n))
        self.bias = nn.Parameter(np.linspace(-1, 1, n))
        self.register_buffer("running_mean", cr.tensor(np.arange(n, dtype=np.float64)))
        self.register_buffer("running_var", cr.tensor(np.full(n, 2.0)))


def test_batchnorm_buffers_cross_with_num_batches_tracked() -> None:
    model = nn.Sequential(nn.Linear(3, 4, dtype=cr.float64), BatchNorm1d(4))
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).double()
    tm.load_state_dict(to_torch_state_dict(model))  # strict: num_batches_tracked is supplied
    np.testing.assert_array_equal(tm[1].running_var.numpy(), np.full(4, 2.0))
    with torch.no_grad():
        tm[1].running_mean.fill_(7.0)
    from_torch(tm.state_dict(), model)  # torch's num_batches_tracked has no place in this model: dropped
    np.testing.assert_array_equal(model[1].running_mean.data, np.full(4, 7.0))


def test_named_sequential_keeps_names_and_mode() -> None:
    from collections import OrderedDict

    tm = torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(5, 2), act=torch.nn.Sigmoid())).double().eval()
    model = from_torch(tm)
    assert list(model.state_dict()) == ["fc.weight", "fc.bias"] and not model.training and not model.fc.training
    np.testing.assert_allclose(_cr_out(model), _torch_out(tm), rtol=1e-13, atol=1e-14)
    assert list(to_torch(model).state_dict()) == ["fc.weight", "fc.bias"]
