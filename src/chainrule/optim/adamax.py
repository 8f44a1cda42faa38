"""Adamax (Adam with the infinity norm), as torch.optim.Adamax."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, effective_grad, lerp_, options


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

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "exp_avg": np.zeros_like(p.data), "exp_inf": np.zeros_like(p.data)}

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = options(group, "lr", "eps", "weight_decay")
        b1, b2 = (float(b) for b in group["betas"])
        for p in self._with_grad(group):
            s = self._state(p, group)
            s["step"] += 1
            clr = lr / (1 - b1 ** s["step"])
            self._apply(_adamax, p, [s["exp_avg"], s["exp_inf"]], 2, b1, b2, eps, wd, group["maximize"], clr)


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
