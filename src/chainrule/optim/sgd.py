"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (torch.optim.SGD)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _blas
from .optimizer import Optimizer, effective_grad, options


class SGD(Optimizer):
    """g = ±grad + weight_decay * w; with momentum: b = momentum * b + (1 - dampening) * g (b = g at the
    first step), then g = b, or g + momentum * b with nesterov; finally w <- w - lr * g.

    With the defaults this is plain gradient descent w <- w - lr * grad.
    """

    _nonnegative = ("lr", "momentum", "weight_decay")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _check_options(self, group: dict[str, Any]) -> None:
        super()._check_options(group)
        if group["nesterov"] and (float(group["momentum"]) <= 0 or float(group["dampening"]) != 0):
            raise self._invalid("nesterov", group["nesterov"], "Nesterov momentum needs momentum > 0 and dampening = 0")

    def _update_group(self, group: dict[str, Any]) -> None:
        if not group["momentum"] and not group["weight_decay"] and not group["maximize"]:
            self._plain_step(group)
            return
        lr, mom, damp, wd = options(group, "lr", "momentum", "dampening", "weight_decay")
        nesterov, maximize = group["nesterov"], group["maximize"]
        plain = not (damp or wd or nesterov or maximize)  # classic momentum: the lean _heavy_ball update
        for p in self._with_grad(group):
            if not mom:
                self._apply(_sgd, p, [], 2, lr, wd, maximize)
                continue
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            if buf is None:
                state["momentum_buffer"] = buf = np.empty_like(p.data)
                self._apply(_sgd_momentum, p, [buf], 2, lr, mom, damp, wd, nesterov, maximize, True)
            elif plain and _same_layout(p.data, p.grad.data, buf):
                _heavy_ball(p.data, p.grad.data, buf, lr, mom, self._chunked)
                p._version += 1
            else:
                self._apply(_sgd_momentum, p, [buf], 2, lr, mom, damp, wd, nesterov, maximize, False)

    def _plain_step(self, group: dict[str, Any]) -> None:
        """w <- w - lr * grad: the default options, with the least bookkeeping (it is most of the time of a
        scalar model's step). Small parameters (scalars) are updated directly, a 0-d one on NumPy scalars
        (`arr[()]`, a tenth of the cost of ufunc calls); same arithmetic as _sgd."""
        lr = float(group["lr"])
        for p in group["params"]:
            if p.grad is None:
                continue
            g, w = p.grad.data, p.data
            if w.size <= 64 and g.dtype == w.dtype and g.shape == w.shape:
                w[...] = w[()] - g[()] * lr
                p._changed()
            elif _blas.axpy_ok(w, g) and w.flags.writeable:  # large: one threaded BLAS pass
                _blas.axpy(-lr, g, w)
                p._changed()
            else:
                self._apply(_sgd, p, [], 2, lr, 0.0, False)


def _sgd(arrays: list[np.ndarray], scratch: list[np.ndarray], lr: float, wd: float, maximize: bool) -> None:
    p, grad = arrays
    g = effective_grad(p, grad, scratch[0], maximize, wd)
    p -= np.multiply(g, lr, out=scratch[1])


def _sgd_momentum(
    arrays: list[np.ndarray],
    scratch: list[np.ndarray],
    lr: float,
    mom: float,
    damp: float,
    wd: float,
    nesterov: bool,
    maximize: bool,
    first: bool,
) -> None:
    p, grad, buf = arrays
    g = effective_grad(p, grad, scratch[0], maximize, wd)
    tmp = scratch[1]
    if first:
        np.copyto(buf, g)
    else:
        buf *= mom
        buf += np.multiply(g, 1 - damp, out=tmp) if damp else g
    if nesterov:
        g = np.add(g, np.multiply(buf, mom, out=tmp), out=tmp)
    else:
        g = buf
    p -= np.multiply(g, lr, out=tmp)


def _same_layout(p: np.ndarray, grad: np.ndarray, buf: np.ndarray) -> bool:
    """All three C-contiguous with one shape and dtype (so that they can be updated as flat arrays)."""
    return (
        grad.shape == p.shape
        and buf.shape == p.shape
        and grad.dtype == p.dtype
        and buf.dtype == p.dtype
        and p.flags.c_contiguous
        and grad.flags.c_contiguous
        and buf.flags.c_contiguous
    )


def _heavy_ball(p: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float, mom: float, chunked: Callable) -> None:
    """b <- momentum·b + g; w <- w − lr·b (arrays of one shape, C-contiguous): the arithmetic of _sgd_momentum
    without dampening, weight decay, Nesterov or maximize. Large arrays: three passes, the two additions
    through BLAS's threaded axpy (see chainrule._blas.axpy); otherwise four passes over cache-sized pieces
    (`chunked`: Optimizer._chunked)."""
    if p.size <= 4096:  # small: a temporary costs less than fetching scratch
        buf *= mom
        buf += g
        p -= buf * lr
        return
    if _blas.axpy_ok(p, g, buf):
        buf *= mom
        _blas.axpy(1.0, g, buf)
        _blas.axpy(-lr, buf, p)
        return
    chunked(_heavy_ball_piece, [p.reshape(-1), g.reshape(-1), buf.reshape(-1)], 1, (lr, mom))


def _heavy_ball_piece(arrays: list[np.ndarray], scratch: list[np.ndarray], lr: float, mom: float) -> None:
    p, g, b = arrays
    b *= mom
    b += g
    p -= np.multiply(b, lr, out=scratch[0])
