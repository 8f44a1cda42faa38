"""Adam (Kingma & Ba, with optional AMSGrad) and AdamW (decoupled weight decay), as torch.optim."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, effective_grad, lazy_state, lerp_


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

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "exp_avg": np.zeros_like(p.data), "exp_avg_sq": np.zeros_like(p.data)}

    def _update_group(self, group: dict[str, Any]) -> None:
        # options() and split_weight_decay() inline: a small model steps in ~100 µs, every call counts
        lr, eps, wd, betas = float(group["lr"]), float(group["eps"]), float(group["weight_decay"]), group["betas"]
        b1, b2 = float(betas[0]), float(betas[1])
        if group["decoupled_weight_decay"]:
            decay, l2 = (1 - lr * wd if wd else None), 0.0
        else:
            decay, l2 = None, wd
        maximize, amsgrad = group["maximize"], group["amsgrad"]

        def args(t: int) -> tuple[Any, ...]:
            return b1, b2, eps, l2, decay, maximize, lr / (1 - b1**t), (1 - b2**t) ** 0.5

        keys = _AMSGRAD_KEYS if amsgrad else _KEYS
        if self._apply_flat(group, keys, _adam_flat, 2, args, _add_max_exp_avg_sq if amsgrad else None):
            return
        for p in self._with_grad(group):
            s = self._state(p, group)
            s["step"] += 1
            t = s["step"]
            step_size = lr / (1 - b1**t)
            bias_correction2_sqrt = (1 - b2**t) ** 0.5
            vmax = lazy_state(s, "max_exp_avg_sq", s["exp_avg_sq"].copy) if group["amsgrad"] else None
            arrays = [s["exp_avg"], s["exp_avg_sq"], vmax]
            self._apply(
                _adam, p, arrays, 2, b1, b2, eps, l2, decay, group["maximize"], step_size, bias_correction2_sqrt
            )


_KEYS = ("exp_avg", "exp_avg_sq")
_AMSGRAD_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _add_max_exp_avg_sq(s: dict[str, Any]) -> None:
    lazy_state(s, "max_exp_avg_sq", s["exp_avg_sq"].copy)


def _adam_flat(arrays: list[np.ndarray], scratch: list[np.ndarray], *args: Any) -> None:
    _adam(arrays if len(arrays) == 5 else [*arrays, None], scratch, *args)


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
    p, grad, m, v, vmax = arrays
    tmp = scratch[1]
    if decay is not None:
        p *= decay
    g = effective_grad(p, grad, scratch[0], maximize, l2) if l2 or maximize else grad
    if abs(1 - b1) < 0.5:  # lerp_(m, g, 1 - b1, tmp) and square_avg_(v, g, b2, tmp) inline: the usual betas
        np.subtract(g, m, out=tmp)
        tmp *= 1 - b1
        m += tmp
    else:
        lerp_(m, g, 1 - b1, tmp)
    v *= b2
    np.multiply(g, 1 - b2, out=tmp)
    tmp *= g
    v += tmp
    if vmax is not None:  # amsgrad
        np.maximum(vmax, v, out=vmax)
        v = vmax
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
