"""`trace` and `chainrule explain` on a CNN, recurrent nets (GRU, LSTM) and a saved run: gradients equal backward()
and PyTorch's (float64, same weights through state dicts), updates verified, gradient check passed."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import nn
from chainrule.explain import trace
from chainrule.spec import build_model

CNN_SPEC = [
    {"type": "Conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
    {"type": "ReLU"},
    {"type": "MaxPool2d", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Linear"},
]


class _TSelect(torch.nn.Module):  # torch twin of chainrule.spec.Select (same state-dict names)
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)[0]


class _TLast(torch.nn.Module):
    def forward(self, x):
        return x[:, -1]


def _torch_twin(kind: str) -> torch.nn.Module:
    if kind == "cnn":
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 2, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 3),
        ).double()
    rnn = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind](2, 3, batch_first=True)
    return torch.nn.Sequential(_TSelect(rnn), _TLast(), torch.nn.Linear(3, 3)).double()


def _case(kind: str):
    rng = np.random.default_rng(3)
    if kind == "cnn":
        model = build_model(CNN_SPEC, (1, 4, 4), 3, seed=0, dtype=np.float64)
        x = rng.normal(size=(4, 1, 4, 4))
    else:
        spec = [{"type": kind.upper(), "hidden_size": 3, "batch_first": True}, {"type": "Last"}, {"type": "Linear"}]
        model = build_model(spec, (5, 2), 3, seed=0, dtype=np.float64)
        x = rng.normal(size=(4, 5, 2))
    y = np.array([0, 2, 1, 2])
    tm = _torch_twin(kind)
    tm.load_state_dict({k: torch.from_numpy(np.array(v.data)) for k, v in model.state_dict().items()})
    return model, tm, x, y


@pytest.mark.parametrize("kind", ["cnn", "gru", "lstm"])
def test_trace_cnn_and_recurrent_match_backward_and_torch(kind) -> None:
    model, tm, x, y = _case(kind)
    fresh = copy.deepcopy(model)
    opt = cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)
    # two steps, so the second one has a momentum buffer to explain
    trace(model, x, y, nn.CrossEntropyLoss(), opt, gradcheck=False)
    tm.zero_grad()
    torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    topt.step()
    fresh.load_state_dict(model.state_dict())
    tr = trace(model, x, y, nn.CrossEntropyLoss(), opt)

    nn.CrossEntropyLoss()(fresh(cr.tensor(x)), cr.tensor(y)).backward()
    plain = dict(fresh.named_parameters())
    tm.zero_grad()
    tloss = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    tparams = dict(tm.named_parameters())
    assert tr.loss == pytest.approx(tloss.item(), rel=1e-12)
    assert {p.name for p in tr.params} == set(tparams)
    for p in tr.params:
        np.testing.assert_array_equal(p.grad, plain[p.name].grad.data)
        np.testing.assert_allclose(p.grad, tparams[p.name].grad.numpy(), rtol=1e-9, atol=1e-12)
    topt.step()
    for p in tr.params:
        np.testing.assert_allclose(p.new_value, tparams[p.name].detach().numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(p.update, p.terms["update"], rtol=1e-8, atol=1e-15)
        st = topt.state[tparams[p.name]]
        np.testing.assert_allclose(p.terms["momentum_buffer"], st["momentum_buffer"].numpy(), rtol=1e-9, atol=1e-12)
    assert tr.optimizer["verified"]
    assert tr.gradcheck["passed"] and tr.gradcheck["elements_checked"] == sum(p.value.size for p in tr.params)
    for n in tr.nodes:
        assert all(i < n.id for i in n.inputs)
    assert tr.nodes[-1].grad == pytest.approx(1.0)


def _explain(argv: list[str], capsys) -> tuple[int, str, str]:
    from chainrule.cli import main

    rc = main(["explain", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_explain_cli_cnn_spec(tmp_path, capsys) -> None:
    rows = ";".join(",".join(f"{((i * 16 + j) % 7) / 7:.4f}" for j in range(16)) for i in range(2))
    argv = ["--model", json.dumps(CNN_SPEC), "--input-shape", "1,4,4", "--inputs", rows, "--targets", "0;2"]
    argv += ["--loss", "cross_entropy", "--optimizer", "momentum", "--lr", "0.1", "--format", "json"]
    rc, out, _ = _explain([*argv, "--graph", str(tmp_path / "g.dot")], capsys)
    d = json.loads(out)
    assert rc == 0 and d["gradcheck"]["passed"] and d["optimizer"]["verified"]
    ops = [n["op"] for n in d["nodes"]]
    assert any("conv2d" in o for o in ops) and any("max_pool2d" in o for o in ops)
    assert {p["name"] for p in d["parameters"]} == {"0.weight", "0.bias", "4.weight", "4.bias"}
    assert "digraph" in (tmp_path / "g.dot").read_text()


def test_explain_cli_saved_run_and_model_file(tmp_path, capsys) -> None:
    from chainrule.cli import main

    run = tmp_path / "run"
    assert (
        main(["train", "--data", "xor", "--model", "mlp:3", "--epochs", "2", "--no-plot", "-q", "--out", str(run)]) == 0
    )
    capsys.readouterr()
    rc, out, _ = _explain(["--run", str(run), "--rows", "3", "--optimizer", "adam"], capsys)
    assert rc == 0 and "Gradient check: passed" in out and "cross_entropy" in out and "exp_avg" in out
    model_file = next(run.glob("model.*"))
    rc, out, _ = _explain(["--model-file", str(model_file), "--inputs", "1,1;0,1", "--targets", "0;1"], capsys)
    assert rc == 0 and "Gradient check: passed" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "bogus:3"], "--model: unknown model form"),
        (
            ["--model", "mlp:3", "--inputs", "1,2", "--targets", "1", "--input-shape", "1,3"],
            "--input-shape 1,3 needs 3",
        ),
        (["--model", "mlp:3", "--optimizer", "nonesuch"], "optimizer"),
        (["--model", "mlp:3", "--loss", "nonesuch"], "loss"),
        (["--model-file", "nowhere.safetensors"], "nowhere"),
        (["--model", "mlp:3", "--run", "x"], "either --model or --run"),
    ],
)
def test_explain_cli_errors_are_one_line(argv, message, capsys) -> None:
    from chainrule.cli import main

    rc = main(["explain", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("own_generator", [False, True])
def test_trace_dropout_gradient_check_replays_the_mask(own_generator) -> None:
    """Dropout in training mode: the finite differences use the traced step's mask (not a fresh one per
    evaluation), and the default random stream moves on by exactly one forward pass, as in training."""
    gen = cr.Generator(1)
    drop = nn.Dropout(0.5, generator=cr.Generator(7) if own_generator else None)
    model = nn.Sequential(nn.Linear(3, 8, dtype=np.float64, generator=gen), drop, nn.Linear(8, 1, generator=gen))
    model = model.double()
    x, y = np.random.default_rng(0).normal(size=(5, 3)), np.random.default_rng(1).normal(size=(5, 1))
    cr.manual_seed(5)
    twin = copy.deepcopy(model)
    twin(cr.tensor(x))  # one forward pass: the draws the traced step makes
    expected = cr.default_generator.get_state()
    cr.manual_seed(5)
    tr = trace(model, x, y, nn.MSELoss(), cr.optim.SGD(model.parameters(), lr=0.1))
    assert tr.gradcheck["passed"], tr.gradcheck
    assert tr.warnings == []
    assert cr.default_generator.get_state() == expected


def test_trace_names_the_buffers_a_batchnorm_step_updates() -> None:
    """BatchNorm in training mode: the step moves the running statistics (as in training) and the trace says so;
    the numbers are batch statistics, equal to PyTorch's; the gradient check leaves the model's buffers alone."""
    gen = cr.Generator(2)
    model = nn.Sequential(nn.Linear(3, 4, generator=gen), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1, generator=gen))
    model = model.double()
    tm = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    tm.load_state_dict({k: torch.from_numpy(np.array(v.data)) for k, v in model.state_dict().items()})
    x, y = np.random.default_rng(0).normal(size=(5, 3)), np.random.default_rng(1).normal(size=(5, 1))
    tr = trace(model, x, y, nn.MSELoss(), cr.optim.SGD(model.parameters(), lr=0.1))
    tloss = torch.nn.functional.mse_loss(tm(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    assert tr.loss == pytest.approx(tloss.item(), rel=1e-12) and tr.gradcheck["passed"]
    for p in tr.params:
        np.testing.assert_allclose(p.grad, dict(tm.named_parameters())[p.name].grad.numpy(), rtol=1e-9, atol=1e-12)
    assert tr.buffers == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    for name, b in model.named_buffers():  # moved once, by the traced forward only
        np.testing.assert_allclose(np.array(b.data), dict(tm.named_buffers())[name].numpy(), rtol=1e-12)
    assert "Buffers updated by the forward pass (training mode): 1.running_mean" in tr.to_text()
    assert json.loads(tr.to_json())["buffers_updated"] == tr.buffers
    model.eval()
    assert trace(model, x, y, nn.MSELoss()).buffers == []
