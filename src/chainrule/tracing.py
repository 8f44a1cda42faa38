"""Trace one training step of any small model: every node of the graph, every gradient and update, checked.

`trace(model, inputs, targets, loss_fn, optimizer)` records the node table in forward order (value, the upstream
gradient dL/d(node), the gradient sent to each input), each parameter's gradient and the optimizer's update with
the state terms that make it (verified against the actual step), a finite-difference gradient check, and a
warning when hidden units start identical. Renderers: text, JSON (docs/explain-schema.json), Markdown, DOT;
`write_graph` draws SVG/PNG through Graphviz. `chainrule.explain` re-exports all of it.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ChainruleError, ConfigError
from .nn import fusion
from .tensor import Tensor, float64, no_grad

TRACE_SCHEMA_VERSION = "chainrule.trace/1"


class CrossCheckError(ChainruleError, AssertionError):
    """Autograd and the hand-derived chain rule disagree: nothing is printed."""


def fmt(v: float, digits: int = 10) -> str:
    """A number with `digits` significant digits (default 10, the example's precision; shortest form)."""
    v = float(v)
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


MAX_NODES = 1000  # graphs with more nodes are refused (trace(max_nodes=None) records them anyway)
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
    # ∂(this node)/∂(each input), elementwise, where it is one number per element (see _local_derivatives)
    local_grads: list[np.ndarray | None] = field(default_factory=list)


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
    buffers: list[str] = field(default_factory=list)  # buffers the step changed (BatchNorm running statistics)

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
                    "local_grads": [_tv(g) for g in n.local_grads],
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
            "buffers_updated": self.buffers,
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


# ops whose output element i depends only on element i of each input
ELEMENTWISE_OPS = frozenset(
    "add sub mul div pow neg exp log log1p sqrt abs sin cos tanh sigmoid relu leaky_relu elu gelu silu softplus "
    "log_sigmoid clamp sign where maximum minimum to clone dropout".split()
)


def _local_derivatives(n: Tensor) -> list[np.ndarray | None]:
    """∂n/∂(each input) as an array of the input's shape, where that is one number per element: for an elementwise
    op and an input of n's own shape (backward of a gradient of ones then gives exactly the diagonal of the
    Jacobian), and for any op between one-element tensors. None where the local derivative is a full Jacobian
    (matrix products, reductions, softmax, broadcast inputs)."""
    ones = Tensor(np.ones_like(n.data))
    sent = n._backward(ones)
    out = []
    for p, g in zip(n._prev, sent):
        exact = (n._op in ELEMENTWISE_OPS and p.shape == n.shape) or (p.data.size == 1 and n.data.size == 1)
        out.append(np.asarray(g.data).reshape(p.shape).copy() if exact and g is not None and p.requires_grad else None)
    return out


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


def _generators(model: Any) -> list[Any]:
    """The random streams a forward pass of `model` may draw from: the default generator and each module's own."""
    from .random import Generator, default_generator

    gens = [default_generator] + [v for m in model.modules() for v in vars(m).values() if isinstance(v, Generator)]
    return list({id(g): g for g in gens}.values())


def _gradcheck(
    model64: Any,
    loss_fn: Any,
    x64: Tensor,
    t64: Tensor,
    grads: list[np.ndarray | None],
    dtype: np.dtype,
    eps: float,
    rng: list[tuple[Any, dict]] = (),
) -> dict[str, Any]:
    """Central differences of the loss w.r.t. every parameter entry (at most 64 per parameter) in float64.

    An entry that fails the comparison at a kink (the one-sided differences disagree, e.g. relu at exactly 0)
    while the traced gradient equals one of them is counted in "kinks", not as a failure. `rng` holds
    (generator, state) pairs set before every evaluation, so that each one draws the traced step's random
    numbers (the same dropout mask)."""

    def loss_at() -> float:
        for gen, st in rng:
            gen.set_state(st)
        return float(loss_fn(model64(x64), t64).item())

    params = list(model64.parameters())
    max_abs, max_rel, n, kinks = 0.0, 0.0, 0, 0
    passed = True
    base = None  # the loss at the traced parameters, evaluated at the first failing entry
    rtol, atol = (1e-5, 1e-7) if dtype == np.float64 else (2e-3, 2e-5)
    with no_grad():
        for p, g in zip(params, grads):
            flat = p.data.reshape(-1)
            idx = range(flat.size) if flat.size <= 64 else np.unique(np.linspace(0, flat.size - 1, 64).astype(int))
            ga = np.zeros(flat.size) if g is None else np.asarray(g, np.float64).reshape(-1)
            for j in idx:
                orig = flat[j]
                flat[j] = orig + eps
                plus = loss_at()
                flat[j] = orig - eps
                minus = loss_at()
                flat[j] = orig
                num = (plus - minus) / (2 * eps)
                err = abs(num - ga[j])
                n += 1
                if err > atol + rtol * abs(num):
                    base = loss_at() if base is None else base
                    right, left = (plus - base) / eps, (base - minus) / eps
                    tol = atol + 1e-3 * max(abs(right), abs(left))  # one-sided differences: error O(eps)
                    if abs(right - left) > tol and min(abs(ga[j] - right), abs(ga[j] - left)) <= tol:
                        kinks += 1
                        continue
                    passed = False
                max_abs = max(max_abs, err)
                max_rel = max(max_rel, err / max(abs(num), abs(ga[j]), 1e-12))
    return {
        "method": f"central differences in float64, eps = {eps:g}, rtol = {rtol:g}, atol = {atol:g}",
        "passed": bool(passed),
        "max_abs_error": float(max_abs),
        "max_rel_error": float(max_rel),
        "elements_checked": n,
        "kinks": kinks,
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
    max_nodes: int | None = MAX_NODES,
) -> Trace:
    """Run one training step of `model` and record every number of it.

    Forward `loss = loss_fn(model(inputs), targets)`, backward, and `optimizer.step()` when an optimizer is given
    (the model's parameters ARE updated, as in training). Returns a `Trace` with the graph's nodes in forward
    order (value, upstream gradient dL/d(node), and the gradient sent to each input), every parameter's value,
    gradient and update with the optimizer's terms (checked against the actual step; `CrossCheckError` if they
    differ), a finite-difference gradient check in float64 on a copy of the model, and symmetry warnings.
    A graph of more than `max_nodes` nodes raises `ConfigError` after the forward pass, before anything changes.
    """
    pnames = dict(model.named_parameters())
    param_list = list(pnames.values())
    dtype = param_list[0].dtype if param_list else np.dtype(float64)
    x = _as_input(inputs, dtype)
    t = _as_input(targets, dtype)
    model64 = copy.deepcopy(model).double() if gradcheck else None
    # the random streams as the traced forward finds them: the gradient check replays its draws (dropout masks)
    rng = [(g, g.get_state()) for g in _generators(model64)] if gradcheck else []
    before = {n: p.data.copy() for n, p in pnames.items()}
    buffers = {n: np.array(b.data) for n, b in model.named_buffers()}
    with fusion(False):  # the graph shows the model's own ops: Linear and ReLU apart, not linear_relu
        loss = loss_fn(model(x), t)
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        raise ConfigError("trace: the loss function must return a one-element tensor")
    if not loss.requires_grad:
        raise ConfigError("trace: the loss does not depend on any parameter that requires grad")
    graph = _graph_nodes(loss)
    if max_nodes is not None and len(graph) > max_nodes:
        raise ConfigError(
            f"trace: the graph of this step has {len(graph)} nodes, more than the {max_nodes} explain shows node by "
            "node; use fewer layers or shorter sequences (a recurrent layer adds nodes per time step), or raise "
            "the limit (--max-nodes N, trace(max_nodes=None))"
        )
    if optimizer is not None:
        optimizer.zero_grad()
    for p in param_list:
        p.grad = None
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
                node.local_grads = _local_derivatives(n)
            elif not n.is_leaf:
                node.input_grads = node.local_grads = [None] * len(n._prev)
            nodes.append(node)
    for n in graph:  # free the graph now that every number is recorded
        n._backward, n._saved = None, ()

    grads = {name: None if p.grad is None else p.grad.data.copy() for name, p in pnames.items()}
    opt_info = None
    terms: dict[str, tuple[dict, str]] = {}
    if optimizer is not None:
        state = {id(k): copy.deepcopy(v) for k, v in optimizer.state.items()}  # keyed by tensor
        hyper: dict = {}
        formula = ""
        for name, p in pnames.items():
            if grads[name] is not None:
                tm, formula, hyper = _optimizer_terms(optimizer, p, before[name], grads[name], state)
                terms[name] = (tm, formula)
        optimizer.step()
        verified = bool(terms) and all("update" in tm for tm, _ in terms.values())
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
            "verified": verified,
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
        from .random import default_generator

        after = default_generator.get_state()  # as the traced step left it, restored after the check
        gc = _gradcheck(model64, loss_fn, x64, t64, [grads[n] for n in pnames], dtype, gradcheck_eps, rng)
        default_generator.set_state(after)
    else:
        gc = {
            "method": "not run",
            "passed": True,
            "max_abs_error": 0.0,
            "max_rel_error": 0.0,
            "elements_checked": 0,
            "kinks": 0,
        }
    warnings = _symmetry_warnings(model, before, grads)
    if not gc["passed"]:
        warnings.append(
            f"the finite-difference gradient check failed (max abs error {gc['max_abs_error']:.3g}); "
            "non-differentiable points such as relu at 0 can cause this"
        )
    changed = [n for n, b in model.named_buffers() if n in buffers and not np.array_equal(b.data, buffers[n])]
    return Trace(float(loss.item()), nodes, params, opt_info, gc, warnings, str(dtype), changed)


# ----------------------------------------------------------------------------- trace renderers


def _kinks(k: int) -> str:
    return (
        f"{k} {'entry lies' if k == 1 else 'entries lie'} at a kink (a non-differentiable point such as relu at 0): "
        "the one-sided differences disagree and the traced gradient equals one of them, so not compared"
    )


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
            _local_str(n),
            _tv_str(n.grad),
        ]
        for n in tr.nodes
    ]


def _local_str(n: TraceNode) -> str:
    """'input id: ∂node/∂input' for each input whose local derivative is elementwise, e.g. '3: 0.196612'."""
    parts = [f"{i}: {_tv_str(g)}" for i, g in zip(n.inputs, n.local_grads) if g is not None]
    return "; ".join(parts) or "—"


_NODE_HEADER = ["id", "name", "op", "inputs", "shape", "value", "local ∂node/∂input", "grad dL/d(node)"]


def trace_text(tr: Trace) -> str:
    L = [
        f"chainrule explain: one training step, loss = {fmt(tr.loss, TRACE_DIGITS)}",
        f"  computed in {tr.dtype}; printed to {TRACE_DIGITS} significant digits; tensors of more than {SMALL} "
        "elements shown as mean/std/min/max",
        "",
        "Graph, forward order (local = ∂node/∂input per input id, elementwise where that is one number per "
        "element; grad = the upstream gradient dL/d(node) arriving after backward)",
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
        L.append(
            "  the formula's update equals the optimizer's actual step"
            if o["verified"]
            else "  no formula known for this optimizer: the update shown is the measured step"
        )
    else:
        L += ["", "No optimizer: parameters not updated"]
    if tr.buffers:
        L.append(f"Buffers updated by the forward pass (training mode): {', '.join(tr.buffers)}")
    g = tr.gradcheck
    L += [
        "",
        f"Gradient check: {'passed' if g['passed'] else 'FAILED'} ({g['elements_checked']} entries, "
        f"max abs error {g['max_abs_error']:.3g}, max rel error {g['max_rel_error']:.3g}; {g['method']})",
    ]
    if g.get("kinks"):
        L.append(f"  {_kinks(g['kinks'])}")
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
        how = "verified against the step" if tr.optimizer["verified"] else "measured"
        L += ["", f"Optimizer **{tr.optimizer['name']}**: {tr.optimizer['formula']} ({how})."]
    if tr.buffers:
        L += ["", f"Buffers updated by the forward pass (training mode): {', '.join(tr.buffers)}."]
    g = tr.gradcheck
    L += [
        "",
        f"Gradient check: **{'passed' if g['passed'] else 'FAILED'}**, {g['elements_checked']} entries, "
        f"max abs error {g['max_abs_error']:.3g}." + (f" {_kinks(g['kinks'])}." if g.get("kinks") else ""),
    ]
    L += [f"\n> **Warning:** {w}" for w in tr.warnings]
    return "\n".join(L) + "\n"


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def trace_dot(tr: Trace) -> str:
    """Graphviz DOT text: one node per tensor, labelled with name, op, value and gradient; edges input → op,
    labelled with the local derivative ∂node/∂input where it is one number."""
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
        locals_ = n.local_grads or [None] * len(n.inputs)
        for i, local in zip(n.inputs, locals_):
            if local is not None and local.size == 1:  # a scalar local derivative labels its edge, as drawn by hand
                L.append(f'  n{i} -> n{n.id} [label="∂ {_dot_escape(_tv_str(local.reshape(()), 4))}", fontsize=9];')
            else:
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
