"""Export a chainrule model to ONNX: `chainrule.onnx.export(model, example_input, path)`.

The model is a layer (Linear, Conv2d, ...) or a Sequential of layers, nested as deep as wanted (models built
from a spec, with its Select and Last layers, included); each layer is translated by the rule registered under
its class name. The example input is run through the model once, in
eval mode, to learn every layer's input shape. Floating weights and inputs are exported as float32, indices
(Embedding) as int64. Inference semantics are exported: BatchNorm uses its running statistics, Dropout is the
identity. Needs the `onnx` extra: `pip install "chainrule[onnx]"`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ChainruleError
from .nn.module import Module
from .tensor import Tensor, no_grad

__all__ = ["SUPPORTED_LAYERS", "export"]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ChainruleError('ONNX export needs the onnx package: pip install "chainrule[onnx]"') from e
    return onnx


def _arr(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        return v.data
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _tuple(v: Any, n: int) -> list[int]:
    return [int(a) for a in v] if isinstance(v, (tuple, list)) else [int(v)] * n


class _Graph:
    """Collects nodes and initializers; every value gets a fresh unique name."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: Any, dtype: Any = np.float32) -> str:
        name = self._name(hint)
        arr = np.array(value, dtype=dtype, order="C")  # not ascontiguousarray: it makes scalars 1-d
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, n_out: int = 1, **attrs: Any) -> Any:
        outs = [self._name(f"{hint}_{op}") for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op, inputs, outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs


# A rule: (graph, layer, path, input name, input array seen at trace time) -> output name(s).
Rule = Callable[[_Graph, Module, str, str, np.ndarray], Any]
_RULES: dict[str, Rule] = {}


def _rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for n in names:
            _RULES[n] = fn
        return fn

    return register


def _unsupported(path: str, m: Module, why: str) -> ChainruleError:
    return ChainruleError(f"onnx export: layer '{path or 'model'}' ({type(m).__name__}) {why}")


# ----------------------------------------------------------------------------- elementwise


@_rule("Identity", "Dropout")
def _identity(g: _Graph, m: Module, path: str, x: str, xa: np.ndarray) -> str:
    return g.node("Identity", [x], path)


@_rule("ReLU")
def _relu(g, m, path, x, xa):
    return g.node("Relu", [x], path)


@_rule("Sigmoid")
def _sigmoid(g, m, path, x, xa):
    return g.node("Sigmoid", [x], path)


@_rule("LogSigmoid")
def _log_sigmoid(g, m, path, x, xa):  # -softplus(-x)
    return g.node("Neg", [g.node("Softplus", [g.node("Neg", [x], path)], path)], path)


@_rule("Tanh")
def _tanh(g, m, path, x, xa):
    return g.node("Tanh", [x], path)


@_rule("LeakyReLU")
def _leaky_relu(g, m, path, x, xa):
    return g.node("LeakyRelu", [x], path, alpha=float(getattr(m, "negative_slope", 0.01)))


@_rule("ELU")
def _elu(g, m, path, x, xa):
    return g.node("Elu", [x], path, alpha=float(getattr(m, "alpha", 1.0)))


@_rule("SiLU")
def _silu(g, m, path, x, xa):
    return g.node("Mul", [x, g.node("Sigmoid", [x], path)], path)


@_rule("GELU")
def _gelu(g, m, path, x, xa):
    approximate = getattr(m, "approximate", "none")
    if approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))
        x3 = g.node("Mul", [x, g.node("Mul", [x, x], path)], path)
        inner = g.node("Add", [x, g.node("Mul", [x3, g.const("c", 0.044715)], path)], path)
        t = g.node("Tanh", [g.node("Mul", [inner, g.const("c", math.sqrt(2 / math.pi))], path)], path)
    elif approximate == "none":  # 0.5 x (1 + erf(x / sqrt 2)), free of opset 20's Gelu
        t = g.node("Erf", [g.node("Mul", [x, g.const("c", 1 / math.sqrt(2))], path)], path)
    else:
        raise _unsupported(path, m, f"has approximate={approximate!r}")
    half_x = g.node("Mul", [x, g.const("c", 0.5)], path)
    return g.node("Mul", [half_x, g.node("Add", [t, g.const("one", 1.0)], path)], path)


@_rule("Softplus")
def _softplus(g, m, path, x, xa):
    # (1/beta) log(1 + exp(beta x)), and x itself where beta x > threshold (as in PyTorch)
    beta, threshold = float(getattr(m, "beta", 1.0)), float(getattr(m, "threshold", 20.0))
    bx = g.node("Mul", [x, g.const("beta", beta)], path)
    soft = g.node("Div", [g.node("Softplus", [bx], path), g.const("beta", beta)], path)
    return g.node("Where", [g.node("Greater", [bx, g.const("threshold", threshold)], path), x, soft], path)


def _softmax_axis(m: Module, ndim: int) -> int:
    dim = getattr(m, "dim", None)
    if dim is None:  # PyTorch's legacy implicit dim
        dim = 0 if ndim in (0, 1, 3) else 1
    return int(dim)


@_rule("Softmax")
def _softmax(g, m, path, x, xa):
    return g.node("Softmax", [x], path, axis=_softmax_axis(m, xa.ndim))


@_rule("LogSoftmax")
def _log_softmax(g, m, path, x, xa):
    return g.node("LogSoftmax", [x], path, axis=_softmax_axis(m, xa.ndim))


# ----------------------------------------------------------------------------- shape


def _reshape_to(g: _Graph, path: str, x: str, out_shape: tuple[int, ...], keep_batch: bool) -> str:
    # 0 copies the input's (dynamic) batch dimension; -1 absorbs it when the batch dim is merged away
    shape = [0 if keep_batch else -1, *out_shape[1:]]
    return g.node("Reshape", [x, g.const("shape", shape, np.int64)], path)


@_rule("Flatten")
def _flatten(g, m, path, x, xa):
    start, end = getattr(m, "start_dim", 1), getattr(m, "end_dim", -1)
    out_shape = m(Tensor(xa)).shape
    if start % max(xa.ndim, 1) == 1 and end % max(xa.ndim, 1) == xa.ndim - 1:
        return g.node("Flatten", [x], path, axis=1)
    return _reshape_to(g, path, x, out_shape, keep_batch=start % max(xa.ndim, 1) != 0)


@_rule("Unflatten")
def _unflatten(g, m, path, x, xa):
    if m.dim % xa.ndim == 0:
        raise _unsupported(path, m, "unflattens the batch dimension")
    return _reshape_to(g, path, x, m(Tensor(xa)).shape, keep_batch=True)


# ----------------------------------------------------------------------------- layers with weights


@_rule("Linear")
def _linear(g, m, path, x, xa):
    w = g.const(f"{path}.weight", _arr(m.weight))
    bias = getattr(m, "bias", None)
    if xa.ndim == 2:
        inputs = [x, w] + ([g.const(f"{path}.bias", _arr(bias))] if bias is not None else [])
        return g.node("Gemm", inputs, path, transB=1)
    y = g.node("MatMul", [x, g.node("Transpose", [w], path, perm=[1, 0])], path)
    return g.node("Add", [y, g.const(f"{path}.bias", _arr(bias))], path) if bias is not None else y


def _pads(m: Module, path: str, n: int, kernel: list[int], dilation: list[int]) -> list[int]:
    padding = getattr(m, "padding", 0)
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * (2 * n)
        if padding == "same":  # the odd one out of the total padding goes at the end, as in PyTorch
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return [t // 2 for t in total] + [t - t // 2 for t in total]
        raise _unsupported(path, m, f"has padding={padding!r}")
    p = _tuple(padding, n)
    return p + p


@_rule("Conv1d", "Conv2d")
def _conv(g, m, path, x, xa):
    n = xa.ndim - 2
    if getattr(m, "padding_mode", "zeros") != "zeros":
        raise _unsupported(path, m, f"has padding_mode={m.padding_mode!r} (only 'zeros' is exported)")
    weight = _arr(m.weight)
    kernel = list(weight.shape[2:])
    dilation = _tuple(getattr(m, "dilation", 1), n)
    inputs = [x, g.const(f"{path}.weight", weight)]
    if getattr(m, "bias", None) is not None:
        inputs.append(g.const(f"{path}.bias", _arr(m.bias)))
    return g.node(
        "Conv",
        inputs,
        path,
        kernel_shape=kernel,
        strides=_tuple(getattr(m, "stride", 1), n),
        pads=_pads(m, path, n, kernel, dilation),
        dilations=dilation,
        group=int(getattr(m, "groups", 1)),
    )


def _pool_common(m: Module, n: int) -> tuple[list[int], list[int], list[int]]:
    kernel = _tuple(m.kernel_size, n)
    stride = getattr(m, "stride", None)
    strides = kernel if stride is None or stride == () or stride == [] else _tuple(stride, n)
    return kernel, strides, _tuple(getattr(m, "padding", 0), n) * 2


@_rule("MaxPool1d", "MaxPool2d")
def _maxpool(g, m, path, x, xa):
    if getattr(m, "return_indices", False):
        raise _unsupported(path, m, "returns indices")
    n = xa.ndim - 2
    kernel, strides, pads = _pool_common(m, n)
    dilations = _tuple(getattr(m, "dilation", 1), n)
    ceil = int(bool(getattr(m, "ceil_mode", False)))
    return g.node(
        "MaxPool", [x], path, kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, ceil_mode=ceil
    )


@_rule("AvgPool1d", "AvgPool2d")
def _avgpool(g, m, path, x, xa):
    if getattr(m, "divisor_override", None) is not None:
        raise _unsupported(path, m, "has a divisor_override")
    n = xa.ndim - 2
    kernel, strides, pads = _pool_common(m, n)
    return g.node(
        "AveragePool",
        [x],
        path,
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        ceil_mode=int(bool(getattr(m, "ceil_mode", False))),
        count_include_pad=int(bool(getattr(m, "count_include_pad", True))),
    )


@_rule("AdaptiveAvgPool1d", "AdaptiveAvgPool2d")
def _adaptive_avgpool(g, m, path, x, xa):
    n = xa.ndim - 2
    size = xa.shape[2:]
    out = [s if o is None else int(o) for o, s in zip(m.output_size, size)] if isinstance(
        m.output_size, (tuple, list)
    ) else [int(m.output_size)] * n  # fmt: skip
    if all(o == 1 for o in out):
        return g.node("GlobalAveragePool", [x], path)
    if any(s % o for s, o in zip(size, out)):
        raise _unsupported(path, m, f"maps spatial size {tuple(size)} to {tuple(out)}, which is not a whole factor")
    kernel = [s // o for s, o in zip(size, out)]
    return g.node("AveragePool", [x], path, kernel_shape=kernel, strides=kernel)


@_rule("BatchNorm1d", "BatchNorm2d")
def _batchnorm(g, m, path, x, xa):
    if getattr(m, "running_mean", None) is None:
        raise _unsupported(path, m, "has no running statistics (track_running_stats=False)")
    c = _arr(m.running_mean).shape[0]
    weight = getattr(m, "weight", None)
    bias = getattr(m, "bias", None)
    inputs = [
        x,
        g.const(f"{path}.weight", _arr(weight) if weight is not None else np.ones(c)),
        g.const(f"{path}.bias", _arr(bias) if bias is not None else np.zeros(c)),
        g.const(f"{path}.running_mean", _arr(m.running_mean)),
        g.const(f"{path}.running_var", _arr(m.running_var)),
    ]
    return g.node("BatchNormalization", inputs, path, epsilon=float(m.eps))


@_rule("LayerNorm")
def _layernorm(g, m, path, x, xa):
    shape = tuple(_tuple(m.normalized_shape, 1))
    weight = getattr(m, "weight", None)
    bias = getattr(m, "bias", None)
    inputs = [
        x,
        g.const(f"{path}.weight", _arr(weight) if weight is not None else np.ones(shape)),
        g.const(f"{path}.bias", _arr(bias) if bias is not None else np.zeros(shape)),
    ]
    return g.node("LayerNormalization", inputs, path, axis=-len(shape), epsilon=float(m.eps))


@_rule("Embedding")
def _embedding(g, m, path, x, xa):
    if getattr(m, "max_norm", None) is not None:
        raise _unsupported(path, m, "has max_norm (renormalizing rows is not exported)")
    return g.node("Gather", [g.const(f"{path}.weight", _arr(m.weight)), x], path, axis=0)


# ----------------------------------------------------------------------------- recurrent layers

# PyTorch stacks gates as (i, f, g, o) for LSTM and (r, z, n) for GRU; ONNX wants (i, o, f, c) and (z, r, h)
_GATE_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}


@_rule("RNN", "GRU", "LSTM")
def _recurrent(g, m, path, x, xa):
    kind = type(m).__name__
    if xa.ndim != 3:
        raise _unsupported(path, m, f"got a {xa.ndim}-d input; only batched (3-d) input is exported")
    if getattr(m, "proj_size", 0):
        raise _unsupported(path, m, "has proj_size")
    hidden = int(m.hidden_size)
    num_layers = int(getattr(m, "num_layers", 1))
    dirs = 2 if getattr(m, "bidirectional", False) else 1
    order = _GATE_ORDER[kind]
    if getattr(m, "batch_first", False):
        x = g.node("Transpose", [x], path, perm=[1, 0, 2])
    attrs: dict[str, Any] = {"hidden_size": hidden, "direction": "bidirectional" if dirs == 2 else "forward"}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    if kind == "RNN":
        attrs["activations"] = ["Relu" if getattr(m, "nonlinearity", "tanh") == "relu" else "Tanh"] * dirs
    h_all, c_all = [], []
    for layer in range(num_layers):
        ws, rs, bs = [], [], []
        for d in range(dirs):
            sfx = f"l{layer}" + ("_reverse" if d else "")

            def gates(a: np.ndarray) -> np.ndarray:
                return np.concatenate([a.reshape(len(order), hidden, *a.shape[1:])[i] for i in order])

            ws.append(gates(_arr(getattr(m, f"weight_ih_{sfx}"))))
            rs.append(gates(_arr(getattr(m, f"weight_hh_{sfx}"))))
            b_ih, b_hh = getattr(m, f"bias_ih_{sfx}", None), getattr(m, f"bias_hh_{sfx}", None)
            zeros = np.zeros(len(order) * hidden)
            bs.append(np.concatenate([gates(_arr(b)) if b is not None else zeros for b in (b_ih, b_hh)]))
        inputs = [
            x,
            g.const(f"{path}.W{layer}", np.stack(ws)),
            g.const(f"{path}.R{layer}", np.stack(rs)),
            g.const(f"{path}.B{layer}", np.stack(bs)),
        ]
        outs = g.node(kind, inputs, path, n_out=3 if kind == "LSTM" else 2, **attrs)
        y, h_all = outs[0], h_all + [outs[1]]
        if kind == "LSTM":
            c_all.append(outs[2])
        # Y is (seq, dirs, batch, hidden); the next layer and the user want (seq, batch, dirs * hidden)
        y = g.node("Transpose", [y], path, perm=[0, 2, 1, 3])
        x = g.node("Reshape", [y, g.const("shape", [0, 0, -1], np.int64)], path)
    if getattr(m, "batch_first", False):
        x = g.node("Transpose", [x], path, perm=[1, 0, 2])
    h_n = h_all[0] if num_layers == 1 else g.node("Concat", h_all, path, axis=0)
    if kind != "LSTM":
        return (x, h_n)
    c_n = c_all[0] if num_layers == 1 else g.node("Concat", c_all, path, axis=0)
    return (x, (h_n, c_n))


# ----------------------------------------------------------------------------- layers of chainrule.spec models


@_rule("Select")
def _select(g, m, path, x, xa):
    inner = m.module
    if type(inner).__name__ not in _GATE_ORDER:
        raise _unsupported(path, m, f"wraps {type(inner).__name__}; only a recurrent layer is exported")
    return _RULES[type(inner).__name__](g, inner, f"{path}.module", x, xa)[m.index]


@_rule("Last")
def _last(g, m, path, x, xa):
    return g.node("Gather", [x, g.const("last", -1, np.int64)], path, axis=1)


SUPPORTED_LAYERS: tuple[str, ...] = tuple(sorted(_RULES))

# ----------------------------------------------------------------------------- export


def _layers(model: Module, path: str = "") -> list[tuple[str, Module]]:
    """The layers of a (nested) Sequential in order, with their dotted paths."""
    if type(model).__name__ == "Sequential":
        out: list[tuple[str, Module]] = []
        for name, child in model.named_children():
            out += _layers(child, f"{path}.{name}" if path else name)
        return out
    if type(model).__name__ not in _RULES:
        raise _unsupported(
            path,
            model,
            "cannot be exported: only Sequential models of these layers are supported: " + ", ".join(SUPPORTED_LAYERS),
        )
    return [(path, model)]


def _model_dtype(model: Module, default: np.dtype) -> np.dtype:
    """The dtype of the model's floating weights: the example input is traced in it (layers want one dtype)."""
    for p in model.parameters():
        if p.data.dtype.kind == "f":
            return p.data.dtype
    return default


def _flatten_outputs(names: Any, values: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(names, (tuple, list)):
        return [pair for n, v in zip(names, values) for pair in _flatten_outputs(n, v)]
    return [(names, _arr(values))]


def export(
    model: Module,
    example_input: Any,
    path: str | Path | None = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    input_name: str = "input",
    standardize: tuple[Any, Any] | None = None,
) -> Any:
    """Write `model` to `path` as an ONNX file (when a path is given) and return the onnx.ModelProto.

    example_input: an array or Tensor of the shape the model takes, batch first (sequence first for an
    RNN/GRU/LSTM without batch_first). With dynamic_batch the input's batch dimension is symbolic ("batch",
    and "sequence" for a recurrent first layer) and so are the outputs' dimensions, so any batch size runs;
    without it every shape is the example's. opset: the ONNX opset, 17 or newer.
    standardize: optional (mean, std), each of one sample's shape (or broadcastable to it): the graph then
    first computes (input - mean) / std, as `chainrule predict` does with a run's scaler, so the exported
    model takes raw inputs; example_input is then raw, too.
    Outputs are named "output", or "output_0", "output_1", ... when the model returns a tuple (an LSTM's
    (output, (h_n, c_n)) gives three).
    """
    onnx = _onnx()
    helper = onnx.helper
    if not isinstance(opset, int) or opset < 17 or opset > onnx.defs.onnx_opset_version():
        raise ChainruleError(f"onnx export: opset must be from 17 to {onnx.defs.onnx_opset_version()}, got {opset!r}")
    layers = _layers(model)
    x = _arr(example_input)
    if x.dtype.kind in "iu":
        x, elem = x.astype(np.int64), onnx.TensorProto.INT64
    elif x.dtype.kind == "f":
        elem = onnx.TensorProto.FLOAT
    else:
        raise ChainruleError(f"onnx export: example_input has dtype {x.dtype}; expected floats or integer indices")

    g = _Graph(onnx)
    name: Any = input_name
    traced = x
    if standardize is not None:
        if x.dtype.kind != "f":
            raise ChainruleError("onnx export: standardize needs floating inputs, not integer indices")
        mean, std = (np.asarray(_arr(a), dtype=np.float64) for a in standardize)
        try:
            traced = (x - mean) / std
        except ValueError:
            raise ChainruleError(
                f"onnx export: standardize mean {mean.shape} and std {std.shape} do not fit inputs {x.shape[1:]}"
            ) from None
        name = g.node("Div", [g.node("Sub", [name, g.const("mean", mean)], "standardize"), g.const("std", std)], "std")
    modes = [(m, m.training) for m in model.modules()]  # restored layer by layer: some may be frozen in eval
    model.eval()
    try:
        with no_grad():
            value: Any = Tensor(traced.astype(_model_dtype(model, x.dtype), copy=False) if x.dtype.kind == "f" else x)
            for lpath, layer in layers:
                if isinstance(value, tuple):
                    raise _unsupported(lpath, layer, "follows a layer that returns a tuple (an RNN must come last)")
                name = _RULES[type(layer).__name__](g, layer, lpath, name, value.data)
                value = layer(value)
    finally:
        for m, mode in modes:
            m.training = mode

    outputs = _flatten_outputs(name, value)
    graph_outputs = []
    # the batch is axis 0, except for an RNN/GRU/LSTM first layer without batch_first (sequence first)
    first = getattr(layers[0][1], "module", layers[0][1]) if layers else None  # through a spec's Select
    recurrent_first = type(first).__name__ in _GATE_ORDER
    batch_axis = 1 if recurrent_first and not getattr(first, "batch_first", False) else 0
    for i, (oname, arr) in enumerate(outputs):
        final = "output" if len(outputs) == 1 else f"output_{i}"
        g.nodes.append(helper.make_node("Identity", [oname], [final], name=final))
        shape: list[Any] | None = list(arr.shape)
        if dynamic_batch:
            shape = [f"{final}_dim{j}" for j in range(arr.ndim)]  # batch (and sequence) may vary
        graph_outputs.append(helper.make_tensor_value_info(final, onnx.TensorProto.FLOAT, shape))

    in_shape: list[Any] = list(x.shape)
    if dynamic_batch and x.ndim:
        in_shape[batch_axis] = "batch"
        if recurrent_first:  # any sequence length runs, too
            in_shape[1 - batch_axis] = "sequence"
    graph = helper.make_graph(
        g.nodes,
        "chainrule",
        [helper.make_tensor_value_info(input_name, elem, in_shape)],
        graph_outputs,
        initializer=g.initializers,
    )
    opset_id = helper.make_opsetid("", opset)
    proto = helper.make_model(
        graph,
        opset_imports=[opset_id],
        producer_name="chainrule",
        ir_version=helper.find_min_ir_version_for([opset_id]),
    )
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:  # atomically: an error while writing leaves the old file (or none), never half a file
        from .serialize import atomic_write

        atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return proto
