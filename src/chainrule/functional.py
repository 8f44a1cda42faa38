"""Stateless neural-network functions: activations, normalization, dropout, embedding and losses.

Names, arguments and shapes follow torch.nn.functional. `reduction` is 'mean' (default), 'sum' or 'none'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import ops
from .errors import DataError
from .ops import linear, linear_relu, log_softmax, pad, sigmoid, softmax, tanh, where
from .ops._util import cached_constant
from .ops.conv import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    avg_pool1d,
    avg_pool2d,
    conv1d,
    conv2d,
    max_pool1d,
    max_pool2d,
)
from .ops.nn import batch_norm, embedding, gelu, layer_norm, log_sigmoid, softplus
from .random import Generator
from .tensor import Tensor, is_grad_enabled, record

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "conv1d",
    "conv2d",
    "max_pool1d",
    "max_pool2d",
    "batch_norm",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dropout",
    "elu",
    "embedding",
    "gelu",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "linear_relu",
    "log_sigmoid",
    "log_softmax",
    "logsigmoid",
    "mse_loss",
    "nll_loss",
    "one_hot",
    "pad",
    "relu",
    "sigmoid",
    "silu",
    "smooth_l1_loss",
    "softmax",
    "softplus",
    "tanh",
]

logsigmoid = log_sigmoid  # PyTorch's spelling

# `inplace` is accepted for PyTorch compatibility; chainrule always computes out of place.


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0)."""
    return ops.relu(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """input if input > 0 else negative_slope·input."""
    return ops.nn.leaky_relu(input, negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """input if input > 0 else alpha·(e^input − 1)."""
    return ops.nn.elu(input, alpha)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """input·σ(input)."""
    return ops.nn.silu(input)


def dropout(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, generator: Generator | None = None
) -> Tensor:
    """Zero each element with probability p and scale the others by 1/(1 − p) when training; else identity.

    `generator` (a chainrule extension) chooses the random stream; default: chainrule.default_generator.
    """
    return ops.nn.dropout(input, p, training, generator)


_REDUCTIONS = ("mean", "sum", "none")
_BCE_EPS = float(np.float32(1e-12))  # PyTorch's clamp of p(1 − p) in the BCE gradient (a float32 constant)


def _check_reduction(reduction: str, name: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss: Tensor, reduction: str, name: str) -> Tensor:
    _check_reduction(reduction, name)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_target(target: Any, input: Tensor) -> Tensor:
    if isinstance(target, Tensor):
        return target
    return Tensor(np.asarray(target, dtype=input.dtype))


def _same_shape(name: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise DataError(
            f"{name}: input shape {input.shape} and target shape {target.shape} differ; "
            "reshape one of them (e.g. a (N, 1) output against an (N,) target)"
        )


def _weight(weight: Any, input: Tensor) -> np.ndarray | None:
    """A class-weight vector as a constant array of the input's dtype."""
    if weight is None:
        return None
    return np.asarray(weight.data if isinstance(weight, Tensor) else weight, dtype=input.dtype)


def _indices(name: str, target: Any) -> np.ndarray:
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind not in "iu":
        raise DataError(f"{name}: class-index targets must be integers, got dtype {t.dtype} (shape {t.shape})")
    return t.astype(np.int64, copy=False)


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """Integer class indices (any shape) -> int64 one-hot vectors of shape tensor.shape + (num_classes,).

    num_classes=-1 uses max(tensor) + 1.
    """
    t = _indices("one_hot", tensor)
    if num_classes == -1:
        num_classes = int(t.max()) + 1 if t.size else 0
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        bad = t[(t < 0) | (t >= num_classes)].flat[0]
        raise DataError(f"one_hot: class {bad} is out of range for {num_classes} classes (shape {t.shape})")
    return Tensor((t[..., None] == np.arange(num_classes)).astype(np.int64))


# ----------------------------------------------------------------------------- regression losses


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Squared error (input − target)², input and target of the same shape.

    The reference example's loss ½(y − ŷ)² is `0.5 * F.mse_loss(y_pred, y, reduction="sum")`.
    """
    target = _as_target(target, input)
    _same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce(diff * diff, reduction, "mse_loss")


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Absolute error |input − target|."""
    target = _as_target(target, input)
    _same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction, "l1_loss")


def huber_loss(input: Tensor, target: Any, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """½d² where |d| < delta, else delta·(|d| − ½delta), with d = input − target."""
    target = _as_target(target, input)
    _same_shape("huber_loss", input, target)
    d = input - target
    a = d.abs()
    return _reduce(where(a.data < delta, d * d * 0.5, (a - 0.5 * delta) * delta), reduction, "huber_loss")


def smooth_l1_loss(input: Tensor, target: Any, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """½d²/beta where |d| < beta, else |d| − ½beta (the Huber loss divided by beta); beta = 0 is L1."""
    target = _as_target(target, input)
    _same_shape("smooth_l1_loss", input, target)
    d = input - target
    a = d.abs()
    if beta == 0:
        return _reduce(a, reduction, "smooth_l1_loss")
    return _reduce(where(a.data < beta, d * d * (0.5 / beta), a - 0.5 * beta), reduction, "smooth_l1_loss")


# ----------------------------------------------------------------------------- binary classification


def binary_cross_entropy(input: Tensor, target: Any, weight: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """−w·(t·log(p) + (1 − t)·log(1 − p)) for probabilities p = input in [0, 1]; logs are clamped at −100.

    d/dp = w·(p − t) / max(p(1 − p), 1e-12), as PyTorch (also at p = 0 or 1).
    """
    target = _as_target(target, input)
    _same_shape("binary_cross_entropy", input, target)
    p = input.data
    if p.size and (p.min() < 0 or p.max() > 1):
        bad = p[(p < 0) | (p > 1)].flat[0]
        raise DataError(
            f"binary_cross_entropy: input values must be probabilities in [0, 1], got {bad} "
            f"(input shape {input.shape}); use binary_cross_entropy_with_logits for raw scores"
        )
    t = target.data
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log1p(-p), -100.0)
    loss = -(t * log_p + (1 - t) * log_q)
    w = None
    if weight is not None:
        w = weight if isinstance(weight, Tensor) else Tensor(np.asarray(weight, dtype=input.dtype))
        loss = loss * w.data

    def backward(g: Tensor) -> tuple[Tensor | None, ...]:
        gw = g if w is None else g * w
        gi = gw * (input - target) / ((1.0 - input) * input).clamp(min=_BCE_EPS) if input.requires_grad else None
        gt = gw * Tensor((log_q - log_p).astype(p.dtype)) if target.requires_grad else None
        return gi, gt

    out = record("binary_cross_entropy", loss.astype(p.dtype, copy=False), (input, target), backward)
    return _reduce(out, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """−w·(pos_weight·t·log σ(x) + (1 − t)·log(1 − σ(x))) for logits x, stable for any x.

    pos_weight broadcasts over the last (class) dim; weight broadcasts over the input.
    """
    target = _as_target(target, input)
    _same_shape("binary_cross_entropy_with_logits", input, target)
    pos = target * log_sigmoid(input)
    if pos_weight is not None:
        pos = pos * (pos_weight if isinstance(pos_weight, Tensor) else np.asarray(pos_weight, dtype=input.dtype))
    loss = -(pos + (1.0 - target) * log_sigmoid(-input))
    if weight is not None:
        loss = loss * (weight if isinstance(weight, Tensor) else np.asarray(weight, dtype=input.dtype))
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


# ----------------------------------------------------------------------------- multi-class


def _class_shapes(name: str, input: Tensor, target: np.ndarray) -> None:
    """Class-index targets: input (C,) with target (), or input (N, C, d1, ...) with target (N, d1, ...)."""
    expected = () if input.ndim == 1 else input.shape[:1] + input.shape[2:]
    if input.ndim == 0 or target.shape != expected:
        raise DataError(
            f"{name}: for input of shape {input.shape} (N, C, ...) the class-index target must have shape "
            f"{expected if input.ndim else '(N,)'}, got {target.shape}"
        )


def _check_classes(name: str, input: Tensor, t: np.ndarray, ignore_index: int) -> np.ndarray:
    """The positions that count (target != ignore_index), after checking every other target is a valid class."""
    c = input.shape[0] if input.ndim == 1 else input.shape[1]
    valid = t != ignore_index
    bad = valid & ((t < 0) | (t >= c))
    if bad.any():
        raise DataError(
            f"{name}: target {t[bad].flat[0]} is out of range for {c} classes "
            f"(input shape {input.shape}, target shape {t.shape}); class indices must be in [0, {c - 1}]"
        )
    return valid


def nll_loss(
    input: Tensor, target: Any, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """−weight[t]·input[t] per sample, for log-probabilities input (N, C, ...) and class indices target (N, ...).

    'mean' divides by the total weight of the counted (non-ignored) targets, as PyTorch.
    """
    _check_reduction(reduction, "nll_loss")
    t = _indices("nll_loss", target)
    _class_shapes("nll_loss", input, t)
    valid = _check_classes("nll_loss", input, t, ignore_index)
    x = input if input.ndim > 1 else input.reshape(1, -1)
    tt = t.reshape(1) if input.ndim == 1 else t
    vv = valid.reshape(1) if input.ndim == 1 else valid
    safe = np.where(vv, tt, 0)
    picked = x.gather(1, Tensor(safe[:, None])).squeeze(1)
    w = _weight(weight, input)
    if w is None:
        w = np.ones(x.shape[1], dtype=input.dtype)
    sample_w = np.where(vv, w[safe], 0).astype(input.dtype)
    losses = -(picked * sample_w)
    if reduction == "none":
        return losses.reshape(t.shape)
    if reduction == "sum":
        return losses.sum()
    return _weighted_mean(losses.sum(), sample_w.sum())


def _weighted_mean(total: Tensor, weight_sum: float) -> Tensor:
    """total / weight_sum; when every target is ignored it is NaN with a zero gradient, as PyTorch."""
    return total + np.nan if weight_sum == 0 else total / weight_sum


def _label_smoothing_term(
    logp: Tensor, t: np.ndarray, valid: np.ndarray, weight: np.ndarray | None, reduction: str
) -> Tensor:
    c = logp.shape[1] if logp.ndim > 1 else logp.shape[0]
    cdim = 1 if logp.ndim > 1 else 0
    if weight is not None:
        view = (-1,) + (1,) * (logp.ndim - 2) if logp.ndim > 1 else (-1,)
        smooth = -(logp * weight.reshape(view)).sum(cdim)
    else:
        smooth = -logp.sum(cdim)
    smooth = smooth * valid.astype(logp.dtype)
    if reduction == "none":
        return smooth / c
    if reduction == "sum":
        return smooth.sum() / c
    if weight is not None:
        denom = weight[np.where(valid, t, 0)][valid].sum()
    else:
        denom = valid.sum()
    return _weighted_mean(smooth.sum(), denom * c)


def cross_entropy(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy of logits input (N, C, ...) (or (C,)) against either

    - class indices target (N, ...) in [0, C) (ignore_index skipped), or
    - class probabilities target of the same shape as input.

    `weight` (C,) rescales each class; `label_smoothing` ε mixes the target with the uniform
    distribution: (1 − ε)·target + ε/C. For plain class indices on (N, C) input this is one
    fused node whose backward is (softmax(input) − onehot(target))·g.
    """
    if weight is None and not label_smoothing and reduction in _REDUCTIONS:
        # the training-loop case first, with the fewest calls: int64 class indices (N,), all in [0, C)
        t, shape = target.data if isinstance(target, Tensor) else target, input.data.shape
        if len(shape) == 2 and type(t) is np.ndarray and t.dtype == _INT64 and t.shape == shape[:1]:
            c = shape[1]
            # one maximum checks 0 <= t < C (negatives wrap to huge unsigned values); no target can be ignored
            if not 0 <= ignore_index < c and (not t.size or np.maximum.reduce(t.view(np.uint64)) < c):
                return _fused_cross_entropy(input, t, reduction)
    _check_reduction(reduction, "cross_entropy")
    weight = _weight(weight, input)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t_raw = target.data if isinstance(target, Tensor) else np.asarray(target)
    if input.ndim == 0:
        raise DataError(f"cross_entropy: input must have a class dimension, got shape {input.shape}")
    cdim = 1 if input.ndim > 1 else 0
    if t_raw.dtype.kind == "f":  # class probabilities
        target = _as_target(target, input)
        if target.shape != input.shape:
            raise DataError(
                f"cross_entropy: a class-probability target must have the input's shape {input.shape}, "
                f"got {target.shape} (class-index targets must be integers)"
            )
        c = input.shape[cdim]
        if label_smoothing > 0:
            target = target * (1.0 - label_smoothing) + label_smoothing / c
        prod = log_softmax(input, cdim) * target
        if weight is not None:
            view = (-1,) + (1,) * (input.ndim - 2) if input.ndim > 1 else (-1,)
            prod = prod * weight.reshape(view)
        if reduction == "none":
            return -prod.sum(cdim)
        if reduction == "sum":
            return -prod.sum()
        return -prod.sum() / (input.data.size // c)
    t = _indices("cross_entropy", t_raw)
    _class_shapes("cross_entropy", input, t)
    valid = _check_classes("cross_entropy", input, t, ignore_index)
    if input.ndim == 2 and weight is None and label_smoothing == 0 and valid.all():
        return _fused_cross_entropy(input, t, reduction, ignore_index)
    logp = log_softmax(input, cdim)
    loss = nll_loss(logp, t, weight, ignore_index, reduction)
    if label_smoothing > 0:
        loss = (
            loss * (1.0 - label_smoothing)
            + _label_smoothing_term(
                logp if input.ndim > 1 else logp.reshape(1, -1),
                t.reshape(-1) if input.ndim == 1 else t,
                valid.reshape(-1) if input.ndim == 1 else valid,
                weight,
                reduction,
            ).reshape(loss.shape)
            * label_smoothing
        )
    return loss


_INT64 = np.dtype(np.int64)
_ROWS: dict[int, np.ndarray] = {}  # read-only np.arange(n) for _fused_cross_entropy, by n


def _cross_entropy_fwd(x: np.ndarray, t: np.ndarray, reduction: str) -> tuple:
    """(loss, ctx) of logits x (N, C) against valid class indices t (N,): the array rule of `_fused_cross_entropy`."""
    n = x.shape[0]
    # the ufuncs' reduce directly (what x.max / x.sum call): the same results with fewer Python-level calls
    shifted = x - np.maximum.reduce(x, axis=1, keepdims=True)
    logp = shifted - np.log(np.add.reduce(np.exp(shifted), axis=1, keepdims=True))
    rows = cached_constant(_ROWS, n, lambda: np.arange(n))
    picked = logp[rows, t]
    if reduction == "none":
        out, scale = -picked, None
    elif reduction == "sum":
        out, scale = np.asarray(-np.add.reduce(picked), dtype=x.dtype), 1.0
    else:
        out = np.asarray(-np.add.reduce(picked) / n if n else -picked.mean(), dtype=x.dtype)
        scale = 1.0 / n if n else 1.0
    return out, (logp, rows, t, scale)


def _cross_entropy_bwd(ctx: tuple, g: Any, needs: tuple = (True,)) -> tuple[np.ndarray]:
    """(softmax(x) − onehot(t))·g."""
    logp, rows, t, scale = ctx
    d = np.exp(logp)  # a new array: logp stays intact for a second backward (retain_graph)
    d[rows, t] -= 1.0
    d *= g * scale if scale is not None else np.reshape(g, (logp.shape[0], 1))
    return (d,)


def _fused_cross_entropy(input: Tensor, t: np.ndarray, reduction: str, ignore_index: int = -100) -> Tensor:
    """Cross-entropy of logits (N, C) against valid class indices t (N,), none of them ignore_index, as one node.

    loss_i = −log_softmax(x)_it (computed with the row max subtracted); backward: (softmax(x) − onehot(t))·g.
    """
    x = input.data
    out_data, ctx = _cross_entropy_fwd(x, t, reduction)
    n, rows, scale = x.shape[0], ctx[1], ctx[3]

    def np_backward(g: Any) -> tuple[np.ndarray]:
        return _cross_entropy_bwd(ctx, g)

    np_backward.replay = (_cross_entropy_fwd, _cross_entropy_bwd, (t, reduction))
    np_backward.ignore_index = ignore_index  # for chainrule.capture: other targets take this rule only without it

    def backward(g: Tensor) -> tuple[Tensor]:
        if is_grad_enabled():  # create_graph: softmax recomputed as a recorded op
            onehot = np.zeros_like(x)
            onehot[rows, t] = 1.0
            dlogits = softmax(input, 1) - Tensor(onehot)
            return ((dlogits * (g * scale) if scale is not None else dlogits * g.reshape(n, 1)),)
        return (Tensor(np_backward(g.data)[0]),)

    return record("cross_entropy", out_data, (input,), backward, np_backward=np_backward)


def kl_div(input: Tensor, target: Any, reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Pointwise KL divergence target·(log target − input), input being log-probabilities.

    With log_target the target is given as log-probabilities: exp(t)·(t − input). 'batchmean'
    divides the sum by the batch size input.shape[0] (the mathematically correct KL); 'mean'
    divides by the number of elements, as PyTorch.
    """
    if reduction not in _REDUCTIONS + ("batchmean",):
        raise ValueError(f"kl_div: reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")
    target = _as_target(target, input)
    _same_shape("kl_div", input, target)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        pos = target.data > 0
        safe_log = where(pos, where(pos, target, 1.0).log(), 0.0)  # 0·log 0 = 0
        loss = target * safe_log - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction, "kl_div")
