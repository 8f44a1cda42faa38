"""Dropout: zero inputs at random while training, scaling the rest by 1/(1 − p)."""

from __future__ import annotations

from .. import functional as F
from ..random import Generator
from ..tensor import Tensor
from .module import Module


class Dropout(Module):
    """Each element is zeroed with probability p in training mode; identity in eval mode.

    `generator` (chainrule extension) picks the random stream; default: chainrule.default_generator.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, generator: Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace, self.generator = p, inplace, generator

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
