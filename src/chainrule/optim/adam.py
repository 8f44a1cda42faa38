"""Adam (Kingma & Ba) and AdamW, matching torch.optim's formulas."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


class Adam(Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize),
        )

    _decoupled = False

    def step(self) -> None:
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad.data if group["maximize"] else p.grad.data
                if wd and self._decoupled:
                    p.data *= 1 - lr * wd
                elif wd:
                    g = g + wd * p.data
                s = self._param_state(p)
                if not s:
                    s["step"] = 0
                    s["exp_avg"] = np.zeros_like(p.data)
                    s["exp_avg_sq"] = np.zeros_like(p.data)
                    if group["amsgrad"]:
                        s["max_exp_avg_sq"] = np.zeros_like(p.data)
                s["step"] += 1
                t = s["step"]
                m, v = s["exp_avg"], s["exp_avg_sq"]
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                if group["amsgrad"]:
                    np.maximum(s["max_exp_avg_sq"], v, out=s["max_exp_avg_sq"])
                    v = s["max_exp_avg_sq"]
                bias1 = 1 - b1**t
                bias2_sqrt = math.sqrt(1 - b2**t)
                denom = np.sqrt(v) / bias2_sqrt + eps
                p.data -= (lr / bias1) * (m / denom)
                p._version += 1


class AdamW(Adam):
    _decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
