"""Captured training steps: trace one step, then replay it without building a graph.

Two ways, chosen at each trace. Scalar graphs (one-element float64 tensors, SGD) become generated straight-line
Python on floats (below); any other graph (the arrays of an MLP, any optimizer) becomes a tape of the ops'
NumPy rules, replayed on plain arrays (see `_ArrayPlan`).

A training step of a model made of one-element tensors (the reference example) spends almost all of its time on
bookkeeping: building graph nodes, walking them backward, wrapping NumPy scalars. `capture(loss_fn, optimizer)`
runs the first step eagerly, reads the graph it recorded, and writes one Python function that computes the same
forward values, the same gradients (the chain rule, node by node, in reverse) and the same SGD update on Python
floats, with the same arithmetic in the same order as the eager NumPy rules, so the results agree to the last bit.
Later calls run that function::

    step = cr.capture(loss_fn, opt)   # nothing runs yet
    loss = step(2.0, 0.5)             # traces (an eager step); later calls replay the generated code
    print(step.source)

Each op's rule is one line of `RULES`: the forward formula and the derivative for each input, side by side.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from . import functional as _F
from .errors import ConfigError
from .optim.optimizer import Optimizer
from .optim.sgd import SGD
from .tensor import _ANOMALY, _CLOCK, Tensor, _as_array, _Detached, _GradMode, _sum_to, float64

# Per-op rules on Python floats: {a}, {b} are the inputs' values, {y} the result's, {g} d(loss)/d(result), {c} pow's
# constant exponent. Forward formula, then d(loss)/d(each input) for each input, the arithmetic of the NumPy rules in
# ops/math.py term by term (floating-point results depend on the order of operations). `_exp`, `_log`... are NumPy's
# ufuncs, whose results differ from the math module's in the last bit for a few percent of arguments.
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    # rule key   forward                                                   derivatives, one per input
    "add":       ("{a} + {b}",                                             ("{g}", "{g}")),
    "sub":       ("{a} - {b}",                                             ("{g}", "-{g}")),
    "mul":       ("{a} * {b}",                                             ("{g} * {b}", "{g} * {a}")),
    "div":       ("{a} / {b}",                                             ("{g} / {b}", "-{g} * {a} / ({b} * {b})")),
    "neg":       ("-{a}",                                                  ("-{g}",)),
    "pow 2":     ("{a} * {a}",                                             ("{g} * 2.0 * {a}",)),
    "pow 0":     ("_pow({a}, {c})",                                        ("{g} * 0.0",)),
    "pow":       ("_pow({a}, {c})",                                        ("{g} * {c} * _pow({a}, {c} - 1)",)),
    "exp":       ("float(_exp({a}))",                                      ("{g} * {y}",)),
    "log":       ("float(_log({a}))",                                      ("{g} / {a}",)),
    "log1p":     ("float(_log1p({a}))",                                    ("{g} / ({a} + 1.0)",)),
    "sqrt":      ("float(_sqrt({a}))",                                     ("{g} / ({y} * 2.0)",)),
    "tanh":      ("float(_tanh({a}))",                                     ("{g} * (1.0 - {y} * {y})",)),
    "sin":       ("float(_sin({a}))",                                      ("{g} * float(_cos({a}))",)),
    "cos":       ("float(_cos({a}))",                                      ("-{g} * float(_sin({a}))",)),
    "abs":       ("abs({a})",                                              ("{g} * float(_sign({a}))",)),
    "sigmoid":   ("1.0 / (1.0 + float(_exp(-{a}))) if {a} > -700.0 else _sigmoid_low({a})", ("{g} * {y} * (1.0 - {y})",)),  # noqa: E501
    "sigmoid n-d": ("1.0 / (1.0 + float(_exp(-{a}))) if {a} >= 0.0 else _sigmoid_low({a})", ("{g} * {y} * (1.0 - {y})",)),  # noqa: E501
    "relu":      ("{a} if {a} > 0.0 or {a} != {a} else 0.0",               ("({g} if not {a} <= 0.0 else {g} * 0.0 if {g} - {g} == 0.0 else 0.0)",)),  # noqa: E501
    "sum":       ("{a} + 0.0",                                             ("{g}",)),  # NumPy's sum: 0.0 + a
    "mean":      ("{a} + 0.0",                                             ("{g}",)),  # (-0.0 is summed to 0.0)
    "reshape":   ("{a}",                                                   ("{g}",)),
    "clone":     ("{a}",                                                   ("{g}",)),
}  # fmt: skip


def _pow(x: float, c: float) -> float:
    """x ** c as the eager pow computes it (`ndarray ** c`, with NumPy's special cases for c = 0.5, -1, ...)."""
    return float(np.array(x) ** c)


def _sigmoid_low(x: float) -> float:
    """sigmoid(x) as e / (1 + e), e = exp(x): the eager rule where 1 / (1 + exp(-x)) would overflow."""
    e = float(np.exp(x))
    return e / (1.0 + e)


class _Stale(Exception):
    """A guard of the generated code failed: the step runs eagerly and is captured again."""


class _Eager(Exception):
    """A check of the inputs' values failed (e.g. a class index out of range): this step runs eagerly, as traced
    code can't say what the eager step does with such values; the capture is kept."""


_NONE = object()  # a gradient never made (None would match a parameter without gradient)


def _untraced(inputs: tuple[Any, ...]) -> float:
    raise _Stale


_NAMESPACE = {
    "_exp": np.exp,
    "_log": np.log,
    "_log1p": np.log1p,
    "_sqrt": np.sqrt,
    "_tanh": np.tanh,
    "_sin": np.sin,
    "_cos": np.cos,
    "_sign": np.sign,
    "_pow": _pow,
    "_sigmoid_low": _sigmoid_low,
    "_array": np.array,
    "_wrap": Tensor._wrap,
    "_CLOCK": _CLOCK,
    "_Stale": _Stale,
    "_GradMode": _GradMode,
    "_ANOMALY": _ANOMALY,
    "_refs": sys.getrefcount,
    "_as_input": None,  # set below
}


def _as_input(value: Any, i: int) -> float:
    """Input `i` of a step as a Python float (any one-element number, array or tensor)."""
    data = value.data if isinstance(value, Tensor) else value
    try:
        arr = np.asarray(data, dtype=float64)
    except (TypeError, ValueError):
        raise ConfigError(f"capture: input {i} is a {type(value).__name__}, not a number") from None
    if arr.size != 1:
        raise ConfigError(f"capture: input {i} has shape {arr.shape}; a captured step takes one-element inputs")
    return arr.item()


_NAMESPACE["_as_input"] = _as_input


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.data.shape)} and dtype {t.data.dtype}"


def _check_optimizer(optimizer: Any) -> list[Tensor]:
    """The optimizer's parameters, in group order, after checking that capture supports them."""
    if type(optimizer) is not SGD:
        raise ConfigError(f"capture supports chainrule.optim.SGD only, got the optimizer {type(optimizer).__name__}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for j, p in enumerate(params):
        d = p.data
        if type(d) is not np.ndarray or d.dtype != float64 or d.size != 1:
            raise ConfigError(
                f"capture: parameter {j} of the optimizer has {_describe(p)}; only one-element float64 parameters "
                "can be captured"
            )
    return params


def _graph(loss: Tensor) -> tuple[list[Tensor], list[Tensor], set[int]]:
    """(the results of ops in recording order, the leaves, the ids of the tensors that gradients reach) of loss's
    graph, walked before backward frees it. A detached tensor's source is part of the graph (its value is used),
    but gradients do not flow through `detach()`."""
    seen, stack, nodes, leaves = {id(loss)}, [loss], [], []
    while stack:
        t = stack.pop()
        (nodes if t._prev else leaves).append(t)
        for p in (t._source,) if type(t) is _Detached else t._prev:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    nodes.sort(key=lambda t: t._seq)  # a parent is always recorded before its results
    reach, stack = {id(loss)}, [loss]
    while stack:
        for p in stack.pop()._prev:
            if id(p) not in reach:
                reach.add(id(p))
                stack.append(p)
    return nodes, leaves, reach


def _literal(v: float, consts: dict[str, float]) -> str:
    """Python source for the constant v: its repr (exact for a float), or a name for inf and NaN."""
    if math.isfinite(v):
        return f"({v!r})" if v < 0 or (v == 0 and math.copysign(1.0, v) < 0) else repr(v)
    name = f"_c{len(consts)}"
    consts[name] = v
    return name


def _index(shape: tuple[int, ...]) -> str:
    """The index of the one element of an array of `shape`: `()`, `0`, `0, 0`..."""
    return ", ".join("0" for _ in shape) if shape else "()"


def _nested(expr: str, ndim: int) -> str:
    return "[" * ndim + expr + "]" * ndim


def _refuse_retained(t: Tensor) -> None:
    """A replay makes no intermediate tensors, so it can't set the `.grad` that retain_grad() asks for."""
    if t._retains_grad:
        raise ConfigError(f"capture: the result of {t._op} retains its gradient (retain_grad), not captured")


def _rule_key(t: Tensor) -> str:
    op = t._op
    if op == "pow":
        c = getattr(t._backward, "exponent", None)
        if len(t._prev) != 1 or c is None:
            raise ConfigError("capture: pow with a tensor exponent is not supported (use a constant exponent)")
        return "pow 2" if c == 2 else "pow 0" if c == 0 else "pow"
    if op == "sigmoid" and t._prev[0].data.ndim:
        return "sigmoid n-d"
    if op not in RULES:
        raise ConfigError(f"capture: the op {op!r} is not supported (supported: {', '.join(sorted(_OPS))})")
    return op


_OPS = {k.split()[0] for k in RULES}


class CapturedStep:
    """A training step `step(*inputs) -> float`, traced once and replayed: as generated code for a scalar model, as
    a tape of NumPy rules for an array model (`_ArrayPlan`: one per input signature; what follows is about the
    scalar code, docs/capture.md says what differs for arrays).

    `step(*inputs)` means exactly::

        optimizer.zero_grad()
        loss = loss_fn(*(the inputs as tensors: float64 0-d ones for a scalar model))
        loss.backward()
        optimizer.step()
        return float(loss)

    and leaves the parameters' `.data` (updated in place, version bumped), `.grad` and the optimizer's state
    (SGD's "momentum_buffer") exactly as those eager calls would, so eager steps can follow captured ones. A step
    that raises leaves them as they were (zero_grad runs after loss_fn: the same unless loss_fn reads `.grad`).

    The first call runs eagerly and records the graph; later calls run `source`, one generated function. The
    trace fixes everything but the inputs, the parameters' values and the optimizer's options (lr, momentum...,
    read at every call, so LR schedulers work). Leaves that are neither parameters nor inputs are constants whose
    values are baked into the code, and so is anything computed without recording: under no_grad, from `.item()`
    or `.data`, or from a detached tensor (a `detach()` used directly as an operand of a recorded op is recomputed
    from its source at every call). Python control flow in `loss_fn` keeps its traced outcome, as in
    torch.jit.trace. Each replay checks cheaply that the optimizer's groups, parameters, their arrays and the
    momentum buffers are those it was generated for; if not (or under no_grad or detect_anomaly, or where Python
    float arithmetic would raise, e.g. a division by zero, or a parameter's array is read-only: its values written
    so far are undone), the step runs eagerly and, where needed, is captured again.
    """

    def __init__(self, loss_fn: Callable[..., Tensor], optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"capture: optimizer must be a chainrule optimizer, got {type(optimizer).__name__}")
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.source: str | None = None  # the generated function, after the first call
        self._fn: Callable[[tuple[Any, ...]], float] = _untraced
        self._n_inputs: int | None = None
        self._compiled: dict[str, Any] = {}
        self._plans: dict[tuple, _ArrayPlan] = {}  # array graphs: one tape per input signature (shapes, dtypes)
        self._scalar = False  # whether _fn is generated scalar code

    def __call__(self, *inputs: Any) -> float:
        """One training step on `inputs` (numbers, arrays or tensors); returns the loss before the update."""
        try:
            return self._fn(inputs)
        except _Stale:  # raised before anything was written: the step runs eagerly (and is captured)
            return self._trace(inputs)
        except ArithmeticError:  # scalar code: raised before anything was written
            if not self._scalar:
                raise
            return self._trace(inputs)

    def _trace(self, inputs: tuple[Any, ...]) -> float:
        """The eager step, capturing its graph on the way (unless recording is off or detect_anomaly is on)."""
        if _scalar_step(self.optimizer, inputs):
            return self._trace_scalar(inputs)
        return self._trace_arrays(inputs)

    def _trace_scalar(self, inputs: tuple[Any, ...]) -> float:
        if self._n_inputs is not None and len(inputs) != self._n_inputs:
            raise ConfigError(
                f"capture: the step was traced with {self._n_inputs} inputs, got {len(inputs)}; capture the "
                "loss function again for another signature"
            )
        opt = self.optimizer
        params = _check_optimizer(opt)
        capture = _GradMode.enabled and _ANOMALY[0] is None
        values = [_as_input(v, i) for i, v in enumerate(inputs)]
        # inputs require grad while tracing, so that ops on inputs alone are recorded too (not baked in)
        xs = [Tensor(np.array(v, dtype=float64), requires_grad=capture) for v in values]
        loss = _check_loss(self.loss_fn(*xs))
        plan = _Plan(loss, xs, params, opt) if capture else None  # may refuse: before anything is updated
        opt.zero_grad()  # only now: a refusal (or an error in loss_fn) leaves the gradients as they were too
        loss.backward()
        opt.step()
        if plan is not None:
            source = plan.source()
            code = self._compiled.get(source)
            if code is None:
                code = self._compiled[source] = compile(source, "<chainrule.capture>", "exec")
            namespace = {**_NAMESPACE, **plan.bindings()}
            exec(code, namespace)
            self._fn, self.source, self._n_inputs, self._scalar = namespace["step"], source, len(inputs), True
        return float(loss.data.reshape(-1)[0])

    def _trace_arrays(self, inputs: tuple[Any, ...], capture: bool = True) -> float:
        opt = self.optimizer
        arrays = [_input_array(v, i) for i, v in enumerate(inputs)]
        capture = capture and _GradMode.enabled and _ANOMALY[0] is None
        params = [p for g in opt.param_groups for p in g["params"]]
        # float inputs require grad while tracing, so that ops on inputs are recorded too (not baked in)
        xs = [Tensor(a, requires_grad=capture and a.dtype.kind == "f") for a in arrays]
        loss = _check_loss(self.loss_fn(*xs))
        plan = _ArrayPlan(loss, xs, params, opt) if capture else None  # may refuse: before anything is updated
        opt.zero_grad()  # only now: a refusal (or an error in loss_fn) leaves the gradients as they were too
        loss.backward()
        opt.step()
        if plan is not None:
            if len(self._plans) >= _MAX_PLANS:  # batch shapes that keep changing: keep the memory bounded
                self._plans.clear()
            self._plans[_signature(arrays)] = plan
            self._fn, self._scalar = self._replay, False
        return float(loss.data.reshape(-1)[0])

    def _replay(self, inputs: tuple[Any, ...]) -> float:
        """Run the tape traced for these inputs' shapes and dtypes (or raise _Stale)."""
        arrays = []
        for i, v in enumerate(inputs):
            if type(v) is not np.ndarray:
                v = v.data if type(v) is Tensor else _input_array(v, i)
            arrays.append(v)
        plan = self._plans.get(_signature(arrays))
        if plan is None or not _GradMode.enabled or _ANOMALY[0] is not None:
            raise _Stale
        try:
            return plan.run(arrays)
        except _Eager:
            return self._trace_arrays(inputs, capture=False)


_MAX_PLANS = 16


def _signature(arrays: list[np.ndarray]) -> tuple:
    return tuple([(a.shape, a.dtype) for a in arrays])


def _check_loss(loss: Any) -> Tensor:
    if not isinstance(loss, Tensor):
        raise ConfigError(f"capture: loss_fn must return a Tensor, got {type(loss).__name__}")
    if loss.data.size != 1:
        raise ConfigError(f"capture: loss_fn must return a one-element loss, got a tensor of shape {loss.shape}")
    return loss


def _scalar_step(opt: Optimizer, inputs: tuple[Any, ...]) -> bool:
    """Whether the step is for the scalar code: SGD over one-element float64 parameters, one-element inputs."""
    if type(opt) is not SGD:
        return False
    for g in opt.param_groups:
        for p in g["params"]:
            d = p.data
            if type(d) is not np.ndarray or d.dtype != float64 or d.size != 1:
                return False
    for v in inputs:
        if isinstance(v, Tensor):
            v = v.data
        if isinstance(v, np.ndarray | np.generic):
            if v.size != 1 or v.dtype.kind not in "fiub":
                return False
        elif not isinstance(v, int | float):
            return False
    return True


def _input_array(value: Any, i: int) -> np.ndarray:
    """Input `i` of an array step as the array a tensor made from it holds (no copy for arrays and tensors)."""
    if isinstance(value, Tensor):
        return value.data
    if type(value) is np.ndarray:
        return value
    try:
        return _as_array(value, None)
    except (TypeError, ValueError):
        raise ConfigError(f"capture: input {i} is a {type(value).__name__}, not an array, tensor or number") from None


def capture(loss_fn: Callable[..., Tensor], optimizer: Optimizer) -> CapturedStep:
    """A captured training step: `step(*inputs)` = zero_grad, loss_fn(*inputs), backward, optimizer.step.

    Args:
        loss_fn: a function of the inputs as tensors (e.g. a batch xb and its targets yb) returning a one-element
            loss tensor, built from the optimizer's parameters, the inputs and constants. Scalar graphs (SGD over
            one-element float64 parameters, one-element inputs) may use the ops of `RULES` (add, sub, mul, div,
            neg, pow with a constant exponent, exp, log, log1p, sqrt, tanh, sin, cos, abs, sigmoid, relu, and
            one-element sum, mean, reshape, clone); array graphs the ops of `ARRAY_OPS` (linear, the fused
            linear + ReLU of nn.Sequential, relu, tanh, sigmoid, and cross-entropy of (N, C) logits against
            int64 class indices given as an input).
        optimizer: a chainrule optimizer: `chainrule.optim.SGD` (any options) for scalar graphs; any (SGD, Adam,
            AdamW...) for array graphs, whose `step()` runs as it is.

    Returns:
        A `CapturedStep`. Nothing runs until its first call, which runs eagerly and generates the code
        (`step.source`, scalar graphs) or the tape (array graphs, one per input signature) that later calls
        replay. Unsupported graphs raise `chainrule.errors.ConfigError` naming the op, shape, parameter or
        optimizer at fault. See `CapturedStep` for what is fixed by the trace.
    """
    return CapturedStep(loss_fn, optimizer)


class _Plan:
    """One traced step, analysed: the graph's nodes, leaves classified, and the optimizer's layout."""

    def __init__(self, loss: Tensor, xs: list[Tensor], params: list[Tensor], opt: SGD) -> None:
        nodes, leaves, reach = _graph(loss)
        self.opt, self.params, self.n_inputs = opt, params, len(xs)
        pindex = {id(p): j for j, p in enumerate(params)}
        xindex = {id(x): i for i, x in enumerate(xs)}
        self.consts: dict[str, float] = {}
        self.name: dict[int, str] = {}  # id(tensor) -> its value's expression in the generated code
        self.grad_param: dict[int, int] = {}  # id(parameter that gets a gradient) -> its index
        for k, t in enumerate(nodes):
            if t.data.dtype != float64 or t.data.size != 1:
                raise ConfigError(
                    f"capture: the result of {t._op} has {_describe(t)}; only one-element float64 tensors can be "
                    "captured"
                )
            _refuse_retained(t)
            self.name[id(t)] = f"t{k}"
        for t in leaves:
            if type(t) is _Detached:
                continue
            if id(t) in pindex:
                self.name[id(t)] = f"w{pindex[id(t)]}"
                if t.requires_grad and id(t) in reach:
                    self.grad_param[id(t)] = pindex[id(t)]
            elif id(t) in xindex:
                self.name[id(t)] = f"x{xindex[id(t)]}"
            elif t.requires_grad and id(t) in reach:
                raise ConfigError(
                    f"capture: the loss depends on a tensor of {_describe(t)} that requires grad but is not a "
                    "parameter of the optimizer (add it to the optimizer, or detach it)"
                )
            elif t.data.dtype != float64 or t.data.size != 1:
                raise ConfigError(
                    f"capture: a constant of {_describe(t)} is used; only one-element float64 tensors can be captured"
                )
            else:
                self.name[id(t)] = _literal(float(t.data.reshape(-1)[0]), self.consts)
        for t in leaves:  # detach(): the value of its source (a parameter, input, constant or result), no gradient
            if type(t) is _Detached:
                source = t._source
                while type(source) is _Detached:
                    source = source._source
                self.name[id(t)] = self.name[id(source)]
        self.keys = [_rule_key(t) for t in nodes]
        # pow's constant exponents, read now: backward frees the rules that hold them
        self.exponents = {id(t): t._backward.exponent for t in nodes if t._op == "pow"}
        # nodes whose gradient reaches a parameter: the backward pass computes only those
        needs = set(self.grad_param)
        for t in nodes:
            if id(t) in reach and any(id(p) in needs for p in t._prev):
                needs.add(id(t))
        if id(loss) not in needs:
            raise ConfigError("capture: the loss does not depend on any parameter of the optimizer that requires grad")
        self.nodes, self.needs, self.loss = nodes, needs, loss
        # the parameters' groups, and each group's update as the eager SGD would pick it
        self.groups = [list(g["params"]) for g in opt.param_groups]
        self.modes = [_mode(g) for g in opt.param_groups]

    def bindings(self) -> dict[str, Any]:
        """The objects the generated code refers to: the optimizer, parameters, their arrays and buffers."""
        b: dict[str, Any] = {"_opt": self.opt, "_state": self.opt.state, **self.consts}
        for j in self.grad_param.values():
            b[f"_gt{j}"] = b[f"_ga{j}"] = _NONE  # the gradient tensor and array made last time (see _grad_lines)
        for j, p in enumerate(self.params):
            b[f"W{j}"], b[f"A{j}"] = p, p.data
            if id(p) in self.grad_param and self.modes[self._group_of(j)][0] == "momentum":
                s = self.opt.state[p]
                b[f"S{j}"], b[f"B{j}"] = s, s["momentum_buffer"]
        return b

    def _group_of(self, j: int) -> int:
        n = 0
        for gi, g in enumerate(self.groups):
            n += len(g)
            if j < n:
                return gi
        raise AssertionError(j)  # pragma: no cover

    def source(self) -> str:
        """The generated `step(x0, x1, ...)`: guards, forward, chain rule, SGD update, write-back."""
        xs = ", ".join(f"x{i}" for i in range(self.n_inputs)) + ("," if self.n_inputs == 1 else "")
        lines = [
            "def step(inputs):",
            f"    global {', '.join(f'_gt{j}, _ga{j}' for j in sorted(self.grad_param.values()))}",
            f"    if len(inputs) != {self.n_inputs} or not _GradMode.enabled or _ANOMALY[0] is not None:",
            "        raise _Stale  # the eager step says what is wrong, or records nothing, or checks for anomalies",
            f"    {xs} = inputs" if xs else "    # no inputs",
            "    # inputs as Python floats",
        ]
        for i in range(self.n_inputs):
            lines.append(f"    if type(x{i}) is not float:")
            lines.append(f"        x{i} = _as_input(x{i}, {i})")
        lines += self._guards()
        lines.append("    # forward")
        for k, t in enumerate(self.nodes):
            fwd = RULES[self.keys[k]][0]
            lines.append(f"    t{k} = {self._fill(fwd, t)}  # {t._op}")
        lines += self._backward()
        lines += self._update()
        lines.append(f"    return {self.name[id(self.loss)]}")
        return "\n".join(lines) + "\n"

    def _fill(self, template: str, t: Tensor, g: str = "") -> str:
        names = [self.name[id(p)] for p in t._prev]
        c = self.exponents.get(id(t))
        c_src = "" if c is None else _literal(float(c), self.consts) if not isinstance(c, int) else repr(c)
        if isinstance(c, int) and c < 0:
            c_src = f"({c})"
        return template.format(a=names[0], b=names[1] if len(names) > 1 else "", y=self.name[id(t)], g=g, c=c_src)

    def _guards(self) -> list[str]:
        lines = [
            "    # guards: the optimizer's groups, parameters, arrays and buffers are those captured (else: eager)",
            "    groups = _opt.param_groups",
            f"    if len(groups) != {len(self.groups)} or _opt.state is not _state:",
            "        raise _Stale",
        ]
        j = 0
        for gi, (group, mode) in enumerate(zip(self.groups, self.modes)):
            lines.append(f"    G{gi} = groups[{gi}]")
            lines.append(f'    P{gi} = G{gi}["params"]')
            same = [f"len(P{gi}) != {len(group)}"] + [f"P{gi}[{i}] is not W{j + i}" for i in range(len(group))]
            lines.append(f"    if {' or '.join(same)}:")
            lines.append("        raise _Stale")
            lines += _option_lines(gi, mode)
            j += len(group)
        checks, buffers = [], self._buffer_names()
        for j, p in enumerate(self.params):
            checks.append(f"W{j}.data is not A{j}")
            checks.append(f"{'not ' if p.requires_grad else ''}W{j}.requires_grad")
            if f"B{j}" in buffers:
                checks.append(f"_state.get(W{j}) is not S{j} or S{j}.get('momentum_buffer') is not B{j}")
        lines.append(f"    if {' or '.join(checks)}:")
        lines.append("        raise _Stale")
        for j in range(len(self.params)):
            lines.append(f"    w{j} = A{j}.item()")
        return lines

    def _buffer_names(self) -> set[str]:
        """The names of the momentum buffers that the update reads and writes."""
        return {
            f"B{j}"
            for j, p in enumerate(self.params)
            if id(p) in self.grad_param and self.modes[self._group_of(j)][0] == "momentum"
        }

    def _backward(self) -> list[str]:
        lines = [
            "    # backward: the chain rule, from the loss back, in reverse recording order",
            f"    d{self.name[id(self.loss)]} = 1.0",
        ]
        assigned = {id(self.loss)}
        for k in range(len(self.nodes) - 1, -1, -1):
            t = self.nodes[k]
            if id(t) not in self.needs:
                continue
            derivs = RULES[self.keys[k]][1]
            for p, d in zip(t._prev, derivs):
                if id(p) not in self.needs:
                    continue
                expr = self._fill(d, t, g=f"dt{k}")
                target = f"d{self.name[id(p)]}"
                if id(p) in assigned:
                    lines.append(f"    {target} = {target} + {expr}  # {t._op}")
                else:
                    assigned.add(id(p))
                    lines.append(f"    {target} = {expr}  # {t._op}")
        return lines

    def _update(self) -> list[str]:
        lines = ["    # SGD update (the arithmetic of chainrule.optim.SGD)"]
        writes = ["    # write back: values in place, one in-place clock tick, new gradients, momentum buffers"]
        values = []  # (A{j}[index] = n{j}, its undo A{j}[index] = w{j}) for the parameters updated
        j = 0
        updated = []
        for gi, (group, mode) in enumerate(zip(self.groups, self.modes)):
            for p in group:
                shape = p.data.shape
                if id(p) not in self.grad_param:
                    writes.append(f"    W{j}.grad = None")
                    j += 1
                    continue
                w, dw = f"w{j}", f"dw{j}"
                e = dw
                kind, wd, maximize = mode[0], mode[2], mode[3]
                if kind != "plain":
                    if wd:
                        lines.append(f"    e{j} = {w} * wd{gi} {'-' if maximize else '+'} {dw}")
                        e = f"e{j}"
                    elif maximize:
                        lines.append(f"    e{j} = -{dw}")
                        e = f"e{j}"
                step = e
                if kind == "momentum":
                    damp, nesterov = mode[1], mode[4]
                    lines.append(f"    b{j} = B{j}.item() * mom{gi} + {e}{f' * omd{gi}' if damp else ''}")
                    step = f"b{j}"
                    if nesterov:
                        lines.append(f"    s{j} = {e} + b{j} * mom{gi}")
                        step = f"s{j}"
                    writes.append(f"    B{j}[{_index(shape)}] = b{j}")
                lines.append(f"    n{j} = {w} - {step} * lr{gi}")
                values.append((f"A{j}[{_index(shape)}] = n{j}", f"A{j}[{_index(shape)}] = {w}", f"A{j}"))
                writes += _grad_lines(j, shape)
                updated.append(j)
                j += 1
        if values:  # first, so that a read-only value (ValueError) is undone before anything else is written
            undo = [f"        if {a}.flags.writeable:\n            {u}" for _, u, a in values]
            writes[1:1] = [
                "    try:",
                *(f"        {w}" for w, _, _ in values),
                "    except ValueError:  # a read-only value: undo the ones written; the eager step names it",
                *undo,
                "        raise _Stale",
            ]
        if updated:
            writes.append("    _CLOCK[0] += 1")
            writes.append(f"    {' = '.join(f'W{j}._ver' for j in updated)} = _CLOCK[0]")
        return lines + writes


def _grad_lines(j: int, shape: tuple[int, ...]) -> list[str]:
    """Set parameter j's `.grad` to its gradient dw{j}. Eager backward makes a new tensor (after zero_grad); where the
    one this code made last time is still `.grad` and nothing else holds it or its array (reference counts), writing
    into it leaves the same observable state at a fraction of the cost."""
    sole_tensor, sole_array = _SOLE_GRAD
    return [
        f"    G = W{j}.grad",
        f"    if G is _gt{j} and G.data is _ga{j} and _refs(G) == {sole_tensor} and _refs(_ga{j}) == {sole_array}:",
        f"        _ga{j}[{_index(shape)}] = dw{j}",
        "    else:",
        f"        _ga{j} = _array({_nested(f'dw{j}', len(shape))})",
        f"        W{j}.grad = _gt{j} = _wrap(_ga{j})",
    ]


def _probe_sole_grad() -> tuple[int, int]:
    """The reference counts that `_grad_lines`' test reads for a gradient that nothing else holds, measured with
    the same code (they differ between CPython versions)."""
    src = "def probe():\n    G = W0.grad\n    return _refs(G), _refs(_ga0)\n"
    w = Tensor(np.zeros(()))
    ns: dict[str, Any] = {"_refs": sys.getrefcount, "W0": w, "_ga0": np.zeros(())}
    w.grad = ns["_gt0"] = Tensor._wrap(ns["_ga0"])
    exec(compile(src, "<chainrule.capture>", "exec"), ns)
    return ns["probe"]()


_SOLE_GRAD = [0, 0]
_SOLE_GRAD[:] = _probe_sole_grad()


def _mode(group: dict[str, Any]) -> tuple[str, bool, bool, bool, bool]:
    """(update kind, dampening on, weight decay on, maximize, nesterov) as the eager SGD decides them."""
    if not group["momentum"] and not group["weight_decay"] and not group["maximize"]:
        return ("plain", False, False, False, False)
    mom = float(group["momentum"])
    kind = "momentum" if mom else "sgd"
    damp = bool(float(group["dampening"])) and kind == "momentum"
    nesterov = bool(group["nesterov"]) and kind == "momentum"
    return (kind, damp, bool(float(group["weight_decay"])), bool(group["maximize"]), nesterov)


def _option_lines(gi: int, mode: tuple[str, bool, bool, bool, bool]) -> list[str]:
    """Read group gi's options; raise _Stale where they no longer select the update the code was made for."""
    g = f"G{gi}"
    if mode[0] == "plain":
        return [
            f'    if {g}["momentum"] or {g}["weight_decay"] or {g}["maximize"]:',
            "        raise _Stale",
            f'    lr{gi} = float({g}["lr"])',
        ]
    kind, damp, wd, maximize, nesterov = mode
    lines = [
        f'    lr{gi}, mom{gi}, wd{gi} = float({g}["lr"]), float({g}["momentum"]), float({g}["weight_decay"])',
    ]
    if kind == "momentum":
        lines.append(f'    omd{gi} = 1 - float({g}["dampening"])')
        flags = f'(bool(mom{gi}), {g}["dampening"] != 0, bool(wd{gi}), bool({g}["maximize"]), bool({g}["nesterov"]))'
        want = (True, damp, wd, maximize, nesterov)
    else:
        flags = f'(bool(mom{gi}), bool(wd{gi}), bool({g}["maximize"]))'
        want = (False, wd, maximize)
    lines.append(f"    if {flags} != {want!r}:")
    lines.append("        raise _Stale")
    return lines


# ----------------------------------------------------------------------------- array graphs

# the array ops a tape can replay: each eager op's `np_backward.replay` names its NumPy rules (see ops/math.py)
ARRAY_OPS = ("linear", "linear_relu", "relu", "tanh", "sigmoid", "cross_entropy")


def _checked_cross_entropy(x: np.ndarray, t: np.ndarray, reduction: str, ignore_index: int) -> tuple:
    """`_cross_entropy_fwd` for targets that are an input: eager cross_entropy takes the fused rule only for class
    indices in [0, C), none equal to its ignore_index (it ignores or refuses the others), so other values run the
    eager step."""
    c = x.shape[1]
    if t.size and (np.maximum.reduce(t.view(np.uint64)) >= c or (0 <= ignore_index < c and (t == ignore_index).any())):
        raise _Eager
    return _F._cross_entropy_fwd(x, t, reduction)


_CHECKED = {_F._cross_entropy_fwd: _checked_cross_entropy}


def _grad_tensor(g: Any, dtype: np.dtype, stolen: set[int]) -> Tensor:
    """The `.grad` that eager backward (`_accumulate` after zero_grad) makes from the NumPy gradient g: the array
    itself unless it is a view, another parameter's or of another dtype (then a copy)."""
    arr = np.asarray(g)
    if arr is not g:  # g was a NumPy scalar: arr is a new array
        return Tensor._wrap(arr if arr.dtype == dtype else arr.astype(dtype))
    if arr.base is not None or id(arr) in stolen or arr.dtype != dtype:
        arr = arr.astype(dtype, copy=True)
    stolen.add(id(arr))
    return Tensor._wrap(arr)


class _ArrayPlan:
    """One traced step of an array graph as a tape: the ops' NumPy rules in recording order (forward), then in
    the engine's order (backward), on slots holding arrays.

    Slots: the inputs, then the optimizer's parameters (their `.data` read at every call), then one-element leaves
    that are neither (constants, read from their tensor at every call), then the arguments of the rules that are
    not tensors (a reduction, cross-entropy's target when it is an input's array: that input's slot), then the
    ops' results. Backward runs the rules of the results a parameter's gradient depends on, from the highest
    recording number down (the order of `_backward_np`), summing into a slot as `old + new` in that order, with
    `_sum_to` where a gradient has another shape than its target, so that every gradient is eager's, bit for bit.
    """

    def __init__(self, loss: Tensor, xs: list[Tensor], params: list[Tensor], opt: Optimizer) -> None:
        nodes, leaves, reach = _graph(loss)
        n_in, n_p = len(xs), len(params)
        self.opt, self.params, self.n_in = opt, params, n_in
        self.param_sig = [(p.data.shape, p.data.dtype, p.requires_grad) for p in params]
        self.seen: list[Any] = [None] * len(params)  # see run
        self.grad_flags = [p.requires_grad for p in params]
        slot: dict[int, int] = {id(x): i for i, x in enumerate(xs)}
        for j, p in enumerate(params):
            slot.setdefault(id(p), n_in + j)
        values: list[Any] = [None] * (n_in + n_p)
        self.live: list[tuple[int, Tensor, tuple, np.dtype]] = []  # (slot, leaf, its shape, dtype)
        pindex = {id(p) for p in params}
        for t in leaves:
            if type(t) is _Detached or id(t) in slot:
                continue
            if t.requires_grad and id(t) in reach:
                raise ConfigError(
                    f"capture: the loss depends on a tensor of {_describe(t)} that requires grad but is not a "
                    "parameter of the optimizer (add it to the optimizer, or detach it)"
                )
            if t.data.size != 1:
                raise ConfigError(
                    f"capture: the loss depends on a tensor of {_describe(t)} that is neither an input nor a "
                    "parameter of the optimizer; pass it to the step as an input"
                )
            slot[id(t)] = len(values)
            values.append(None)
            self.live.append((slot[id(t)], t, t.data.shape, t.data.dtype))
        rules = []
        for t in nodes:
            rule = getattr(t._np_backward, "replay", None)
            if rule is None:
                raise ConfigError(
                    f"capture: the op {t._op!r} is not supported in array graphs (supported: {', '.join(ARRAY_OPS)}"
                    "; random or stateful layers such as Dropout and BatchNorm can't be captured)"
                )
            _refuse_retained(t)
            rules.append(rule)
        args_per_node = []  # (forward rule, slots of its extra arguments), for each result
        for t, (fwd, _, extra) in zip(nodes, rules):
            args = []
            for a in extra:
                if isinstance(a, np.ndarray):
                    i = next((i for i, x in enumerate(xs) if x.data is a), None)
                    if i is None:
                        cast = [f"input {i} is {x.data.dtype}" for i, x in enumerate(xs) if x.data.shape == a.shape]
                        raise ConfigError(
                            f"capture: {t._op} reads an array of shape {a.shape} and dtype {a.dtype} that is not one "
                            "of the step's inputs (e.g. a target computed inside loss_fn, or converted: "
                            f"{', '.join(cast) or 'no input has its shape'}); pass it to the step as an input"
                        )
                    args.append(i)
                    fwd = _CHECKED.get(fwd, fwd)
                else:
                    args.append(len(values))
                    values.append(a)
            if fwd is _checked_cross_entropy:
                args.append(len(values))
                values.append(t._np_backward.ignore_index)
            args_per_node.append((fwd, args))
        first = len(values)
        for k, t in enumerate(nodes):
            slot[id(t)] = first + k
        values += [None] * len(nodes)
        for t in leaves:  # detach(): the value of its source, no gradient
            if type(t) is _Detached:
                source = t._source
                while type(source) is _Detached:
                    source = source._source
                if id(source) not in slot:
                    raise ConfigError(f"capture: a detached tensor of {_describe(t)} comes from outside the graph")
                slot[id(t)] = slot[id(source)]
        self.values = values
        self.forward = [
            (fwd, tuple(slot[id(p)] for p in t._prev) + tuple(args), first + k)
            for k, (t, (fwd, args)) in enumerate(zip(nodes, args_per_node))
        ]
        # what gradients are needed: the parameters that require grad and get one, the results leading to them
        grad_params = {id(p) for p in params if p.requires_grad and id(p) in reach and id(p) in pindex}
        needs = set(grad_params)
        for t in nodes:
            if id(t) in reach and any(id(p) in needs for p in t._prev):
                needs.add(id(t))
        if id(loss) not in needs:
            raise ConfigError("capture: the loss does not depend on any parameter of the optimizer that requires grad")
        self.backward = []
        order: list[int] = []  # the parameters in the order they first get a gradient (eager's dict order)
        for k in range(len(nodes) - 1, -1, -1):  # recording order reversed = descending _seq
            t = nodes[k]
            if id(t) not in needs:
                continue
            flags = tuple(id(p) in needs for p in t._prev)
            targets = tuple(slot[id(p)] if id(p) in needs else -1 for p in t._prev)
            shapes = tuple(p.data.shape for p in t._prev)
            self.backward.append((rules[k][1], k, first + k, flags, targets, shapes))
            for p in t._prev:
                if id(p) in grad_params and slot[id(p)] - n_in not in order:
                    order.append(slot[id(p)] - n_in)
        self.order = [(j, params[j], params[j].data.dtype) for j in order]
        self.loss_slot = slot[id(loss)]
        d = loss.data
        self.seed_dtype, self.seed_shape = d.dtype, d.shape
        self.n_nodes = len(nodes)

    def _check(self, p: Tensor, j: int) -> bool:
        """Whether parameter j (whose array changed since the last call) still has the traced shape and dtype."""
        shape, dtype, _ = self.param_sig[j]
        d = p.data
        if d.shape != shape or d.dtype != dtype:
            return False
        self.seen[j] = d
        return True

    def run(self, arrays: list[np.ndarray]) -> float:
        """One captured step on the inputs' arrays; raises _Stale (nothing written) when a guard fails."""
        opt, params, n_in = self.opt, self.params, self.n_in
        groups = opt.param_groups
        current = groups[0]["params"] if len(groups) == 1 else [p for g in groups for p in g["params"]]
        if len(current) != len(params):
            raise _Stale
        values = self.values.copy()
        values[:n_in] = arrays
        seen = self.seen  # the parameters' arrays at the last call: those pass the shape and dtype checks
        j = n_in
        for p, q, a, rg in zip(current, params, seen, self.grad_flags):
            d = p.data
            if p is not q or p.requires_grad is not rg or (d is not a and not self._check(p, j - n_in)):
                raise _Stale
            values[j] = d
            j += 1
        for i, t, shape, dtype in self.live:
            d = t.data
            if d.shape != shape or d.dtype != dtype:
                raise _Stale
            values[i] = d
        ctxs: list[Any] = [None] * self.n_nodes
        k = 0
        for fwd, args, out in self.forward:
            values[out], ctxs[k] = fwd(*[values[i] for i in args])
            k += 1
        # backward, as `_backward_np`: the seed, then each rule, summing into the slots in the same order
        grads: list[Any] = [None] * len(values)
        shape = self.seed_shape
        grads[self.loss_slot] = np.ones(shape, self.seed_dtype) if shape else self.seed_dtype.type(1)
        for bwd, k, out, flags, targets, shapes in self.backward:
            for i, pshape, pg in zip(targets, shapes, bwd(ctxs[k], grads[out], flags)):
                if i < 0 or pg is None:
                    continue
                if pg.shape != pshape:
                    pg = _sum_to(pg, pshape)
                old = grads[i]
                grads[i] = pg if old is None else old + pg
        del ctxs
        opt.zero_grad()
        stolen: set[int] = set()
        wrap = Tensor._wrap
        for j, p, dtype in self.order:  # the usual case of `_grad_tensor` inline: a new array of the right dtype
            g = grads[n_in + j]
            if type(g) is np.ndarray and g.base is None and g.dtype is dtype and id(g) not in stolen:
                stolen.add(id(g))
                p.grad = wrap(g)
            else:
                p.grad = _grad_tensor(g, dtype, stolen)
        opt.step()
        return float(values[self.loss_slot].reshape(-1)[0])
