"""Weights exchange with PyTorch: `from_torch`, `to_torch_state_dict`, `to_torch`.

State-dict key names are PyTorch's, so a model built of corresponding layers (same class names, same
constructor arguments) exchanges weights key for key. Torch is imported only when a torch object is
converted or built; `from_torch(state_dict)` of NumPy arrays needs no torch.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any

import numpy as np

from .errors import ChainruleError
from .nn.module import Module
from .tensor import Tensor

__all__ = ["from_torch", "to_torch", "to_torch_state_dict"]

_CONV = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
)
_MAXPOOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_RNN = ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first", "dropout", "bidirectional")
# Constructor arguments that are copied from one framework's layer to the other's, per class name.
# A layer class absent from this table can still exchange weights through state dicts.
_ARGS: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features", "bias"),
    "Bilinear": ("in1_features", "in2_features", "out_features", "bias"),
    "Conv1d": _CONV,
    "Conv2d": _CONV,
    "MaxPool1d": _MAXPOOL,
    "MaxPool2d": _MAXPOOL,
    "AvgPool1d": _AVGPOOL,
    "AvgPool2d": _AVGPOOL,
    "AdaptiveAvgPool1d": ("output_size",),
    "AdaptiveAvgPool2d": ("output_size",),
    "BatchNorm1d": _BN,
    "BatchNorm2d": _BN,
    "LayerNorm": ("normalized_shape", "eps", "elementwise_affine", "bias"),
    "Embedding": ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "scale_grad_by_freq", "sparse"),
    "Dropout": ("p",),
    "LeakyReLU": ("negative_slope",),
    "ELU": ("alpha",),
    "GELU": ("approximate",),
    "Softplus": ("beta", "threshold"),
    "Softmax": ("dim",),
    "LogSoftmax": ("dim",),
    "Flatten": ("start_dim", "end_dim"),
    "Unflatten": ("dim", "unflattened_size"),
    "RNN": _RNN,
    "GRU": _RNN,
    "LSTM": (*_RNN, "proj_size"),
}
for _name in ("ReLU", "Sigmoid", "LogSigmoid", "Tanh", "SiLU", "Identity", "Sequential", "ModuleList", "ModuleDict"):
    _ARGS[_name] = ()


def _to_numpy(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        return v.data
    if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch tensor
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a test dependency
        raise ChainruleError("PyTorch interop needs torch: pip install torch") from e
    return torch


def _parameters(cls: type) -> dict[str, Any]:
    """The named constructor parameters of `cls` with their defaults (`inspect.Parameter.empty` when none),
    following `**kwargs` up the class hierarchy (a GRU hands most of its arguments to its base class)."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for k, p in params.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self":
                out.setdefault(k, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return out


def _takes_kwargs(cls: type) -> bool:
    """Whether the class's own constructor takes `**kwargs` (torch's RNN, GRU, LSTM): then `_ARGS` is trusted."""
    init = cls.__dict__.get("__init__")
    return init is not None and any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values())


def _constructor_kwargs(src: Module | Any, target_cls: type, path: str) -> dict[str, Any]:
    """Read the arguments of `_ARGS[name]` off `src` and keep those `target_cls` accepts.

    An argument that the target does not accept is an error only when its value is not the default.
    """
    name = type(src).__name__
    accepted, src_defaults = _parameters(target_cls), _parameters(type(src))
    kwargs: dict[str, Any] = {}
    for arg in _ARGS[name]:
        if not hasattr(src, arg):
            continue
        value = getattr(src, arg)
        if arg in ("bias", "affine", "elementwise_affine") and not isinstance(value, bool):
            value = value is not None  # a bias Parameter (or None) stands for the boolean argument
        if isinstance(value, list):
            value = tuple(value)
        if arg in accepted or _takes_kwargs(target_cls):
            kwargs[arg] = value
        elif arg in src_defaults and src_defaults[arg] is not inspect.Parameter.empty and value != src_defaults[arg]:
            raise ChainruleError(
                f"layer '{path or 'model'}' ({name}): {arg}={value!r} has no counterpart in {target_cls.__module__}"
            )
    return kwargs


def _convert(src: Any, namespace: Any, path: str, memo: dict[int, Any] | None = None) -> Any:
    """Build the module tree of `namespace` (chainrule.nn or torch.nn) mirroring `src`; weights not copied.

    A module found at several places in `src` is converted once and shared in the same places (`memo`).
    """
    memo = {} if memo is None else memo
    if id(src) in memo:
        return memo[id(src)]
    name = type(src).__name__
    target_cls = getattr(namespace, name, None)
    if name not in _ARGS or target_cls is None:
        raise ChainruleError(
            f"layer '{path or 'model'}' ({name}) has no counterpart in {namespace.__name__}; "
            "build the model yourself and exchange weights with state dicts"
        )
    children = [(k, c) for k, c in src._modules.items() if c is not None]  # torch's named_children skips repeats
    sub = [(k, _convert(c, namespace, f"{path}.{k}" if path else k, memo)) for k, c in children]
    if name == "Sequential":
        out = target_cls(OrderedDict(sub))
    elif name == "ModuleList":
        out = target_cls([m for _, m in sub])
    elif name == "ModuleDict":
        out = target_cls(dict(sub))
    elif sub:
        raise ChainruleError(f"layer '{path or 'model'}' ({name}) has unexpected child modules {[k for k, _ in sub]}")
    else:
        try:
            out = target_cls(**_constructor_kwargs(src, target_cls, path))
        except (NotImplementedError, ValueError, TypeError) as e:  # an argument the target refuses
            raise ChainruleError(f"layer '{path or 'model'}' ({name}): {e}") from e
    out.training = src.training  # this layer only: children keep their own mode
    memo[id(src)] = out
    return out


def _tie(src: Any, out: Any) -> None:
    """A parameter held at several places in `src` (tied weights) is one parameter in `out`, too."""

    def slots(m: Any, prefix: str = "") -> Any:
        for k, p in m._parameters.items():
            if p is not None:
                yield m, prefix, k, p
        for k, c in m._modules.items():
            if c is not None:
                yield from slots(c, f"{prefix}{k}.")

    first: dict[int, Any] = {}
    twins = {(prefix, k): (owner, k) for owner, prefix, k, _ in slots(out)}
    for _, prefix, k, p in slots(src):
        owner, leaf = twins[prefix, k]
        if id(p) in first:
            setattr(owner, leaf, first[id(p)])
        else:
            first[id(p)] = getattr(owner, leaf)


def _float_dtype(state: dict[str, np.ndarray]) -> np.dtype | None:
    for v in state.values():
        if v.dtype.kind == "f":
            return v.dtype
    return None


def _drop_torch_only(state: dict[str, np.ndarray], model: Module) -> dict[str, np.ndarray]:
    # torch's BatchNorm counts its batches in a buffer that a chainrule layer may not have
    own = model.state_dict()
    return {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}


def from_torch(source: Any, model: Module | None = None) -> Any:
    """Bring PyTorch weights into chainrule.

    - `from_torch(torch_module)`: a new chainrule model with the same layer tree (Sequential, Linear,
      Conv2d, ... matched by class name and constructor arguments), the same weights, dtype and
      train/eval mode.
    - `from_torch(state_dict, model)`: load a torch state dict (tensors or arrays) into `model`; returns `model`.
    - `from_torch(state_dict)`: the state dict as an OrderedDict of NumPy arrays.
    """
    if hasattr(source, "state_dict") and hasattr(source, "named_children"):  # a torch module
        state = OrderedDict((k, _to_numpy(v)) for k, v in source.state_dict().items())
        if model is None:
            from . import nn

            model = _convert(source, nn, "")
            dt = _float_dtype(state)
            if dt is not None:
                model.to(dt)
            _tie(source, model)
        source = state
    if not hasattr(source, "items"):
        raise ChainruleError(f"from_torch expects a torch module or a state dict, got {type(source).__name__}")
    state = OrderedDict((k, _to_numpy(v)) for k, v in source.items())
    if model is None:
        return state
    try:
        model.load_state_dict(_drop_torch_only(state, model))
    except (KeyError, ValueError) as e:
        raise ChainruleError(f"from_torch: the weights do not fit {type(model).__name__}: {e}") from e
    return model


def to_torch_state_dict(model: Module) -> OrderedDict[str, Any]:
    """The model's state dict as torch tensors (copies), loadable with `torch_model.load_state_dict`.

    BatchNorm layers get torch's `num_batches_tracked` buffer when they lack one.
    """
    torch = _torch()
    out: OrderedDict[str, Any] = OrderedDict()
    for k, v in model.state_dict().items():
        out[k] = torch.from_numpy(np.array(v, order="C"))  # a copy; ascontiguousarray would make 0-d arrays 1-d
    for mname, m in model.named_modules():
        key = f"{mname}.num_batches_tracked" if mname else "num_batches_tracked"
        if type(m).__name__.startswith("BatchNorm") and getattr(m, "running_mean", None) is not None and key not in out:
            out[key] = torch.tensor(0, dtype=torch.long)
    return out


def to_torch(model: Module) -> Any:
    """An equivalent `torch.nn.Module` (same layer tree by class name, same weights, dtype and mode)."""
    torch = _torch()
    tmodel = _convert(model, torch.nn, "")
    state = to_torch_state_dict(model)
    dt = next((v.dtype for v in state.values() if v.is_floating_point()), None)
    if dt is not None:
        tmodel.to(dt)
    tmodel.load_state_dict(state)
    _tie(model, tmodel)
    return tmodel  # each layer in its own train/eval mode, set by _convert
