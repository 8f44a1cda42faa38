"""Adagrad (Duchi et al.), as torch.optim.Adagrad."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer, effective_grad, options


class Adagrad(Optimizer):
    """s = s + g², w <- w - lr / (1 + (t-1)·lr_decay) · g / (sqrt(s) + eps); s starts at
    initial_accumulator_value (taken per group here; torch takes the constructor's value for every group)."""

    _nonnegative = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": 0, "sum": np.full_like(p.data, float(group["initial_accumulator_value"]))}

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, lr_decay, eps, wd = options(group, "lr", "lr_decay", "eps", "weight_decay")
        for p in self._with_grad(group):
            s = self._state(p, group)
            s["step"] += 1
            clr = lr / (1 + (s["step"] - 1) * lr_decay)
            self._apply(_adagrad, p, [s["sum"]], 2, clr, eps, wd, group["maximize"])


def _adagrad(
    arrays: list[np.ndarray], scratch: list[np.ndarray], clr: float, eps: float, wd: float, maximize: bool
) -> None:
    p, grad, acc = arrays
    g = effective_grad(p, grad, scratch[0], maximize, wd)
    tmp = np.multiply(g, g, out=scratch[1])
    acc += tmp
    std = np.sqrt(acc, out=tmp)
    std += eps
    np.divide(g, std, out=tmp)
    tmp *= clr
    p -= tmp
