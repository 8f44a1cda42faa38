"""Fused neural-network ops: activations, normalization, embedding lookup, dropout.

Each computes its value with NumPy in one pass and records one node. Backward rules
use Tensor ops so that `create_graph=True` still gives higher-order gradients; where a
derivative has no closed form in existing ops (GELU), it is its own recorded op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..random import Generator, default_generator
from ..tensor import Tensor, is_grad_enabled, record
from .math import sigmoid, tanh, where
from .shape import index_add_to

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_GELU_K = math.sqrt(2.0 / math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; math.erf is exact to the last bit


def _phi_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF Φ(x) = ½(1 + erf(x/√2))."""
    return (0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- activations


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x if x > 0 else negative_slope·x.  d/dx = 1 or negative_slope."""
    pos = x.data > 0
    slope = np.where(pos, 1.0, negative_slope).astype(x.dtype)
    return record("leaky_relu", x.data * slope, (x,), lambda g: (g * slope,), saved=())


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """x if x > 0 else alpha·(eˣ − 1).  d/dx = 1 or alpha·eˣ."""
    pos = x.data > 0
    out = np.where(pos, x.data, alpha * np.expm1(np.minimum(x.data, 0))).astype(x.dtype, copy=False)
    # clamp keeps exp finite on the unused branch, so second derivatives stay finite too
    return record("elu", out, (x,), lambda g: (g * where(pos, 1.0, x.clamp(max=0.0).exp() * alpha),))


def silu(x: Tensor) -> Tensor:
    """x·σ(x).  d/dx = σ(x)·(1 + x·(1 − σ(x)))."""

    def backward(g: Tensor) -> tuple[Tensor]:
        s = sigmoid(x)
        return (g * s * (1.0 + x * (1.0 - s)),)

    return record("silu", x.data * sigmoid(Tensor(x.data)).data, (x,), backward)


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + e^(beta·x)) / beta, and x itself where beta·x > threshold.  d/dx = σ(beta·x) or 1."""
    bx = x.data * beta
    linear = bx > threshold
    soft = (np.maximum(bx, 0) + np.log1p(np.exp(-np.abs(bx)))) / beta
    out = np.where(linear, x.data, soft).astype(x.dtype, copy=False)
    return record("softplus", out, (x,), lambda g: (g * where(linear, 1.0, sigmoid(x * beta)),))


def log_sigmoid(x: Tensor) -> Tensor:
    """log σ(x) = −softplus(−x), computed without overflow.  d/dx = σ(−x)."""
    d = x.data
    out = (np.minimum(d, 0) - np.log1p(np.exp(-np.abs(d)))).astype(x.dtype, copy=False)
    return record("log_sigmoid", out, (x,), lambda g: (g * sigmoid(-x),))


def _gelu_grad(x: Tensor, cdf: np.ndarray) -> Tensor:
    """Φ(x) + x·φ(x), the derivative of exact GELU (cdf = Φ(x)); its own derivative is φ(x)·(2 − x²)."""
    d = x.data
    val = cdf + d * np.exp(-0.5 * d * d) / _SQRT_2PI
    return record("gelu_backward", val, (x,), lambda g: (g * (x * x * -0.5).exp() * (1.0 / _SQRT_2PI) * (2.0 - x * x),))


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """x·Φ(x) (approximate='none') or ½x(1 + tanh(√(2/π)(x + 0.044715x³))) (approximate='tanh')."""
    d = x.data
    if approximate == "none":
        cdf = _phi_cdf(d)
        return record("gelu", d * cdf, (x,), lambda g: (g * _gelu_grad(x, cdf),))
    if approximate != "tanh":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    t = np.tanh(_GELU_K * (d + 0.044715 * d**3))

    def backward(g: Tensor) -> tuple[Tensor]:
        th = tanh((x + x * x * x * 0.044715) * _GELU_K)
        return (g * ((1.0 + th) * 0.5 + x * 0.5 * (1.0 - th * th) * _GELU_K * (1.0 + x * x * (3 * 0.044715))),)

    return record("gelu", 0.5 * d * (1.0 + t), (x,), backward)


# ----------------------------------------------------------------------------- normalization


def normalize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """(x − mean) / sqrt(var + eps) over `dims` (biased variance), as one node.

    Backward: invstd · (g − mean(g) − x̂·mean(g·x̂)), means over `dims`.
    """
    d = x.data
    mu = d.mean(axis=dims, keepdims=True)
    xc = d - mu
    invstd = 1.0 / np.sqrt((xc * xc).mean(axis=dims, keepdims=True) + eps)
    xhat = xc * invstd

    def backward(g: Tensor) -> tuple[Tensor]:
        if is_grad_enabled():  # create_graph: rebuild x̂ from x with recorded ops
            xc_t = x - x.mean(dims, keepdim=True)
            inv_t = ((xc_t * xc_t).mean(dims, keepdim=True) + eps) ** -0.5
            xh = xc_t * inv_t
        else:
            xh, inv_t = Tensor(xhat), Tensor(invstd)
        return (inv_t * (g - g.mean(dims, keepdim=True) - xh * (g * xh).mean(dims, keepdim=True)),)

    return record("normalize", xhat, (x,), backward)


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    """A (C,) tensor reshaped to broadcast over dim 1 of an ndim-dim input."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization over dim 1 (channels) of an (N, C, *) input, as torch.nn.functional.batch_norm.

    Training: normalize with the batch statistics and update running_mean/running_var in place
    (running_var gets the unbiased variance). Otherwise: normalize with the running statistics.
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, *), got {input.shape}")
    dims = (0,) + tuple(range(2, input.ndim))
    if training:
        count = input.data.size // input.shape[1]
        if count <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input {input.shape}"
            )
        out = normalize(input, dims, eps)
        if running_mean is not None or running_var is not None:
            d = input.data
            if running_mean is not None:
                running_mean.data *= 1.0 - momentum
                running_mean.data += momentum * d.mean(axis=dims)
                running_mean._version += 1
            if running_var is not None:
                running_var.data *= 1.0 - momentum
                running_var.data += momentum * d.var(axis=dims, ddof=1)
                running_var._version += 1
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when training=False")
        view = (1, -1) + (1,) * (input.ndim - 2)
        scale = (1.0 / np.sqrt(running_var.data + eps)).astype(input.dtype).reshape(view)
        shift = (-running_mean.data).astype(input.dtype).reshape(view) * scale
        out = input * scale + shift
    if weight is not None:
        out = out * _channel_view(weight, input.ndim)
    if bias is not None:
        out = out + _channel_view(bias, input.ndim)
    return out


def layer_norm(
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize over the last len(normalized_shape) dims, then scale by weight and add bias (both that shape)."""
    shape = tuple(normalized_shape)
    k = len(shape)
    if input.shape[input.ndim - k :] != shape or k > input.ndim:
        raise ValueError(f"layer_norm: input of shape {input.shape} does not end in normalized_shape {shape}")
    out = normalize(input, tuple(range(input.ndim - k, input.ndim)), eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


# ----------------------------------------------------------------------------- embedding, dropout


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) picked by integer `input` (any shape) -> input.shape + (dim,).

    Backward scatters-adds g into the picked rows; the padding_idx row gets no gradient.
    """
    idx = input.data if isinstance(input, Tensor) else np.asarray(input)
    n = weight.shape[0]
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)].flat[0]
        raise IndexError(f"embedding: index {bad} is out of range for {n} embeddings")
    keep = None if padding_idx is None else (idx != padding_idx % n)[..., None]

    def backward(g: Tensor) -> tuple[Tensor]:
        if keep is not None:
            g = g * keep
        return (index_add_to(g, idx, weight.shape),)

    return record("embedding", weight.data[idx], (weight,), backward, saved=())


def dropout(input: Tensor, p: float = 0.5, training: bool = True, generator: Generator | None = None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1 − p) (identity unless training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        scale = np.zeros(input.shape, dtype=input.dtype)
    else:
        keep = (generator or default_generator).np.random(input.shape) >= p
        scale = (keep / (1.0 - p)).astype(input.dtype)
    return record("dropout", input.data * scale, (input,), lambda g: (g * scale,), saved=())
