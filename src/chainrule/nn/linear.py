"""Linear layer: y = x Wᵀ + b."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ops import linear
from ..random import Generator
from ..tensor import Tensor, _default_dtype
from . import init
from .module import Module, Parameter


class Linear(Module):
    """x: (..., in_features) -> (..., out_features). weight: (out, in), bias: (out,).

    Initialized like PyTorch: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        generator: Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        dt = dtype or _default_dtype[0]
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Generator | None = None) -> None:
        """PyTorch's default: kaiming_uniform_(a=√5), i.e. U(−1/√in, 1/√in), for weight and bias alike."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, generator)

    def forward(self, x: Tensor) -> Tensor:
        ps = self._parameters  # read directly: Module.__getattr__ is a Python-level search of three dicts
        if "weight" in ps and "bias" in ps:
            return linear(x, ps["weight"], ps["bias"])
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
