"""Explain mode: the reference example against PyTorch, renderers, schema, trace and pictures."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from chainrule import explain, tracing
from chainrule.explain import CrossCheckError, ExampleConfig, run_example

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
SCHEMA = json.loads((ROOT / "docs" / "explain-schema.json").read_text())
NUM = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"


# ----------------------------------------------------------------------------- independent PyTorch reference


def torch_reference(cfg: ExampleConfig) -> dict:
    """Every figure of the example computed independently with torch float64 autograd."""
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[cfg.activation]

    def step(w1v: float, w2v: float) -> dict:
        x = torch.tensor(cfg.x, dtype=torch.float64)
        y = torch.tensor(cfg.y, dtype=torch.float64)
        w1 = torch.tensor(w1v, dtype=torch.float64, requires_grad=True)
        w2 = torch.tensor(w2v, dtype=torch.float64, requires_grad=True)
        z = w1 * x
        h = act(z)
        yp = w2 * h
        loss = 0.5 * (y - yp) ** 2
        (d_l_yp,) = torch.autograd.grad(loss, yp, retain_graph=True)
        d_yp_w2, d_yp_h = torch.autograd.grad(yp, (w2, h), retain_graph=True)
        (d_h_z,) = torch.autograd.grad(h, z, retain_graph=True)
        (d_z_w1,) = torch.autograd.grad(z, w1, retain_graph=True)
        loss.backward()
        opt = torch.optim.SGD([w1, w2], lr=cfg.lr)
        g1, g2 = w1.grad.item(), w2.grad.item()
        opt.step()
        return dict(
            z=z.item(),
            h=h.item(),
            y_pred=yp.item(),
            loss=loss.item(),
            dL_dy_pred=d_l_yp.item(),
            dy_pred_dw2=d_yp_w2.item(),
            dy_pred_dh=d_yp_h.item(),
            dh_dz=d_h_z.item(),
            dz_dw1=d_z_w1.item(),
            dL_dw1=g1,
            dL_dw2=g2,
            w1_new=w1.item(),
            w2_new=w2.item(),
        )

    first = step(cfg.w1, cfg.w2)
    traj = [(0, cfg.w1, cfg.w2, first["loss"])]
    w1, w2 = first["w1_new"], first["w2_new"]
    stop_epoch = cfg.epochs
    for epoch in range(1, cfg.epochs + 1):
        s = step(w1, w2)
        traj.append((epoch, w1, w2, s["loss"]))
        if traj[-2][3] - s["loss"] < cfg.tol:
            stop_epoch = epoch
            break
        w1, w2 = s["w1_new"], s["w2_new"]
    first["trajectory"] = traj
    first["stop_epoch"] = stop_epoch
    return first


def agrees(printed: str, exact: float, digits: int = explain.PRECISION) -> bool:
    """`printed` is `exact` rounded to `digits` significant digits (half a unit of the last digit, + 1e-6 slack)."""
    p = float(printed)
    if exact == 0:
        return p == 0
    unit = 10.0 ** (math.floor(math.log10(abs(exact))) - digits + 1)
    return abs(p - exact) <= 0.5 * unit * (1 + 1e-6)


def _cli(add, run, argv, capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add(parser)
    rc = run(parser.parse_args(argv))
    return rc, capsys.readouterr().out


def example_cli(argv: list[str], capsys) -> tuple[int, str]:
    return _cli(explain.add_example_arguments, explain.run_example_cli, argv, capsys)


CONFIGS = [
    [],
    ["--activation", "tanh", "--x", "-1.5", "--y", "0.8", "--w1", "0.7", "--w2", "-0.2", "--lr", "0.1"],
    ["--activation", "relu", "--lr", "0.05", "--epochs", "40", "--tol", "0"],
]


@pytest.mark.parametrize("argv", CONFIGS)
def test_example_text_every_figure_matches_torch(argv, capsys) -> None:
    rc, out = example_cli(argv, capsys)
    assert rc == 0
    parser = argparse.ArgumentParser()
    explain.add_example_arguments(parser)
    a = parser.parse_args(argv)
    cfg = ExampleConfig(a.x, a.y, a.w1, a.w2, a.lr, a.epochs, a.tol, a.activation)
    ref = torch_reference(cfg)

    def last_number(prefix: str) -> str:
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(prefix)]
        return re.findall(NUM, line)[-1]

    checked = 0
    for prefix, key in [
        ("z = w1·x", "z"),
        (f"h = {cfg.activation}(z)", "h"),
        ("ŷ = w2·h", "y_pred"),
        ("L = ½", "loss"),
        ("∂L/∂ŷ  =", "dL_dy_pred"),
        ("∂ŷ/∂w2 =", "dy_pred_dw2"),
        ("∂ŷ/∂h  =", "dy_pred_dh"),
        ("∂h/∂z  =", "dh_dz"),
        ("∂z/∂w1 =", "dz_dw1"),
        ("∂L/∂w2 =", "dL_dw2"),
        ("∂L/∂w1 =", "dL_dw1"),
        ("w1_new = ", "w1_new"),
        ("w2_new = ", "w2_new"),
    ]:
        assert agrees(last_number(prefix), ref[key]), (prefix, last_number(prefix), ref[key])
        checked += 1
    # the factors written in the chain-rule products
    (g1_line,) = [ln for ln in out.splitlines() if ln.strip().startswith("∂L/∂w1 =")]
    nums = re.findall(NUM, g1_line.split("=", 2)[2])
    for p, key in zip(nums, ["dL_dy_pred", "dy_pred_dh", "dh_dz", "dz_dw1", "dL_dw1"]):
        assert agrees(p, ref[key]), (key, p, ref[key])
    # the update lines: old weight, lr, gradient, new weight
    for w, old in (("1", cfg.w1), ("2", cfg.w2)):
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(f"w{w}_new = ")]
        o, lr, g, new = re.findall(NUM, line.split("=", 2)[2])
        assert agrees(o, old) and agrees(lr, cfg.lr) and agrees(g, ref[f"dL_dw{w}"]) and agrees(new, ref[f"w{w}_new"])
    # the trajectory table
    traj = {e: (w1, w2, lo) for e, w1, w2, lo in ref["trajectory"]}
    rows = [ln.split() for ln in out.splitlines() if re.fullmatch(rf"\s*\d+\s+{NUM}\s+{NUM}\s+{NUM}\s*", ln)]
    assert len(rows) >= 5
    for e, w1, w2, lo in rows:
        exp = traj[int(e)]
        assert agrees(w1, exp[0]) and agrees(w2, exp[1]) and agrees(lo, exp[2]), (e, w1, w2, lo, exp)
    assert int(rows[0][0]) == 0 and int(rows[-1][0]) == ref["stop_epoch"]
    assert checked == 13


def test_reference_figures_and_stop(capsys) -> None:
    r = run_example()
    assert r.step.loss == pytest.approx(0.03939131224798279, rel=1e-14)
    assert r.step.dL_dw1 == pytest.approx(-0.03311130869014582, rel=1e-14)
    assert r.step.dL_dw2 == pytest.approx(-0.2051952956984455, rel=1e-14)
    ref = torch_reference(ExampleConfig())
    assert r.stop_reason == "converged" and r.trajectory[-1][0] == ref["stop_epoch"]
    _, out = example_cli(["--epochs", "3"], capsys)
    assert "stopped: epoch budget reached (3 epochs)" in out


def test_stop_reasons(capsys) -> None:
    r = run_example(ExampleConfig(lr=30, activation="tanh"))
    assert r.stop_reason == "loss_increased" and r.trajectory[-1][0] == 1
    r = run_example(ExampleConfig(w1=-1, activation="relu"))
    assert r.stop_reason == "converged" and "relu unit is inactive" in r.stop_message
    assert r.step.dh_dz == 0 and r.step.dL_dw1 == 0
    doc = json.loads(explain.render_example(r, "json"))
    jsonschema.validate(doc, SCHEMA)


def test_overflow_is_a_clear_error_or_a_diverged_stop(capsys) -> None:
    """Inputs whose first step overflows float64 are refused by name (the cross-check used to report "inf" against
    "inf" as a mismatch); a later overflow stops the run as "diverged" and keeps every printed figure finite."""
    from chainrule.errors import ConfigError

    for kw in (dict(w1=1e200, x=1e200), dict(w1=1e200, x=1e200, activation="relu"), dict(w2=1e200, lr=1e200)):
        with pytest.raises(ConfigError, match=r"the first step's (z|loss) is inf in float64 .*give smaller numbers"):
            run_example(ExampleConfig(**kw))
    with pytest.raises(ConfigError, match="give smaller numbers"):  # the CLI prints it and exits with 2
        example_cli(["--w1", "1e200", "--x", "1e200"], capsys)
    assert capsys.readouterr().out == ""
    r = run_example(ExampleConfig(w2=1e100, lr=1e100, x=1e-300, epochs=50))
    assert r.stop_reason == "diverged" and r.stop_message.startswith("the loss became inf at epoch 1 ")
    assert all(math.isfinite(v) for row in r.trajectory for v in row)
    doc = json.loads(explain.render_example(r, "json"), parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))
    jsonschema.validate(doc, SCHEMA)
    for fmt in ("text", "markdown", "latex"):
        assert "diverged" in explain.render_example(r, fmt) or "loss became inf" in explain.render_example(r, fmt)


@pytest.mark.parametrize(
    "autograd,hand,agree",
    [(math.inf, math.inf, True), (math.nan, math.nan, True), (-math.inf, -math.inf, True), (math.inf, -math.inf, False),
     (math.inf, 1e308, False), (math.nan, 0.0, False), (1.0, 1.0 + 1e-13, True), (1.0, 1.0 + 1e-9, False)],
)  # fmt: skip
def test_cross_check_agrees_on_the_same_inf_or_nan(autograd, hand, agree) -> None:
    if agree:
        explain._check("f", autograd, hand)
    else:
        with pytest.raises(CrossCheckError, match="cross-check failed for f"):
            explain._check("f", autograd, hand)


def test_json_validates_and_matches_torch(capsys) -> None:
    rc, out = example_cli(["--format", "json", "--activation", "tanh", "--epochs", "50"], capsys)
    assert rc == 0
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    ref = torch_reference(ExampleConfig(activation="tanh", epochs=50))
    for k in ("z", "h", "y_pred"):
        assert doc["forward"][k] == pytest.approx(ref[k], rel=1e-13)
    assert doc["loss"] == pytest.approx(ref["loss"], rel=1e-13)
    for k, v in doc["local_derivatives"].items():
        assert v == pytest.approx(ref[k], rel=1e-13)
    for w in ("w1", "w2"):
        g = doc["gradients"][w]
        assert g["value"] == pytest.approx(ref[f"dL_d{w}"], rel=1e-13)
        assert math.prod(g["factor_values"]) == pytest.approx(g["value"], rel=1e-13)
        assert doc["update"][w]["new"] == pytest.approx(ref[f"{w}_new"], rel=1e-14)
    traj = {e: (w1, w2, lo) for e, w1, w2, lo in ref["trajectory"]}
    for row in doc["trajectory"]:
        assert (row["w1"], row["w2"], row["loss"]) == pytest.approx(traj[row["epoch"]], rel=1e-12)
    assert doc["stop"]["reason"] == "epoch_budget" and doc["final"]["epoch"] == 50


@pytest.mark.parametrize("fmt", ["markdown", "latex"])
def test_markdown_latex_snapshots(fmt, capsys) -> None:
    _, out = example_cli(["--format", fmt], capsys)
    path = SNAPSHOTS / f"example.{'md' if fmt == 'markdown' else 'tex'}"
    if os.environ.get("CHAINRULE_UPDATE_SNAPSHOTS"):
        path.write_text(out)
    assert out == path.read_text()
    assert "0.03939131225" in out and "-0.03311130869" in out and "-0.2051952957" in out
    if fmt == "markdown":
        assert r"\frac{\partial L}{\partial w_1} = \frac{\partial L}{\partial \hat y} \cdot" in out
    else:
        assert out.count(r"\begin{align*}") == out.count(r"\end{align*}") == 4


@pytest.mark.parametrize("z", [math.nan, 0.0, -0.0, math.inf, -math.inf, 1.5, -1.5])
def test_relu_hand_derivative_is_autograds_and_torchs_at_nan_zero_and_inf(z) -> None:
    """relu's closed form agrees exactly with autograd (and torch): dh/dz is 0 where z <= 0, else 1, NaN included."""
    from chainrule import Tensor, grad, ops

    h, dh, _ = explain._act_hand("relu", z)
    t = Tensor(np.asarray(z), requires_grad=True)
    out = ops.relu(t)
    (g,) = grad(out, t)
    tt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    torch.relu(tt).backward()
    assert dh == g.item() == tt.grad.item()
    np.testing.assert_array_equal(h, out.item())  # NaN at NaN
    assert math.isnan(z) or h == torch.relu(tt).item()


@pytest.mark.parametrize("w1", [0.0, -0.0])  # pre-activation z = 2·w1 = ±0: relu's gradient is 0
def test_relu_step_at_zero_pre_activation_matches_autograd(w1) -> None:
    s = explain.example_step(ExampleConfig(activation="relu"), w1, 0.3)
    assert s.z == 0 and s.h == 0 and s.dh_dz == 0 and s.dL_dw1 == 0 and s.w1_new == w1


def test_mismatch_is_an_error_not_a_print(monkeypatch, capsys) -> None:
    real = explain._act_hand

    def wrong(name: str, z: float):
        h, d, f = real(name, z)
        return h, d * (1 + 1e-6), f

    monkeypatch.setattr(explain, "_act_hand", wrong)
    with pytest.raises(CrossCheckError, match="∂h/∂z"):
        example_cli([], capsys)
    assert capsys.readouterr().out == ""


def test_bad_options_are_config_errors() -> None:
    from chainrule.errors import ConfigError

    with pytest.raises(ConfigError, match="--lr"):
        run_example(ExampleConfig(lr=-1))
    with pytest.raises(ConfigError, match="--plot-size"):
        explain.parse_size("big")


def test_example_formats_render_all_formats() -> None:
    r = run_example(ExampleConfig(epochs=20))
    for f in ("text", "json", "markdown", "latex"):
        assert explain.render_example(r, f).endswith("\n")
    assert np.isfinite(r.trajectory[-1][3])


# ----------------------------------------------------------------------------- trace


import chainrule as cr  # noqa: E402
from chainrule import nn  # noqa: E402
from chainrule.explain import trace  # noqa: E402

ACTS = {"tanh": (nn.Tanh, torch.nn.Tanh), "relu": (nn.ReLU, torch.nn.ReLU), "sigmoid": (nn.Sigmoid, torch.nn.Sigmoid)}


def mlp_pair(act: str, sizes=(3, 4, 5, 2), seed: int = 0):
    gen = cr.Generator(seed)
    a, ta = ACTS[act]
    layers, tlayers = [], []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], dtype=cr.float64, generator=gen))
        tlayers.append(torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float64))
        if i < len(sizes) - 2:
            layers += [a()]
            tlayers += [ta()]
    m, tm = nn.Sequential(*layers), torch.nn.Sequential(*tlayers)
    tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
    return m, tm


def _data(n=5, d=3, k=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, k))


OPTS = {
    "sgd": (lambda ps: cr.optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "momentum": (
        lambda ps: cr.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    ),
    "adam": (lambda ps: cr.optim.Adam(ps, lr=0.01), lambda ps: torch.optim.Adam(ps, lr=0.01)),
    "adamw": (lambda ps: cr.optim.AdamW(ps, lr=0.01), lambda ps: torch.optim.AdamW(ps, lr=0.01)),
}


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("opt_name", list(OPTS))
def test_trace_mlp_matches_backward_and_torch(act, opt_name) -> None:
    m, tm = mlp_pair(act)
    x, y = _data()
    fresh = __import__("copy").deepcopy(m)
    opt_c, opt_t = OPTS[opt_name]
    # two steps: the second one has optimizer state (momentum buffer, Adam moments) to explain
    opt = opt_c(m.parameters())
    topt = opt_t(tm.parameters())
    trace(m, x, y, nn.MSELoss(), opt, gradcheck=False)
    tm.zero_grad()
    torch.nn.functional.mse_loss(tm(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    topt.step()
    fresh.load_state_dict(m.state_dict())
    tr = trace(m, x, y, nn.MSELoss(), opt)
    # gradients equal those of a plain backward() on the same weights ...
    loss = nn.MSELoss()(fresh(cr.tensor(x)), cr.tensor(y))
    loss.backward()
    plain = dict(fresh.named_parameters())
    # ... and PyTorch's
    tm.zero_grad()
    tx = torch.from_numpy(x)
    tout = tm(tx)
    tout.retain_grad()
    tloss = torch.nn.functional.mse_loss(tout, torch.from_numpy(y))
    tloss.backward()
    tparams = dict(tm.named_parameters())
    assert tr.loss == pytest.approx(tloss.item(), rel=1e-12)
    for p in tr.params:
        np.testing.assert_array_equal(p.grad, plain[p.name].grad.data)
        np.testing.assert_allclose(p.grad, tparams[p.name].grad.numpy(), rtol=1e-10, atol=1e-13)
    topt.step()
    for p in tr.params:  # the update the trace reports is the one torch applies
        np.testing.assert_allclose(p.new_value, tparams[p.name].detach().numpy(), rtol=1e-10, atol=1e-13)
        assert "update" in p.terms
        np.testing.assert_allclose(p.update, p.terms["update"], rtol=1e-8, atol=1e-15)
    if opt_name in ("adam", "adamw"):
        assert tr.params[0].terms["step"] == 2
        st = topt.state[tparams[tr.params[0].name]]
        np.testing.assert_allclose(tr.params[0].terms["exp_avg"], st["exp_avg"].numpy(), rtol=1e-10)
        np.testing.assert_allclose(tr.params[0].terms["exp_avg_sq"], st["exp_avg_sq"].numpy(), rtol=1e-10)
    if opt_name == "momentum":
        st = topt.state[tparams[tr.params[0].name]]
        np.testing.assert_allclose(tr.params[0].terms["momentum_buffer"], st["momentum_buffer"].numpy(), rtol=1e-10)
    # the node table: forward order, the output node's upstream gradient equals torch's
    out_node = [n for n in tr.nodes if n.op == "linear"][-1]
    np.testing.assert_allclose(out_node.grad, tout.grad.numpy(), rtol=1e-10, atol=1e-14)
    for n in tr.nodes:
        assert all(i < n.id for i in n.inputs)
    assert tr.nodes[-1].grad == pytest.approx(1.0)
    assert tr.gradcheck["passed"] and tr.gradcheck["elements_checked"] == sum(p.value.size for p in tr.params)
    assert tr.optimizer["verified"] and not tr.warnings


def test_trace_local_derivatives_are_the_chain_rule_factors() -> None:
    # elementwise nodes: what backward sends to an input is the upstream gradient times the local derivative
    m, _ = mlp_pair("tanh", (2, 3, 1))
    x, y = _data(4, 2, 1)
    tr = trace(m, x, y, nn.MSELoss())
    tanh = next(n for n in tr.nodes if n.op == "tanh")
    np.testing.assert_allclose(tanh.local_grads[0], 1 - tanh.value**2, rtol=1e-12)
    checked = 0
    for n in tr.nodes:
        assert len(n.local_grads) == (0 if n.op in ("parameter", "input", "target", "constant") else len(n.inputs))
        for local, sent in zip(n.local_grads, n.input_grads):
            if local is not None and n.grad is not None and n.value.size > 1:
                np.testing.assert_allclose(sent, n.grad * local, rtol=1e-12, atol=1e-15)
                checked += 1
        if n.op in ("linear", "mean"):  # full Jacobians for tensors: no elementwise local derivative
            assert n.local_grads == [None] * len(n.inputs)
    assert checked >= 3
    assert "local ∂node/∂input" in tr.to_text() and "local_grads" in tr.to_json()


def test_trace_local_derivatives_of_a_scalar_network() -> None:
    # one neuron per layer: every node is one number, so every op has a local derivative, and the product of the
    # factors along the path equals the gradient of the first weight (checked against torch)
    def num(a: np.ndarray) -> float:
        return np.asarray(a).item()

    cr.manual_seed(3)
    m = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid(), nn.Linear(1, 1, bias=False)).double()
    tr = trace(m, [[2.0]], [[0.5]], nn.MSELoss())
    by_op = {n.op: n for n in tr.nodes}
    lin1, sig = tr.nodes[by_op["sigmoid"].inputs[0]], by_op["sigmoid"]
    lin2 = next(n for n in tr.nodes if n.op == "linear" and n.inputs[0] == sig.id)
    w1, w2 = tr.node("0.weight"), tr.node("2.weight")
    assert num(lin1.local_grads[1]) == pytest.approx(2.0)  # ∂(w1·x + b)/∂w1 = x
    assert num(sig.local_grads[0]) == pytest.approx(num(sig.value * (1 - sig.value)), rel=1e-12)
    assert num(lin2.local_grads[0]) == pytest.approx(num(w2.value), rel=1e-12)
    factors = num(lin2.grad) * num(lin2.local_grads[0]) * num(sig.local_grads[0]) * num(lin1.local_grads[1])
    tm = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Sigmoid(), torch.nn.Linear(1, 1, bias=False)).double()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in tr_state(tr).items()})
    torch.nn.functional.mse_loss(
        tm(torch.tensor([[2.0]], dtype=torch.float64)), torch.tensor([[0.5]]).double()
    ).backward()
    assert factors == pytest.approx(tm[0].weight.grad.item(), rel=1e-12)
    assert num(w1.grad) == pytest.approx(factors, rel=1e-12)


def tr_state(tr: tracing.Trace) -> dict[str, np.ndarray]:
    return {p.name: p.value for p in tr.params}


def test_trace_node_input_grads_sum_to_parent_grads() -> None:
    m, _ = mlp_pair("tanh", (2, 3, 1))
    x, y = _data(4, 2, 1)
    tr = trace(m, x, y, nn.MSELoss())
    sent: dict[int, np.ndarray] = {}
    for n in tr.nodes:
        for i, g in zip(n.inputs, n.input_grads):
            if g is not None:
                sent[i] = sent.get(i, 0) + g
    for n in tr.nodes:
        if n.grad is not None and n.id in sent:
            np.testing.assert_allclose(sent[n.id], n.grad, rtol=1e-12, atol=1e-15)
    assert tr.optimizer is None
    np.testing.assert_array_equal(tr.params[0].update, 0)


def test_trace_unknown_optimizer_is_measured_not_verified() -> None:
    class HalfStep(cr.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": 0.2})

        def step(self):
            for g in self.param_groups:
                for p in g["params"]:
                    p.data -= 0.5 * g["lr"] * p.grad.data

    m, _ = mlp_pair("tanh", (2, 2, 1))
    x, y = _data(3, 2, 1)
    tr = trace(m, x, y, nn.MSELoss(), HalfStep(m.parameters()))
    assert tr.optimizer["verified"] is False and "measured" in tr.optimizer["formula"]
    for p in tr.params:
        np.testing.assert_allclose(p.update, -0.1 * p.grad, rtol=1e-12, atol=1e-16)
    assert "measured step" in tr.to_text()


def test_trace_float32_model_and_wrong_formula_detected(monkeypatch) -> None:
    gen = cr.Generator(3)
    m = nn.Sequential(nn.Linear(2, 3, generator=gen), nn.ReLU(), nn.Linear(3, 1, generator=gen))
    x, y = _data(4, 2, 1)
    tr = trace(m, x.astype(np.float32), y.astype(np.float32), nn.MSELoss(), cr.optim.SGD(m.parameters(), lr=0.1))
    assert tr.dtype == "float32" and tr.gradcheck["passed"], tr.gradcheck

    real = tracing._optimizer_terms

    def wrong(*a, **k):
        terms, f, h = real(*a, **k)
        terms["update"] = terms["update"] * 1.01
        return terms, f, h

    monkeypatch.setattr(tracing, "_optimizer_terms", wrong)
    with pytest.raises(CrossCheckError, match="differs from the actual step"):
        trace(m, x.astype(np.float32), y.astype(np.float32), nn.MSELoss(), cr.optim.SGD(m.parameters(), lr=0.1))


@pytest.mark.parametrize("init", ["zeros", "constant", "broken"])
def test_symmetric_hidden_units_warning(init) -> None:
    m, _ = mlp_pair("tanh", (2, 4, 1))
    with cr.no_grad():
        if init == "zeros":
            for p in m.parameters():
                p.zero_()
        else:
            m[0].weight.fill_(0.3)
            m[0].bias.fill_(-0.1)
            if init == "constant":
                m[2].weight.fill_(0.7)
    x, y = _data(3, 2, 1)
    tr = trace(m, x, y, nn.MSELoss(), cr.optim.SGD(m.parameters(), lr=0.5))
    if init == "broken":  # random outgoing weights break the symmetry: different gradients, no warning
        assert tr.warnings == [] and np.ptp(tr.params[0].grad[:, 0]) > 1e-3
        return
    assert len(tr.warnings) == 1 and "hidden layer '0'" in tr.warnings[0] and "4 units" in tr.warnings[0]
    assert ("all zero" in tr.warnings[0]) == (init == "zeros")
    g = tr.params[0].grad
    np.testing.assert_array_equal(g, np.broadcast_to(g[:1], g.shape))
    # and the units are still identical after the update
    w = tr.params[0].new_value
    np.testing.assert_array_equal(w, np.broadcast_to(w[:1], w.shape))


def test_trace_json_validates_and_renders() -> None:
    m, _ = mlp_pair("sigmoid", (3, 5, 2))
    x, y = _data(20, 3, 2)  # 20×5 hidden activations: summarized
    tr = trace(m, x, y, nn.MSELoss(), cr.optim.Adam(m.parameters(), lr=0.01))
    doc = json.loads(explain.render_trace(tr, "json"))
    jsonschema.validate(doc, SCHEMA)
    big = [n for n in doc["nodes"] if math.prod(n["shape"]) > explain.SMALL]
    assert big and all(n["value"]["summary"] is True for n in big)
    assert doc["nodes"][-1]["grad"] == 1.0 and doc["optimizer"]["name"] == "Adam"
    text = explain.render_trace(tr, "text")
    md = explain.render_trace(tr, "markdown")
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert name in text and f"| {name} |" in md
    assert "Gradient check: passed" in text


def check_dot(dot: str, tr) -> None:
    """Every node of the trace is declared once, labelled with its name and op; every edge joins declared nodes."""
    decl = dict(re.findall(r'^\s*(n\d+) \[label="((?:[^"\\]|\\.)*)"', dot, re.M))
    assert len(decl) == len(tr.nodes)
    for n in tr.nodes:
        assert f"{n.name}: {n.op}" in decl[f"n{n.id}"]
        if n.grad is not None:
            assert "grad" in decl[f"n{n.id}"]
    edges = re.findall(r"^\s*(n\d+) -> (n\d+)(?: \[label=[^]]*\])?;", dot, re.M)
    assert len(edges) == sum(len(n.inputs) for n in tr.nodes)
    assert all(a in decl and b in decl for a, b in edges)
    assert dot.startswith("digraph") and dot.count("{") == dot.count("}")


def test_dot_names_every_node(tmp_path) -> None:
    import shutil

    import graphviz

    m, _ = mlp_pair("relu", (2, 3, 1))
    x, y = _data(2, 2, 1)
    tr = trace(m, x, y, nn.MSELoss(), cr.optim.SGD(m.parameters(), lr=0.1))
    dot = tr.to_dot()
    check_dot(dot, tr)
    explain.write_graph(tr, str(tmp_path / "g.dot"))
    assert (tmp_path / "g.dot").read_text() == dot
    if shutil.which("dot"):
        svg = graphviz.Source(dot).pipe(format="svg").decode()
        for n in tr.nodes:  # the layout engine parsed it and drew every node
            assert f"<title>n{n.id}</title>" in svg
        explain.write_graph(tr, str(tmp_path / "g.png"))
        assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        from chainrule.errors import ConfigError

        with pytest.raises(ConfigError, match="Graphviz 'dot' program"):
            explain.write_graph(tr, str(tmp_path / "g.png"))


# ----------------------------------------------------------------------------- explain CLI and pictures


def explain_cli(argv: list[str], capsys) -> tuple[int, str]:
    return _cli(explain.add_explain_arguments, explain.run_explain_cli, argv, capsys)


def test_explain_cli_formats(tmp_path, capsys) -> None:
    base = ["--model", "mlp:3", "--inputs", "1,2;0.5,-1", "--targets", "0.5;0.2"]
    rc, out = explain_cli(base + ["--init", "zeros", "--optimizer", "momentum"], capsys)
    assert rc == 0 and "WARNING: hidden layer '0'" in out and "momentum_buffer" in out
    rc, out = explain_cli(
        base + ["--format", "json", "--optimizer", "adam", "--graph", str(tmp_path / "g.dot")], capsys
    )
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "chainrule.trace/1" and doc["gradcheck"]["passed"] and doc["warnings"] == []
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    rc, out = explain_cli(base + ["--format", "dot"], capsys)
    assert out.startswith("digraph")
    csv_in = tmp_path / "x.csv"
    csv_in.write_text("a,b\n1,2\n0.5,-1\n0,1\n")
    rc, out = explain_cli(
        [
            "--model",
            "mlp:4,3",
            "--inputs",
            str(csv_in),
            "--targets",
            "0;2;1",
            "--loss",
            "cross_entropy",
            "--format",
            "markdown",
        ],
        capsys,
    )
    assert "cross_entropy" in out and "| 4.bias |" in out


class ReferenceNet(nn.Module):
    """The reference example as a Module: ŷ = w2·sigmoid(w1·x)."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(np.array(0.5))
        self.w2 = nn.Parameter(np.array(0.3))

    def forward(self, x):
        return self.w2 * (self.w1 * x).sigmoid()


def test_trace_of_the_reference_network_equals_the_example(capsys) -> None:
    net = ReferenceNet()
    tr = trace(net, np.array(2.0), np.array(0.5), explain.make_loss("sse"), cr.optim.SGD(net.parameters(), lr=0.01))
    ex = run_example(ExampleConfig(epochs=1)).step
    (h,) = [n for n in tr.nodes if n.op == "sigmoid"]
    z, yp = tr.nodes[h.inputs[0]], next(n for n in tr.nodes if h.id in n.inputs)
    assert z.op == yp.op == "mul" and {tr.nodes[i].name for i in z.inputs} == {"w1", "input"}
    assert (float(z.value), float(h.value), float(yp.value)) == pytest.approx((ex.z, ex.h, ex.y_pred), rel=1e-15)
    assert tr.loss == pytest.approx(ex.loss, rel=1e-15)
    # upstream gradients at the nodes are the chain rule's partial products
    assert float(yp.grad) == pytest.approx(ex.dL_dy_pred, rel=1e-14)
    assert float(h.grad) == pytest.approx(ex.dL_dy_pred * ex.dy_pred_dh, rel=1e-14)
    assert float(z.grad) == pytest.approx(ex.dL_dy_pred * ex.dy_pred_dh * ex.dh_dz, rel=1e-14)
    p = {q.name: q for q in tr.params}
    assert float(p["w1"].grad) == pytest.approx(ex.dL_dw1, rel=1e-14)
    assert float(p["w2"].grad) == pytest.approx(ex.dL_dw2, rel=1e-14)
    assert float(p["w1"].new_value) == pytest.approx(ex.w1_new, rel=1e-15)
    assert float(p["w2"].new_value) == pytest.approx(ex.w2_new, rel=1e-15)
    assert tr.gradcheck["passed"] and tr.optimizer["formula"] == "update = −lr·grad"


def test_explain_cli_reference_loss(capsys) -> None:
    rc, out = explain_cli(["--model", "linear", "--inputs", "2", "--targets", "0.5", "--loss", "sse"], capsys)
    assert rc == 0 and "Gradient check: passed" in out and "0.weight" in out


def test_graph_drawing_needs_graphviz(tmp_path, monkeypatch) -> None:
    import sys

    import graphviz

    from chainrule.errors import ConfigError

    m, _ = mlp_pair("tanh", (1, 2, 1))
    tr = trace(m, np.ones((1, 1)), np.ones((1, 1)), nn.MSELoss())

    def missing(*a, **k):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Source, "pipe", missing)
    with pytest.raises(ConfigError, match="'dot' program is not installed"):
        explain.write_graph(tr, str(tmp_path / "g.svg"))
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ConfigError, match="pip install graphviz"):
        explain.write_graph(tr, str(tmp_path / "g.png"))
    with pytest.raises(ConfigError, match=".dot, .svg or .png"):
        explain.write_graph(tr, str(tmp_path / "g.pdf"))
    explain.write_graph(tr, str(tmp_path / "g.dot"))  # DOT text needs nothing
    check_dot((tmp_path / "g.dot").read_text(), tr)


def test_explain_cli_errors() -> None:
    from chainrule.errors import ConfigError, DataError

    with pytest.raises(DataError, match="row 2"):
        explain.parse_matrix("1,2;x,3", "inputs")
    with pytest.raises(DataError, match="different numbers of columns"):
        explain.parse_matrix("1,2;3", "inputs")
    with pytest.raises(ConfigError, match="--model"):
        explain.build_mlp("cnn:3", 2, 1)
    with pytest.raises(DataError, match="class indices"):
        explain.parse_matrix("0.5;1", "targets", integer=True)


def _png_ok(path: Path, size: tuple[int, int]) -> None:
    from PIL import Image

    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.size == size
        a = np.asarray(im.convert("RGB")).astype(float)
    assert a.std() > 5 and len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # not blank


def test_example_pictures(tmp_path, capsys) -> None:
    s, c = tmp_path / "surface.png", tmp_path / "curve.png"
    rc, _ = example_cli(["--surface", str(s), "--curve", str(c), "--plot-size", "640x480", "--epochs", "300"], capsys)
    assert rc == 0
    _png_ok(s, (640, 480))
    _png_ok(c, (640, 480))


def test_explain_surface_picture(tmp_path, capsys) -> None:
    s = tmp_path / "s.png"
    argv = [
        "--model",
        "mlp:2",
        "--inputs",
        "1;-1",
        "--targets",
        "0.5;0.1",
        "--surface",
        str(s),
        "--plot-size",
        "500x400",
        "--surface-params",
        "2.weight[0,0],2.bias[0]",
        "--epochs",
        "20",
        "--lr",
        "0.5",
    ]
    rc, _ = explain_cli(argv, capsys)
    assert rc == 0
    _png_ok(s, (500, 400))


class ElmanRNN(nn.Module):
    """A recurrent net from Linear layers: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), output Linear(h_T)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, gen) -> None:
        super().__init__()
        self.ih = nn.Linear(n_in, n_hidden, dtype=cr.float64, generator=gen)
        self.hh = nn.Linear(n_hidden, n_hidden, dtype=cr.float64, generator=gen)
        self.out = nn.Linear(n_hidden, n_out, dtype=cr.float64, generator=gen)
        self.n_hidden = n_hidden

    def forward(self, x):  # x: (batch, time, n_in)
        h = cr.zeros(x.shape[0], self.n_hidden, dtype=cr.float64)
        for t in range(x.shape[1]):
            h = (self.ih(x[:, t]) + self.hh(h)).tanh()
        return self.out(h)


def test_trace_recurrent_net_matches_torch_rnn() -> None:
    m = ElmanRNN(2, 3, 1, cr.Generator(5))
    rnn = torch.nn.RNN(2, 3, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(3, 1, dtype=torch.float64)
    with torch.no_grad():
        for tname, cname in [("weight_ih_l0", "ih.weight"), ("bias_ih_l0", "ih.bias"), ("weight_hh_l0", "hh.weight")]:
            getattr(rnn, tname).copy_(torch.from_numpy(m.state_dict()[cname]))
        rnn.bias_hh_l0.copy_(torch.from_numpy(m.state_dict()["hh.bias"]))
        head.weight.copy_(torch.from_numpy(m.state_dict()["out.weight"]))
        head.bias.copy_(torch.from_numpy(m.state_dict()["out.bias"]))
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 1))
    tr = trace(m, x, y, nn.MSELoss(), cr.optim.SGD(m.parameters(), lr=0.1))
    out, _ = rnn(torch.from_numpy(x))
    loss = torch.nn.functional.mse_loss(head(out[:, -1]), torch.from_numpy(y))
    loss.backward()
    tg = {
        "ih.weight": rnn.weight_ih_l0.grad,
        "ih.bias": rnn.bias_ih_l0.grad,
        "hh.weight": rnn.weight_hh_l0.grad,
        "hh.bias": rnn.bias_hh_l0.grad,
        "out.weight": head.weight.grad,
        "out.bias": head.bias.grad,
    }
    assert tr.loss == pytest.approx(loss.item(), rel=1e-12)
    for p in tr.params:
        np.testing.assert_allclose(p.grad, tg[p.name].numpy(), rtol=1e-10, atol=1e-14)
    # the shared recurrent weight feeds one linear node per time step; its gradient is the sum over them
    hh = next(n for n in tr.nodes if n.name == "hh.weight")
    users = [n for n in tr.nodes if hh.id in n.inputs]
    assert len(users) == 4
    total = sum(u.input_grads[u.inputs.index(hh.id)] for u in users)
    np.testing.assert_allclose(total, hh.grad, rtol=1e-12, atol=1e-15)
    assert tr.gradcheck["passed"] and tr.optimizer["verified"]


def test_dot_edges_carry_scalar_local_derivatives() -> None:
    cr.manual_seed(3)
    m = nn.Sequential(nn.Linear(1, 1), nn.Sigmoid(), nn.Linear(1, 1)).double()
    tr = trace(m, [[2.0]], [[0.5]], nn.MSELoss())
    dot = tr.to_dot()
    sig = next(n for n in tr.nodes if n.op == "sigmoid")
    label = tracing._tv_str(sig.local_grads[0].reshape(()), 4)
    assert f'n{sig.inputs[0]} -> n{sig.id} [label="∂ {label}"' in dot
    assert f"n{tr.node('input').id} -> " in dot  # the input needs no gradient: a plain edge


def test_trace_refuses_a_graph_too_large_to_show_and_changes_nothing(capsys) -> None:
    m, _ = mlp_pair("tanh", (2, 3, 3, 1))
    x, y = _data(4, 2, 1)
    opt = cr.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    trace(m, x, y, nn.MSELoss(), opt, gradcheck=False)  # grads and a momentum buffer to keep
    state = {n: (p.data.copy(), p.grad.data.copy()) for n, p in m.named_parameters()}
    buffers = [np.array(opt.state[p]["momentum_buffer"]) for p in m.parameters()]
    n_nodes = len(trace(m, x, y, nn.MSELoss(), gradcheck=False).nodes)
    for n, p in m.named_parameters():  # that trace, without optimizer, changed only the grads: reset them
        p.grad = cr.tensor(state[n][1])
    from chainrule.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"has {n_nodes} nodes, more than the {n_nodes - 1} .*--max-nodes"):
        trace(m, x, y, nn.MSELoss(), opt, max_nodes=n_nodes - 1)
    for n, p in m.named_parameters():
        np.testing.assert_array_equal(p.data, state[n][0])
        np.testing.assert_array_equal(p.grad.data, state[n][1])
    for p, b in zip(m.parameters(), buffers):
        np.testing.assert_array_equal(np.asarray(opt.state[p]["momentum_buffer"]), b)
    assert len(trace(m, x, y, nn.MSELoss(), max_nodes=n_nodes).nodes) == n_nodes
    # the CLI: the default limit takes a small net, --max-nodes lowers it, 0 lifts it
    rc, out = explain_cli(["--model", "mlp:3,3"], capsys)
    assert rc == 0 and "Gradient check: passed" in out
    with pytest.raises(ConfigError, match=r"has \d+ nodes, more than the 10 "):
        explain_cli(["--model", "mlp:3,3", "--max-nodes", "10"], capsys)
    assert explain_cli(["--model", "mlp:3,3", "--max-nodes", "0"], capsys)[0] == 0


def _kinked_net():
    """relu at exactly 0 for the first sample's first hidden unit (input 0, bias 0), with a live path to the loss."""
    m = nn.Sequential(nn.Linear(1, 2, dtype=cr.float64), nn.ReLU(), nn.Linear(2, 1, dtype=cr.float64))
    with cr.no_grad():
        m[0].weight.data[...] = [[1.0], [0.5]]
        m[0].bias.data[...] = [0.0, 0.3]
        m[2].weight.data[...] = [[1.0, -2.0]]
        m[2].bias.data[...] = [0.1]
    return m, np.array([[0.0], [1.0]]), np.array([[1.0], [0.0]])


def test_gradcheck_counts_a_relu_kink_apart_and_fails_a_wrong_derivative(monkeypatch) -> None:
    m, x, y = _kinked_net()
    tr = trace(m, x, y, nn.MSELoss())
    g = tr.gradcheck
    assert g["passed"] and g["kinks"] == 1 and g["max_abs_error"] < 1e-8 and tr.warnings == [], g
    assert "1 entry lies at a kink" in tr.to_text() and "1 entry lies at a kink" in tr.to_markdown()
    jsonschema.validate(json.loads(tr.to_json()), SCHEMA)
    # a wrong derivative rule (tanh's, scaled by 1.1) is a failure, not a kink
    from chainrule.ops import math as M

    real = M._tanh_bwd
    monkeypatch.setattr(M, "_tanh_bwd", lambda y, g, needs=(True,): tuple(1.1 * v for v in real(y, g, needs)))
    m, _ = mlp_pair("tanh", (3, 4, 1))
    x, y = _data(5, 3, 1)
    tr = trace(m, x, y, nn.MSELoss())
    assert not tr.gradcheck["passed"] and tr.gradcheck["kinks"] == 0 and tr.gradcheck["max_abs_error"] > 1e-3
    assert "Gradient check: FAILED" in tr.to_text() and "gradient check failed" in tr.warnings[-1]


def test_explain_cli_exits_1_when_the_gradient_check_fails(monkeypatch, capsys) -> None:
    """The report is printed either way; a failed check also gives exit status 1 (it gave 0), so scripts see it."""
    assert explain_cli(["--model", "mlp:4", "--activation", "tanh"], capsys)[0] == 0
    from chainrule.ops import math as M

    real = M._tanh_bwd
    monkeypatch.setattr(M, "_tanh_bwd", lambda y, g, needs=(True,): tuple(1.1 * v for v in real(y, g, needs)))
    rc, out = explain_cli(["--model", "mlp:4", "--activation", "tanh"], capsys)
    assert rc == 1 and "Gradient check: FAILED" in out
