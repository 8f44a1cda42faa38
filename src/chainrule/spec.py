"""Models from a description: a list of layers (JSON/TOML/YAML or Python dicts) or a compact shell form.

Layer types are `chainrule.nn` class names, matched case-insensitively ("linear", "ReLU",
"leaky_relu"), so every layer in chainrule.nn can be used. Sizes that follow from the data may be
left out: `in_features`, `in_channels`, `num_features`, `input_size` come from the previous layer's
output shape, and a Linear without `out_features` gets the number of outputs of the task.

Compact forms (`--model` on the command line): `mlp:64,64` (hidden sizes; `--activation` between
them), `linear` (logistic/linear regression), `cnn1d:32,32` (Conv1d layers of kernel 5, stride 2).

A resolved spec, stored in every saved model, is {"input_shape": [...], "dtype": "float32",
"layers": [{"type": "Linear", "in_features": 64, "out_features": 10}, ...]} with every size filled in.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from numbers import Integral, Real
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import nn
from .errors import ConfigError
from .memory import ACTIVATION_COPIES, PARAM_COPIES, check_fits, layer_activation_count, layer_param_count
from .random import Generator
from .tensor import Tensor, no_grad

INFERRED = ("in_features", "in_channels", "num_features", "input_size")


class Last(nn.Module):
    """(N, L, ...) -> (N, ...): the last step of a sequence (after a batch_first recurrent layer)."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, -1]


class Select(nn.Module):
    """Wraps a layer that returns a tuple (GRU/LSTM: output, hidden) and passes on element `index`."""

    def __init__(self, module: nn.Module, index: int = 0) -> None:
        super().__init__()
        self.module, self.index = module, index

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)[self.index]


class _Extra:
    """Layer types that exist only in specs (besides every chainrule.nn class)."""

    Last = Last


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def find_class(name: Any, namespace: Any, base: type, what: str) -> type:
    """The class in `namespace` whose name matches `name` (case, '_' and '-' ignored) and subclasses `base`."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} must be a name, got {name!r}")
    wanted = _norm(name)
    found = []
    for attr in dir(namespace):
        obj = getattr(namespace, attr, None)
        if isinstance(obj, type) and issubclass(obj, base) and obj is not base and not attr.startswith("_"):
            found.append(attr)
            if _norm(attr) == wanted:
                return obj
    raise ConfigError(f"unknown {what} {name!r} (known: {', '.join(sorted(found))})")


def activation_class(name: str) -> type:
    """A class of chainrule.nn.activation, or Identity ('identity'/'none': no activation)."""
    aliases = {"leakyrelu": "LeakyReLU", "gelu": "GELU", "relu": "ReLU", "elu": "ELU", "none": "Identity"}
    acts = {k: v for k, v in vars(nn.activation).items() if getattr(v, "__module__", "") == nn.activation.__name__}
    acts["Identity"] = nn.Identity
    return find_class(aliases.get(_norm(name), name), SimpleNamespace(**acts), nn.Module, "activation")


# ----------------------------------------------------------------------------- parsing


def read_config_file(path: str | os.PathLike) -> Any:
    """Parse a .json, .toml, .yaml/.yml file; errors name the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    low = path.lower()
    try:
        if low.endswith(".toml"):
            import tomllib

            return tomllib.loads(text)
        if low.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path}: YAML needs PyYAML (pip install pyyaml); or use JSON/TOML") from None
            return yaml.safe_load(text)
        return json.loads(text)
    except ConfigError:
        raise
    except Exception as e:
        line = getattr(e, "lineno", None)
        where = f" (line {line})" if line else ""
        raise ConfigError(f"{path}: not valid {low.rsplit('.', 1)[-1].upper()}{where}: {str(e)[:200]}") from None


def parse_spec(spec: Any) -> list[dict[str, Any]] | str:
    """Normalise a user spec: a compact string, a JSON string, a path, a list of layer dicts, or {"layers": [...]}.

    Returns either the compact string or a list of layer dicts (copied), each with a "type" key.
    """
    if isinstance(spec, str):
        s = spec.strip()
        if s.startswith(("[", "{")):
            try:
                spec = json.loads(s)
            except json.JSONDecodeError as e:
                raise ConfigError(f"model spec is not valid JSON: {e}") from None
        elif s.lower().endswith((".json", ".toml", ".yaml", ".yml")):
            spec = read_config_file(s)
        else:
            return s
    if isinstance(spec, dict):
        if "layers" not in spec:
            raise ConfigError(f"model spec dict needs a 'layers' list, got keys {sorted(spec)}")
        spec = spec["layers"]
    if not isinstance(spec, list) or not spec:
        raise ConfigError(f"model spec must be a non-empty list of layers, got {type(spec).__name__}")
    layers = []
    for i, layer in enumerate(spec):
        if isinstance(layer, str):
            layer = {"type": layer}
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            raise ConfigError(f"model spec layer {i}: expected a table with a 'type' name, got {layer!r}"[:300])
        layers.append(dict(layer))
    return layers


def expand_compact(spec: str, activation: str = "relu") -> list[dict[str, Any]]:
    """`mlp:64,64`, `linear`, `cnn1d:32,32` -> list of layer dicts (sizes from the data left out)."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    try:
        sizes = [int(s) for s in rest.replace(" ", "").split(",")] if rest.strip() else []  # "4,,4": an error
    except ValueError:
        raise ConfigError(f"model {spec!r}: sizes must be integers separated by commas, e.g. mlp:64,64") from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"model {spec!r}: sizes must be positive")
    act = activation_class(activation).__name__
    if kind in ("linear", "logistic", "logreg"):
        if sizes:
            raise ConfigError(f"model {spec!r}: 'linear' takes no sizes")
        return [{"type": "Flatten"}, {"type": "Linear"}]
    if kind == "mlp":
        layers: list[dict[str, Any]] = [{"type": "Flatten"}]
        for h in sizes or [64]:
            layers += [{"type": "Linear", "out_features": h}, {"type": act}]
        return layers + [{"type": "Linear"}]
    if kind == "cnn1d":
        if not hasattr(nn, "Conv1d"):
            raise ConfigError("model 'cnn1d' needs chainrule.nn.Conv1d, which this version lacks")
        layers = [{"type": "_channels"}]
        for c in sizes or [32, 32]:
            layers += [
                {"type": "Conv1d", "out_channels": c, "kernel_size": 5, "stride": 2, "padding": 2},
                {"type": act},
            ]
        return layers + [{"type": "Flatten"}, {"type": "Linear"}]
    raise ConfigError(f"unknown model form {spec!r} (use mlp:64,64, linear, cnn1d:32,32, or a JSON/TOML layer list)")


# ----------------------------------------------------------------------------- building


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def layer_class(name: Any, i: int) -> type:
    try:
        return find_class(name, _Extra, nn.Module, "layer type")
    except ConfigError:
        return find_class(name, nn, nn.Module, f"layer type (layer {i})")


def _make_layer(i: int, layer: dict[str, Any], generator: Generator | None, dtype: Any) -> nn.Module:
    layer = dict(layer)
    select = layer.pop("select", None)
    if select is not None:
        if not isinstance(select, int) or isinstance(select, bool):
            raise ConfigError(f"model spec layer {i}: select must be an integer, got {select!r}")
        return Select(_make_layer(i, layer, generator, dtype), select)
    cls = layer_class(layer["type"], i)
    kwargs = {k: v for k, v in layer.items() if k != "type"}
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in kwargs if k not in params and not has_var_kw]
    if unknown:
        allowed = [k for k in params if k not in ("self", "generator", "dtype", "args", "kwargs")]
        raise ConfigError(f"model spec layer {i} ({cls.__name__}): unknown option {unknown[0]!r} (options: {allowed})")
    for k, v in kwargs.items():  # a bool/int/float option given text: bias = "false" was true
        want = str(params[k].annotation) if k in params else ""
        base = want.removesuffix(" | None")
        ok = {"bool": (bool, np.bool_), "int": (Integral,), "float": (Real,)}.get(base)
        if ok is None or v is None and base != want:
            continue
        if not isinstance(v, ok) or isinstance(v, bool | np.bool_) != (base == "bool"):
            raise ConfigError(f"model spec layer {i} ({cls.__name__}): option {k!r} must be {want}, got {v!r}")
    extra = {}
    if ("generator" in params or has_var_kw) and generator is not None:
        extra["generator"] = generator
    if ("dtype" in params or has_var_kw) and dtype is not None:
        extra["dtype"] = dtype
    try:
        try:
            return cls(**kwargs, **extra)
        except TypeError:
            if not extra or not has_var_kw:
                raise
            return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, NotImplementedError) as e:
        raise ConfigError(f"model spec layer {i} ({cls.__name__}): {e}") from None


def _probe(module: nn.Module, shape: tuple[int, ...], dtype: Any, i: int, name: str) -> tuple[int, ...]:
    x = Tensor(np.zeros((2, *shape), dtype=dtype))
    was = module.training
    module.eval()
    try:
        with no_grad():
            out = module(x)
    except Exception as e:
        raise ConfigError(f"model spec layer {i} ({name}) does not accept inputs of shape {shape}: {e}") from None
    finally:
        module.train(was)
    if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
        return None  # a recurrent layer: the caller wraps it in Select
    if not isinstance(out, Tensor):
        raise ConfigError(f"model spec layer {i} ({name}) returns {type(out).__name__}, not a tensor")
    return tuple(out.shape[1:])


def build_model(
    spec: Any,
    input_shape: tuple[int, ...] | int,
    out_features: int | None = None,
    activation: str = "relu",
    seed: int | None = None,
    dtype: Any = np.float32,
    batch_size: int | None = None,
) -> nn.Sequential:
    """A Sequential built from `spec` for samples of `input_shape` and `out_features` outputs.

    Before each layer is allocated, the memory of the parameters so far (x4: gradients, optimizer state)
    and, given `batch_size`, of one batch's activations is estimated; OutOfMemoryError if it cannot fit.

    The returned model carries its resolved spec in `model._chainrule_spec` (what `save` stores).
    Weights are initialised from `Generator(seed)` for layers that take a generator.
    """
    shape = (int(input_shape),) if isinstance(input_shape, int | np.integer) else tuple(int(s) for s in input_shape)
    parsed = parse_spec(spec)
    layers = expand_compact(parsed, activation) if isinstance(parsed, str) else parsed
    gen = Generator(seed) if seed is not None else None
    dt = np.dtype(dtype)
    modules, resolved = [], []
    n_params, act_elems = 0, 0
    for i, layer in enumerate(layers):
        layer = dict(layer)
        if layer["type"] == "_channels":  # compact cnn forms: (N, L) -> (N, 1, L)
            if len(shape) != 1:
                continue
            layer = {"type": "Unflatten", "dim": 1, "unflattened_size": [1, shape[0]]}
        cls = layer_class(layer["type"], i)
        layer["type"] = cls.__name__
        try:
            sig = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            sig = {}
        for key in INFERRED:
            if key in sig and key not in layer:
                if not shape:
                    raise ConfigError(f"model spec layer {i} ({cls.__name__}): cannot infer {key} from a scalar input")
                layer[key] = shape[-1] if key in ("in_features", "input_size") else shape[0]
        if cls.__name__ == "Linear" and "out_features" not in layer:
            if out_features is None:
                raise ConfigError(f"model spec layer {i} (Linear): out_features is required")
            layer["out_features"] = int(out_features)
        n_params += layer_param_count(cls.__name__, layer)  # checked before allocating the layer
        need = n_params * dt.itemsize * PARAM_COPIES
        what = f"the model's {n_params:,} parameters (up to layer {i}, {cls.__name__})"
        acts = layer_activation_count(cls.__name__, layer, shape)  # known before building the layer
        if batch_size and acts is not None:
            need += (act_elems + acts) * batch_size * dt.itemsize * ACTIVATION_COPIES
            what += f" and activations for batches of {batch_size} ({act_elems + acts:,} per sample)"
        check_fits(need, what)
        m = _make_layer(i, layer, gen, dt)
        new_shape = _probe(m, shape, dt, i, cls.__name__)
        if new_shape is None:
            layer.setdefault("select", 0)
            m = Select(m, layer["select"])
            new_shape = _probe(m, shape, dt, i, cls.__name__)
        shape = new_shape
        act_elems += acts if acts is not None else math.prod(shape)
        modules.append(m)
        resolved.append({k: _jsonable(v) for k, v in layer.items()})
    if out_features is not None and shape != (out_features,):
        raise ConfigError(f"the model's output shape {shape} does not match the {out_features} outputs the data need")
    model = nn.Sequential(*modules)
    model._chainrule_activations = act_elems  # output elements per sample, for memory estimates
    model._chainrule_spec = {"input_shape": list(_input(input_shape)), "dtype": dt.name, "layers": resolved}
    return model


def _input(s: Any) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, int | np.integer) else tuple(int(v) for v in s)


def build_from_resolved(spec: dict[str, Any]) -> nn.Sequential:
    """Rebuild the model a saved file describes (sizes all given; weights loaded afterwards)."""
    try:
        layers, shape, dt = spec["layers"], spec["input_shape"], np.dtype(spec.get("dtype", "float32"))
        modules = [_make_layer(i, dict(layer), None, dt) for i, layer in enumerate(layers)]
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"invalid saved model spec: {type(e).__name__}: {e}") from None
    model = nn.Sequential(*modules)
    model._chainrule_spec = {"input_shape": list(shape), "dtype": dt.name, "layers": layers}
    return model


# ----------------------------------------------------------------------------- losses and optimizers


LOSSES = {"crossentropy": "CrossEntropyLoss", "ce": "CrossEntropyLoss", "mse": "MSELoss", "l2": "MSELoss"}


def make_loss(name: str | None, task: str) -> nn.Module:
    """A loss module by name ('cross_entropy', 'mse', or any chainrule.nn *Loss class); default from the task."""
    if name is None:
        name = "cross_entropy" if task == "classification" else "mse"
    key = LOSSES.get(_norm(name), name)
    try:
        cls = find_class(key if _norm(key).endswith("loss") else key + "Loss", nn.loss, nn.Module, "loss")
    except ConfigError as e:  # named as given, not with the "Loss" appended
        raise ConfigError(f"unknown loss {name!r} ({str(e).partition(' (')[2]}") from None
    return cls()


def loss_task(loss: Any) -> str:
    """'classification' for losses on class indices, 'binary' for BCE on 0/1 targets, else 'regression' (decides
    the metrics: accuracy for the first two)."""
    name = type(loss).__name__
    if name in ("BCELoss", "BCEWithLogitsLoss"):
        return "binary"
    return "classification" if name in ("CrossEntropyLoss", "NLLLoss") else "regression"


SCHEDULER_ALIASES = {
    "step": "StepLR",
    "multistep": "MultiStepLR",
    "exponential": "ExponentialLR",
    "exp": "ExponentialLR",
    "linear": "LinearLR",
    "cosine": "CosineAnnealingLR",
    "plateau": "ReduceLROnPlateau",
    "onecycle": "OneCycleLR",  # Python only (refused by make_scheduler), named so the message says why
    "lambda": "LambdaLR",
}


def parse_scheduler(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """'cosine', 'step:step_size=10,gamma=0.5', 'multistep:milestones=10/20' or {"name": "step", "step_size": 10}
    as (name, options); numbers become int or float, '/' separates the items of a list."""
    if isinstance(spec, dict):
        opts = dict(spec)
        name = opts.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"scheduler table needs a 'name' (e.g. cosine, step, plateau), got {spec!r}"[:300])
        return name, opts
    name, _, rest = spec.partition(":")
    opts: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"scheduler {spec!r}: option {item!r} is not key=value")
        try:
            values = [
                float(v) if any(c in v for c in ".eE") or v in ("inf", "-inf") else int(v) for v in text.split("/")
            ]
        except ValueError:
            values = [text]  # a word, e.g. mode=max
        opts[key.strip()] = values if "/" in text else values[0]
    return name.strip(), opts


def make_scheduler(spec: str | dict[str, Any], optimizer: Any, epochs: int) -> Any:
    """A learning-rate scheduler stepped once per epoch, by name (see SCHEDULER_ALIASES or any
    chainrule.optim.lr_scheduler class). CosineAnnealingLR's T_max defaults to the epoch budget."""
    from .optim import lr_scheduler

    name, opts = parse_scheduler(spec)
    try:
        cls = find_class(SCHEDULER_ALIASES.get(_norm(name), name), lr_scheduler, lr_scheduler.LRScheduler, "scheduler")
    except ConfigError as e:
        raise ConfigError(f"{e}; short names: {', '.join(SCHEDULER_ALIASES)}") from None
    if cls.__name__ in ("LambdaLR", "OneCycleLR"):
        raise ConfigError(
            f"scheduler {cls.__name__} needs a function or per-batch steps: use it from Python (fit(scheduler=...))"
        )
    if cls.__name__ == "CosineAnnealingLR":
        opts.setdefault("T_max", max(int(epochs), 1))
    sig = inspect.signature(cls.__init__).parameters
    for k in opts:
        if k not in sig or k in ("self", "optimizer"):
            known = ", ".join(p for p in sig if p not in ("self", "optimizer", "last_epoch"))
            raise ConfigError(f"scheduler {cls.__name__} has no option {k!r} (options: {known})")
        items = opts[k] if isinstance(opts[k], list) else [opts[k]]
        if "str" not in str(sig[k].annotation) and any(isinstance(v, str) for v in items):  # else fails mid-training
            raise ConfigError(f"scheduler {cls.__name__}: option {k!r} must be a number, got {opts[k]!r}")
    try:
        return cls(optimizer, **opts)
    except (TypeError, ValueError) as e:
        text = str(e)  # the scheduler's own messages start with its name already
        raise ConfigError(text if text.startswith(cls.__name__) else f"scheduler {cls.__name__}: {text}") from None


def make_optimizer(name: str, params: Any, lr: float | None = None, **options: Any) -> Any:
    """An optimizer by name ('sgd', 'adam', 'adamw', or any chainrule.optim class)."""
    from . import optim

    cls = find_class(name, optim, optim.Optimizer, "optimizer")
    if lr is not None and (not np.isfinite(lr) or lr <= 0):
        raise ConfigError(f"learning rate must be a positive number, got {lr}")
    sig = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in options.items() if v is not None}
    for k in kwargs:
        if k not in sig:
            raise ConfigError(f"optimizer {cls.__name__} has no option {k!r}")
    if lr is not None:
        kwargs["lr"] = lr
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer {cls.__name__}: {e}") from None
