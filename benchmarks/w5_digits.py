"""W5: scikit-learn's digits (75/25 stratified split, standardized), MLP 64-64-10, Adam lr 1e-3, batch 100."""

from __future__ import annotations

from .common import load_digits_split
from .mlp_epochs import IMPLS as _IMPLS

TITLE = "digits MLP 64-64-10, Adam, batch 100"
UNIT = "epoch"
IMPLS = ("chainrule", "captured", "torch", "sklearn", "numpy", "floor")
STEPS = 2
RTOL = 1e-3
ACC_EPOCHS = 200  # WORKLOADS.md's figure; --epochs overrides
SIZES = [64, 64, 10]


def prepare() -> None:
    load_digits_split()


def make(impl: str, cfg: dict):
    return _IMPLS[impl](load_digits_split(), SIZES)
