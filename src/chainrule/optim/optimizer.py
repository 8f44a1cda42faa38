"""Optimizer base class: parameter groups, zero_grad, step(closure) and state dicts of NumPy arrays.

Updates work on `p.data` in place (NumPy `out=`), reuse a small pool of scratch arrays so that a
training step allocates almost nothing, and keep the parameter's dtype: hyperparameters are turned
into Python floats, which NumPy never lets upcast a float32 array.

Optimizers that support it (Adam, AdamW) update a whole parameter group at once ("multi-tensor"):
the group's parameters and state arrays are re-homed as views of one flat array each, so that the
dozen elementwise passes of an update run once over the group instead of once per parameter (for
small models the per-call overhead of NumPy dominates). See `_FlatGroup`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..tensor import _CLOCK, Tensor, enable_grad

_CHUNK_BYTES = 1 << 18


def options(group: dict[str, Any], *names: str) -> list[float]:
    """The group's options `names` as Python floats (so that they never upcast a float32 parameter)."""
    return [float(group[name]) for name in names]


def split_weight_decay(lr: float, wd: float, decoupled: bool) -> tuple[float | None, float]:
    """(factor to multiply w by before the step, or None; L2 coefficient to add to the gradient)."""
    return (1 - lr * wd if wd and decoupled else None), (0.0 if decoupled else wd)


def lazy_state(state: dict[str, Any], key: str, make: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
    """state[key], made by make(*args) when missing (an option can be switched on after the first step)."""
    if key not in state:
        state[key] = make(*args)
    return state[key]


def effective_grad(p: np.ndarray, grad: np.ndarray, out: np.ndarray, maximize: bool, wd: float) -> np.ndarray:
    """The gradient to follow: ±grad (+ wd·p, L2 weight decay), written to `out` unless it is grad itself."""
    if wd:
        np.multiply(p, wd, out=out)
        return np.subtract(out, grad, out=out) if maximize else np.add(out, grad, out=out)
    if maximize:
        return np.negative(grad, out=out)
    return grad


def lerp_(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """start <- start + weight·(end - start), evaluated as torch's lerp_ does."""
    np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp
    else:
        tmp *= 1.0 - weight
        np.subtract(end, tmp, out=start)


def square_avg_(v: np.ndarray, g: np.ndarray, beta: float, tmp: np.ndarray) -> None:
    """v <- beta·v + (1 - beta)·g², as torch's v.mul_(beta).addcmul_(g, g, value=1 - beta)."""
    v *= beta
    np.multiply(g, 1 - beta, out=tmp)
    tmp *= g
    v += tmp


class _Holder:
    __slots__ = ("data",)


def _attr_refs(t: Any) -> int:
    return sys.getrefcount(t.data)


def _item_refs(d: dict[str, Any], k: str) -> int:
    return sys.getrefcount(d[k])


# what the two counters read for an array that nothing else holds (measured, not assumed: CPython versions differ)
_h = _Holder()
_h.data = np.empty(0)
_SOLE_ATTR = _attr_refs(_h)
_SOLE_ITEM = _item_refs({"a": np.empty(0)}, "a")
del _h


class _FlatGroup:
    """A parameter group whose parameters (`p.data`) and per-parameter state arrays are views of flat
    arrays (`flat[0]`: the values, then one per state name), plus a flat gradient that each step fills.

    Each step checks that nothing was replaced behind its back (p.data assigned, state loaded, a
    parameter without gradient, steps out of step); if anything was, the group is flattened again or
    updated parameter by parameter. A group of one C-contiguous parameter is used in place (no copy).
    Arrays that something else holds (the NumPy array given to from_numpy, a view of p.data, a state
    array kept by the caller) are never moved: they would stop seeing the updates, so such a group is
    updated parameter by parameter, in place, as before.
    """

    __slots__ = (
        "params",
        "views",
        "states",
        "expected",
        "grads",
        "flat",
        "grad",
        "keys",
        "dtype",
        "scratch",
        "_arrays",
    )

    def __init__(
        self, params: list[Tensor], states: list[dict[str, Any]], keys: tuple[str, ...], nscratch: int
    ) -> None:
        dtype = params[0].data.dtype
        self.params, self.states, self.keys, self.dtype = list(params), states, keys, dtype
        n = sum(p.data.size for p in params)
        # a group that fits one cache-sized piece keeps its own scratch arrays (larger ones go piece by piece)
        fits = n <= max(1024, _CHUNK_BYTES // dtype.itemsize)
        self.scratch = [np.empty(n, dtype) for _ in range(nscratch)] if fits else None
        if len(params) == 1:  # no copy: the parameter and its state are already flat (C-contiguous, checked)
            p, s = params[0], states[0]
            self.flat = [p.data.reshape(-1)] + [s[k].reshape(-1) for k in keys]
            self.grad = None  # the parameter's own gradient is used
            self.grads = []
        else:
            self.flat = [np.empty(n, dtype) for _ in range(1 + len(keys))]
            self.grad = np.empty(n, dtype)
            self.grads = []
            off = 0
            for p, s in zip(params, states):
                size, shape = p.data.size, p.data.shape
                pieces = [f[off : off + size].reshape(shape) for f in self.flat]
                pieces[0][...] = p.data
                p.data = pieces[0]
                for k, piece in zip(keys, pieces[1:]):
                    piece[...] = s[k]
                    s[k] = piece
                self.grads.append(self.grad[off : off + size].reshape(shape))
                off += size
        self.views = [p.data for p in params]
        self.expected = [tuple(s[k] for k in keys) for s in states]
        self._arrays = None if self.grad is None else [self.flat[0], self.grad, *self.flat[1:]]

    def gather(self, params: list[Tensor], state: dict[Tensor, dict[str, Any]], keys: tuple[str, ...]) -> int | None:
        """Check that the group is still laid out on the flat arrays with state `keys` and copy the gradients
        into the flat gradient; returns the (common) step count, or None when the flat update can't be used."""
        if len(params) != len(self.params) or keys != self.keys:
            return None
        dtype, state_get, arrays = self.dtype, state.get, []
        step = self.states[0].get("step")
        two = len(keys) == 2  # the usual two state arrays (Adam's): checked without an inner loop
        k0, k1 = keys if two else (None, None)
        for p, q, view, s, expected in zip(params, self.params, self.views, self.states, self.expected):
            g = p.grad
            if p is not q or p.data is not view or g is None or state_get(p) is not s:
                return None
            g = g.data
            if (g.dtype is not dtype and g.dtype != dtype) or g.shape != view.shape:
                return None
            if two:
                if s.get(k0) is not expected[0] or s.get(k1) is not expected[1]:
                    return None
            else:
                for k, a in zip(keys, expected):
                    if s.get(k) is not a:
                        return None
            if s.get("step") != step:
                return None
            arrays.append(g)
        if self.grad is not None:  # one call copies every gradient (flattened in C order, as the views lie)
            np.concatenate(arrays, axis=None, out=self.grad)
        return step

    def arrays(self) -> list[np.ndarray]:
        """[values, gradient, *state] as flat arrays (after `gather`)."""
        if self._arrays is not None:
            return self._arrays
        return [self.flat[0], self.params[0].grad.data.reshape(-1), *self.flat[1:]]

    def finish(self, step: int) -> None:
        """Record the step in every parameter's state and mark the parameters as modified in place."""
        for s in self.states:
            s["step"] = step
        _CLOCK[0] += 1  # Tensor._changed for each parameter, at one time of the in-place clock
        now = _CLOCK[0]
        for p in self.params:
            p._ver = now


class Optimizer:
    """Holds parameter groups (dicts with "params" and per-group options) and per-parameter state.

    Attributes:
        defaults: the constructor's options, used for groups that do not set them.
        param_groups: list of dicts {"params": [Tensor, ...], option: value, ...}.
        state: {parameter tensor: {name: np.ndarray or number}}, e.g. Adam's "step", "exp_avg".
    """

    # options that must be >= 0 (checked for every group, so per-group mistakes are caught too)
    _nonnegative: tuple[str, ...] = ("lr",)
    # per-parameter state entries that are plain numbers, not arrays
    _scalar_state: tuple[str, ...] = ("step", "mu_product")

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of tensors or of dicts, got a single Tensor")
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        self._pool: dict[str, list[np.ndarray]] = {}  # scratch arrays by dtype
        self._flats: dict[int, _FlatGroup] = {}  # by id(param group), for the multi-tensor updates
        params = list(params)
        if not params:
            raise ValueError(f"{name} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------------ groups and options
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (missing options take the defaults)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError(f"{name}: a parameter group needs a 'params' entry")
        ps = group["params"]
        if isinstance(ps, set):
            raise TypeError(f"{name}: parameters must be given in a fixed order (a list), not a set")
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name} can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name} can't optimize a non-leaf Tensor (made by {p.grad_fn})")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        self._check_options(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]) or len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ValueError(f"{name}: some parameters appear more than once (in one or several parameter groups)")
        self.param_groups.append(group)

    def _invalid(self, option: str, value: Any, rule: str) -> ValueError:
        return ValueError(f"{type(self).__name__}: invalid {option} {value!r} ({rule})")

    def _number(self, group: dict[str, Any], option: str) -> float:
        value = group[option]
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise self._invalid(option, value, "must be a number") from None
        if math.isnan(x):
            raise self._invalid(option, value, "must not be NaN")
        return x

    def _check_options(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming the optimizer and the option for an invalid hyperparameter."""
        for option in self._nonnegative:
            if option in group and self._number(group, option) < 0:
                raise self._invalid(option, group[option], "must be >= 0")
        if "betas" in group:
            betas = group["betas"]
            if len(betas) != 2:
                raise self._invalid("betas", betas, "must be a pair (beta1, beta2)")
            for i in range(2):
                b = float(betas[i])
                if not 0.0 <= b < 1.0:
                    raise self._invalid(f"betas[{i}]", betas[i], "must be in [0, 1)")

    # ------------------------------------------------------------------ training loop API
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set `.grad` to None (default) or fill it with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.data.fill(0)
                        p.grad._version += 1

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient. `closure` (re-evaluating the loss, with
        backward) is called first, with gradient recording on; its return value is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._check_params()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _check_params(self) -> None:
        """Raise ValueError naming the first parameter with a gradient that can't be applied (a read-only `.data`,
        a gradient of another shape) before any parameter or state is touched: NumPy would fail mid-step, after
        updating the parameters before it."""
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                g = p.grad
                if g is None or (p.data.flags.writeable and g.data.shape == p.data.shape):
                    continue
                where = f"{type(self).__name__}: parameter {j} of parameter group {i} (shape {p.data.shape})"
                if g.data.shape != p.data.shape:
                    raise ValueError(f"{where} has a gradient of shape {g.data.shape}; nothing was updated")
                raise ValueError(
                    f"{where} is read-only (its .data array is not writeable), so it can't be updated in place; "
                    "nothing was updated"
                )

    def _update_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def _with_grad(self, group: dict[str, Any]) -> list[Tensor]:
        """The group's parameters that have a gradient (the others are left alone)."""
        return [p for p in group["params"] if p.grad is not None]

    def _state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """p's state, filled by `_init_state` when empty (p's first update)."""
        s = self.state.setdefault(p, {})
        if not s:
            s.update(self._init_state(p, group))
        return s

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _apply(
        self, kernel: Callable[..., None], p: Tensor, state: list[np.ndarray | None], nscratch: int, *args: Any
    ) -> None:
        """Update p in place: kernel([p, grad, *state], scratch, *args) over cache-sized pieces of the
        (flattened) arrays, with `nscratch` scratch arrays; a None in `state` is passed on as None.

        An update is a dozen elementwise passes; running them on ~256 KiB pieces keeps the data in
        cache between passes (about twice as fast as whole-array passes for large parameters).
        """
        first = p.data
        arrays = [first, p.grad.data, *state]
        for a in arrays[1:]:
            if a is not None and a.shape != first.shape:
                raise ValueError(
                    f"{type(self).__name__}: a gradient or state of shape {a.shape} does not match its parameter's "
                    f"shape {first.shape}"
                )
        if all(a is None or a.flags.c_contiguous for a in arrays):
            self._chunked(kernel, [None if a is None else a.reshape(-1) for a in arrays], nscratch, args)
        else:  # unusual memory layouts: whole arrays
            kernel(arrays, [np.empty_like(first) for _ in range(nscratch)], *args)
        p._version += 1

    def _chunked(
        self, kernel: Callable[..., None], flat: list[np.ndarray | None], nscratch: int, args: tuple[Any, ...]
    ) -> None:
        """kernel(pieces of the 1-D arrays `flat`, scratch pieces, *args) over ~256 KiB pieces (None stays None)."""
        first = flat[0]
        n = first.size
        size = max(1024, _CHUNK_BYTES // first.itemsize)
        bufs = self._flat_scratch(first.dtype, min(n, size), nscratch)
        if n <= size:
            kernel(flat, [b[:n] for b in bufs], *args)
            return
        for s in range(0, n, size):
            e = min(s + size, n)
            kernel([None if a is None else a[s:e] for a in flat], [b[: e - s] for b in bufs], *args)

    def _apply_flat(
        self,
        group: dict[str, Any],
        keys: tuple[str, ...],
        kernel: Callable[..., None],
        nscratch: int,
        args: Callable[[int], tuple[Any, ...]],
        prepare: Callable[[dict[str, Any]], None] | None = None,
    ) -> bool:
        """Update the whole group at once: kernel([values, grad, *state[keys]], scratch, *args(step)) on
        flat arrays, where step is the common step count after this update. Returns False (and does
        nothing) when that is not possible: a parameter without gradient, mixed or non-float dtypes,
        non-C-contiguous values, state of another shape, dtype or step; the caller then updates each
        parameter on its own. `prepare(state)` fills state entries made lazily (e.g. AMSGrad's).
        """
        params = group["params"]
        flat = self._flats.get(id(group))
        step = None if flat is None else flat.gather(params, self.state, keys)
        if step is None:
            self._flats.pop(id(group), None)  # drop the old layout, so its views count as nobody's
            flat = self._flatten(group, keys, prepare, nscratch)
            if flat is None:
                return False
            self._flats[id(group)] = flat
            step = flat.gather(params, self.state, keys)
            if step is None:  # pragma: no cover - a fresh layout always passes
                return False
        step += 1
        arrays = flat.arrays()
        extra = args(step)
        if flat.scratch is not None and len(flat.scratch) == nscratch:
            kernel(arrays, flat.scratch, *extra)
        else:
            self._chunked(kernel, arrays, nscratch, extra)
        flat.finish(step)
        return True

    def _flatten(
        self,
        group: dict[str, Any],
        keys: tuple[str, ...],
        prepare: Callable[[dict[str, Any]], None] | None,
        nscratch: int,
    ) -> _FlatGroup | None:
        params = group["params"]
        if not params:
            return None
        dtype = params[0].data.dtype
        if dtype.kind != "f":
            return None
        for p in params:
            d, g = p.data, p.grad
            if g is None or d.dtype != dtype or not d.flags.c_contiguous or not d.flags.writeable:
                return None
            if g.data.shape != d.shape or g.data.dtype != dtype:
                return None
        del d, g
        several = len(params) > 1
        if several and any(_attr_refs(p) > _SOLE_ATTR for p in params):
            return None  # some p.data is held elsewhere: moving it would hide the updates from its holder
        states = []
        for p in params:
            s = self._state(p, group)
            if prepare is not None:
                prepare(s)
            states.append(s)
        step = states[0].get("step")
        for p, s in zip(params, states):
            if s.get("step") != step or not isinstance(step, int):
                return None
            for k in keys:
                a = s.get(k)
                if not isinstance(a, np.ndarray) or a.shape != p.data.shape or a.dtype != dtype:
                    return None
                if not a.flags.c_contiguous or not a.flags.writeable:
                    return None
                del a
                if several and _item_refs(s, k) > _SOLE_ITEM:
                    return None
        return _FlatGroup(params, states, keys, nscratch)

    def _flat_scratch(self, dtype: np.dtype, n: int, k: int) -> list[np.ndarray]:
        bufs = self._pool.setdefault(dtype.str, [])
        for i in range(k):
            if i == len(bufs):
                bufs.append(np.empty(n, dtype))
            elif bufs[i].size < n:
                bufs[i] = np.empty(n, dtype)
        return bufs[:k]

    def __getstate__(self) -> dict[str, Any]:
        # a copy (deepcopy, pickle) copies the parameters' arrays apart from the flat ones: lay out again
        state = self.__dict__.copy()
        state["_flats"] = {}
        return state

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: np.ndarray or number}}, "param_groups": [options, "params": [index...]]}.

        Parameters are numbered in group order, as torch.optim does. Arrays are copies; everything
        else is a plain number, bool, string, tuple or list (JSON-friendly).
        """
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(p)
                if s:
                    state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore options and state saved by `state_dict` (arrays are copied into the parameters' dtype)."""
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"{name}: the state dict has {len(groups)} parameter groups, this optimizer has "
                f"{len(self.param_groups)}"
            )
        for i, (saved, g) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(g["params"]):
                raise ValueError(
                    f"{name}: parameter group {i} has {len(saved['params'])} parameters in the state dict, "
                    f"{len(g['params'])} here"
                )
        params = [p for g in self.param_groups for p in g["params"]]
        state: dict[Tensor, dict[str, Any]] = {}
        for key, s in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}: the state dict has state for parameter {i}, there are {len(params)}")
            p = params[i]
            entry = {}
            for k, v in s.items():
                if k in self._scalar_state or not isinstance(v, np.ndarray | np.generic):
                    entry[k] = v.item() if isinstance(v, np.ndarray | np.generic) else v
                elif v.shape != p.shape:
                    raise ValueError(
                        f"{name}: state {k!r} of parameter {i} has shape {v.shape}, the parameter {p.shape}"
                    )
                else:
                    entry[k] = np.array(v, dtype=p.dtype, copy=True)
            state[p] = entry
        for saved, g in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    g[k] = tuple(v) if k == "betas" else (list(v) if isinstance(v, list) else v)
        self.state = state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {group[k]}" for k in sorted(group) if k != "params")
        return "\n".join(lines) + "\n)"
