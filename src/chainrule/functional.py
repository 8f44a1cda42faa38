"""Stateless neural-network functions: activations and losses (shapes follow torch.nn.functional)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ChainruleError
from .ops import linear, log_softmax, relu, sigmoid, softmax, tanh
from .tensor import Tensor, record

__all__ = ["cross_entropy", "linear", "log_softmax", "mse_loss", "relu", "sigmoid", "softmax", "tanh"]


def _reduce(loss: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error (input - target)².

    The reference example's loss ½(y - ŷ)² is `0.5 * mse_loss(y_pred, y, reduction="sum")`.
    """
    target = target if isinstance(target, Tensor) else Tensor(np.asarray(target, dtype=input.dtype))
    if input.shape != target.shape:
        raise ChainruleError(f"mse_loss: input shape {input.shape} and target shape {target.shape} differ")
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def cross_entropy(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy. input: (N, C) logits; target: (N,) class indices in [0, C).

    One fused node: backward is (softmax(input) - onehot(target)) / N.
    """
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if input.ndim != 2 or t.shape != input.shape[:1]:
        raise ChainruleError(f"cross_entropy: expected input (N, C) and target (N,), got {input.shape} and {t.shape}")
    if t.dtype.kind not in "iu":
        raise ChainruleError(f"cross_entropy: class-index targets must be integers, got dtype {t.dtype}")
    n, c = input.shape
    if t.size and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)][0]
        raise ChainruleError(f"cross_entropy: target {bad} is out of range for {c} classes")
    x = input.data
    shifted = x - x.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    losses = -logp[rows, t]
    if reduction == "none":
        out_data, scale = losses, None
    elif reduction in ("mean", "sum"):
        out_data = np.asarray(losses.mean() if reduction == "mean" else losses.sum(), dtype=x.dtype)
        scale = 1.0 / n if reduction == "mean" else 1.0
    else:
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")

    def backward(g: Tensor) -> tuple[Tensor]:
        onehot = np.zeros_like(x)
        onehot[rows, t] = 1.0
        p = softmax(input, 1)  # recomputed as a Tensor so that create_graph works
        dlogits = p - Tensor(onehot)
        return ((dlogits * (g * scale) if scale is not None else dlogits * g.reshape(n, 1)),)

    return record("cross_entropy", out_data, (input,), backward)
