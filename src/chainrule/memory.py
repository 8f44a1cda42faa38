"""Rough memory estimates, checked before allocating, so that a model or batch too large fails with a
clear message instead of being killed by the operating system.

Training holds each parameter about 4 times (value, gradient, two optimizer moments for Adam) and, per
batch, what every layer keeps for backward twice (the values and their gradients). What a layer keeps is
computed from the spec before the layer exists (`layer_activation_count`): its output, plus the im2col matrix
of a convolution, the argmax of max pooling, the normalized input of BatchNorm/LayerNorm and every time step
of every layer and direction of RNN/GRU/LSTM; other layers count their output.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import ChainruleError
from .ops.conv import _out_size  # the layers' own output-size rule

PARAM_COPIES = 4  # value + gradient + two optimizer moments (Adam)
ACTIVATION_COPIES = 2  # forward value + its gradient


class OutOfMemoryError(ChainruleError, MemoryError):
    """A model or batch would not fit in the available memory; the message gives the estimate."""


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, else free physical pages from os.sysconf; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _int(layer: dict[str, Any], key: str, default: int = 0) -> int:
    v = layer.get(key, default)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def _nd(type_name: str) -> int:
    return 2 if type_name.endswith("2d") else 1


def _tuple(v: Any, n: int, default: int) -> tuple[int, ...]:
    if isinstance(v, list | tuple):
        return tuple(int(x) if isinstance(x, int | float) else default for x in v)[:n]
    return (int(v),) * n if isinstance(v, int | float) and not isinstance(v, bool) else (default,) * n


_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
# elements one time step of one direction records (as outputs of its ops, kept for backward), in units of
# hidden_size: the input projection and the hidden projection of every gate, their sum, the gate activations and
# the state updates (see chainrule.nn.rnn's cells)
_RNN_STEP = {"RNN": 4, "GRU": 16, "LSTM": 21}


def layer_param_count(type_name: str, layer: dict[str, Any]) -> int:
    """Parameters a layer of the spec will allocate (0 for types it does not know: they are small).

    Exact for Linear, Conv1d/2d, RNN/GRU/LSTM (every layer and direction), Embedding, BatchNorm and LayerNorm.
    """
    bias = 1 if layer.get("bias", True) else 0
    if type_name in ("Linear", "Bilinear"):
        return _int(layer, "in_features") * _int(layer, "out_features") + bias * _int(layer, "out_features")
    if type_name.startswith("Conv"):
        k = math.prod(_tuple(layer.get("kernel_size", 1), _nd(type_name), 1))
        groups = max(_int(layer, "groups", 1), 1)
        return _int(layer, "in_channels") * _int(layer, "out_channels") * k // groups + bias * _int(
            layer, "out_channels"
        )
    if type_name in _GATES:
        gh, h = _GATES[type_name] * _int(layer, "hidden_size"), _int(layer, "hidden_size")
        dirs = 2 if layer.get("bidirectional") else 1
        total = 0
        for n in range(max(_int(layer, "num_layers", 1), 1)):
            n_in = _int(layer, "input_size") if n == 0 else dirs * h
            total += dirs * (gh * (n_in + h) + bias * 2 * gh)
        return total
    if type_name == "Embedding":
        return _int(layer, "num_embeddings") * _int(layer, "embedding_dim")
    if type_name.startswith("BatchNorm"):
        return (1 + bias) * _int(layer, "num_features") if layer.get("affine", True) else 0
    if type_name == "LayerNorm":
        ns = layer.get("normalized_shape", 0)
        shape = math.prod(int(v) for v in ns) if isinstance(ns, list | tuple) else _int(layer, "normalized_shape")
        return (1 + bias) * shape if layer.get("elementwise_affine", True) else 0
    return 0


def _windows(spatial: tuple[int, ...], k: tuple, s: tuple, p: tuple, d: tuple, ceil: bool) -> tuple[int, ...]:
    """Output sizes of a sliding window (symmetric padding p) along each spatial axis, by the ops' own rule."""
    return tuple(_out_size(n, k_, s_, p_, p_, d_, ceil) for n, k_, s_, p_, d_ in zip(spatial, k, s, p, d))


def layer_output_shape(type_name: str, layer: dict[str, Any], in_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The output shape of one sample (no batch axis) of a Linear, Conv, pooling, normalization or Embedding
    layer of the spec, for samples of `in_shape`, computed before the layer exists; None for other types."""
    if type_name == "Linear" and in_shape:
        return (*in_shape[:-1], _int(layer, "out_features"))
    nd = _nd(type_name)
    spatial = tuple(in_shape[-nd:]) if len(in_shape) > nd else None
    if type_name in ("Conv1d", "Conv2d") and spatial is not None:
        k = _tuple(layer.get("kernel_size", 1), nd, 1)
        s, d = _tuple(layer.get("stride", 1), nd, 1), _tuple(layer.get("dilation", 1), nd, 1)
        pad = layer.get("padding", 0)
        if pad == "same":
            out = spatial
        else:
            p = (0,) * nd if pad == "valid" else _tuple(pad, nd, 0)
            out = _windows(spatial, k, s, p, d, False)
        return (_int(layer, "out_channels"), *out)
    if type_name in ("MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d") and spatial is not None:
        k = _tuple(layer.get("kernel_size", 1), nd, 1)
        s = _tuple(layer["stride"], nd, 1) if layer.get("stride") is not None else k
        p = _tuple(layer.get("padding", 0), nd, 0)
        d = _tuple(layer.get("dilation", 1), nd, 1) if type_name.startswith("Max") else (1,) * nd
        ceil = bool(layer.get("ceil_mode", False))
        return (*in_shape[:-nd], *_windows(spatial, k, s, p, d, ceil))
    if type_name in ("AdaptiveAvgPool1d", "AdaptiveAvgPool2d") and spatial is not None:
        size = layer.get("output_size")
        sizes = size if isinstance(size, list | tuple) else [size] * nd
        return (*in_shape[:-nd], *(int(o) if o is not None else i for o, i in zip(sizes, spatial)))
    if type_name.startswith("BatchNorm") or type_name == "LayerNorm":
        return tuple(in_shape)
    if type_name == "Embedding":
        return (*in_shape, _int(layer, "embedding_dim"))
    return None


def layer_activation_count(type_name: str, layer: dict[str, Any], in_shape: tuple[int, ...]) -> int | None:
    """Elements per sample that a training step keeps for backward for this layer of the spec (its output and
    the intermediates its backward needs), before the layer exists; None for types it does not know.

    Conv: output + the im2col matrix (C_in·k·L_out) kept for the weight gradient; max pooling: output + the
    argmax; BatchNorm/LayerNorm: output + the normalized input; RNN/GRU/LSTM: every time step of every layer and
    direction (the input and hidden projections of the gates, the activations, the states; see `_RNN_STEP`).
    """
    if type_name in _GATES:
        if len(in_shape) < 1:
            return None
        steps = math.prod(in_shape[:-1])  # sequence length (times any extra leading axis)
        h, dirs = _int(layer, "hidden_size"), 2 if layer.get("bidirectional") else 1
        n_layers = max(_int(layer, "num_layers", 1), 1)
        per_layer = steps * dirs * _RNN_STEP[type_name] * h + (steps * dirs * h if dirs > 1 else 0)  # + cat
        dropout = steps * dirs * h * (n_layers - 1) if layer.get("dropout") else 0
        return n_layers * per_layer + dropout + steps * dirs * h  # + the stacked output
    out = layer_output_shape(type_name, layer, in_shape)
    if out is None:
        return None
    n = math.prod(out)
    if type_name in ("Conv1d", "Conv2d"):
        nd = _nd(type_name)
        k = math.prod(_tuple(layer.get("kernel_size", 1), nd, 1))
        return n + _int(layer, "in_channels") * k * math.prod(out[1:])
    if type_name.startswith("MaxPool") or type_name.startswith("BatchNorm") or type_name == "LayerNorm":
        return 2 * n
    return n


def check_fits(needed: int, what: str, available: int | None = None) -> None:
    """Raise OutOfMemoryError if `needed` bytes exceed the available memory."""
    available = available_bytes() if available is None else available
    if available is not None and needed > available:
        raise OutOfMemoryError(
            f"{what} would need about {human(needed)} but only {human(available)} of memory is available; "
            "use a smaller model or batch size"
        )
