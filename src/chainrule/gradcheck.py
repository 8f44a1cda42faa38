"""Finite-difference checks of analytical gradients (first and second order)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .tensor import Tensor, grad


class GradcheckError(AssertionError):
    """An analytical gradient disagrees with the central finite difference."""


def _outputs(fn: Callable, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    out = fn(*inputs)
    return (out,) if isinstance(out, Tensor) else tuple(out)


def _numerical(
    fn: Callable, inputs: Sequence[Tensor], i: int, out_weights: Sequence[np.ndarray], eps: float
) -> np.ndarray:
    """d(sum_k <out_k, w_k>)/d(inputs[i]) by central differences, one element at a time."""
    x = inputs[i].data
    num = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)  # a view: x is contiguous float64
    for j in range(flat.size):
        orig = flat[j]
        flat[j] = orig + eps
        plus = sum(float(np.sum(o.data * w)) for o, w in zip(_outputs(fn, inputs), out_weights))
        flat[j] = orig - eps
        minus = sum(float(np.sum(o.data * w)) for o, w in zip(_outputs(fn, inputs), out_weights))
        flat[j] = orig
        num.reshape(-1)[j] = (plus - minus) / (2 * eps)
    return num


def _weighted_grads(
    outs: Sequence[Tensor], xs: Sequence[Tensor], weights: Sequence[Tensor], create_graph: bool = False
) -> tuple[Tensor | None, ...]:
    """Gradients of sum_k <outs[k], weights[k]> with respect to xs (None where unused); outputs that do not
    require grad are constants and take no part."""
    pairs = [(o, w) for o, w in zip(outs, weights) if o.requires_grad]
    return grad([o for o, _ in pairs], xs, [w for _, w in pairs], create_graph=create_graph, allow_unused=True)


def _diff(t: Any) -> bool:
    """Whether an input is differentiated (other inputs, Tensors or not, are passed through as constants)."""
    return isinstance(t, Tensor) and t.requires_grad


def _prepare(inputs: Any) -> tuple[Tensor, ...]:
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    for k, t in enumerate(inputs):
        if _diff(t) and t.dtype != np.float64:
            raise TypeError(f"gradcheck: input {k} has dtype {t.dtype}; finite differences need float64")
        if _diff(t) and not t.data.flags.c_contiguous:
            t.data = np.ascontiguousarray(t.data)
    return inputs


def gradcheck(
    fn: Callable,
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    seed: int = 0,
) -> bool:
    """Compare the gradients of `fn(*inputs)` with central finite differences (float64 inputs).

    A random weighting of the outputs turns vector outputs into one scalar, so every
    Jacobian entry takes part. Returns True, or raises `GradcheckError` naming the input,
    the element index and both values.
    """
    inputs = _prepare(inputs)
    rng = np.random.default_rng(seed)
    outs = _outputs(fn, inputs)
    weights = [rng.standard_normal(o.shape) for o in outs]
    diff_inputs = [t for t in inputs if _diff(t)]
    analytic = _weighted_grads(outs, diff_inputs, [Tensor(w.astype(o.dtype)) for o, w in zip(outs, weights)])
    k = 0
    for i, t in enumerate(inputs):
        if not _diff(t):
            continue
        a = analytic[k]
        k += 1
        a = np.zeros(t.shape) if a is None else a.data
        n = _numerical(fn, inputs, i, weights, eps)
        bad = ~np.isclose(a, n, rtol=rtol, atol=atol)
        if bad.any():
            idx = tuple(int(v) for v in np.argwhere(bad)[0])
            if not raise_exception:
                return False
            raise GradcheckError(
                f"gradcheck: input {i} (shape {t.shape}), element {idx}: "
                f"analytical {float(a[idx])!r} vs numerical {float(n[idx])!r}"
            )
    return True


def gradgradcheck(
    fn: Callable,
    inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    seed: int = 0,
) -> bool:
    """Check second derivatives: gradcheck of the map inputs -> (vector-Jacobian product of fn)."""
    inputs = _prepare(inputs)
    rng = np.random.default_rng(seed + 1)
    outs = _outputs(fn, inputs)
    weights = [Tensor(rng.standard_normal(o.shape)) for o in outs]
    diff = [i for i, t in enumerate(inputs) if _diff(t)]

    def vjp(*xs: Tensor) -> tuple[Tensor, ...]:
        gs = _weighted_grads(_outputs(fn, xs), [xs[i] for i in diff], weights, create_graph=True)
        return tuple(g if g is not None else xs[i] * 0.0 for g, i in zip(gs, diff))

    return gradcheck(vjp, inputs, eps, atol, rtol, raise_exception, seed)
