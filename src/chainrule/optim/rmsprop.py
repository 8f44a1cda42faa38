"""RMSprop (Hinton), with momentum and the centered variant, as torch.optim.RMSprop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, effective_grad, lazy_state, lerp_, options, square_avg_


class RMSprop(Optimizer):
    """v = α v + (1-α) g²; centered: ḡ = α ḡ + (1-α) g and v - ḡ² replaces v;
    a = sqrt(v) + eps; with momentum: b = momentum·b + g/a, w <- w - lr·b; else w <- w - lr·g/a."""

    _nonnegative = ("lr", "alpha", "eps", "weight_decay", "momentum")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "square_avg": np.zeros_like(p.data)}

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, alpha, eps, wd, mom = options(group, "lr", "alpha", "eps", "weight_decay", "momentum")
        centered = group["centered"]
        for p in self._with_grad(group):
            s = self._state(p, group)
            s["step"] += 1
            buf = lazy_state(s, "momentum_buffer", np.zeros_like, p.data) if mom > 0 else None
            ga = lazy_state(s, "grad_avg", np.zeros_like, p.data) if centered else None
            self._apply(_rmsprop, p, [s["square_avg"], buf, ga], 2, lr, alpha, eps, wd, mom, group["maximize"])


def _rmsprop(
    arrays: list[np.ndarray],
    scratch: list[np.ndarray],
    lr: float,
    alpha: float,
    eps: float,
    wd: float,
    mom: float,
    maximize: bool,
) -> None:
    p, grad, v, buf, ga = arrays
    tmp = scratch[1]
    g = effective_grad(p, grad, scratch[0], maximize, wd)
    square_avg_(v, g, alpha, tmp)
    if ga is not None:  # centered
        lerp_(ga, g, 1 - alpha, tmp)
        np.multiply(ga, ga, out=tmp)
        np.subtract(v, tmp, out=tmp)
        avg = np.sqrt(tmp, out=tmp)
    else:
        avg = np.sqrt(v, out=tmp)
    avg += eps
    np.divide(g, avg, out=tmp)
    if buf is not None:
        buf *= mom
        buf += tmp
        np.multiply(buf, lr, out=tmp)
    else:
        tmp *= lr
    p -= tmp
