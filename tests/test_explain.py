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

from chainrule import explain
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
        ("w1 = ", "w1_new"),
        ("w2 = ", "w2_new"),
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
        (line,) = [ln for ln in out.splitlines() if ln.strip().startswith(f"w{w} = ")]
        o, lr, g, new = re.findall(NUM, line.split("=", 1)[1])
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
