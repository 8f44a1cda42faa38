"""RMSprop (Hinton), with momentum and the centered variant, as torch.optim.RMSprop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .optimizer import Optimizer, effective_grad, lerp_, square_avg_


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

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        wd, mom = float(group["weight_decay"]), float(group["momentum"])
        centered, maximize = group["centered"], group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            s = self.state.setdefault(p, {})
            if not s:
                s["step"] = 0
                s["square_avg"] = np.zeros_like(p.data)
                if mom > 0:
                    s["momentum_buffer"] = np.zeros_like(p.data)
                if centered:
                    s["grad_avg"] = np.zeros_like(p.data)
            s["step"] += 1
            arrays = [p.data, p.grad.data, s["square_avg"]]
            arrays.append(s.setdefault("momentum_buffer", np.zeros_like(p.data)) if mom > 0 else None)
            arrays.append(s.setdefault("grad_avg", np.zeros_like(p.data)) if centered else None)
            self._run(_rmsprop, [a for a in arrays if a is not None], 2, lr, alpha, eps, wd, mom, centered, maximize)
            p._version += 1


def _rmsprop(
    arrays: list[np.ndarray],
    scratch: list[np.ndarray],
    lr: float,
    alpha: float,
    eps: float,
    wd: float,
    mom: float,
    centered: bool,
    maximize: bool,
) -> None:
    p, grad, v = arrays[:3]
    rest = arrays[3:]
    buf = rest.pop(0) if mom > 0 else None
    tmp = scratch[1]
    g = effective_grad(p, grad, scratch[0], maximize, wd)
    square_avg_(v, g, alpha, tmp)
    if centered:
        ga = rest[0]
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
