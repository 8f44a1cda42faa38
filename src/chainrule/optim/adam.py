"""Adam (Kingma & Ba, with optional AMSGrad) and AdamW (decoupled weight decay), as torch.optim."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer, effective_grad, lerp_, square_avg_


class Adam(Optimizer):
    """m = β1 m + (1-β1) g, v = β2 v + (1-β2) g², (amsgrad: v̂ = max(v̂, v)),
    w <- w - lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps).

    weight_decay adds weight_decay·w to g (L2), or with decoupled_weight_decay multiplies w by
    (1 - lr·weight_decay) before the update (AdamW).
    """

    _nonnegative = ("lr", "eps", "weight_decay")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        b1, b2 = (float(b) for b in group["betas"])
        amsgrad, maximize, decoupled = group["amsgrad"], group["maximize"], group["decoupled_weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            s = self.state.setdefault(p, {})
            if not s:
                s["step"] = 0
                s["exp_avg"] = np.zeros_like(p.data)
                s["exp_avg_sq"] = np.zeros_like(p.data)
                if amsgrad:
                    s["max_exp_avg_sq"] = np.zeros_like(p.data)
            s["step"] += 1
            t = s["step"]
            step_size = lr / (1 - b1**t)
            bias_correction2_sqrt = (1 - b2**t) ** 0.5
            arrays = [p.data, p.grad.data, s["exp_avg"], s["exp_avg_sq"]]
            if amsgrad:
                arrays.append(s.setdefault("max_exp_avg_sq", s["exp_avg_sq"].copy()))
            decay = 1 - lr * wd if wd and decoupled else None
            l2 = 0.0 if decoupled else wd
            self._run(_adam, arrays, 2, b1, b2, eps, l2, decay, maximize, step_size, bias_correction2_sqrt)
            p._version += 1


def _adam(
    arrays: list[np.ndarray],
    scratch: list[np.ndarray],
    b1: float,
    b2: float,
    eps: float,
    l2: float,
    decay: float | None,
    maximize: bool,
    step_size: float,
    bias_correction2_sqrt: float,
) -> None:
    p, grad, m, v = arrays[:4]
    tmp = scratch[1]
    if decay is not None:
        p *= decay
    g = effective_grad(p, grad, scratch[0], maximize, l2)
    lerp_(m, g, 1 - b1, tmp)
    square_avg_(v, g, b2, tmp)
    if len(arrays) == 5:  # amsgrad
        np.maximum(arrays[4], v, out=arrays[4])
        v = arrays[4]
    denom = np.sqrt(v, out=tmp)
    denom /= bias_correction2_sqrt
    denom += eps
    np.divide(m, denom, out=tmp)
    tmp *= step_size
    p -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): w <- w (1 - lr·weight_decay), then Adam."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, decoupled_weight_decay=True)
