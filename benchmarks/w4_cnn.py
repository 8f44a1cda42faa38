"""W4: CNN on random 64×1×28×28 float32, SGD lr 0.01, one training step.

Conv2d(1,16,3)-ReLU-MaxPool2d(2)-Conv2d(16,32,3)-ReLU-MaxPool2d(2)-Flatten-Linear(800,10), cross-entropy.
chainrule's Conv2d/MaxPool2d are imported lazily: without them the workload reports 'unavailable'.
"""

from __future__ import annotations

import numpy as np

TITLE = "CNN 64x1x28x28, 2 conv + 2 maxpool + linear, SGD"
UNIT = "step"
IMPLS = ("chainrule", "torch")
STEPS = 5
RTOL = 1e-4
LR, BATCH = 0.01, 64


class Unavailable(Exception):
    pass


def _data() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    state = {}
    for key, shape in (("0", (16, 1, 3, 3)), ("3", (32, 16, 3, 3)), ("7", (10, 800))):
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        state[f"{key}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        state[f"{key}.bias"] = rng.uniform(-bound, bound, shape[:1]).astype(np.float32)
    return x, y, state


class Chainrule:
    def __init__(self, cfg: dict) -> None:
        import chainrule as cr
        from chainrule import nn

        try:
            from chainrule.nn.conv import Conv2d
            from chainrule.nn.pooling import MaxPool2d
        except ImportError as e:
            raise Unavailable(f"chainrule has no Conv2d/MaxPool2d yet ({e})") from None
        x, y, state = _data()
        self.model = nn.Sequential(
            Conv2d(1, 16, 3), nn.ReLU(), MaxPool2d(2), Conv2d(16, 32, 3), nn.ReLU(), MaxPool2d(2),
            nn.Flatten(), nn.Linear(800, 10),
        )  # fmt: skip
        self.model.load_state_dict(state)
        self.x, self.y = cr.from_numpy(x), cr.from_numpy(y)
        self.opt = cr.optim.SGD(self.model.parameters(), lr=LR)
        self.cr = cr

    def run(self, n: int) -> None:
        model, opt, ce, x, y = self.model, self.opt, self.cr.functional.cross_entropy, self.x, self.y
        for _ in range(n):
            opt.zero_grad()
            loss = ce(model(x), y)
            loss.backward()
            opt.step()

    def loss(self) -> float:
        with self.cr.no_grad():
            return float(self.cr.functional.cross_entropy(self.model(self.x), self.y).item())


class Torch:
    def __init__(self, cfg: dict) -> None:
        from .common import torch_setup

        torch = torch_setup()
        nn = torch.nn
        x, y, state = _data()
        self.model = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(800, 10),
        )  # fmt: skip
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.torch = torch

    def run(self, n: int) -> None:
        model, opt, ce, x, y = self.model, self.opt, self.torch.nn.functional.cross_entropy, self.x, self.y
        for _ in range(n):
            opt.zero_grad()
            loss = ce(model(x), y)
            loss.backward()
            opt.step()

    def loss(self) -> float:
        with self.torch.no_grad():
            return float(self.torch.nn.functional.cross_entropy(self.model(self.x), self.y).item())


def make(impl: str, cfg: dict):
    return {"chainrule": Chainrule, "torch": Torch}[impl](cfg)
