"""W1: the reference example, one SGD step on float64 scalars.

x=2, y=0.5, h=sigmoid(w1·x), y_pred=w2·h, L=½(y−y_pred)², w1=0.5, w2=0.3, lr 0.01.
"""

from __future__ import annotations

import math

TITLE = "reference example, float64 scalars, SGD step"
UNIT = "step"
IMPLS = ("chainrule", "captured", "torch", "micrograd", "python")
STEPS = 2000  # steps per timed repeat
RTOL = 1e-9
X, Y, W1, W2, LR = 2.0, 0.5, 0.5, 0.3, 0.01


def _loss(w1: float, w2: float) -> float:
    return 0.5 * (Y - w2 / (1.0 + math.exp(-w1 * X))) ** 2


class Chainrule:
    def __init__(self, cfg: dict) -> None:
        import chainrule as cr

        self.w1 = cr.tensor(W1, dtype=cr.float64, requires_grad=True)
        self.w2 = cr.tensor(W2, dtype=cr.float64, requires_grad=True)
        self.x = cr.tensor(X, dtype=cr.float64)
        self.opt = cr.optim.SGD([self.w1, self.w2], lr=LR)

    def run(self, n: int) -> None:
        w1, w2, x, opt = self.w1, self.w2, self.x, self.opt
        for _ in range(n):
            opt.zero_grad()
            h = (w1 * x).sigmoid()
            y_pred = w2 * h
            loss = 0.5 * (Y - y_pred) ** 2
            loss.backward()
            opt.step()

    def loss(self) -> float:
        return _loss(float(self.w1.data), float(self.w2.data))

    def values(self) -> list[float]:  # the loss goes to ~0, so the weights are compared as well
        return [float(self.w1.data), float(self.w2.data)]


class Captured(Chainrule):
    """chainrule.capture: the same step traced once, then replayed as generated Python (issue 6's stretch goal)."""

    def __init__(self, cfg: dict) -> None:
        import chainrule as cr

        super().__init__(cfg)
        w1, w2 = self.w1, self.w2

        def loss_fn(x, y):
            return 0.5 * (y - w2 * (w1 * x).sigmoid()) ** 2

        self.step = cr.capture(loss_fn, self.opt)

    def run(self, n: int) -> None:
        step = self.step
        for _ in range(n):
            step(X, Y)


class Torch:
    def __init__(self, cfg: dict) -> None:
        from .common import torch_setup

        torch = torch_setup()
        self.w1 = torch.tensor(W1, dtype=torch.float64, requires_grad=True)
        self.w2 = torch.tensor(W2, dtype=torch.float64, requires_grad=True)
        self.x = torch.tensor(X, dtype=torch.float64)
        self.opt = torch.optim.SGD([self.w1, self.w2], lr=LR)

    def run(self, n: int) -> None:
        w1, w2, x, opt = self.w1, self.w2, self.x, self.opt
        for _ in range(n):
            opt.zero_grad()
            h = (w1 * x).sigmoid()
            y_pred = w2 * h
            loss = 0.5 * (Y - y_pred) ** 2
            loss.backward()
            opt.step()

    def loss(self) -> float:
        return _loss(self.w1.item(), self.w2.item())

    def values(self) -> list[float]:
        return [self.w1.item(), self.w2.item()]


class Micrograd:
    def __init__(self, cfg: dict) -> None:
        from .scalar_autograd import Value

        self.Value = Value
        self.w1, self.w2 = Value(W1), Value(W2)

    def run(self, n: int) -> None:
        w1, w2 = self.w1, self.w2
        for _ in range(n):
            w1.grad = w2.grad = 0.0
            h = (w1 * X).sigmoid()
            y_pred = w2 * h
            loss = 0.5 * (Y - y_pred) ** 2
            loss.backward()
            w1.data -= LR * w1.grad
            w2.data -= LR * w2.grad

    def loss(self) -> float:
        return _loss(self.w1.data, self.w2.data)

    def values(self) -> list[float]:
        return [self.w1.data, self.w2.data]


class Python:
    """The floor: the chain rule written out by hand on Python floats."""

    def __init__(self, cfg: dict) -> None:
        self.w1, self.w2 = W1, W2

    def run(self, n: int) -> None:
        w1, w2 = self.w1, self.w2
        exp = math.exp
        for _ in range(n):
            h = 1.0 / (1.0 + exp(-w1 * X))
            y_pred = w2 * h
            dy = y_pred - Y  # dL/dy_pred
            g2 = dy * h
            g1 = dy * w2 * h * (1.0 - h) * X
            w1 -= LR * g1
            w2 -= LR * g2
        self.w1, self.w2 = w1, w2

    def loss(self) -> float:
        return _loss(self.w1, self.w2)

    def values(self) -> list[float]:
        return [self.w1, self.w2]


def make(impl: str, cfg: dict):
    return {"chainrule": Chainrule, "captured": Captured, "torch": Torch, "micrograd": Micrograd, "python": Python}[
        impl
    ](cfg)
