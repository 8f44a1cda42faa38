"""Adamax (Adam with the infinity norm), as torch.optim.Adamax."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


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
            g = self._grad(p, maximize, wd)
            m, u, tmp = s["exp_avg"], s["exp_inf"], self._scratch(p, 1)
            self._lerp_(m, g, 1 - b1, tmp)
            u *= b2
            np.abs(g, out=tmp)
            tmp += eps
            np.maximum(u, tmp, out=u)
            clr = lr / (1 - b1 ** s["step"])
            np.divide(m, u, out=tmp)
            tmp *= clr
            p.data -= tmp
            p._version += 1
