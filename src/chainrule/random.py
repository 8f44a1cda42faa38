"""Seeded random numbers: every random draw in chainrule comes from a `Generator`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .tensor import Tensor, _dt, _shape


class Generator:
    """A seeded source of random numbers (NumPy's PCG64 underneath).

    The same seed gives bit-identical draws. `get_state`/`set_state` return and accept
    a JSON-serialisable dict, so a checkpoint can restore the exact stream position.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._seed = 0 if seed is None else int(seed)
        self.np = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> Generator:
        self._seed = int(seed)
        self.np = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict[str, Any]:
        state = self.np.bit_generator.state
        return {
            "seed": self._seed,
            "state": int(state["state"]["state"]),
            "inc": int(state["state"]["inc"]),
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._seed = int(state["seed"])
        self.np.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(state["state"]), "inc": int(state["inc"])},
            "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"]),
        }


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Reseed the default generator; returns it."""
    return default_generator.manual_seed(seed)


def _gen(generator: Generator | None) -> np.random.Generator:
    return (generator or default_generator).np


def rand(*size: int, generator: Generator | None = None, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples on [0, 1)."""
    dt = _dt(dtype)
    return Tensor(_gen(generator).random(_shape(size), dtype=dt), requires_grad=requires_grad)


def randn(*size: int, generator: Generator | None = None, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    dt = _dt(dtype)
    return Tensor(_gen(generator).standard_normal(_shape(size), dtype=dt), requires_grad=requires_grad)


def randint(low: int, high: int, size: tuple[int, ...], generator: Generator | None = None) -> Tensor:
    return Tensor(_gen(generator).integers(low, high, size=tuple(size), dtype=np.int64))


def randperm(n: int, generator: Generator | None = None) -> Tensor:
    return Tensor(_gen(generator).permutation(n).astype(np.int64))
