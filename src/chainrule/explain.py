"""Explain mode: every number of a learning step laid open and checked.

Two parts:

* `run_example` – the reference network x → z = w1·x → h = act(z) → ŷ = w2·h → L = ½(y − ŷ)², one step of
  gradient descent shown as forward pass, loss, backward pass (local derivatives and their products) and
  update, then iterated. Every figure comes from chainrule's autograd in float64 and is cross-checked in the
  same run against the hand-derived chain rule; a disagreement raises `CrossCheckError` instead of printing.
* `trace` (in `chainrule.tracing`, re-exported here) – records the graph of one training step of any small
  model: the node table in forward order, the gradient arriving at every node, each parameter's gradient and the
  optimizer's update (with its state terms), a finite-difference check, and a warning about identically
  initialized hidden units. `add_explain_arguments`/`run_explain_cli` are the `chainrule explain` command.

The example prints `PRECISION` (10) significant digits, the trace 6; JSON carries full float64 values.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .tensor import Tensor, float64, no_grad
from .tracing import (  # noqa: F401  (re-exported: chainrule.explain.trace and friends)
    MAX_NODES,
    SMALL,
    TRACE_DIGITS,
    CrossCheckError,
    Trace,
    TraceNode,
    TraceParam,
    fmt,
    render_trace,
    trace,
    trace_dot,
    trace_markdown,
    trace_text,
    write_graph,
)

PRECISION = 10  # significant digits of every printed figure
EXAMPLE_SCHEMA_VERSION = "chainrule.example/1"


def _paren(v: float) -> str:
    s = fmt(v)
    return f"({s})" if v < 0 else s


def _check(name: str, autograd: float, hand: float, rel: float = 1e-12, abs_: float = 1e-15) -> float:
    """autograd's figure when the hand-derived one agrees (within rel/abs_, or the same inf, or both NaN)."""
    if math.isfinite(autograd) and math.isfinite(hand):
        agree = math.isclose(autograd, hand, rel_tol=rel, abs_tol=abs_)
    else:
        agree = autograd == hand or (math.isnan(autograd) and math.isnan(hand))
    if not agree:
        raise CrossCheckError(
            f"cross-check failed for {name}: autograd gives {autograd!r}, the hand-derived chain rule {hand!r}"
        )
    return autograd


# ============================================================================= the reference example

ACTIVATIONS = ("sigmoid", "tanh", "relu")


def _act_hand(name: str, z: float) -> tuple[float, float, str]:
    """(h, dh/dz, formula of dh/dz) in closed form, plain Python floats."""
    if name == "sigmoid":
        h = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        return h, h * (1.0 - h), "h(1 − h)"
    if name == "tanh":
        h = math.tanh(z)
        return h, 1.0 - h * h, "1 − h²"
    if name == "relu":  # autograd's rule (PyTorch's threshold_backward): 0 where z <= 0, else 1, NaN included
        off = z <= 0
        return (0.0 if off else z), (0.0 if off else 1.0), "[z > 0]"
    raise ConfigError(f"--activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")


@dataclass
class ExampleConfig:
    """The numbers of the reference example (defaults: the article's network)."""

    x: float = 2.0
    y: float = 0.5
    w1: float = 0.5
    w2: float = 0.3
    lr: float = 0.01
    epochs: int = 5000
    tol: float = 1e-9
    activation: str = "sigmoid"

    def validate(self) -> None:
        _act_hand(self.activation, 0.0)
        for k in ("x", "y", "w1", "w2", "lr", "tol"):
            if not math.isfinite(getattr(self, k)):
                raise ConfigError(f"--{k} must be a finite number, got {getattr(self, k)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.tol < 0:
            raise ConfigError(f"--tol must be >= 0, got {self.tol}")


@dataclass
class StepFigures:
    """One learning step of the reference network: every figure, autograd-computed and cross-checked."""

    w1: float
    w2: float
    z: float
    h: float
    y_pred: float
    loss: float
    dL_dy_pred: float
    dy_pred_dw2: float
    dy_pred_dh: float
    dh_dz: float
    dz_dw1: float
    dL_dw1: float
    dL_dw2: float
    w1_new: float
    w2_new: float


def _activation_op(name: str) -> Any:
    from . import ops

    return {"sigmoid": ops.sigmoid, "tanh": ops.tanh, "relu": ops.relu}[name]


def example_step(cfg: ExampleConfig, w1: float, w2: float) -> StepFigures:
    """Forward, loss, backward and one SGD update at (w1, w2), with chainrule autograd in float64.

    Each value is checked against its closed form; raises `CrossCheckError` on any disagreement.
    """
    from . import grad as autograd
    from .optim import SGD

    act = _activation_op(cfg.activation)
    x = Tensor(np.asarray(cfg.x, dtype=float64))
    y = Tensor(np.asarray(cfg.y, dtype=float64))
    tw1 = Tensor(np.asarray(w1, dtype=float64), requires_grad=True)
    tw2 = Tensor(np.asarray(w2, dtype=float64), requires_grad=True)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported by run_example
        z = tw1 * x
        h = act(z)
        y_pred = tw2 * h
        loss = 0.5 * (y - y_pred) ** 2
        # local derivatives, each by autograd on its own edge of the graph
        (d_l_yp,) = autograd(loss, y_pred, retain_graph=True)
        d_yp_w2, d_yp_h = autograd(y_pred, (tw2, h), retain_graph=True)
        (d_h_z,) = autograd(h, z, retain_graph=True)
        (d_z_w1,) = autograd(z, tw1, retain_graph=True)
        loss.backward()
        g1, g2 = tw1.grad.item(), tw2.grad.item()
        SGD([tw1, tw2], lr=cfg.lr).step()

    # the same figures by hand
    hz = w1 * cfg.x
    hh, hdh, _ = _act_hand(cfg.activation, hz)
    hyp = w2 * hh
    hl = 0.5 * (cfg.y - hyp) * (cfg.y - hyp)  # not ** 2: Python's pow raises on overflow
    f = StepFigures(
        w1=w1,
        w2=w2,
        z=_check("z = w1·x", z.item(), hz),
        h=_check("h", h.item(), hh),
        y_pred=_check("ŷ = w2·h", y_pred.item(), hyp),
        loss=_check("L", loss.item(), hl),
        dL_dy_pred=_check("∂L/∂ŷ", d_l_yp.item(), hyp - cfg.y),
        dy_pred_dw2=_check("∂ŷ/∂w2", d_yp_w2.item(), hh),
        dy_pred_dh=_check("∂ŷ/∂h", d_yp_h.item(), w2),
        dh_dz=_check("∂h/∂z", d_h_z.item(), hdh),
        dz_dw1=_check("∂z/∂w1", d_z_w1.item(), cfg.x),
        dL_dw1=g1,
        dL_dw2=g2,
        w1_new=tw1.item(),
        w2_new=tw2.item(),
    )
    # the chain rule: products of the local derivatives (hand) must equal backward()'s gradients
    _check("∂L/∂w2 = ∂L/∂ŷ·∂ŷ/∂w2", g2, (hyp - cfg.y) * hh)
    _check("∂L/∂w1 = ∂L/∂ŷ·∂ŷ/∂h·∂h/∂z·∂z/∂w1", g1, (hyp - cfg.y) * w2 * hdh * cfg.x)
    _check("∂L/∂w2 (product of autograd local derivatives)", g2, f.dL_dy_pred * f.dy_pred_dw2)
    _check("∂L/∂w1 (product of autograd local derivatives)", g1, f.dL_dy_pred * f.dy_pred_dh * f.dh_dz * f.dz_dw1)
    _check("w1 − η·∂L/∂w1", f.w1_new, w1 - cfg.lr * g1)
    _check("w2 − η·∂L/∂w2", f.w2_new, w2 - cfg.lr * g2)
    return f


@dataclass
class ExampleResult:
    config: ExampleConfig
    step: StepFigures
    trajectory: list[tuple[int, float, float, float]]  # (epoch, w1, w2, loss at those weights), every epoch
    stop_reason: str  # "converged", "epoch_budget", "loss_increased" or "diverged"
    stop_message: str

    def shown_rows(self, head: int = 5, tail: int = 3, between: int = 4) -> list[tuple[int, float, float, float]]:
        """The trajectory rows printed: the first `head`, `between` evenly spaced, the last `tail`."""
        n = len(self.trajectory)
        idx = set(range(min(head, n))) | set(range(max(0, n - tail), n))
        if n > head + tail:
            idx |= {int(round(v)) for v in np.linspace(head, n - tail - 1, between + 2)[1:-1]}
        return [self.trajectory[i] for i in sorted(idx)]


def run_example(cfg: ExampleConfig | None = None) -> ExampleResult:
    """The reference example: one explained step, then gradient descent until `tol` or `epochs`.

    Trajectory row k holds the weights after k updates and the loss at those weights (row 0: the start).
    Stops when the loss improves by less than `tol` from one epoch to the next ("converged"), when it rises
    ("loss_increased") or becomes non-finite ("diverged"), or after `epochs` updates ("epoch_budget").
    """
    cfg = cfg or ExampleConfig()
    cfg.validate()
    first = example_step(cfg, cfg.w1, cfg.w2)
    for name, value in vars(first).items():
        if not math.isfinite(value):  # float64 overflow: there is nothing to explain
            raise ConfigError(
                f"the first step's {name} is {value} in float64 (x = {cfg.x}, y = {cfg.y}, w1 = {cfg.w1}, "
                f"w2 = {cfg.w2}, lr = {cfg.lr}): give smaller numbers"
            )
    traj = [(0, cfg.w1, cfg.w2, first.loss)]
    w1, w2 = first.w1_new, first.w2_new
    reason, message = "epoch_budget", f"epoch budget reached ({cfg.epochs} epochs)"
    for epoch in range(1, cfg.epochs + 1):
        s = example_step(cfg, w1, w2)
        if not math.isfinite(s.loss):  # the row is not kept: the trajectory holds numbers only
            reason = "diverged"
            message = (
                f"the loss became {s.loss} at epoch {epoch} (w1 = {fmt(w1)}, w2 = {fmt(w2)}; "
                f"the learning rate η = {fmt(cfg.lr)} may be too large)"
            )
            break
        traj.append((epoch, w1, w2, s.loss))
        improvement = traj[-2][3] - s.loss
        if improvement < 0:
            reason = "loss_increased"
            message = (
                f"the loss rose by {fmt(-improvement)} from epoch {epoch - 1} to epoch {epoch} "
                f"(the learning rate η = {fmt(cfg.lr)} may be too large)"
            )
            break
        if improvement < cfg.tol:
            reason = "converged"
            message = (
                f"converged at epoch {epoch}: the loss improved by {fmt(improvement)} "
                f"(< tol = {fmt(cfg.tol)}) from epoch {epoch - 1}"
            )
            if s.dL_dw1 == 0 and s.dL_dw2 == 0:
                message += " (both gradients are exactly 0" + (
                    ": the relu unit is inactive, z ≤ 0)" if cfg.activation == "relu" and s.z <= 0 else ")"
                )
            break
        w1, w2 = s.w1_new, s.w2_new
    return ExampleResult(cfg, first, traj, reason, message)


# ----------------------------------------------------------------------------- example renderers


def _example_dict(r: ExampleResult) -> dict[str, Any]:
    c, s = r.config, r.step
    last = r.trajectory[-1]
    return {
        "schema": EXAMPLE_SCHEMA_VERSION,
        "precision": {"significant_digits": PRECISION, "dtype": "float64"},
        "config": {
            "x": c.x,
            "y": c.y,
            "w1": c.w1,
            "w2": c.w2,
            "lr": c.lr,
            "epochs": c.epochs,
            "tol": c.tol,
            "activation": c.activation,
            "loss": "0.5*(y - y_pred)**2",
            "optimizer": "sgd",
        },
        "forward": {"z": s.z, "h": s.h, "y_pred": s.y_pred},
        "loss": s.loss,
        "local_derivatives": {
            "dL_dy_pred": s.dL_dy_pred,
            "dy_pred_dw2": s.dy_pred_dw2,
            "dy_pred_dh": s.dy_pred_dh,
            "dh_dz": s.dh_dz,
            "dz_dw1": s.dz_dw1,
        },
        "gradients": {
            "w1": {
                "factors": ["dL_dy_pred", "dy_pred_dh", "dh_dz", "dz_dw1"],
                "factor_values": [s.dL_dy_pred, s.dy_pred_dh, s.dh_dz, s.dz_dw1],
                "value": s.dL_dw1,
            },
            "w2": {
                "factors": ["dL_dy_pred", "dy_pred_dw2"],
                "factor_values": [s.dL_dy_pred, s.dy_pred_dw2],
                "value": s.dL_dw2,
            },
        },
        "update": {
            "w1": {"old": s.w1, "grad": s.dL_dw1, "lr": c.lr, "new": s.w1_new},
            "w2": {"old": s.w2, "grad": s.dL_dw2, "lr": c.lr, "new": s.w2_new},
        },
        "trajectory": [{"epoch": e, "w1": a, "w2": b, "loss": lo} for e, a, b, lo in r.shown_rows()],
        "final": {"epoch": last[0], "w1": last[1], "w2": last[2], "loss": last[3]},
        "stop": {"reason": r.stop_reason, "message": r.stop_message, "epochs_run": last[0]},
        "cross_check": "passed",
    }


def example_json(r: ExampleResult) -> str:
    """The example as JSON following docs/explain-schema.json (full float64 values)."""
    return json.dumps(_example_dict(r), indent=2, ensure_ascii=False)


_HDZ = {"sigmoid": "h(1 − h)", "tanh": "1 − h²", "relu": "[z > 0]"}
_HDZ_TEX = {"sigmoid": r"h\,(1 - h)", "tanh": r"1 - h^2", "relu": r"[z > 0]"}


def example_text(r: ExampleResult) -> str:
    c, s = r.config, r.step
    a = c.activation
    L = [
        "chainrule example: one learning step of the reference network, every number laid open",
        f"  network: z = w1·x, h = {a}(z), ŷ = w2·h, loss L = ½(y − ŷ)², plain gradient descent",
        f"  x = {fmt(c.x)}, y = {fmt(c.y)}, w1 = {fmt(c.w1)}, w2 = {fmt(c.w2)}, η = {fmt(c.lr)}",
        f"  figures: chainrule autograd in float64, printed to {PRECISION} significant digits,",
        "  each cross-checked against the hand-derived chain rule (closed-form local derivatives)",
        "",
        "Step 1 · forward pass",
        f"  z = w1·x = {fmt(s.w1)} · {_paren(c.x)} = {fmt(s.z)}",
        f"  h = {a}(z) = {a}({fmt(s.z)}) = {fmt(s.h)}",
        f"  ŷ = w2·h = {fmt(s.w2)} · {_paren(s.h)} = {fmt(s.y_pred)}",
        "",
        "Step 2 · loss",
        f"  L = ½(y − ŷ)² = ½({fmt(c.y)} − {_paren(s.y_pred)})² = {fmt(s.loss)}",
        "",
        "Step 3 · backward pass",
        "  local derivatives:",
        f"    ∂L/∂ŷ  = ŷ − y = {fmt(s.dL_dy_pred)}",
        f"    ∂ŷ/∂w2 = h = {fmt(s.dy_pred_dw2)}",
        f"    ∂ŷ/∂h  = w2 = {fmt(s.dy_pred_dh)}",
        f"    ∂h/∂z  = {_HDZ[a]} = {fmt(s.dh_dz)}",
        f"    ∂z/∂w1 = x = {fmt(s.dz_dw1)}",
        "  gradients (chain rule):",
        f"    ∂L/∂w2 = ∂L/∂ŷ · ∂ŷ/∂w2 = {_paren(s.dL_dy_pred)} · {_paren(s.dy_pred_dw2)} = {fmt(s.dL_dw2)}",
        f"    ∂L/∂w1 = ∂L/∂ŷ · ∂ŷ/∂h · ∂h/∂z · ∂z/∂w1"
        f" = {_paren(s.dL_dy_pred)} · {_paren(s.dy_pred_dh)} · {_paren(s.dh_dz)} · {_paren(s.dz_dw1)}"
        f" = {fmt(s.dL_dw1)}",
        "",
        f"Step 4 · update (w_new = w_old − η·∂L/∂w, η = {fmt(c.lr)})",
        f"  w1_new = w1 − η·∂L/∂w1 = {fmt(s.w1)} − {fmt(c.lr)} · {_paren(s.dL_dw1)} = {fmt(s.w1_new)}",
        f"  w2_new = w2 − η·∂L/∂w2 = {fmt(s.w2)} − {fmt(c.lr)} · {_paren(s.dL_dw2)} = {fmt(s.w2_new)}",
        "",
        f"Gradient descent (at most {c.epochs} epochs; stop when the loss improves by less than tol = {fmt(c.tol)})",
    ]
    rows = [("epoch", "w1", "w2", "loss")] + [(str(e), fmt(w1), fmt(w2), fmt(lo)) for e, w1, w2, lo in r.shown_rows()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    prev = None
    for row in rows:
        if prev is not None and row[0].isdigit() and prev.isdigit() and int(row[0]) > int(prev) + 1:
            L.append("  " + "  ".join("⋮".rjust(w) for w in widths))
        L.append("  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)))
        prev = row[0]
    L.append(f"stopped: {r.stop_message}")
    return "\n".join(L) + "\n"


def _tex(v: float) -> str:
    s = fmt(v)
    if "e" in s:
        m, e = s.split("e")
        s = rf"{m} \times 10^{{{int(e)}}}"
    return f"({s})" if v < 0 else s


def _bare_results(text: str) -> str:
    """Drop the parentheses of negative numbers that end an equation (`= (-0.2)` → `= -0.2`); factors keep them."""
    return re.sub(r"= \((-[^()]*)\)(?! \\cdot)", r"= \1", text)


def _trajectory_rows(r: ExampleResult) -> list[tuple[str, str, str, str]]:
    return [(str(e), fmt(w1), fmt(w2), fmt(lo)) for e, w1, w2, lo in r.shown_rows()]


def example_markdown(r: ExampleResult) -> str:
    c, s = r.config, r.step
    a = c.activation
    t = _tex
    L = [
        "# The reference example, one learning step",
        "",
        f"Network: $z = w_1 x$, $h = \\operatorname{{{a}}}(z)$, $\\hat y = w_2 h$, "
        r"loss $L = \tfrac12 (y - \hat y)^2$, plain gradient descent.",
        f"Inputs: $x = {t(c.x)}$, $y = {t(c.y)}$, $w_1 = {t(c.w1)}$, $w_2 = {t(c.w2)}$, $\\eta = {t(c.lr)}$.",
        "",
        f"Every figure is computed by chainrule's autograd in float64, printed to {PRECISION} significant digits "
        "and cross-checked against the hand-derived chain rule.",
        "",
        "## Step 1: forward pass",
        "",
        "$$",
        rf"\begin{{aligned}} z &= w_1 x = {t(s.w1)} \cdot {t(c.x)} = {t(s.z)} \\"
        rf" h &= \operatorname{{{a}}}(z) = {t(s.h)} \\ \hat y &= w_2 h = {t(s.w2)} \cdot {t(s.h)} = {t(s.y_pred)}"
        r" \end{aligned}",
        "$$",
        "",
        "## Step 2: loss",
        "",
        "$$",
        rf"L = \tfrac12 (y - \hat y)^2 = \tfrac12 ({t(c.y)} - {t(s.y_pred)})^2 = {t(s.loss)}",
        "$$",
        "",
        "## Step 3: backward pass",
        "",
        "| local derivative | formula | value |",
        "|---|---|---|",
        rf"| $\partial L/\partial \hat y$ | $\hat y - y$ | {fmt(s.dL_dy_pred)} |",
        rf"| $\partial \hat y/\partial w_2$ | $h$ | {fmt(s.dy_pred_dw2)} |",
        rf"| $\partial \hat y/\partial h$ | $w_2$ | {fmt(s.dy_pred_dh)} |",
        rf"| $\partial h/\partial z$ | ${_HDZ_TEX[a]}$ | {fmt(s.dh_dz)} |",
        rf"| $\partial z/\partial w_1$ | $x$ | {fmt(s.dz_dw1)} |",
        "",
        "$$",
        rf"\frac{{\partial L}}{{\partial w_2}} = \frac{{\partial L}}{{\partial \hat y}} \cdot "
        rf"\frac{{\partial \hat y}}{{\partial w_2}} = {t(s.dL_dy_pred)} \cdot {t(s.dy_pred_dw2)} = {t(s.dL_dw2)}",
        "$$",
        "",
        "$$",
        rf"\frac{{\partial L}}{{\partial w_1}} = \frac{{\partial L}}{{\partial \hat y}} \cdot "
        rf"\frac{{\partial \hat y}}{{\partial h}} \cdot \frac{{\partial h}}{{\partial z}} \cdot "
        rf"\frac{{\partial z}}{{\partial w_1}} = {t(s.dL_dy_pred)} \cdot {t(s.dy_pred_dh)} \cdot {t(s.dh_dz)}"
        rf" \cdot {t(s.dz_dw1)} = {t(s.dL_dw1)}",
        "$$",
        "",
        "## Step 4: update",
        "",
        "$$",
        rf"\begin{{aligned}} w_1 &\leftarrow w_1 - \eta \frac{{\partial L}}{{\partial w_1}} = {t(s.w1)} - "
        rf"{t(c.lr)} \cdot {t(s.dL_dw1)} = {t(s.w1_new)} \\ w_2 &\leftarrow w_2 - \eta "
        rf"\frac{{\partial L}}{{\partial w_2}} = {t(s.w2)} - {t(c.lr)} \cdot {t(s.dL_dw2)} = {t(s.w2_new)}"
        r" \end{aligned}",
        "$$",
        "",
        "## Gradient descent",
        "",
        f"At most {c.epochs} epochs; stop when the loss improves by less than tol = {fmt(c.tol)}.",
        "",
        "| epoch | w1 | w2 | loss |",
        "|---:|---:|---:|---:|",
    ]
    L += [f"| {e} | {w1} | {w2} | {lo} |" for e, w1, w2, lo in _trajectory_rows(r)]
    L += ["", f"Stopped: {r.stop_message}.", ""]
    return _bare_results("\n".join(L))


def example_latex(r: ExampleResult) -> str:
    """A LaTeX fragment (needs amsmath) to \\input into a document."""
    c, s = r.config, r.step
    a = c.activation
    t = _tex
    L = [
        "% chainrule example: the reference network, one learning step (needs amsmath)",
        r"\section*{The reference example, one learning step}",
        rf"Network: $z = w_1 x$, $h = \operatorname{{{a}}}(z)$, $\hat y = w_2 h$, "
        r"$L = \tfrac12 (y - \hat y)^2$, plain gradient descent with "
        rf"$x = {t(c.x)}$, $y = {t(c.y)}$, $w_1 = {t(c.w1)}$, $w_2 = {t(c.w2)}$, $\eta = {t(c.lr)}$.",
        f"Figures: chainrule autograd in float64, {PRECISION} significant digits, "
        "cross-checked against the hand-derived chain rule.",
        "",
        r"\subsection*{Step 1: forward pass}",
        r"\begin{align*}",
        rf"z &= w_1 x = {t(s.w1)} \cdot {t(c.x)} = {t(s.z)} \\",
        rf"h &= \operatorname{{{a}}}(z) = {t(s.h)} \\",
        rf"\hat y &= w_2 h = {t(s.w2)} \cdot {t(s.h)} = {t(s.y_pred)}",
        r"\end{align*}",
        r"\subsection*{Step 2: loss}",
        r"\begin{equation*}",
        rf"L = \tfrac12 (y - \hat y)^2 = \tfrac12 ({t(c.y)} - {t(s.y_pred)})^2 = {t(s.loss)}",
        r"\end{equation*}",
        r"\subsection*{Step 3: backward pass}",
        r"\begin{align*}",
        rf"\frac{{\partial L}}{{\partial \hat y}} &= \hat y - y = {t(s.dL_dy_pred)} &"
        rf"\frac{{\partial \hat y}}{{\partial w_2}} &= h = {t(s.dy_pred_dw2)} \\",
        rf"\frac{{\partial \hat y}}{{\partial h}} &= w_2 = {t(s.dy_pred_dh)} &"
        rf"\frac{{\partial h}}{{\partial z}} &= {_HDZ_TEX[a]} = {t(s.dh_dz)} \\",
        rf"\frac{{\partial z}}{{\partial w_1}} &= x = {t(s.dz_dw1)}",
        r"\end{align*}",
        r"\begin{align*}",
        rf"\frac{{\partial L}}{{\partial w_2}} &= \frac{{\partial L}}{{\partial \hat y}} \cdot "
        rf"\frac{{\partial \hat y}}{{\partial w_2}} = {t(s.dL_dy_pred)} \cdot {t(s.dy_pred_dw2)} = {t(s.dL_dw2)} \\",
        rf"\frac{{\partial L}}{{\partial w_1}} &= \frac{{\partial L}}{{\partial \hat y}} \cdot "
        rf"\frac{{\partial \hat y}}{{\partial h}} \cdot \frac{{\partial h}}{{\partial z}} \cdot "
        rf"\frac{{\partial z}}{{\partial w_1}} = {t(s.dL_dy_pred)} \cdot {t(s.dy_pred_dh)} \cdot {t(s.dh_dz)}"
        rf" \cdot {t(s.dz_dw1)} = {t(s.dL_dw1)}",
        r"\end{align*}",
        r"\subsection*{Step 4: update}",
        r"\begin{align*}",
        rf"w_1 &\leftarrow w_1 - \eta \frac{{\partial L}}{{\partial w_1}} = {t(s.w1)} - {t(c.lr)} \cdot "
        rf"{t(s.dL_dw1)} = {t(s.w1_new)} \\",
        rf"w_2 &\leftarrow w_2 - \eta \frac{{\partial L}}{{\partial w_2}} = {t(s.w2)} - {t(c.lr)} \cdot "
        rf"{t(s.dL_dw2)} = {t(s.w2_new)}",
        r"\end{align*}",
        r"\subsection*{Gradient descent}",
        f"At most {c.epochs} epochs; stop when the loss improves by less than $\\mathrm{{tol}} = {t(c.tol)}$.",
        "",
        r"\begin{tabular}{rrrr}",
        r"epoch & $w_1$ & $w_2$ & $L$ \\ \hline",
    ]
    L += [f"{e} & {w1} & {w2} & {lo} \\\\" for e, w1, w2, lo in _trajectory_rows(r)]
    L += [r"\end{tabular}", "", f"Stopped: {r.stop_message}.", ""]
    return _bare_results("\n".join(L))


def render_example(r: ExampleResult, format: str = "text") -> str:
    renderers = {"text": example_text, "json": example_json, "markdown": example_markdown, "latex": example_latex}
    if format not in renderers:
        raise ConfigError(f"--format must be one of {', '.join(renderers)}, got {format!r}")
    out = renderers[format](r)
    return out if out.endswith("\n") else out + "\n"


def add_example_arguments(parser: argparse.ArgumentParser) -> None:
    d = ExampleConfig()
    parser.description = (
        "The reference example: x → z = w1·x → h = act(z) → ŷ = w2·h → L = ½(y − ŷ)². Prints the forward pass, "
        "the loss, every local derivative and gradient of the backward pass, the gradient-descent update, then "
        f"iterates. Figures: float64 autograd, {PRECISION} significant digits, cross-checked against the "
        "hand-derived chain rule."
    )
    parser.add_argument("--x", type=float, default=d.x, help=f"input (default {d.x})")
    parser.add_argument("--y", type=float, default=d.y, help=f"target (default {d.y})")
    parser.add_argument("--w1", type=float, default=d.w1, help=f"hidden weight (default {d.w1})")
    parser.add_argument("--w2", type=float, default=d.w2, help=f"output weight (default {d.w2})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"learning rate η (default {d.lr})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"epoch budget (default {d.epochs})")
    parser.add_argument(
        "--tol", type=float, default=d.tol, help=f"stop when the loss improves by less than this (default {d.tol})"
    )
    parser.add_argument("--activation", choices=ACTIVATIONS, default=d.activation, help="hidden activation")
    parser.add_argument("--format", choices=("text", "json", "markdown", "latex"), default="text")
    parser.add_argument("--surface", metavar="PATH.png", help="contour plot of the loss over (w1, w2) with the path")
    parser.add_argument("--curve", metavar="PATH.png", help="plot of the loss against the epoch")
    parser.add_argument(
        "--plot-size", default="800x600", metavar="WxH", help="size of the PNG files in pixels (default 800x600)"
    )


def parse_size(spec: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--plot-size must look like 800x600, got {spec!r}") from None
    if not (16 <= w <= 10000 and 16 <= h <= 10000):
        raise ConfigError(f"--plot-size must be between 16 and 10000 pixels per side, got {spec!r}")
    return w, h


def run_example_cli(args: argparse.Namespace) -> int:
    cfg = ExampleConfig(
        x=args.x,
        y=args.y,
        w1=args.w1,
        w2=args.w2,
        lr=args.lr,
        epochs=args.epochs,
        tol=args.tol,
        activation=args.activation,
    )
    size = parse_size(args.plot_size)
    result = run_example(cfg)
    sys.stdout.write(render_example(result, args.format))
    if args.surface or args.curve:
        from . import viz

        if args.surface:
            viz.example_surface(result, args.surface, size)
            print(f"wrote {args.surface}", file=sys.stderr)
        if args.curve:
            viz.loss_curve(
                [row[0] for row in result.trajectory], [row[3] for row in result.trajectory], args.curve, size
            )
            print(f"wrote {args.curve}", file=sys.stderr)
    return 0


# ============================================================================= `chainrule explain`

LOSSES = ("mse", "sse", "cross_entropy")
OPTIMIZERS = ("sgd", "momentum", "adam")


def parse_matrix(spec: str, what: str, integer: bool = False) -> np.ndarray:
    """Rows separated by ';' and columns by ',' ("2;0.5" is two rows of one value), or a CSV file of numbers.

    Returns a 2-D float64 array (1-D int64 for integer class targets).
    """
    if os.path.exists(spec) or spec.lower().endswith(".csv"):
        try:
            with open(spec, newline="") as f:
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
        except OSError as e:
            raise DataError(f"--{what}: cannot read {spec}: {e}") from None
        source = spec
    else:
        rows = [r.split(",") for r in spec.split(";") if r.strip()]
        source = f"--{what}"
    if rows and not _is_number(rows[0][0]):  # a header line
        rows = rows[1:]
    if not rows:
        raise DataError(f"{source}: no rows of numbers")
    try:
        data = [[float(c) for c in r] for r in rows]
    except ValueError:
        bad = next(i for i, r in enumerate(rows) if not all(_is_number(c) for c in r))
        raise DataError(f"{source}: row {bad + 1} is not all numbers: {','.join(rows[bad])!r}") from None
    if len({len(r) for r in data}) != 1:
        raise DataError(f"{source}: rows have different numbers of columns")
    arr = np.asarray(data, dtype=np.float64)
    if integer:
        if arr.shape[1] != 1 or np.any(arr != np.round(arr)) or np.any(arr < 0):
            raise DataError(f"{source}: cross_entropy targets must be one column of class indices 0, 1, ...")
        return arr[:, 0].astype(np.int64)
    return arr


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def build_mlp(spec: str, n_in: int, n_out: int, activation: str = "tanh", seed: int = 0, init: str = "default") -> Any:
    """`mlp:H1,H2,...` (or `linear`) or any chainrule.spec model spec, as a float64 model for `n_in` inputs.

    `n_in` is the input width (int) or a sample shape (tuple, e.g. (1, 4, 4) for a CNN).
    """
    from . import nn
    from .random import Generator

    spec = spec.strip()
    shape = (n_in,) if isinstance(n_in, int | np.integer) else tuple(n_in)
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
    if activation not in acts:
        raise ConfigError(f"--activation must be one of {', '.join(acts)}, got {activation!r}")
    if spec == "linear" or spec == "mlp" or (spec.startswith("mlp:") and len(shape) == 1):
        body = spec[4:] if spec.startswith("mlp:") else ""
        try:
            hidden = [int(v) for v in body.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--model: expected mlp:H1,H2,... with integer widths, got {spec!r}") from None
        if any(h < 1 for h in hidden):
            raise ConfigError(f"--model: layer widths must be >= 1, got {spec!r}")
        gen = Generator(seed)
        sizes = [shape[0], *hidden, n_out]
        layers: list[Any] = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], dtype=float64, generator=gen))
            if i < len(sizes) - 2:
                layers.append(acts[activation]())
        model = nn.Sequential(*layers)
    else:
        from .spec import build_model

        try:
            model = build_model(spec, shape, n_out, activation=activation, seed=seed, dtype=float64)
        except ConfigError as e:
            raise type(e)(f"--model: {e}") from None
    if init == "zeros":
        with no_grad():
            for p in model.parameters():
                p.zero_()
    elif init != "default":
        raise ConfigError(f"--init must be 'default' or 'zeros', got {init!r}")
    return model


def make_loss(name: str) -> Any:
    """A loss by name: 'mse', 'sse' (½·Σ, the reference example's), 'cross_entropy', or any name
    chainrule.spec.make_loss knows (e.g. 'bce', 'l1', 'huber', 'nll')."""
    from . import functional as F

    if name == "mse":
        return lambda out, t: F.mse_loss(out, t)
    if name == "sse":  # the reference example's ½·Σ(y − ŷ)²
        return lambda out, t: 0.5 * F.mse_loss(out, t, reduction="sum")
    if name == "cross_entropy":
        return lambda out, t: F.cross_entropy(out, t)
    from .spec import make_loss as spec_loss

    return spec_loss(name, "regression")


def make_optimizer(name: str, params: Any, lr: float, momentum: float = 0.9) -> Any:
    """'sgd', 'momentum' (SGD with `momentum`), or any chainrule.optim optimizer by name (adam, adamw, rmsprop...)."""
    from .spec import make_optimizer as spec_optimizer

    if not np.isfinite(lr) or lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    if name == "momentum":
        return spec_optimizer("sgd", params, lr, momentum=momentum)
    return spec_optimizer(name, params, lr)


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "One training step of a small network laid open: every node of the graph with its value and gradient, "
        "every parameter's gradient and update, a finite-difference gradient check, and a warning when hidden "
        "units start identical."
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="SPEC",
        help="mlp:H1,H2,... | linear | cnn1d:... | JSON/TOML layer list | spec file (default mlp:3)",
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--run", metavar="DIR", help="explain one step of a saved run (its model, loss and data)")
    src.add_argument("--model-file", metavar="PATH", help="explain one step of a saved model file")
    parser.add_argument(
        "--input-shape", metavar="C,H,W", help="reshape each input row to this sample shape (e.g. 1,4,4 for a CNN)"
    )
    parser.add_argument("--rows", type=int, default=4, help="rows of a run's training data used (default 4)")
    parser.add_argument("--activation", choices=("tanh", "relu", "sigmoid"), default="tanh")
    parser.add_argument("--init", choices=("default", "zeros"), default="default", help="zeros shows the symmetry")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialization")
    parser.add_argument(
        "--inputs", default=None, help="rows ';', columns ',' (e.g. '2;0.5' or '1,2;3,4') or a CSV file (default 2)"
    )
    parser.add_argument("--targets", default=None, help="same form as --inputs; class indices for cross_entropy")
    parser.add_argument(
        "--loss", default=None, help="mse (mean, default), sse (½·sum), cross_entropy, bce, l1, ... (a run: its loss)"
    )
    parser.add_argument("--optimizer", default="sgd", help="sgd, momentum, adam, adamw, rmsprop, ... (default sgd)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9, help="for --optimizer momentum")
    parser.add_argument("--format", choices=("text", "json", "markdown", "dot"), default="text")
    parser.add_argument(
        "--max-nodes",
        type=int,
        default=MAX_NODES,
        metavar="N",
        help=f"refuse graphs of more than N nodes (default {MAX_NODES}; 0: no limit)",
    )
    parser.add_argument("--graph", metavar="PATH", help="draw the graph: .dot always; .svg/.png need Graphviz")
    parser.add_argument("--surface", metavar="PATH.png", help="loss surface over two parameter entries with the path")
    parser.add_argument(
        "--surface-params",
        metavar="A,B",
        help="the two entries, e.g. '0.weight[0,0],2.weight[0,0]' (default: the first entry of the first two "
        "parameters)",
    )
    parser.add_argument("--epochs", type=int, default=50, help="optimizer steps drawn on the surface (default 50)")
    parser.add_argument("--plot-size", default="800x600", metavar="WxH", help="PNG size in pixels (default 800x600)")


def _entry(spec: str, params: dict[str, Any]) -> tuple[str, tuple[int, ...]]:
    name, _, rest = spec.strip().partition("[")
    if name not in params:
        raise ConfigError(f"--surface-params: no parameter {name!r} (parameters: {', '.join(params)})")
    idx = tuple(int(v) for v in rest.rstrip("]").split(",") if v.strip()) if rest else (0,) * params[name].ndim
    try:
        params[name].data[idx]
    except (IndexError, ValueError):
        raise ConfigError(f"--surface-params: {spec!r} is not an entry of shape {params[name].shape}") from None
    if len(idx) != params[name].ndim:
        raise ConfigError(f"--surface-params: {spec!r} must index one entry of shape {params[name].shape}")
    return name, idx


def explain_surface(model: Any, loss_fn: Any, x: Tensor, t: Tensor, args: argparse.Namespace, path: str) -> None:
    """Loss over two parameter entries (others fixed at their start values) with the optimizer's path."""
    from . import viz

    params = dict(model.named_parameters())
    if args.surface_params:
        parts = [p for p in args.surface_params.replace("],", "];").split(";")]
        if len(parts) != 2:
            raise ConfigError(f"--surface-params: expected two entries like 'a[0,0],b[0]', got {args.surface_params!r}")
        (na, ia), (nb, ib) = (_entry(p, params) for p in parts)
    else:
        names = list(params)
        if sum(p.data.size for p in params.values()) < 2:
            raise ConfigError("--surface needs a model with at least two parameter entries")
        flat = [(n, np.unravel_index(i, params[n].shape)) for n in names for i in range(params[n].data.size)]
        (na, ia), (nb, ib) = (
            (flat[0], flat[1]) if len(names) < 2 else (flat[0], (names[1], (0,) * params[names[1]].ndim))
        )
    walker = copy.deepcopy(model)
    wp = dict(walker.named_parameters())
    opt = make_optimizer(args.optimizer, walker.parameters(), args.lr, args.momentum)
    pa, pb = [float(wp[na].data[ia])], [float(wp[nb].data[ib])]
    for _ in range(max(1, args.epochs)):
        opt.zero_grad()
        loss_fn(walker(x), t).backward()
        opt.step()
        pa.append(float(wp[na].data[ia]))
        pb.append(float(wp[nb].data[ib]))
    probe = copy.deepcopy(model)
    pp = dict(probe.named_parameters())

    def loss_at(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        out = np.empty(A.shape)
        with no_grad():
            for k in np.ndindex(A.shape):
                pp[na].data[ia] = A[k]
                pp[nb].data[ib] = B[k]
                out[k] = loss_fn(probe(x), t).item()
        return out

    la = f"{na}[{','.join(map(str, ia))}]"
    lb = f"{nb}[{','.join(map(str, ib))}]"
    viz.surface(
        loss_at,
        pa,
        pb,
        path,
        parse_size(args.plot_size),
        (la, lb),
        f"loss over ({la}, {lb})\nother parameters fixed at their start; path: {args.optimizer}, lr = {args.lr:g}",
        resolution=41,
    )


def _load_saved(args: argparse.Namespace) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """(float64 model, loss, inputs, targets) of --run / --model-file; data from the run unless given."""
    from pathlib import Path

    from .job import load_trained, prepare, prepare_inputs, run_config

    path = args.run or args.model_file
    model, meta, loss_fn = load_trained(path)
    model = model.double()
    classification = meta.get("task") == "classification"
    if args.loss is not None:
        loss_fn = make_loss(args.loss)
    if args.inputs is not None:
        x = parse_matrix(args.inputs, "inputs")
        shape = tuple(meta["spec"]["input_shape"])
        if x.shape[1] != int(np.prod(shape)):
            raise DataError(f"--inputs has {x.shape[1]} values per row; the model takes samples of shape {shape}")
        x = prepare_inputs(x.reshape(len(x), *shape), meta, "--inputs")
        if args.targets is None:
            raise ConfigError("--targets is required with --inputs")
        t = parse_matrix(args.targets, "targets", integer=classification)
    else:
        run = Path(path)
        if not (run.is_dir() and (run / "config.json").exists()):
            raise ConfigError(f"{path}: not a run directory with config.json, so --inputs and --targets are required")
        cfg = run_config(run)
        x, t = prepare(cfg).train
        x, t = x[: max(1, args.rows)], t[: max(1, args.rows)]
        if args.targets is not None:
            t = parse_matrix(args.targets, "targets", integer=classification)
    x = np.asarray(x, dtype=float64)
    t = np.asarray(t) if classification else np.asarray(t, dtype=float64)
    if not classification and t.ndim == 1:
        t = t.reshape(len(t), -1)
    if len(t) != len(x):
        raise DataError(f"the inputs have {len(x)} rows but the targets have {len(t)}")
    return model, loss_fn, x, t


def run_explain_cli(args: argparse.Namespace) -> int:
    if (args.run or args.model_file) and args.model:
        raise ConfigError("give either --model or --run/--model-file, not both")
    if args.run or args.model_file:
        model, loss_fn, x, t = _load_saved(args)
    else:
        loss_name = args.loss or "mse"
        x = parse_matrix("2" if args.inputs is None else args.inputs, "inputs")
        classes = loss_name in ("cross_entropy", "crossentropy", "ce", "nll")
        t = parse_matrix("0.5" if args.targets is None else args.targets, "targets", integer=classes)
        if len(t) != len(x):
            raise DataError(f"--inputs has {len(x)} rows but --targets has {len(t)}")
        n_out = max(int(t.max()) + 1, 2) if classes else t.shape[1]
        shape: Any = x.shape[1]
        if args.input_shape:
            try:
                shape = tuple(int(v) for v in args.input_shape.split(","))
            except ValueError:
                raise ConfigError(f"--input-shape: expected integers like 1,4,4, got {args.input_shape!r}") from None
            if int(np.prod(shape)) != x.shape[1]:
                raise DataError(
                    f"--input-shape {args.input_shape} needs {int(np.prod(shape))} values per row, "
                    f"--inputs has {x.shape[1]}"
                )
            x = x.reshape(len(x), *shape)
        model = build_mlp(args.model or "mlp:3", shape, n_out, args.activation, args.seed, args.init)
        loss_fn = make_loss(loss_name)
    xt, tt = Tensor(x), Tensor(t)
    start = copy.deepcopy(model) if args.surface else None
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum)
    tr = trace(model, xt, tt, loss_fn, opt, max_nodes=args.max_nodes if args.max_nodes > 0 else None)
    sys.stdout.write(render_trace(tr, args.format))
    if args.graph:
        write_graph(tr, args.graph)
        print(f"wrote {args.graph}", file=sys.stderr)
    if args.surface:
        explain_surface(start, loss_fn, xt, tt, args, args.surface)
        print(f"wrote {args.surface}", file=sys.stderr)
    if tr.gradcheck and not tr.gradcheck["passed"]:  # the report is printed; a script sees the failure too
        print("chainrule explain: the gradient check FAILED (see the report above)", file=sys.stderr)
        return 1
    return 0
