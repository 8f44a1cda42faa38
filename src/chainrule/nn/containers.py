"""Containers: Sequential, ModuleList, ModuleDict, and the shape-only layers Identity, Flatten, Unflatten."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from ..ops import linear_relu, relu
from ..tensor import Tensor
from .activation import ReLU
from .linear import Linear
from .module import Module
from .pooling import MaxPool1d, MaxPool2d

_FUSE = [True]  # see fusion()
_HELD = (Linear, ReLU)  # modules whose output fusion may combine with the next module's
_MAX_POOLS = (MaxPool1d, MaxPool2d)


class fusion:
    """Context manager: `with nn.fusion(False):` runs every Linear and ReLU of a Sequential as its own module.

    By default a Sequential runs a Linear directly followed by a ReLU (both exactly those classes, without
    hooks or a replaced `forward`) as one `linear_relu` node: the same values and gradients with one node and two
    array passes fewer; only the graph differs (one `linear_relu` node, as `grad_fn` and anomaly messages name it).
    A ReLU directly followed by a MaxPool1d/2d (the same conditions, without return_indices) runs after the
    pooling: max and relu commute (relu is non-decreasing), so values and gradients are the same, and relu's
    passes run on the pooled map (a quarter of the elements for a 2×2 pool); only the graph's order differs.
    `chainrule.explain` turns it off so that its graph shows the ops the model is made of, in its order.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def __enter__(self) -> None:
        self.prev, _FUSE[0] = _FUSE[0], self.enabled

    def __exit__(self, *exc: Any) -> None:
        _FUSE[0] = self.prev


def _plain(m: Module, cls: type) -> bool:
    """m is exactly a `cls` whose call runs `cls.forward` as written (no hooks, no forward set on the instance
    or the class), so that running that forward's op directly is what calling m does."""
    d = m.__dict__
    return type(m) is cls and "_hooks" not in d and "forward" not in d and cls.forward is _FORWARD[cls]


_FORWARD = {cls: cls.forward for cls in (Linear, ReLU, *_MAX_POOLS)}


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... (or by an OrderedDict's keys)."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for k, m in modules[0].items():
                self.add_module(k, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x: Any) -> Any:
        if not _FUSE[0]:
            for m in self._modules.values():
                x = m(x)
            return x
        held = None  # a Linear, or a ReLU, whose output goes to the next module
        for m in self._modules.values():
            if held is not None:
                if type(held) is Linear and _plain(m, ReLU):
                    ps = held._parameters  # read directly, as Linear.forward does
                    w, b = (ps["weight"], ps["bias"]) if "weight" in ps and "bias" in ps else (held.weight, held.bias)
                    x, held = linear_relu(x, w, b), None
                    continue
                if type(held) is ReLU and type(m) in _MAX_POOLS and _plain(m, type(m)) and not m.return_indices:
                    x, held = relu(m(x)), None  # max and relu commute: relu on the 4x smaller pooled map
                    continue
                x, held = held(x), None
            if type(m) in _HELD and _plain(m, type(m)):
                held = m
            else:
                x = m(x)
        return x if held is None else held(x)

    def __getitem__(self, idx: int | slice) -> Module:
        """The module at idx; a slice is a Sequential of the same class that keeps the children's names, as PyTorch."""
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> Sequential:
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        mods = list(self._modules.values())
        mods.insert(index if index >= 0 else len(mods) + index, module)
        self._renumber(mods)
        return self

    def pop(self, index: int = -1) -> Module:
        mods = list(self._modules.values())
        m = mods.pop(index)
        self._renumber(mods)
        return m

    def __setitem__(self, idx: int, module: Module) -> None:
        key = list(self._modules)[idx]
        self.add_module(key, module)

    def __delitem__(self, idx: int | slice) -> None:
        mods = list(self._modules.values())
        del mods[idx]
        self._renumber(mods)

    def _renumber(self, mods: list[Module]) -> None:
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)


class ModuleList(Module):
    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        for m in modules or ():
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        mods = list(self._modules.values())
        mods.insert(index if index >= 0 else len(mods) + index, module)
        self._modules.clear()
        self.extend(mods)

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(list(self._modules)[idx], module)

    def __delitem__(self, idx: int | slice) -> None:
        mods = list(self._modules.values())
        del mods[idx]
        self._modules.clear()
        self.extend(mods)

    def __getitem__(self, idx: int | slice) -> Module:
        mods = list(self._modules.values())
        return ModuleList(mods[idx]) if isinstance(idx, slice) else mods[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __repr__(self) -> str:
        """Like PyTorch: runs of identical children are shown once, as `(0-2): 3 x Linear(...)`."""
        reprs = [repr(m) for m in self]
        if not reprs:
            return f"{self._get_name()}()"
        blocks: list[list] = []  # [start, end, repr]
        for i, r in enumerate(reprs):
            if blocks and blocks[-1][2] == r:
                blocks[-1][1] = i
            else:
                blocks.append([i, i, r])
        lines = [
            (f"({a}): {r}" if a == b else f"({a}-{b}): {b - a + 1} x {r}").replace("\n", "\n  ") for a, b, r in blocks
        ]
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(Module):
    def __init__(self, modules: dict[str, Module] | None = None) -> None:
        super().__init__()
        for k, m in (modules or {}).items():
            self.add_module(k, m)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def pop(self, key: str) -> Module:
        return self._modules.pop(key)

    def update(self, modules: Any) -> None:
        for k, m in modules.items() if hasattr(modules, "items") else modules:
            self.add_module(k, m)

    def clear(self) -> None:
        self._modules.clear()

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()


class Identity(Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class Flatten(Module):
    """(N, *dims) -> (N, prod(dims)) by default (start_dim=1, end_dim=-1)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim: int, unflattened_size: tuple[int, ...]) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dim % x.ndim
        return x.reshape(x.shape[:d] + self.unflattened_size + x.shape[d + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
