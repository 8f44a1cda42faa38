"""Tensor, the computation graph and reverse-mode differentiation.

A `Tensor` wraps a NumPy array. Every operation on tensors that require gradients
records the result's parents and a backward rule (see `chainrule.ops`); `backward()`
walks that graph once in reverse topological order, applying the chain rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from heapq import heapify, heappop, heappush
from typing import Any

import numpy as np

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)

_default_dtype = [float32]


def set_default_dtype(dtype: Any) -> None:
    """Set the floating dtype used for tensors made from Python floats (float32 or float64)."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"default dtype must be a floating dtype, got {dt}")
    _default_dtype[0] = dt


def get_default_dtype() -> np.dtype:
    return _default_dtype[0]


# ----------------------------------------------------------------------------- grad mode


class _GradMode:
    enabled = True


def is_grad_enabled() -> bool:
    return _GradMode.enabled


class _SetGrad:
    """Context manager and decorator that sets whether operations are recorded."""

    mode = True

    def __enter__(self) -> None:
        self._prev = _GradMode.enabled
        _GradMode.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        _GradMode.enabled = self._prev

    def __call__(self, fn: Callable) -> Callable:
        import functools

        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            prev = _GradMode.enabled
            _GradMode.enabled = mode
            try:
                return fn(*args, **kwargs)
            finally:
                _GradMode.enabled = prev

        return wrapper


class _NoArgSetGrad(_SetGrad):
    def __new__(cls, fn: Callable | None = None) -> Any:
        self = super().__new__(cls)
        return self if fn is None else self(fn)  # also usable as a bare decorator: @no_grad


class no_grad(_NoArgSetGrad):
    """Nothing computed inside is recorded for differentiation (context manager or decorator)."""

    mode = False


class enable_grad(_NoArgSetGrad):
    """Re-enable recording inside a `no_grad` block (context manager or decorator)."""

    mode = True


class set_grad_enabled(_SetGrad):
    """Turn recording on or off: at once when called, or for a `with` block or a decorated function."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self._prev = _GradMode.enabled
        _GradMode.enabled = self.mode

    def __enter__(self) -> None:
        pass

    def __call__(self, fn: Callable) -> Callable:
        _GradMode.enabled = self._prev
        return super().__call__(fn)


# ----------------------------------------------------------------------------- tensor

_NP_FLOAT_SCALARS = frozenset((np.float16, np.float32, np.float64))


def _as_array(data: Any, dtype: Any) -> np.ndarray:
    if dtype is None and type(data) in _NP_FLOAT_SCALARS:  # fast path: what a ufunc on 0-d arrays returns
        return np.asarray(data)
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    arr = np.asarray(data)
    if arr.dtype.kind == "f":
        if not isinstance(data, np.ndarray | np.generic):
            arr = arr.astype(_default_dtype[0], copy=False)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(int64, copy=False)
    elif arr.dtype.kind != "b":
        raise TypeError(f"cannot make a tensor from data of dtype {arr.dtype}")
    return arr


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    Attributes:
        data: the NumPy array holding the values.
        grad: after `backward()`, a Tensor of the same shape with d(output)/d(self), or None.
        requires_grad: whether operations on this tensor are recorded.
    """

    __slots__ = (
        "data",
        "grad",
        "requires_grad",
        "_op",
        "_prev",
        "_backward",
        "_np_backward",
        "_saved",
        "_saved_at",
        "_ver",
        "_retains_grad",
        "_seq",
        "__weakref__",
    )
    __array_ufunc__ = None  # `ndarray op Tensor` defers to Tensor's reflected operator

    def __init__(self, data: Any, dtype: Any = None, requires_grad: bool = False) -> None:
        self.data = data if type(data) is np.ndarray and dtype is None else _as_array(data, dtype)
        self.grad: Tensor | None = None
        self.requires_grad = False
        self._op: str | None = None  # name of the op that made this tensor; None for leaves
        self._prev: tuple[Tensor, ...] = ()
        self._backward: Callable | None = None
        self._np_backward: Callable | None = None  # the same rule on NumPy values (see record)
        self._saved: tuple[Tensor, ...] = ()  # the tensors backward reads: checked for in-place changes
        self._saved_at = 0  # the in-place clock when this tensor was recorded
        self._ver = 0  # see _version
        self._retains_grad = False
        self._seq = 0  # for a recorded result: its place in the order of recording (see _backward_np)
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _wrap(data: np.ndarray) -> Tensor:
        """A leaf holding `data`, an ndarray the library just made: `Tensor(data)` without the argument
        checks (a third cheaper, which counts for scalar models where most of the time is bookkeeping)."""
        t = _new_tensor(Tensor)
        t.data = data
        t.grad = None
        t.requires_grad = False
        t._op = None
        t._prev = ()
        t._backward = None
        t._np_backward = None
        t._saved = ()
        t._saved_at = 0
        t._ver = 0
        t._retains_grad = False
        t._seq = 0
        return t

    # -- basic attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        return self._op is None

    @property
    def grad_fn(self) -> str | None:
        """Name of the operation that produced this tensor (None for leaves)."""
        return self._op

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy().")
        return self.data

    def tolist(self) -> Any:
        return self.data.tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        extra = ""
        if self.dtype != _default_dtype[0] and self.dtype != int64 and self.dtype != bool_:
            extra += f", dtype={self.dtype}"
        if self._op is not None:
            extra += f", grad_fn=<{self._op}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(f"truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.data)

    __hash__ = object.__hash__

    # -- graph-related
    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, cut from the graph. As in PyTorch, the two share their in-place
        version: changing either in place is an error for a graph that saved the other."""
        t = _Detached(self.data)
        t._source = self
        return t

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf and not requires_grad:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use detach()")
        if requires_grad and self.data.dtype.kind != "f":
            raise RuntimeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep `.grad` on this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that does not require grad")
        self._retains_grad = True

    def backward(
        self,
        gradient: Any = None,
        retain_graph: bool = False,
        create_graph: bool = False,
        inputs: Sequence[Tensor] | None = None,
    ) -> None:
        """Accumulate d(self)/d(leaf) into the `.grad` of every leaf that requires grad.

        `gradient` is d(loss)/d(self); it may be omitted only for a one-element tensor.
        """
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar output, got shape {self.shape}; "
                    "pass gradient= of the same shape"
                )
        run_backward((self,), (gradient,), retain_graph or create_graph, create_graph, inputs)

    # -- in-place updates (used by optimizers and initializers; never recorded)
    @property
    def _version(self) -> int:
        """Grows at every in-place change of the data: the in-place clock's time of the last one (0: never).

        `t._version += 1` (optimizers, initializers...) marks a change. A global clock rather than a
        count per tensor lets backward skip all checks when nothing changed since the graph was recorded.
        """
        return self._ver

    @_version.setter
    def _version(self, value: int) -> None:
        self._changed()

    def _changed(self) -> None:
        """Mark an in-place change of the data (`t._version += 1` without reading the version first)."""
        _CLOCK[0] += 1
        self._ver = _CLOCK[0]

    def _check_inplace(self, name: str) -> None:
        if _GradMode.enabled and self.requires_grad:
            what = "a leaf tensor that requires grad" if self.is_leaf else "a tensor that is part of a graph"
            raise RuntimeError(f"in-place {name} on {what}; wrap it in chainrule.no_grad() or use the out-of-place op")
        self._changed()

    def _value(self, other: Any) -> Any:
        return other.data if isinstance(other, Tensor) else other

    def add_(self, other: Any, alpha: float = 1.0) -> Tensor:
        self._check_inplace("add_")
        o = self._value(other)
        if alpha != 1.0:
            o = o * alpha
        np.add(self.data, o, out=self.data, casting="same_kind")
        return self

    def sub_(self, other: Any, alpha: float = 1.0) -> Tensor:
        return self.add_(other, -alpha)

    def mul_(self, other: Any) -> Tensor:
        self._check_inplace("mul_")
        np.multiply(self.data, self._value(other), out=self.data, casting="same_kind")
        return self

    def div_(self, other: Any) -> Tensor:
        self._check_inplace("div_")
        np.divide(self.data, self._value(other), out=self.data, casting="same_kind")
        return self

    def clamp_(self, min: float | None = None, max: float | None = None) -> Tensor:
        self._check_inplace("clamp_")
        np.clip(self.data, min, max, out=self.data)
        return self

    def copy_(self, src: Any) -> Tensor:
        self._check_inplace("copy_")
        np.copyto(self.data, self._value(src), casting="same_kind")
        return self

    def fill_(self, value: float) -> Tensor:
        self._check_inplace("fill_")
        self.data.fill(value)
        return self

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check_inplace("__setitem__")
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        self.data[index] = self._value(value)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def float(self) -> Tensor:
        return self.to(float32)

    def double(self) -> Tensor:
        return self.to(float64)

    def long(self) -> Tensor:
        return self.to(int64)


class _Detached(Tensor):
    """`detach()`'s result: a leaf on its source's data whose in-place changes count as changes of the source."""

    __slots__ = ("_source",)

    def _changed(self) -> None:
        super()._changed()
        self._source._changed()


_new_tensor = object.__new__
_next_seq = itertools.count(1).__next__  # numbers the recorded results: a parent is always numbered below its result
_CLOCK = [0]  # counts the in-place changes of all tensors (see Tensor._version)
_ANOMALY: list[Any] = [None]  # the hook of chainrule.anomaly while detect_anomaly() is active


def record(
    op: str,
    data: np.ndarray,
    parents: tuple[Tensor, ...],
    backward: Callable,
    saved: tuple[Tensor, ...] | None = None,
    np_backward: Callable | None = None,
) -> Tensor:
    """Wrap `data` as the result of `op`, recording `backward` when gradients are needed.

    `backward(g)` receives d(loss)/d(result) as a Tensor and returns one gradient (Tensor
    or None) per parent, written with Tensor operations so it is itself differentiable.
    `saved` lists the parents whose values `backward` reads (default: all of them); an
    in-place change to one of them (or to the base of such a view) before backward is an error.

    `np_backward` (optional) is the same rule on NumPy values: g is an ndarray, or a NumPy scalar
    for a 0-d result, and it returns NumPy values (or None), each of the parent's shape or of a shape
    that broadcasting stretched it to (the engine sums those dims). Without `create_graph` the engine
    uses it instead of `backward`: no Tensor is made for the intermediate gradients, and scalar
    arithmetic replaces ufunc calls for 0-d tensors (most of a scalar model's backward time).
    """
    if _ANOMALY[0] is not None:  # chainrule.detect_anomaly() is active: only `backward` is checked
        backward, np_backward = _ANOMALY[0](op, data, parents, backward), None
    if _GradMode.enabled:
        for p in parents:
            if p.requires_grad:  # every slot set once, as in Tensor._wrap: this is the hottest path
                out = _new_tensor(Tensor)
                out.data = data if type(data) is np.ndarray else _as_array(data, None)
                out.grad = None
                out.requires_grad = True
                out._op = op
                out._prev = parents
                out._backward = backward
                out._np_backward = np_backward
                out._saved = parents if saved is None else saved
                out._saved_at = _CLOCK[0]
                out._ver = 0
                out._retains_grad = False
                out._seq = _next_seq()
                return out
    return Tensor._wrap(data if type(data) is np.ndarray else _as_array(data, None))


_VIEW_OPS = frozenset(("reshape", "transpose", "permute", "expand", "flip", "getitem"))


def _check_saved(t: Tensor) -> None:
    """Raise if a tensor that t's backward reads, or the base whose memory such a view shares (e.g. `w` after
    `x @ w.T` and an optimizer step), was changed in place after t was recorded."""
    for s in t._saved:
        while True:
            if s._ver > t._saved_at:
                raise RuntimeError(
                    f"one of the tensors needed for the gradient of {t._op} was modified by an in-place "
                    f"operation (shape {s.shape}, version {s._ver}, expected at most {t._saved_at})"
                )
            if type(s) is _Detached:  # shares its source's data: a change of the source counts too
                s = s._source
            elif s._op in _VIEW_OPS and np.may_share_memory(s.data, s._prev[0].data):
                s = s._prev[0]
            else:
                break


# ----------------------------------------------------------------------------- engine


def _topological_order(roots: Iterable[Tensor]) -> list[Tensor]:
    """The non-leaf tensors that need gradients, each after all of its parents (iterative DFS).

    Leaves are left out: they have no rule to run. A node is pushed back under a None marker while its
    parents are visited, so the walk allocates nothing per node (a deep chain would otherwise set off the
    garbage collector, which then scans the whole graph). The set holds the tensors themselves: a Tensor
    hashes by identity and two live tensors never have equal hashes, so tensors' elementwise `==` is never called.
    """
    order: list[Tensor] = []
    append = order.append
    visited: set[Tensor] = set()
    add = visited.add
    for root in roots:
        if not root.requires_grad or not root._prev:
            continue
        stack = [root]
        push, pop = stack.append, stack.pop
        while stack:
            node = pop()
            if node is None:  # the parents of the node under the marker are all in `order`
                append(pop())
            elif node not in visited:
                add(node)
                push(node)
                push(None)
                for p in reversed(node._prev):  # reversed: the first parent is visited first
                    if p.requires_grad and p._prev and p not in visited:
                        push(p)
    return order


def _seed(t: Tensor, g: Any) -> Tensor:
    if g is None:  # np.ones is a Python function (~0.5 µs); for the usual 0-d loss np.array is 5x cheaper
        d = t.data
        return Tensor._wrap(np.ones(d.shape, dtype=d.dtype) if d.ndim else np.array(1, dtype=d.dtype))
    g = g if isinstance(g, Tensor) else Tensor(np.asarray(g, dtype=t.dtype))
    if g.shape != t.shape:
        raise RuntimeError(f"backward: gradient has shape {g.shape} but the output has shape {t.shape}")
    return g


def _np_value(t: Tensor) -> Any:
    """t's values for the NumPy pass: the array, or a NumPy scalar for a 0-d tensor (see ops/math.py)."""
    d = t.data
    return d if d.ndim else d[()]


def _sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum the NumPy gradient `g` over the dims that broadcasting added or stretched, giving `shape`."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axes, keepdims=True).reshape(shape) if axes else np.reshape(g, shape)


def _seed_grads(
    roots: Sequence[Tensor], grad_roots: Sequence[Any], use_np: bool
) -> tuple[dict[Tensor, Any], set[int], list[Tensor]]:
    """The roots' starting gradients (summed for a root given twice), the ids of the arrays the caller gave
    (never handed to a leaf as its .grad), and the seed Tensors, which the caller keeps alive until the end
    so that no array made meanwhile gets one of those ids."""
    grads: dict[Tensor, Any] = {}
    user_given: set[int] = set()
    seeds = []
    for r, g in zip(roots, grad_roots):
        if g is None and use_np and not r.data.ndim:  # the usual 0-d loss: a NumPy scalar 1 is all it takes
            g = r.data.dtype.type(1)
        else:
            g = _seed(r, g)
            seeds.append(g)
            user_given.add(id(g.data))
            if use_np:
                g = _np_value(g)
        grads[r] = grads[r] + g if r in grads else g
    return grads, user_given, seeds


def run_backward(
    roots: Sequence[Tensor],
    grad_roots: Sequence[Any],
    retain_graph: bool,
    create_graph: bool,
    inputs: Sequence[Tensor] | None = None,
    accumulate: bool = True,
) -> dict[int, Tensor]:
    """Propagate gradients from `roots` to every tensor of their graph.

    With `accumulate`, leaf gradients are added to `.grad`; otherwise (for `grad()`), the
    gradients of `inputs` are returned in a dict keyed by id. With `create_graph` the gradients
    are Tensors and every step is recorded; otherwise they are NumPy values (see `record`'s
    `np_backward`), wrapped in a Tensor only for an op without `np_backward` and at the end.
    """
    for r in roots:
        if not r.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    if not create_graph and inputs is None and accumulate:
        _backward_np(roots, grad_roots, retain_graph)
        return {}
    use_np = not create_graph
    grads, user_given, seeds = _seed_grads(roots, grad_roots, use_np)  # keyed by the tensors themselves
    wanted = None if inputs is None else set(inputs)
    result: dict[int, Tensor] = {}
    stolen: set[int] = set()
    prev_mode = _GradMode.enabled
    _GradMode.enabled = create_graph
    try:
        pop = grads.pop
        for t in reversed(_topological_order(roots)):
            g = pop(t, None)
            if g is None:
                continue
            if wanted is not None and t in wanted:
                result[id(t)] = Tensor._wrap(np.asarray(g)) if use_np else g
            if accumulate and (t._retains_grad or (wanted is not None and t in wanted)):
                _accumulate(t, g, create_graph, stolen, user_given | {id(g.data if create_graph else g)})
            backward = t._backward
            if backward is None:
                raise _second_backward(t)
            if t._saved_at != _CLOCK[0]:  # something was changed in place since t was recorded: was it saved?
                _check_saved(t)
            if not use_np:
                parent_grads = backward(g)
            elif t._np_backward is not None:
                parent_grads = t._np_backward(g)
            else:  # an op with only the Tensor rule: wrap g, unwrap what it returns
                parent_grads = [None if pg is None else _np_value(pg) for pg in backward(Tensor._wrap(np.asarray(g)))]
            if not retain_graph:
                t._backward = t._np_backward = None
                t._saved = ()
            for p, pg in zip(t._prev, parent_grads):
                if pg is None or not p.requires_grad:
                    continue
                shape = p.data.shape
                if use_np:
                    if pg.shape != shape:
                        pg = _sum_to(pg, shape)
                elif pg.data.shape != shape:
                    raise AssertionError(f"internal: {t._op} gave a gradient of shape {pg.shape} for {p.shape}")
                old = grads.get(p)
                grads[p] = pg if old is None else old + pg
        for t, g in grads.items():  # what is left are the leaves' gradients
            if wanted is not None and t in wanted:
                result[id(t)] = Tensor._wrap(np.asarray(g)) if use_np else g
            if accumulate and (wanted is None or t in wanted):
                _accumulate(t, g, create_graph, stolen, user_given)
    finally:
        _GradMode.enabled = prev_mode
    return result


def _second_backward(t: Tensor) -> RuntimeError:
    return RuntimeError(
        "Trying to backward through the graph a second time (or directly access saved tensors "
        "after they have already been freed). Specify retain_graph=True on the first backward() call "
        f"if you need to backward through it again (op: {t._op})."
    )


def _backward_np(roots: Sequence[Tensor], grad_roots: Sequence[Any], retain_graph: bool) -> None:
    """`run_backward` for `Tensor.backward()` without create_graph: NumPy gradients, accumulated into the
    leaves' `.grad`. For a small model this loop is a fifth of a training step, so it does without a
    topological sort: the results are numbered as they are recorded (`_seq`), a parent always below its
    result, so taking the pending result of the highest number, from a heap, runs every rule after the
    rules of all the results that use it, walking only the part of the graph that gradients reach."""
    grads, user_given, seeds = _seed_grads(roots, grad_roots, True)
    heap = [(-r._seq, r) for r in grads if r._prev]
    heapify(heap)
    stolen: set[int] = set()
    clock = _CLOCK[0]
    prev_mode = _GradMode.enabled
    _GradMode.enabled = False
    try:
        pop, get = grads.pop, grads.get
        while heap:
            t = heappop(heap)[1]
            g = pop(t)
            if t._retains_grad:
                _accumulate(t, g, False, stolen, user_given | {id(g)})
            rule = t._np_backward
            if rule is None:
                backward = t._backward
                if backward is None:
                    raise _second_backward(t)
                if t._saved_at != clock:
                    _check_saved(t)
                # an op with only the Tensor rule: wrap g, unwrap what it returns
                parent_grads = [None if pg is None else _np_value(pg) for pg in backward(Tensor._wrap(np.asarray(g)))]
            else:
                if t._saved_at != clock:  # something was changed in place since t was recorded: was it saved?
                    _check_saved(t)
                parent_grads = rule(g)
            if not retain_graph:
                t._backward = t._np_backward = None
                t._saved = ()
            for p, pg in zip(t._prev, parent_grads):
                if pg is None or not p.requires_grad:
                    continue
                if pg.shape != p.data.shape:
                    pg = _sum_to(pg, p.data.shape)
                old = get(p)
                if old is not None:
                    grads[p] = old + pg
                else:
                    grads[p] = pg
                    if p._prev:  # a result: its rule runs once every result using it has passed its gradient
                        heappush(heap, (-p._seq, p))
        for t, g in grads.items():  # what is left are the leaves' gradients
            _accumulate(t, g, False, stolen, user_given)
    finally:
        _GradMode.enabled = prev_mode


def _accumulate(t: Tensor, g: Any, create_graph: bool, stolen: set[int], shared: set[int]) -> None:
    """Add the gradient g (a Tensor with `create_graph`, else a NumPy value) to t.grad."""
    if create_graph:
        if t.grad is None:  # keep g's graph; a constant g may be shared (e.g. by both sides of an add): copy it
            t.grad = g if g.requires_grad else Tensor(g.data.copy())
        else:
            t.grad = t.grad + g
        return
    arr = np.asarray(g)
    if t.grad is None:
        dtype = t.data.dtype
        if arr is not g:  # g was a NumPy scalar: arr is a new array, owned by nobody else
            t.grad = Tensor._wrap(arr if arr.dtype == dtype else arr.astype(dtype))
            return
        if arr.base is not None or id(arr) in stolen or id(arr) in shared or arr.dtype != dtype:
            arr = arr.astype(dtype, copy=True)
        stolen.add(id(arr))
        t.grad = Tensor._wrap(arr)
    else:
        t.grad._changed()
        if t.grad.requires_grad or not t.grad.data.flags.writeable:
            t.grad = Tensor(t.grad.data + arr)
        else:
            np.add(t.grad.data, arr, out=t.grad.data, casting="same_kind")


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """Gradients of `outputs` with respect to `inputs`, returned as a tuple (like torch.autograd.grad).

    Nothing is accumulated into `.grad`.
    """
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    for o, go in zip(outputs, grad_outputs):
        if go is None and o.data.size != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs, got shape {o.shape}")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"input {i} of grad() does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    found = run_backward(outputs, tuple(grad_outputs), retain_graph, create_graph, inputs, accumulate=False)
    result = []
    for i, x in enumerate(inputs):
        g = found.get(id(x))
        if g is None and not allow_unused:
            raise RuntimeError(f"input {i} of grad() was not used in the graph of the outputs; pass allow_unused=True")
        result.append(g)
    return tuple(result)


# ----------------------------------------------------------------------------- factories


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding a copy of `data` (Python floats become the default dtype)."""
    arr = _as_array(data, dtype)
    if isinstance(data, np.ndarray | Tensor) or arr is data:
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad)


def as_tensor(data: Any, dtype: Any = None) -> Tensor:
    """`data` as a tensor, sharing memory with a NumPy array when the dtype allows."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == np.dtype(dtype)):
        return data
    return Tensor(_as_array(data, dtype))


def from_numpy(arr: np.ndarray) -> Tensor:
    return Tensor(arr)


def _shape(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], Sequence | np.ndarray):
        return tuple(int(s) for s in size[0])
    return tuple(int(s) for s in size)


def _dt(dtype: Any) -> np.dtype:
    return _default_dtype[0] if dtype is None else np.dtype(dtype)


def zeros(*size: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(_shape(size), _dt(dtype)), requires_grad=requires_grad)


def ones(*size: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(_shape(size), _dt(dtype)), requires_grad=requires_grad)


def full(size: Sequence[int], fill_value: float, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """`size` filled with `fill_value`; without `dtype`, a bool or int value gives bool or int64 (as PyTorch)."""
    if dtype is None and isinstance(fill_value, bool | int | np.integer | np.bool_):
        dtype = bool_ if isinstance(fill_value, bool | np.bool_) else int64
    return Tensor(np.full(tuple(size), fill_value, _dt(dtype)), requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.zeros(t.shape, t.dtype if dtype is None else dtype), requires_grad=requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.ones(t.shape, t.dtype if dtype is None else dtype), requires_grad=requires_grad)


def full_like(t: Tensor, fill_value: float, dtype: Any = None) -> Tensor:
    return Tensor(np.full(t.shape, fill_value, t.dtype if dtype is None else dtype))


def arange(
    start: float, end: float | None = None, step: float = 1, dtype: Any = None, requires_grad: bool = False
) -> Tensor:
    if end is None:
        start, end = 0, start
    is_int = all(isinstance(v, int | np.integer) for v in (start, end, step))
    dt = np.dtype(dtype) if dtype is not None else (int64 if is_int else _default_dtype[0])
    return Tensor(np.arange(start, end, step, dtype=dt), requires_grad=requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None) -> Tensor:
    return Tensor(np.linspace(start, end, steps, dtype=_dt(dtype)))


def eye(n: int, m: int | None = None, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(np.eye(n, m, dtype=_dt(dtype)), requires_grad=requires_grad)
