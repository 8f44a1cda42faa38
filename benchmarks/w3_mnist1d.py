"""W3: MNIST-1D (default args: 4000 train, 1000 test, 40 features), MLP 40-100-100-10, Adam lr 1e-3, batch 100."""

from __future__ import annotations

from .common import load_mnist1d
from .mlp_epochs import IMPLS as _IMPLS

TITLE = "MNIST-1D MLP 40-100-100-10, Adam, batch 100"
UNIT = "epoch"
IMPLS = ("chainrule", "torch", "sklearn")
STEPS = 1
RTOL = 1e-3
ACC_EPOCHS = 100  # WORKLOADS.md's figure; --epochs overrides
SIZES = [40, 100, 100, 10]


def prepare() -> None:
    load_mnist1d()


def make(impl: str, cfg: dict):
    return _IMPLS[impl](load_mnist1d(), SIZES)
