"""W2: MLP 784-256-256-10, ReLU, cross-entropy, float32, SGD(lr 0.01, momentum 0.9), batch 128."""

from __future__ import annotations

import numpy as np

from .common import mlp_init, np_cross_entropy, np_mlp_logits

TITLE = "MLP 784-256-256-10, batch 128, float32, SGD momentum"
UNIT = "step"
IMPLS = ("chainrule", "captured", "torch", "numpy")
STEPS = 20
RTOL = 1e-4
SIZES = [784, 256, 256, 10]
LR, MOMENTUM, BATCH = 0.01, 0.9, 128


def _data() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH).astype(np.int64)
    return x, y, mlp_init(SIZES, seed=2)


class Chainrule:
    def __init__(self, cfg: dict) -> None:
        import chainrule as cr
        from chainrule import nn

        x, y, state = _data()
        self.model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        self.model.load_state_dict(state)
        self.x, self.y = cr.from_numpy(x), cr.from_numpy(y)
        self.opt = cr.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.ce = cr.functional.cross_entropy

    def run(self, n: int) -> None:
        model, opt, ce, x, y = self.model, self.opt, self.ce, self.x, self.y
        for _ in range(n):
            opt.zero_grad()
            loss = ce(model(x), y)
            loss.backward()
            opt.step()

    def loss(self) -> float:
        return np_cross_entropy(np_mlp_logits(self.model.state_dict(), self.x.data), self.y.data)


class Captured(Chainrule):
    """chainrule.capture: the same step traced once, then replayed as a tape of NumPy rules."""

    def __init__(self, cfg: dict) -> None:
        import chainrule as cr

        super().__init__(cfg)
        model, ce = self.model, self.ce
        self.step = cr.capture(lambda xb, yb: ce(model(xb), yb), self.opt)

    def run(self, n: int) -> None:
        step, x, y = self.step, self.x, self.y
        for _ in range(n):
            step(x, y)


class Torch:
    def __init__(self, cfg: dict) -> None:
        from .common import torch_setup

        torch = torch_setup()
        nn = torch.nn
        x, y, state = _data()
        self.model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.ce = nn.functional.cross_entropy

    def run(self, n: int) -> None:
        model, opt, ce, x, y = self.model, self.opt, self.ce, self.x, self.y
        for _ in range(n):
            opt.zero_grad()
            loss = ce(model(x), y)
            loss.backward()
            opt.step()

    def loss(self) -> float:
        state = {k: v.detach().numpy() for k, v in self.model.state_dict().items()}
        return np_cross_entropy(np_mlp_logits(state, self.x.numpy()), self.y.numpy())


class Numpy:
    """The floor: forward, backward and momentum update written by hand, buffers reused."""

    def __init__(self, cfg: dict) -> None:
        self.x, self.y, state = _data()
        self.params = [state[k] for k in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")]
        self.bufs = [None] * 6
        self.rows = np.arange(BATCH)

    def run(self, n: int) -> None:
        x, y, rows = self.x, self.y, self.rows
        w1, b1, w2, b2, w3, b3 = self.params
        for _ in range(n):
            a1 = x @ w1.T
            a1 += b1
            h1 = np.maximum(a1, 0, out=a1)
            a2 = h1 @ w2.T
            a2 += b2
            h2 = np.maximum(a2, 0, out=a2)
            z = h2 @ w3.T
            z += b3
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            z[rows, y] -= 1.0
            z *= np.float32(1.0 / BATCH)  # dL/dlogits
            grads = [None] * 6
            grads[4] = z.T @ h2
            grads[5] = z.sum(0)
            d2 = z @ w3
            d2 *= h2 > 0
            grads[2] = d2.T @ h1
            grads[3] = d2.sum(0)
            d1 = d2 @ w2
            d1 *= h1 > 0
            grads[0] = d1.T @ x
            grads[1] = d1.sum(0)
            for i, (p, g) in enumerate(zip(self.params, grads)):
                buf = self.bufs[i]
                if buf is None:
                    buf = self.bufs[i] = g
                else:
                    buf *= MOMENTUM
                    buf += g
                p -= np.float32(LR) * buf

    def loss(self) -> float:
        state = dict(zip(("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"), self.params))
        return np_cross_entropy(np_mlp_logits(state, self.x), self.y)


def make(impl: str, cfg: dict):
    return {"chainrule": Chainrule, "captured": Captured, "torch": Torch, "numpy": Numpy}[impl](cfg)
