"""Adamax (Adam with the infinity norm), as torch.optim.Adamax."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer, effective_grad, lerp_


class Adamax(Optimizer):
    """m = β1 m + (1-β1) g, u = max(β2 u, |g| + eps), w <- w - lr/(1-β1^t) · m / u."""

    _nonnegative = ("lr", "eps", "weight_decay")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        b1, b2 = (float(b) for b in group["betas"])
        maximize = group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            s = self.state.setdefault(p, {})
            if not s:
                s["step"] = 0
                s["exp_avg"] = np.zeros_like(p.data)
                s["exp_inf"] = np.zeros_like(p.data)
            s["step"] += 1
            clr = lr / (1 - b1 ** s["step"])
            arrays = [p.data, p.grad.data, s["exp_avg"], s["exp_inf"]]
            self._run(_adamax, arrays, 2, b1, b2, eps, wd, maximize, clr)
            p._version += 1


def _adamax(
    arrays: list[np.ndarray],
    scratch: list[np.ndarray],
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    maximize: bool,
    clr: float,
) -> None:
    p, grad, m, u = arrays
    tmp = scratch[1]
    g = effective_grad(p, grad, scratch[0], maximize, wd)
    lerp_(m, g, 1 - b1, tmp)
    u *= b2
    np.abs(g, out=tmp)
    tmp += eps
    np.maximum(u, tmp, out=u)
    np.divide(m, u, out=tmp)
    tmp *= clr
    p -= tmp
