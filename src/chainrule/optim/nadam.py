"""NAdam (Adam with Nesterov momentum, Dozat 2016), as torch.optim.NAdam."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, effective_grad, lerp_, options, split_weight_decay, square_avg_


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

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "mu_product": 1.0, "exp_avg": np.zeros_like(p.data), "exp_avg_sq": np.zeros_like(p.data)}

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd, md = options(group, "lr", "eps", "weight_decay", "momentum_decay")
        b1, b2 = (float(b) for b in group["betas"])
        decay, l2 = split_weight_decay(lr, wd, group["decoupled_weight_decay"])
        for p in self._with_grad(group):
            s = self._state(p, group)
            s["step"] += 1
            t = s["step"]
            bias_correction2 = 1 - b2**t
            mu = b1 * (1.0 - 0.5 * (0.96 ** (t * md)))
            mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
            s["mu_product"] *= mu
            mu_product = s["mu_product"]
            c_grad = lr * (1.0 - mu) / (1.0 - mu_product)
            c_avg = lr * mu_next / (1.0 - mu_product * mu_next)
            arrays = [s["exp_avg"], s["exp_avg_sq"]]
            self._apply(
                _nadam, p, arrays, 3, b1, b2, eps, l2, decay, group["maximize"], bias_correction2, c_grad, c_avg
            )


def _nadam(
    arrays: list[np.ndarray],
    scratch: list[np.ndarray],
    b1: float,
    b2: float,
    eps: float,
    l2: float,
    decay: float | None,
    maximize: bool,
    bias_correction2: float,
    c_grad: float,
    c_avg: float,
) -> None:
    p, grad, m, v = arrays
    denom, tmp = scratch[1], scratch[2]
    if decay is not None:
        p *= decay
    g = effective_grad(p, grad, scratch[0], maximize, l2)
    lerp_(m, g, 1 - b1, tmp)
    square_avg_(v, g, b2, tmp)
    np.divide(v, bias_correction2, out=denom)
    np.sqrt(denom, out=denom)
    denom += eps
    np.divide(g, denom, out=tmp)
    tmp *= c_grad
    p -= tmp
    np.divide(m, denom, out=tmp)
    tmp *= c_avg
    p -= tmp
