"""Linear layer: y = x Wᵀ + b."""

from __future__ import annotations

import math

from ..ops import linear
from ..random import Generator, default_generator
from ..tensor import Tensor, _default_dtype
from .module import Module, Parameter


class Linear(Module):
    """x: (..., in_features) -> (..., out_features). weight: (out, in), bias: (out,).

    Initialized like PyTorch: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype=None, generator: Generator | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dt = dtype or _default_dtype[0]
        rng = (generator or default_generator).np
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dt))
        if bias:
            self.bias = Parameter(rng.uniform(-bound, bound, (out_features,)).astype(dt))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
