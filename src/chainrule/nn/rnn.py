"""Recurrent layers RNN, GRU and LSTM with PyTorch's arguments, shapes, parameter names and gate order.

Each layer first projects the whole input sequence at once (one matrix product for all time steps),
then runs the recurrence step by step; every step is made of differentiable ops, so gradients (and
higher-order gradients) flow back through time automatically.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ops import cat, linear, relu, stack, tanh
from ..random import Generator, default_generator
from ..tensor import Tensor, _default_dtype, record
from .module import Module, Parameter

__all__ = ["GRU", "LSTM", "RNN", "RNNBase"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


def _gates(pre: Tensor, is_tanh: np.ndarray) -> Tensor:
    """tanh on the columns where `is_tanh`, the logistic sigmoid elsewhere, in one op.

    σ(x) = (1 + tanh(x/2)) / 2 needs one tanh and never overflows. Derivative from the output y:
    σ' = y(1 - y), tanh' = 1 - y², i.e. y(a - y) + b with a = 1, b = 0 for σ and a = 0, b = 1 for tanh.
    """
    t = np.tanh(np.where(is_tanh, pre.data, pre.data * 0.5))
    out_data = np.where(is_tanh, t, t * 0.5 + 0.5).astype(pre.dtype, copy=False)
    a = Tensor((~is_tanh).astype(pre.dtype))
    b = Tensor(is_tanh.astype(pre.dtype))
    out = record("rnn_gates", out_data, (pre,), lambda g: (g * (out * (a - out) + b),), saved=())
    return out


def _unbind(x: Tensor) -> list[Tensor]:
    """x[0], x[1], ... by halving recursively: backward costs O(L log L), not O(L²) as L direct slices would."""
    if x.shape[0] == 1:
        return [x[0]]
    mid = x.shape[0] // 2
    return _unbind(x[:mid]) + _unbind(x[mid:])


class RNNBase(Module):
    """Shared machinery: parameters weight_ih_l{k}[_reverse] (gates·H, in), weight_hh_l{k}[_reverse] (gates·H, H),
    bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse] (gates·H,), all U(-1/sqrt(H), 1/sqrt(H)) as PyTorch."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        generator: Generator | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size is not supported")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"{name}: hidden_size ({hidden_size}) and num_layers ({num_layers}) must be positive")
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        self.generator = generator or default_generator
        dt = np.dtype(dtype) if dtype is not None else _default_dtype[0]
        rng = self.generator.np
        k = 1.0 / math.sqrt(hidden_size)
        gh = _GATES[mode] * hidden_size
        dirs = 2 if bidirectional else 1
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else hidden_size * dirs
            for suffix in ("", "_reverse")[:dirs]:
                shapes = {"weight_ih": (gh, n_in), "weight_hh": (gh, hidden_size)}
                if bias:
                    shapes.update(bias_ih=(gh,), bias_hh=(gh,))
                for pname, shape in shapes.items():  # registration order = PyTorch's = init draw order
                    setattr(self, f"{pname}_l{layer}{suffix}", Parameter(rng.uniform(-k, k, shape).astype(dt)))

    # -- one step of the recurrence; gi = x_t W_ihᵀ + b_ih already computed for all steps
    def _cell(self, gi: Tensor, state: Any, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _check_hidden(self, h: Tensor, expected: tuple[int, ...], what: str) -> None:
        if tuple(h.shape) != expected:
            raise ValueError(f"{type(self).__name__}: expected {what} of shape {expected}, got {tuple(h.shape)}")

    def _initial(self, hx: Any, n: int, unbatched: bool, dtype: np.dtype) -> list[Any]:
        """Per (layer, direction) initial state: h (N, H), or (h, c) for LSTM."""
        dirs = 2 if self.bidirectional else 1
        expected = (self.num_layers * dirs,) + (() if unbatched else (n,)) + (self.hidden_size,)
        lstm = self.mode == "LSTM"
        if hx is None:
            z = Tensor(np.zeros((self.num_layers * dirs, n, self.hidden_size), dtype=dtype))
            return [(z[i], z[i]) if lstm else z[i] for i in range(self.num_layers * dirs)]
        parts = tuple(hx) if lstm else (hx,)
        if lstm and len(parts) != 2:
            raise ValueError("LSTM: hx must be a tuple (h_0, c_0)")
        fixed = []
        for part, what in zip(parts, ("h_0", "c_0")):
            self._check_hidden(part, expected, what)
            fixed.append(part.unsqueeze(1) if unbatched else part)
        if lstm:
            return [(fixed[0][i], fixed[1][i]) for i in range(self.num_layers * dirs)]
        return [fixed[0][i] for i in range(self.num_layers * dirs)]

    def _dropout(self, x: Tensor) -> Tensor:
        if not self.training or self.dropout == 0.0:
            return x
        if self.dropout == 1.0:
            return x * 0.0
        keep = self.generator.np.random(x.shape) >= self.dropout
        return x * Tensor((keep / (1.0 - self.dropout)).astype(x.dtype))

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        """input (L, N, H_in), (N, L, H_in) with batch_first, or unbatched (L, H_in).

        Returns (output, h_n): output (L, N, D·H) (batch_first: (N, L, D·H)) holds the last layer's hidden
        state at every step; h_n (D·num_layers, N, H) the final state of every layer and direction
        (LSTM: (h_n, c_n)). D = 2 if bidirectional else 1.
        """
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: input must be (L, N, H_in), (N, L, H_in) or (L, H_in), got shape {input.shape}")
        unbatched = input.ndim == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input with {self.input_size} features, got shape {input.shape}")
        seq_len, n = x.shape[0], x.shape[1]
        states = self._initial(hx, n, unbatched, x.dtype)
        dirs = 2 if self.bidirectional else 1
        finals = []
        # the layer input as one (N, features) tensor per step: slicing a (L, N, ·) tensor at every step would
        # make backward add L full-size gradients (quadratic in L); lists keep it linear
        xs = _unbind(x) if x.requires_grad else [Tensor(x.data[t]) for t in range(seq_len)]
        for layer in range(self.num_layers):
            if layer:
                xs = [self._dropout(xt) for xt in xs]
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:dirs]):
                w_ih, w_hh = getattr(self, f"weight_ih_l{layer}{suffix}"), getattr(self, f"weight_hh_l{layer}{suffix}")
                b_ih = getattr(self, f"bias_ih_l{layer}{suffix}") if self.bias else None
                b_hh = getattr(self, f"bias_hh_l{layer}{suffix}") if self.bias else None
                state = states[layer * dirs + d]
                hs: list[Any] = [None] * seq_len
                for t in range(seq_len - 1, -1, -1) if d else range(seq_len):
                    hs[t], state = self._cell(linear(xs[t], w_ih, b_ih), state, w_hh, b_hh)
                outs.append(hs)
                finals.append(state)
            xs = outs[0] if dirs == 1 else [cat([f, b], 1) for f, b in zip(*outs)]
        x = stack(xs, 0)
        output = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        if self.mode == "LSTM":
            h_n, c_n = stack([s[0] for s in finals], 0), stack([s[1] for s in finals], 0)
            if unbatched:
                h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
            return output, (h_n, c_n)
        h_n = stack(finals, 0)
        return output, (h_n.squeeze(1) if unbatched else h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh) (or relu with nonlinearity='relu')."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", **kw: Any):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers, **kw)
        self.nonlinearity = nonlinearity

    def _cell(self, gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
        pre = gi + linear(h, w_hh, b_hh)
        h = tanh(pre) if self.mode == "RNN_TANH" else relu(pre)
        return h, h


class GRU(RNNBase):
    """Gated recurrent unit, gates in PyTorch's order (r, z, n):
    r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 - z) ⊙ n + z ⊙ h."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any):
        super().__init__("GRU", input_size, hidden_size, num_layers, **kw)

    def _cell(self, gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
        hs = self.hidden_size
        gh = linear(h, w_hh, b_hh)
        rz = _gates(gi[:, : 2 * hs] + gh[:, : 2 * hs], np.zeros(2 * hs, dtype=bool))
        r, z = rz[:, :hs], rz[:, hs:]
        n = tanh(gi[:, 2 * hs :] + r * gh[:, 2 * hs :])
        h = n + z * (h - n)
        return h, h


class LSTM(RNNBase):
    """Long short-term memory, gates in PyTorch's order (i, f, g, o):
    c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g), h' = σ(o) ⊙ tanh(c'). hx and the returned state are (h, c)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kw: Any):
        super().__init__("LSTM", input_size, hidden_size, num_layers, **kw)
        self._tanh_cols = np.arange(4 * hidden_size) // hidden_size == 2  # the g (cell input) gate

    def _cell(self, gi: Tensor, state: Any, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Any]:
        hs = self.hidden_size
        h, c = state
        pre = gi + linear(h, w_hh, b_hh)
        act = _gates(pre, self._tanh_cols)
        i, f, g, o = act[:, :hs], act[:, hs : 2 * hs], act[:, 2 * hs : 3 * hs], act[:, 3 * hs :]
        c = f * c + i * g
        h = o * tanh(c)
        return h, (h, c)
