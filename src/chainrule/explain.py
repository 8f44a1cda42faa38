"""Explain mode: every number of a learning step laid open and checked.

Two parts:

* `run_example` – the reference network x → z = w1·x → h = act(z) → ŷ = w2·h → L = ½(y − ŷ)², one step of
  gradient descent shown as forward pass, loss, backward pass (local derivatives and their products) and
  update, then iterated. Every figure comes from chainrule's autograd in float64 and is cross-checked in the
  same run against the hand-derived chain rule; a disagreement raises `CrossCheckError` instead of printing.
* `trace` – records the graph of one training step of any small model: the node table in forward order, the
  gradient arriving at every node, each parameter's gradient and the optimizer's update (with its state terms),
  a finite-difference check, and a warning about identically initialized hidden units.

Numbers are printed with `PRECISION` (10) significant digits; JSON carries full float64 values.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ChainruleError, ConfigError, DataError
from .tensor import Tensor, float64, no_grad

PRECISION = 10  # significant digits of every printed figure
SCHEMA_ID = "https://chainrule.dev/schemas/explain-example-1.json"
EXAMPLE_SCHEMA_VERSION = "chainrule.example/1"
TRACE_SCHEMA_VERSION = "chainrule.trace/1"


class CrossCheckError(ChainruleError, AssertionError):
    """Autograd and the hand-derived chain rule disagree: nothing is printed."""


def fmt(v: float, digits: int = PRECISION) -> str:
    """A number with `digits` significant digits (shortest form, no trailing zeros)."""
    v = float(v)
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _paren(v: float) -> str:
    s = fmt(v)
    return f"({s})" if v < 0 else s


def _check(name: str, autograd: float, hand: float, rel: float = 1e-12, abs_: float = 1e-15) -> float:
    if not (math.isfinite(autograd) and math.isfinite(hand)) or not math.isclose(
        autograd, hand, rel_tol=rel, abs_tol=abs_
    ):
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
    if name == "relu":
        return (z if z > 0 else 0.0), (1.0 if z > 0 else 0.0), "[z > 0]"
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
    hl = 0.5 * (cfg.y - hyp) ** 2
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
    traj = [(0, cfg.w1, cfg.w2, first.loss)]
    w1, w2 = first.w1_new, first.w2_new
    reason, message = "epoch_budget", f"epoch budget reached ({cfg.epochs} epochs)"
    for epoch in range(1, cfg.epochs + 1):
        s = example_step(cfg, w1, w2)
        traj.append((epoch, w1, w2, s.loss))
        if not math.isfinite(s.loss):
            reason, message = "diverged", f"the loss became {s.loss} at epoch {epoch}"
            break
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
        f"  w1 = {fmt(s.w1)} − {fmt(c.lr)} · {_paren(s.dL_dw1)} = {fmt(s.w1_new)}",
        f"  w2 = {fmt(s.w2)} − {fmt(c.lr)} · {_paren(s.dL_dw2)} = {fmt(s.w2_new)}",
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
    return "\n".join(L)


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
    return "\n".join(L)


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


# ============================================================================= trace of any small model

SMALL = 16  # tensors with at most this many elements are shown in full, larger ones as a summary
TRACE_DIGITS = 6  # significant digits of the trace's text, Markdown and DOT renderers


def _tv(arr: np.ndarray | None) -> Any:
    """JSON form of a tensor value: number, nested list, or summary dict (None stays None)."""
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.size <= SMALL:
        return a.item() if a.ndim == 0 else a.tolist()
    f = a.astype(np.float64)
    return {
        "summary": True,
        "mean": float(f.mean()),
        "std": float(f.std()),
        "min": float(f.min()),
        "max": float(f.max()),
    }


def _tv_str(arr: np.ndarray | None, digits: int = TRACE_DIGITS) -> str:
    if arr is None:
        return "—"
    a = np.asarray(arr)
    if a.size > SMALL:
        f = a.astype(np.float64)
        return (
            f"mean {fmt(f.mean(), digits)} std {fmt(f.std(), digits)} "
            f"min {fmt(f.min(), digits)} max {fmt(f.max(), digits)}"
        )
    if a.ndim == 0:
        return fmt(a.item(), digits) if a.dtype.kind == "f" else str(a.item())

    def rec(x: Any) -> str:
        if isinstance(x, list):
            return "[" + ", ".join(rec(v) for v in x) + "]"
        return fmt(x, digits) if isinstance(x, float) else str(x)

    return rec(a.tolist())


@dataclass
class TraceNode:
    id: int
    name: str
    op: str  # the recording op, or "parameter" / "input" / "target" / "constant" for leaves
    inputs: list[int]
    shape: tuple[int, ...]
    requires_grad: bool
    value: np.ndarray
    grad: np.ndarray | None = None  # dL/d(this tensor): the upstream gradient arriving here
    input_grads: list[np.ndarray | None] = field(default_factory=list)  # what backward sends to each input


@dataclass
class TraceParam:
    name: str
    node: int | None
    value: np.ndarray
    grad: np.ndarray | None
    new_value: np.ndarray
    update: np.ndarray
    terms: dict[str, Any]


@dataclass
class Trace:
    """One training step recorded node by node (see `trace`)."""

    loss: float
    nodes: list[TraceNode]
    params: list[TraceParam]
    optimizer: dict[str, Any] | None
    gradcheck: dict[str, Any]
    warnings: list[str]
    dtype: str

    def node(self, name: str) -> TraceNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TRACE_SCHEMA_VERSION,
            "precision": {"significant_digits": TRACE_DIGITS, "dtype": self.dtype},
            "loss": self.loss,
            "nodes": [
                {
                    "id": n.id,
                    "name": n.name,
                    "op": n.op,
                    "inputs": n.inputs,
                    "shape": list(n.shape),
                    "requires_grad": n.requires_grad,
                    "value": _tv(n.value),
                    "grad": _tv(n.grad),
                    "input_grads": [_tv(g) for g in n.input_grads],
                }
                for n in self.nodes
            ],
            "parameters": [
                {
                    "name": p.name,
                    "node": p.node,
                    "shape": list(p.value.shape),
                    "value": _tv(p.value),
                    "grad": _tv(p.grad),
                    "update": _tv(p.update),
                    "new_value": _tv(p.new_value),
                    "terms": {k: _tv(np.asarray(v)) for k, v in p.terms.items()},
                }
                for p in self.params
            ],
            "optimizer": self.optimizer,
            "gradcheck": self.gradcheck,
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        return trace_text(self)

    def to_markdown(self) -> str:
        return trace_markdown(self)

    def to_dot(self) -> str:
        return trace_dot(self)


def _graph_nodes(root: Tensor) -> list[Tensor]:
    """Every tensor of root's graph, parents before children (iterative DFS, parents in argument order)."""
    order: list[Tensor] = []
    seen = {id(root)}
    stack = [(root, iter(root._prev))]
    while stack:
        node, parents = stack[-1]
        for p in parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append((p, iter(p._prev)))
                break
        else:
            stack.pop()
            order.append(node)
    return order


def _as_input(v: Any, dtype: np.dtype | None) -> Tensor:
    if isinstance(v, Tensor):
        return v
    a = np.asarray(v)
    if a.dtype.kind == "f" and dtype is not None:
        a = a.astype(dtype)
    return Tensor(a)


def _optimizer_terms(opt: Any, p: Tensor, old: np.ndarray, grad: np.ndarray, state: dict) -> tuple[dict, str, dict]:
    """(terms, formula, hyperparameters) for parameter p: the quantities that make up its update.

    `state` is a copy of the optimizer's state taken before the step; terms["update"] is the predicted update.
    """
    from .optim import SGD, Adam, AdamW

    group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
    lr = group["lr"]
    g = np.asarray(grad, dtype=np.float64)
    w = old.astype(np.float64)
    if group.get("maximize"):
        g = -g
    if isinstance(opt, SGD):
        mom, damp, wd, nest = group["momentum"], group["dampening"], group["weight_decay"], group["nesterov"]
        hyper = {"lr": lr, "momentum": mom, "dampening": damp, "weight_decay": wd, "nesterov": nest}
        terms: dict[str, Any] = {"lr": lr, "grad": g}
        formula = "update = −lr·grad"
        if wd:
            g = g + wd * w
            terms["grad_with_weight_decay"] = g
            formula = "g = grad + weight_decay·w; update = −lr·g"
        if mom:
            buf = state.get(id(p), {}).get("momentum_buffer")
            terms["momentum_buffer_before"] = np.zeros_like(g) if buf is None else np.asarray(buf, np.float64)
            buf = g.copy() if buf is None else mom * buf + (1 - damp) * g
            terms["momentum_buffer"] = buf
            d = g + mom * buf if nest else buf
            formula = "buf = momentum·buf + (1 − dampening)·g (buf = g at the first step); " + (
                "update = −lr·(g + momentum·buf)" if nest else "update = −lr·buf"
            )
        else:
            d = g
        terms["update"] = -lr * d
        return terms, formula, hyper
    if isinstance(opt, Adam):
        (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
        hyper = {"lr": lr, "betas": [b1, b2], "eps": eps, "weight_decay": wd, "amsgrad": group["amsgrad"]}
        s = state.get(id(p), {})
        t = s.get("step", 0) + 1
        m0 = np.asarray(s.get("exp_avg", np.zeros_like(g)), np.float64)
        v0 = np.asarray(s.get("exp_avg_sq", np.zeros_like(g)), np.float64)
        decay = 0.0
        if wd and isinstance(opt, AdamW):
            decay = -lr * wd
        elif wd:
            g = g + wd * w
        m = b1 * m0 + (1 - b1) * g
        v = b2 * v0 + (1 - b2) * g * g
        vv = v
        if group["amsgrad"]:
            vv = np.maximum(np.asarray(s.get("max_exp_avg_sq", np.zeros_like(g)), np.float64), v)
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        step = (lr / bc1) * (m / (np.sqrt(vv) / math.sqrt(bc2) + eps))
        terms = {
            "lr": lr,
            "step": t,
            "grad": g,
            "exp_avg": m,
            "exp_avg_sq": v,
            "bias_correction1": bc1,
            "bias_correction2": bc2,
            "update": decay * w - step if decay else -step,
        }
        formula = (
            "m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g²; "
            "update = −lr·(m / (1 − β1^t)) / (√(v / (1 − β2^t)) + eps)"
            + ("; AdamW first scales w by (1 − lr·weight_decay)" if decay else "")
        )
        return terms, formula, hyper
    return {}, "measured (no formula known for this optimizer)", {"lr": lr}


def _gradcheck(
    model64: Any, loss_fn: Any, x64: Tensor, t64: Tensor, grads: list[np.ndarray | None], dtype: np.dtype, eps: float
) -> dict[str, Any]:
    """Central differences of the loss w.r.t. every parameter entry (at most 64 per parameter) in float64."""
    params = list(model64.parameters())
    max_abs, max_rel, n = 0.0, 0.0, 0
    passed = True
    rtol, atol = (1e-5, 1e-7) if dtype == np.float64 else (2e-3, 2e-5)
    with no_grad():
        for p, g in zip(params, grads):
            flat = p.data.reshape(-1)
            idx = range(flat.size) if flat.size <= 64 else np.unique(np.linspace(0, flat.size - 1, 64).astype(int))
            ga = np.zeros(flat.size) if g is None else np.asarray(g, np.float64).reshape(-1)
            for j in idx:
                orig = flat[j]
                flat[j] = orig + eps
                plus = float(loss_fn(model64(x64), t64).item())
                flat[j] = orig - eps
                minus = float(loss_fn(model64(x64), t64).item())
                flat[j] = orig
                num = (plus - minus) / (2 * eps)
                err = abs(num - ga[j])
                max_abs = max(max_abs, err)
                max_rel = max(max_rel, err / max(abs(num), abs(ga[j]), 1e-12))
                passed &= err <= atol + rtol * abs(num)
                n += 1
    return {
        "method": f"central differences in float64, eps = {eps:g}, rtol = {rtol:g}, atol = {atol:g}",
        "passed": bool(passed),
        "max_abs_error": float(max_abs),
        "max_rel_error": float(max_rel),
        "elements_checked": n,
    }


def _symmetry_warnings(model: Any, before: dict[str, np.ndarray], grads: dict[str, np.ndarray | None]) -> list[str]:
    """Hidden layers (every layer with a weight of 2+ dims but the last) whose units start identical and get equal
    gradients (units: rows of a Linear weight, output channels of a convolution).

    Identical incoming weights and biases with different outgoing weights give different gradients: no warning.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m._parameters.get("weight"), Tensor)]
    layers = [(n, m) for n, m in layers if m._parameters["weight"].ndim >= 2]  # Linear, ConvNd: rows = units
    out = []
    for name, m in layers[:-1]:
        wkey = f"{name}.weight" if name else "weight"
        bkey = f"{name}.bias" if name else "bias"
        w = before.get(wkey)
        w = None if w is None else w.reshape(w.shape[0], -1)
        if w is None or w.shape[0] < 2 or not np.all(w == w[:1]):
            continue
        b = before.get(bkey)
        if b is not None and not np.all(b == b[:1]):
            continue
        gw, gb = grads.get(wkey), grads.get(bkey)
        gw = None if gw is None else gw.reshape(gw.shape[0], -1)
        diff = 0.0 if gw is None else float(np.max(np.abs(gw - gw[:1])))
        if gb is not None:
            diff = max(diff, float(np.max(np.abs(gb - gb[:1]))))
        scale = max(float(np.max(np.abs(gw))) if gw is not None else 0.0, 1e-300)
        if diff > 1e-12 * scale:  # different outgoing weights already break the symmetry
            continue
        how = "all zero" if not np.any(w) and (b is None or not np.any(b)) else "identical"
        row = "—" if gw is None else _tv_str(gw[0])
        out.append(
            f"hidden layer '{name}' ({type(m).__name__}, {w.shape[0]} units) is initialized with {how} units: "
            f"every unit gets the same gradient (∂L/∂{wkey} row 0 = {row}; rows differ by at most {diff:.3g}), "
            "so the units stay identical after every update and the layer works like a single unit; "
            "initialize the weights randomly to break the symmetry"
        )
    return out


def trace(
    model: Any,
    inputs: Any,
    targets: Any,
    loss_fn: Any,
    optimizer: Any = None,
    gradcheck: bool = True,
    gradcheck_eps: float = 1e-6,
) -> Trace:
    """Run one training step of `model` and record every number of it.

    Forward `loss = loss_fn(model(inputs), targets)`, backward, and `optimizer.step()` when an optimizer is given
    (the model's parameters ARE updated, as in training). Returns a `Trace` with the graph's nodes in forward
    order (value, upstream gradient dL/d(node), and the gradient sent to each input), every parameter's value,
    gradient and update with the optimizer's terms (checked against the actual step; `CrossCheckError` if they
    differ), a finite-difference gradient check in float64 on a copy of the model, and symmetry warnings.
    """
    pnames = dict(model.named_parameters())
    param_list = list(pnames.values())
    dtype = param_list[0].dtype if param_list else np.dtype(float64)
    x = _as_input(inputs, dtype)
    t = _as_input(targets, dtype)
    model64 = copy.deepcopy(model).double() if gradcheck else None
    if optimizer is not None:
        optimizer.zero_grad()
    for p in param_list:
        p.grad = None
    before = {n: p.data.copy() for n, p in pnames.items()}
    loss = loss_fn(model(x), t)
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        raise ConfigError("trace: the loss function must return a one-element tensor")
    if not loss.requires_grad:
        raise ConfigError("trace: the loss does not depend on any parameter that requires grad")
    graph = _graph_nodes(loss)
    for n in graph:
        if n.requires_grad and not n.is_leaf:
            n.retain_grad()
    loss.backward(retain_graph=True)

    ids = {id(n): i for i, n in enumerate(graph)}
    by_param = {id(p): name for name, p in pnames.items()}
    nodes: list[TraceNode] = []
    with no_grad():
        for i, n in enumerate(graph):
            if n.is_leaf:
                if id(n) in by_param:
                    name, op = by_param[id(n)], "parameter"
                elif n is x:
                    name, op = "input", "input"
                elif n is t:
                    name, op = "target", "target"
                else:
                    name, op = f"c{i}", "constant"
            else:
                name, op = f"t{i}", n._op
            node = TraceNode(
                i,
                name,
                op,
                [ids[id(p)] for p in n._prev],
                tuple(n.shape),
                bool(n.requires_grad),
                n.data.copy(),
                None if n.grad is None else n.grad.data.copy(),
            )
            if not n.is_leaf and n.grad is not None and n._backward is not None:
                sent = n._backward(n.grad)
                node.input_grads = [
                    None if (g is None or not p.requires_grad) else np.asarray(g.data).copy()
                    for p, g in zip(n._prev, sent)
                ]
            elif not n.is_leaf:
                node.input_grads = [None] * len(n._prev)
            nodes.append(node)
    for n in graph:  # free the graph now that every number is recorded
        n._backward, n._saved = None, ()

    grads = {name: None if p.grad is None else p.grad.data.copy() for name, p in pnames.items()}
    opt_info = None
    terms: dict[str, tuple[dict, str]] = {}
    if optimizer is not None:
        state = copy.deepcopy(optimizer.state)
        hyper: dict = {}
        formula = ""
        for name, p in pnames.items():
            if grads[name] is not None:
                tm, formula, hyper = _optimizer_terms(optimizer, p, before[name], grads[name], state)
                terms[name] = (tm, formula)
        optimizer.step()
        verified = True
        for name, p in pnames.items():
            tm = terms.get(name, ({}, ""))[0]
            if "update" not in tm:
                continue
            actual = p.data.astype(np.float64) - before[name].astype(np.float64)
            fi = np.finfo(p.dtype)
            scale = np.maximum(np.abs(before[name]), np.abs(p.data)).astype(np.float64)
            tol = 4 * fi.eps * scale + (1e-9 if p.dtype == np.float64 else 1e-5) * np.abs(tm["update"]) + fi.tiny
            if not np.all(np.abs(actual - tm["update"]) <= tol):
                raise CrossCheckError(
                    f"trace: the {type(optimizer).__name__} update of '{name}' predicted by its formula differs "
                    f"from the actual step (max difference {float(np.max(np.abs(actual - tm['update']))):.3g})"
                )
        opt_info = {
            "name": type(optimizer).__name__,
            "formula": formula,
            "hyperparameters": hyper,
            "verified": verified and bool(terms),
        }
    params = []
    for name, p in pnames.items():
        new = p.data.copy()
        params.append(
            TraceParam(
                name,
                ids.get(id(p)),
                before[name],
                grads[name],
                new,
                new - before[name],
                terms.get(name, ({}, ""))[0],
            )
        )
    if gradcheck:
        x64 = Tensor(x.data.astype(np.float64)) if x.dtype.kind == "f" else x
        t64 = Tensor(t.data.astype(np.float64)) if t.dtype.kind == "f" else t
        gc = _gradcheck(model64, loss_fn, x64, t64, [grads[n] for n in pnames], dtype, gradcheck_eps)
    else:
        gc = {"method": "not run", "passed": True, "max_abs_error": 0.0, "max_rel_error": 0.0, "elements_checked": 0}
    warnings = _symmetry_warnings(model, before, grads)
    if not gc["passed"]:
        warnings.append(
            f"the finite-difference gradient check failed (max abs error {gc['max_abs_error']:.3g}); "
            "non-differentiable points such as relu at 0 can cause this"
        )
    return Trace(float(loss.item()), nodes, params, opt_info, gc, warnings, str(dtype))


# ----------------------------------------------------------------------------- trace renderers


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    rows = [header] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    out = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def _node_rows(tr: Trace) -> list[list[str]]:
    return [
        [
            str(n.id),
            n.name,
            n.op,
            ",".join(map(str, n.inputs)) or "—",
            "×".join(map(str, n.shape)) or "scalar",
            _tv_str(n.value),
            _tv_str(n.grad),
        ]
        for n in tr.nodes
    ]


_NODE_HEADER = ["id", "name", "op", "inputs", "shape", "value", "grad dL/d(node)"]


def trace_text(tr: Trace) -> str:
    L = [
        f"chainrule explain: one training step, loss = {fmt(tr.loss, TRACE_DIGITS)}",
        f"  computed in {tr.dtype}; printed to {TRACE_DIGITS} significant digits; tensors of more than {SMALL} "
        "elements shown as mean/std/min/max",
        "",
        "Graph, forward order (grad = the upstream gradient dL/d(node) arriving after backward)",
    ]
    L += ["  " + ln for ln in _table(_node_rows(tr), _NODE_HEADER)]
    L += ["", "Parameters"]
    for p in tr.params:
        L.append(f"  {p.name}  shape {tuple(p.value.shape)}")
        items = [("value", p.value), ("grad", p.grad)]
        items += [(k, np.asarray(v)) for k, v in p.terms.items() if k not in ("grad", "update")]
        items += [("update", p.update), ("new value", p.new_value)]
        L += [f"    {k:<24}{_tv_str(v)}" for k, v in items]
    if tr.optimizer:
        o = tr.optimizer
        hp = ", ".join(f"{k}={v}" for k, v in o["hyperparameters"].items())
        L += ["", f"Optimizer {o['name']} ({hp}): {o['formula']}"]
        L.append("  the formula's update equals the optimizer's actual step" if o["verified"] else "  (not verified)")
    else:
        L += ["", "No optimizer: parameters not updated"]
    g = tr.gradcheck
    L += [
        "",
        f"Gradient check: {'passed' if g['passed'] else 'FAILED'} ({g['elements_checked']} entries, "
        f"max abs error {g['max_abs_error']:.3g}, max rel error {g['max_rel_error']:.3g}; {g['method']})",
    ]
    L += [f"WARNING: {w}" for w in tr.warnings]
    return "\n".join(L) + "\n"


def trace_markdown(tr: Trace) -> str:
    def md_row(r: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in r) + " |"

    L = [
        "# One training step, every number",
        "",
        f"Loss: **{fmt(tr.loss, TRACE_DIGITS)}** (computed in {tr.dtype}, printed to {TRACE_DIGITS} significant "
        f"digits; tensors of more than {SMALL} elements as mean/std/min/max).",
        "",
        "## Graph (forward order)",
        "",
        md_row(_NODE_HEADER),
        "|" + "---|" * len(_NODE_HEADER),
    ]
    L += [md_row(r) for r in _node_rows(tr)]
    L += ["", "## Parameters", "", "| name | value | grad | update | new value |", "|---|---|---|---|---|"]
    L += [
        md_row([p.name, _tv_str(p.value), _tv_str(p.grad), _tv_str(p.update), _tv_str(p.new_value)]) for p in tr.params
    ]
    if tr.optimizer:
        L += ["", f"Optimizer **{tr.optimizer['name']}**: {tr.optimizer['formula']} (verified against the step)."]
    g = tr.gradcheck
    L += [
        "",
        f"Gradient check: **{'passed' if g['passed'] else 'FAILED'}**, {g['elements_checked']} entries, "
        f"max abs error {g['max_abs_error']:.3g}.",
    ]
    L += [f"\n> **Warning:** {w}" for w in tr.warnings]
    return "\n".join(L) + "\n"


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def trace_dot(tr: Trace) -> str:
    """Graphviz DOT text: one node per tensor, labelled with name, op, value and gradient; edges input → op."""
    L = [
        "digraph chainrule_trace {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
    ]
    for n in tr.nodes:
        shape = "box" if n.op in ("parameter", "input", "target", "constant") else "ellipse"
        color = {"parameter": "lightblue", "input": "lightgrey", "target": "lightgrey"}.get(n.op, "white")
        val = _tv_str(n.value, 4)
        label = f"{n.name}: {n.op}\\nvalue {_dot_escape(val)}"
        if n.grad is not None:
            label += f"\\ngrad {_dot_escape(_tv_str(n.grad, 4))}"
        L.append(f'  n{n.id} [label="{label}", shape={shape}, style=filled, fillcolor={color}];')
    for n in tr.nodes:
        for i in n.inputs:
            L.append(f"  n{i} -> n{n.id};")
    L.append("}")
    return "\n".join(L) + "\n"


def write_graph(tr: Trace, path: str) -> None:
    """Write the graph as .dot (always possible) or .svg/.png (needs the graphviz package and `dot` program)."""
    ext = os.path.splitext(path)[1].lower()
    dot = trace_dot(tr)
    if ext in (".dot", ".gv"):
        with open(path, "w") as f:
            f.write(dot)
        return
    if ext not in (".svg", ".png"):
        raise ConfigError(f"--graph: the file must end in .dot, .svg or .png, got {path!r}")
    try:
        import graphviz
    except ImportError:
        raise ConfigError(
            f"--graph {path}: drawing needs the graphviz Python package and the Graphviz 'dot' program "
            "(pip install graphviz; apt-get install graphviz); write a .dot file instead"
        ) from None
    try:
        data = graphviz.Source(dot).pipe(format=ext[1:])
    except graphviz.ExecutableNotFound:
        raise ConfigError(
            f"--graph {path}: the Graphviz 'dot' program is not installed (apt-get install graphviz, "
            "or brew install graphviz); write a .dot file instead"
        ) from None
    with open(path, "wb") as f:
        f.write(data)


def render_trace(tr: Trace, format: str = "text") -> str:
    renderers = {"text": trace_text, "json": Trace.to_json, "markdown": trace_markdown, "dot": trace_dot}
    if format not in renderers:
        raise ConfigError(f"--format must be one of {', '.join(renderers)}, got {format!r}")
    out = renderers[format](tr)
    return out if out.endswith("\n") else out + "\n"


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
    """`mlp:H1,H2,...` (or `mlp:` / `linear` for no hidden layer) as a float64 Sequential of Linear + activation."""
    from . import nn
    from .random import Generator

    spec = spec.strip()
    if spec == "linear":
        hidden: list[int] = []
    elif spec.startswith("mlp:") or spec == "mlp":
        body = spec[4:]
        try:
            hidden = [int(v) for v in body.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--model: expected mlp:H1,H2,... with integer widths, got {spec!r}") from None
        if any(h < 1 for h in hidden):
            raise ConfigError(f"--model: layer widths must be >= 1, got {spec!r}")
    else:
        raise ConfigError(f"--model: expected 'mlp:H1,H2,...' or 'linear', got {spec!r}")
    acts = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
    if activation not in acts:
        raise ConfigError(f"--activation must be one of {', '.join(acts)}, got {activation!r}")
    gen = Generator(seed)
    sizes = [n_in, *hidden, n_out]
    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], dtype=float64, generator=gen))
        if i < len(sizes) - 2:
            layers.append(acts[activation]())
    model = nn.Sequential(*layers)
    if init == "zeros":
        with no_grad():
            for p in model.parameters():
                p.zero_()
    elif init != "default":
        raise ConfigError(f"--init must be 'default' or 'zeros', got {init!r}")
    return model


def make_loss(name: str) -> Any:
    from . import functional as F

    if name == "mse":
        return lambda out, t: F.mse_loss(out, t)
    if name == "sse":  # the reference example's ½·Σ(y − ŷ)²
        return lambda out, t: 0.5 * F.mse_loss(out, t, reduction="sum")
    if name == "cross_entropy":
        return lambda out, t: F.cross_entropy(out, t)
    raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {name!r}")


def make_optimizer(name: str, params: Any, lr: float, momentum: float = 0.9) -> Any:
    from .optim import SGD, Adam

    if lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    if name == "sgd":
        return SGD(params, lr=lr)
    if name == "momentum":
        return SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return Adam(params, lr=lr)
    raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "One training step of a small network laid open: every node of the graph with its value and gradient, "
        "every parameter's gradient and update, a finite-difference gradient check, and a warning when hidden "
        "units start identical."
    )
    parser.add_argument("--model", default="mlp:3", help="mlp:H1,H2,... (hidden widths) or linear (default mlp:3)")
    parser.add_argument("--activation", choices=("tanh", "relu", "sigmoid"), default="tanh")
    parser.add_argument("--init", choices=("default", "zeros"), default="default", help="zeros shows the symmetry")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialization")
    parser.add_argument(
        "--inputs", default="2", help="rows ';', columns ',' (e.g. '2;0.5' or '1,2;3,4') or a CSV file (default 2)"
    )
    parser.add_argument("--targets", default="0.5", help="same form as --inputs; class indices for cross_entropy")
    parser.add_argument("--loss", choices=LOSSES, default="mse", help="mse (mean), sse (½·sum) or cross_entropy")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9, help="for --optimizer momentum")
    parser.add_argument("--format", choices=("text", "json", "markdown", "dot"), default="text")
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


def run_explain_cli(args: argparse.Namespace) -> int:
    x = parse_matrix(args.inputs, "inputs")
    t = parse_matrix(args.targets, "targets", integer=args.loss == "cross_entropy")
    if len(t) != len(x):
        raise DataError(f"--inputs has {len(x)} rows but --targets has {len(t)}")
    n_out = int(t.max()) + 1 if args.loss == "cross_entropy" else t.shape[1]
    if args.loss == "cross_entropy":
        n_out = max(n_out, 2)
    model = build_mlp(args.model, x.shape[1], n_out, args.activation, args.seed, args.init)
    loss_fn = make_loss(args.loss)
    xt, tt = Tensor(x), Tensor(t)
    start = copy.deepcopy(model) if args.surface else None
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr, args.momentum)
    tr = trace(model, xt, tt, loss_fn, opt)
    sys.stdout.write(render_trace(tr, args.format))
    if args.graph:
        write_graph(tr, args.graph)
        print(f"wrote {args.graph}", file=sys.stderr)
    if args.surface:
        explain_surface(start, loss_fn, xt, tt, args, args.surface)
        print(f"wrote {args.surface}", file=sys.stderr)
    return 0
