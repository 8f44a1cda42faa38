"""Gradient clipping with torch.nn.utils' names and semantics: clip_grad_norm_, clip_grad_value_."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..errors import TrainingError
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _norm(x: np.ndarray, p: float) -> np.generic:
    """Vector p-norm of all entries of x, in x's dtype (p = inf, -inf, 0 or any other float)."""
    x = x.ravel()
    if p == 2.0:
        return np.sqrt(np.dot(x, x))
    a = np.abs(x)
    if p == math.inf:
        return a.max() if a.size else x.dtype.type(0)
    if p == -math.inf:
        return a.min() if a.size else x.dtype.type(math.inf)
    if p == 0.0:
        return x.dtype.type(np.count_nonzero(x))
    if p == 1.0:
        return a.sum()
    return np.sum(a**p) ** (1.0 / p)


def get_total_norm(
    tensors: Tensor | Iterable[Tensor], norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach: None = None
) -> Tensor:
    """The norm of the norms of `tensors` (as if all were concatenated into one vector); a 0-d Tensor.

    Raises TrainingError (a RuntimeError) if it is NaN or infinite and `error_if_nonfinite`.
    """
    arrays = [t.data if isinstance(t, Tensor) else np.asarray(t) for t in _as_list(tensors)]
    norm_type = float(norm_type)
    if not arrays:
        return Tensor(0.0)
    norms = np.array([_norm(a, norm_type) for a in arrays], dtype=np.result_type(*arrays))
    total = _norm(norms, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise TrainingError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite ({total}), so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return Tensor(np.asarray(total))


def clip_grads_with_norm_(
    parameters: Tensor | Iterable[Tensor], max_norm: float, total_norm: Tensor, foreach: None = None
) -> None:
    """Scale the gradients in place by min(1, max_norm / (total_norm + 1e-6))."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    total = total_norm.data if isinstance(total_norm, Tensor) else np.asarray(total_norm)
    coef = float(max_norm) / (total[()] + 1e-6)  # in the norm's dtype, as torch computes it
    if not coef >= 1.0:  # coef < 1 or NaN; multiplying by min(coef, 1) = 1 would change nothing
        with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 gives NaN silently, as in torch
            for g in grads:
                g.data *= coef
                g._version += 1


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: None = None,
) -> Tensor:
    """Rescale the gradients of `parameters` in place so that their total `norm_type`-norm is at most
    `max_norm` (scale min(1, max_norm / (norm + 1e-6))). Returns the total norm before clipping, a 0-d Tensor.

    `foreach` is accepted for compatibility with PyTorch and ignored.
    """
    params = _as_list(parameters)
    total = get_total_norm([p.grad for p in params if p.grad is not None], norm_type, error_if_nonfinite)
    clip_grads_with_norm_(params, max_norm, total)
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: None = None) -> None:
    """Clamp every gradient entry of `parameters` into [-clip_value, clip_value], in place."""
    c = float(clip_value)
    for p in _as_list(parameters):
        if p.grad is not None:
            np.clip(p.grad.data, -c, c, out=p.grad.data)
            p.grad._version += 1
