"""Module: the base class of layers and models, with PyTorch's registration and state-dict rules."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..tensor import Tensor, _default_dtype, no_grad


class Parameter(Tensor):
    """A tensor that a Module registers as a trainable weight (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.zeros(0, dtype=_default_dtype[0])
        arr = data.data if isinstance(data, Tensor) else np.asarray(data)
        if arr.dtype.kind != "f":
            arr = arr.astype(_default_dtype[0])
        super().__init__(arr, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class RemovableHandle:
    """Returned by the register_*_hook methods; `remove()` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict) -> None:
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Module:
    """Base class for layers and models.

    Assigning a `Parameter`, a `Module` or (through `register_buffer`) a buffer tensor as an
    attribute registers it; `parameters()`, `state_dict()` and `to()` then reach it.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name}")
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
        elif name in self.__dict__.get("_buffer_names", ()) and (value is None or isinstance(value, Tensor)):
            target = self._buffers
        elif name in self._parameters and (value is None or isinstance(value, Tensor)):
            if value is not None:
                raise TypeError(
                    f"cannot assign a plain Tensor as parameter '{name}' of {type(self).__name__} "
                    "(chainrule.nn.Parameter or None expected)"
                )
            target = self._parameters  # `self.bias = None` keeps the slot, as PyTorch
        else:
            target = None
        for store in (self._parameters, self._buffers, self._modules):
            if store is not target:
                store.pop(name, None)
        if target is None:
            object.__setattr__(self, name, value)
            return
        target[name] = value  # an existing key keeps its position, so state-dict order is stable
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is None:
            self._parameters[name] = None
            self.__dict__.pop(name, None)
        else:
            setattr(self, name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor kept with the module (moved by `to()`), in the state dict unless persistent=False.

        PyTorch's checks: the name is a non-empty string without '.' that is not already another attribute
        (KeyError), and the value a Tensor or None (TypeError)."""
        if not isinstance(name, str):
            raise TypeError(f"buffer name must be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"buffer name must be a non-empty string without '.', got {name!r}")
        if name not in self._buffers and hasattr(self, name):
            raise KeyError(f"cannot register buffer {name!r}: {self._get_name()} already has an attribute {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"buffer {name!r} must be a Tensor or None, got {type(tensor).__name__} (wrap it: chainrule.tensor(x))"
            )
        names = self.__dict__.setdefault("_buffer_names", set())
        names.add(name)
        non_persistent = self.__dict__.setdefault("_non_persistent", set())
        if persistent:
            non_persistent.discard(name)
        else:
            non_persistent.add(name)
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor

    def add_module(self, name: str, module: Module | None) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"module name must be a non-empty string without '.', got {name!r}")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """The submodule at a dotted path such as "encoder.0"; "" is self."""
        mod = self
        for part in target.split(".") if target else ():
            if part not in mod._modules or mod._modules[part] is None:
                raise AttributeError(f"{mod._get_name()} has no submodule {part!r} (looking up {target!r})")
            mod = mod._modules[part]
        return mod

    # -- forward
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """forward(*args, **kwargs), with any registered forward pre-hooks and hooks around it."""
        hooks = self.__dict__.get("_hooks")
        if not hooks:
            return self.forward(*args, **kwargs)
        for hook in list(hooks["pre"].values()):
            new = hook(self, args)
            if new is not None:
                args = new if isinstance(new, tuple) else (new,)
        out = self.forward(*args, **kwargs)
        for hook in list(hooks["post"].values()):
            new = hook(self, args, out)
            if new is not None:
                out = new
        return out

    def _add_hook(self, kind: str, hook: Any) -> RemovableHandle:
        hooks = self.__dict__.setdefault("_hooks", {"pre": OrderedDict(), "post": OrderedDict()})
        handle = RemovableHandle(hooks[kind])
        hooks[kind][handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook: Any) -> RemovableHandle:
        """hook(module, args) runs before forward; a non-None result replaces args. Returns a removable handle."""
        return self._add_hook("pre", hook)

    def register_forward_hook(self, hook: Any) -> RemovableHandle:
        """hook(module, args, output) runs after forward; a non-None result replaces the output."""
        return self._add_hook("post", hook)

    # -- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        stack: list[tuple[str, Module]] = [(prefix, self)]
        seen: set[int] = set()
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for k, m in self._modules.items():
            if m is not None:
                yield k, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Any]]:
        """(dotted name, value) of the non-None entries of each module's `store` ("_parameters" or "_buffers"),
        this module's only unless recurse; a tensor held by several modules once, under its first name."""
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for k, t in getattr(m, store).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{mname}.{k}" if mname else k), t

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """(name, buffer) of this module and, with recurse, its submodules; a shared buffer once, as PyTorch."""
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar weights (all, or only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- modes and gradients
    def train(self, mode: bool = True) -> Module:
        """Set `training` here and call each child's own `train(mode)` (an override is honoured); returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"{self._get_name()}.train: mode must be True or False, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for m in self.children():
            m.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.data.fill(0)

    def apply(self, fn: Any) -> Module:
        """Call fn on every submodule, children before their parent (post-order, as PyTorch); returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- dtype
    def to(self, *args: Any, dtype: Any = None, **kwargs: Any) -> Module:
        """Convert floating parameters and buffers to `dtype`, in place; returns self.

        Accepts `to(dtype)`, `to(dtype=...)` and, for code written for PyTorch, a device
        ("cpu", ignored: everything lives in NumPy on the CPU).
        """
        for a in args:
            if isinstance(a, str) and a.split(":")[0] == "cpu":
                continue
            dtype = a
        if kwargs.get("device") not in (None, "cpu"):
            raise ValueError(f"to: chainrule runs on the CPU only, got device {kwargs['device']!r}")
        if dtype is None:
            return self
        dt = np.dtype(dtype)
        if dt.kind != "f":
            raise TypeError(f"Module.to only accepts floating dtypes, got {dt}")
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for t in store.values():
                    if t is not None and t.dtype.kind == "f" and t.dtype != dt:
                        t.data = t.data.astype(dt)
                        t._version += 1
                        if t.grad is not None:
                            t.grad = Tensor(t.grad.data.astype(dt))
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # -- state
    def _state_items(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(key, tensor) for the state dict: a module reached by several paths (shared) under each, as PyTorch."""
        skip = self.__dict__.get("_non_persistent", ())
        for store in (self._parameters, self._buffers):
            for k, t in store.items():
                if t is not None and k not in skip:
                    yield prefix + k, t
        for name, m in self._modules.items():
            if m is not None:
                yield from m._state_items(f"{prefix}{name}.")

    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Any]:
        """Parameters and persistent buffers as NumPy arrays (copies), with PyTorch's key names.

        With keep_vars the tensors themselves are returned instead of copies of their data.
        """
        return OrderedDict((prefix + k, t if keep_vars else t.data.copy()) for k, t in self._state_items())

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> IncompatibleKeys:
        """Copy values in place from a dict of NumPy arrays, chainrule tensors or torch tensors.

        A PyTorch state dict loads unchanged. Returns the named tuple (missing_keys, unexpected_keys); with `strict`,
        either being non-empty is a ModelFileError, as is any shape mismatch. Nothing is changed
        unless every check passes. Values are converted to each parameter's or buffer's dtype.
        """
        if not isinstance(state_dict, Mapping):  # e.g. a model, or a path: PyTorch's TypeError, with the way out
            raise ModelFileError(
                f"load_state_dict for {type(self).__name__}: expected a dict of arrays, got {type(state_dict).__name__}"
                " (a model's is model.state_dict(); a file is read by chainrule.load(path))"
            )
        own = dict(self._state_items())
        arrays = {}
        for k, v in state_dict.items():
            if hasattr(v, "detach") and hasattr(v, "cpu") and not isinstance(v, Tensor):  # a torch tensor
                v = v.detach().cpu()
                v = (v.float() if str(v.dtype) == "torch.bfloat16" else v).numpy()  # NumPy has no bfloat16
            arrays[k] = np.asarray(v.data if isinstance(v, Tensor) else v)
        missing = [k for k in own if k not in arrays]
        unexpected = [k for k in arrays if k not in own]
        if strict and (missing or unexpected):
            raise ModelFileError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, unexpected keys {unexpected}"
            )
        for k, t in own.items():
            if k in arrays and arrays[k].shape != t.shape:
                raise ModelFileError(
                    f"load_state_dict for {type(self).__name__}: '{k}' has shape {arrays[k].shape} "
                    f"in the state dict but {t.shape} in the model"
                )
            if k in arrays and arrays[k].dtype.kind not in "biufc":  # checked here: a failed cast would half-load
                raise ModelFileError(
                    f"load_state_dict for {type(self).__name__}: '{k}' has dtype {arrays[k].dtype}, not numbers"
                )
        with no_grad():
            for k, t in own.items():
                if k in arrays:
                    t.data = np.array(arrays[k], dtype=t.dtype, copy=True)
                    t._version += 1
        return IncompatibleKeys(missing, unexpected)

    # -- printing
    def extra_repr(self) -> str:
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        """PyTorch's layout: `Name(extra)` for a leaf, otherwise one indented line per extra and child."""
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        lines += [f"({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items()]
        body = ""
        if len(lines) == 1 and not self._modules:
            body = lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"
