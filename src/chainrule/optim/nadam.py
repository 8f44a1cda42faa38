"""NAdam (Adam with Nesterov momentum, Dozat 2016), as torch.optim.NAdam."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer


class NAdam(Optimizer):
    """μ_t = β1 (1 - ½·0.96^(t·momentum_decay)), m and v as Adam, d = sqrt(v/(1-β2^t)) + eps,
    w <- w - lr (1-μ_t)/(1-Πμ_{..t}) · g/d - lr μ_{t+1}/(1-Πμ_{..t+1}) · m/d.

    decoupled_weight_decay: multiply w by (1 - lr·weight_decay) instead of adding weight_decay·w to g.
    """

    _nonnegative = ("lr", "eps", "weight_decay", "momentum_decay")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        b1, b2 = (float(b) for b in group["betas"])
        md, decoupled, maximize = float(group["momentum_decay"]), group["decoupled_weight_decay"], group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            s = self.state.setdefault(p, {})
            if not s:
                s["step"] = 0
                s["mu_product"] = 1.0
                s["exp_avg"] = np.zeros_like(p.data)
                s["exp_avg_sq"] = np.zeros_like(p.data)
            s["step"] += 1
            t = s["step"]
            bias_correction2 = 1 - b2**t
            if wd and decoupled:
                p.data *= 1 - lr * wd
                g = self._grad(p, maximize, 0.0)
            else:
                g = self._grad(p, maximize, wd)
            mu = b1 * (1.0 - 0.5 * (0.96 ** (t * md)))
            mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
            s["mu_product"] *= mu
            mu_product = s["mu_product"]
            mu_product_next = mu_product * mu_next
            m, v = s["exp_avg"], s["exp_avg_sq"]
            denom, tmp = self._scratch(p, 1), self._scratch(p, 2)
            self._lerp_(m, g, 1 - b1, tmp)
            v *= b2
            np.multiply(g, 1 - b2, out=tmp)
            tmp *= g
            v += tmp
            np.divide(v, bias_correction2, out=denom)
            np.sqrt(denom, out=denom)
            denom += eps
            np.divide(g, denom, out=tmp)
            tmp *= lr * (1.0 - mu) / (1.0 - mu_product)
            p.data -= tmp
            np.divide(m, denom, out=tmp)
            tmp *= lr * mu_next / (1.0 - mu_product_next)
            p.data -= tmp
            p._version += 1
