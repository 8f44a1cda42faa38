"""The fit loop: gradient descent over batches until a stopping rule fires, with checkpoints and resume.

`fit(model, loss_fn, optimizer, train_data, ...)` returns a `History`. Batch, mini-batch and
stochastic gradient descent differ only in `batch_size` (None = the whole training set).
With `run_dir`, every `checkpoint_every` epochs a checkpoint (weights, optimizer and scheduler
state, RNG state, history) is written atomically, and `resume=True` continues from it so that the
final weights are bit-identical to an uninterrupted run. Ctrl-C (SIGINT) stops at the next batch
boundary after writing a checkpoint of the position inside the epoch (the epoch's sample order, the
batches done, the running loss and metric sums), from which a resumed run continues bit-identically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .anomaly import detect_anomaly as _detect_anomaly
from .data.dataset import DataLoader, _arrays
from .errors import AnomalyError, ChainruleError, ConfigError, DataError, ModelFileError, TrainingError
from .memory import ACTIVATION_COPIES, PARAM_COPIES, check_fits
from .nn.utils import clip_grad_norm_
from .random import Generator, default_generator
from .serialize import atomic_write_text, default_extension, load_tensors, save_tensors
from .spec import loss_task
from .tensor import Tensor, no_grad

CHECKPOINT = "checkpoint"
METRICS_LOG = "metrics.jsonl"
LOCK = ".lock"
# Test hook only: "E:B" makes the training send SIGINT to itself after batch B (1-based) of epoch E; "E:B:R" only
# on rank R of a distributed training.
_SIGINT_AT = os.environ.get("CHAINRULE_TEST_SIGINT_AT", "")

# ----------------------------------------------------------------------------- metrics


def accuracy(output: Any, target: Any, threshold: float | None = 0.5) -> float:
    """Fraction of correct predictions. output (N, C), C > 1, target (N,) class indices: the largest logit is the
    class. One output column (N,) or (N, 1), or multi-label (N, K) against 0/1 targets of that shape: an output above
    `threshold` (0.5 for probabilities, 0 for logits) predicts 1; the mean over all elements (Keras' binary_accuracy).
    threshold=None: always classes, with class-probability targets (N, C) compared by their largest entry.
    """
    out, t = _np(output), _np(target)
    return float(_hits(out, t, threshold).mean()) if len(t) else float("nan")


def _hits(out: np.ndarray, t: np.ndarray, threshold: float | None) -> np.ndarray:
    """(N,) the fraction of each row's predictions that are right (see `accuracy`)."""
    if threshold is None or (out.ndim >= 2 and out.shape[1] > 1 and out.ndim == t.ndim + 1):
        hit = out.argmax(axis=1) == (t.argmax(axis=1) if t.shape == out.shape else t)
    else:
        hit = (out > threshold) == (t.reshape(out.shape) > 0.5)
    return hit.reshape(len(hit), -1).mean(axis=1)


def _threshold(loss_fn: Any) -> float | None:
    """The output above which a binary prediction is 1 (0 for logits, 0.5 for probabilities); None: classes."""
    task = loss_task(loss_fn)
    return None if task == "classification" else 0.0 if type(loss_fn).__name__ == "BCEWithLogitsLoss" else 0.5


def mse(output: Any, target: Any) -> float:
    out, t = _np(output).astype(np.float64), _np(target).astype(np.float64)
    return float(((out - t.reshape(out.shape)) ** 2).mean())


def mae(output: Any, target: Any) -> float:
    out, t = _np(output).astype(np.float64), _np(target).astype(np.float64)
    return float(np.abs(out - t.reshape(out.shape)).mean())


def r2_score(output: Any, target: Any) -> float:
    """1 - SS_res / SS_tot (averaged over output columns); nan when the targets are constant."""
    out, t = _np(output).astype(np.float64), _np(target).astype(np.float64).reshape(_np(output).shape)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    ss_res = ((t - out) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)
    return float(r2.mean())


def compute_metrics(task: str, output: Any, target: Any, threshold: float | None = None) -> dict[str, float]:
    """{"accuracy"} for the tasks "classification" and "binary" (see `accuracy`), else {"mse", "mae", "r2"}."""
    if task != "regression":
        return {"accuracy": accuracy(output, target, threshold)}
    return {"mse": mse(output, target), "mae": mae(output, target), "r2": r2_score(output, target)}


def _np(a: Any) -> np.ndarray:
    return a.data if isinstance(a, Tensor) else np.asarray(a)


def predict(model: Any, x: Any, batch_size: int = 1024) -> np.ndarray:
    """Model outputs for inputs x (N, ...), in evaluation mode, without recording gradients."""
    x = _np(x)
    was = model.training
    model.eval()
    outs = []
    try:
        with no_grad(), np.errstate(over="ignore", invalid="ignore"):
            for i in range(0, len(x) or 1, batch_size):  # no rows: one empty batch gives the output's shape
                outs.append(model(Tensor(x[i : i + batch_size])).data)
    finally:
        model.train(was)
    return np.concatenate(outs)


def evaluate(model: Any, loss_fn: Any, data: Any, batch_size: int = 1024, distributed: Any = None) -> dict[str, float]:
    """{"loss": mean loss, plus accuracy (classification, binary) or mse/mae/r2 (regression)} on (x, y).

    With a `distributed` Communicator each rank predicts its contiguous shard of the rows, the outputs are
    gathered on every rank in row order, and every rank computes the same metrics from the whole set.
    """
    x, y = _arrays(data)[:2]
    if distributed is not None and len(x) >= distributed.size:
        out = distributed.allgather_rows(np.ascontiguousarray(predict(model, x[distributed.shard(len(x))], batch_size)))
    else:
        out = predict(model, x, batch_size)
    with no_grad():
        loss = float(loss_fn(Tensor(out), Tensor(y)).item())
    return {"loss": loss, **compute_metrics(loss_task(loss_fn), out, y, _threshold(loss_fn))}


# ----------------------------------------------------------------------------- history and callbacks


@dataclass
class History:
    """Per-epoch records: {"epoch", "train_loss", "train_<metric>", "val_loss", "val_<metric>", "lr", "time"}.

    `task` ("classification", "binary" for a BCE loss, "regression") decides the metrics: accuracy, or mse/mae/r2.

    `stop_reason` is one of "epochs", "converged", "target_loss", "early_stopping", "diverged",
    "callback", "interrupted"; `message` says it in words.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    task: str = "classification"
    stop_reason: str = ""
    message: str = ""
    best_epoch: int | None = None

    @property
    def metric(self) -> str:
        return "r2" if self.task == "regression" else "accuracy"

    def __getitem__(self, key: str) -> list[Any]:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "task": self.task,
            "stop_reason": self.stop_reason,
            "message": self.message,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(
            list(d.get("epochs", [])),
            d.get("task", "classification"),
            d.get("stop_reason", ""),
            d.get("message", ""),
            d.get("best_epoch"),
        )


class Callback:
    """Hooks called by `fit`. `on_epoch_end` returning True stops training (stop_reason "callback")."""

    def on_train_begin(self, history: History) -> None:
        pass

    def on_batch_end(self, epoch: int, batch: int, loss: float) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any], history: History) -> bool | None:
        return None

    def on_train_end(self, history: History) -> None:
        pass


class _FnCallback(Callback):
    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict[str, Any], history: History) -> bool | None:
        return bool(self.fn(logs))


# ----------------------------------------------------------------------------- progress


class _Progress:
    """tqdm bars when stderr is a terminal and tqdm is installed; otherwise one plain line per epoch."""

    def __init__(self, epochs: int, quiet: bool) -> None:
        self.epochs, self.quiet = epochs, quiet
        self.tqdm = None
        self.bar = None
        if not quiet and _isatty(sys.stderr):
            try:
                from tqdm import tqdm

                self.tqdm = tqdm
            except ImportError:
                pass

    def start_epoch(self, epoch: int, n_batches: int, initial: int = 0) -> None:
        if self.tqdm is not None:
            desc = f"epoch {epoch}/{self.epochs}"
            self.bar = self.tqdm(total=n_batches, initial=initial, desc=desc, leave=True, file=sys.stderr)

    def batch(self, loss: float, lr: float, metric: str = "") -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss={loss:.4g}{metric} lr={lr:.3g}", refresh=False)

    def end_epoch(self, logs: dict[str, Any], eta: float) -> None:
        if self.quiet:
            return
        text = format_logs(logs)
        if self.bar is not None:
            self.bar.set_postfix_str(text.split("  ", 1)[1] if "  " in text else text)
            self.bar.close()
            self.bar = None
        else:
            print(f"{text}  eta {eta:.1f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_logs(logs: dict[str, Any]) -> str:
    parts = [f"epoch {logs['epoch']}"]
    for k, v in logs.items():
        if k in ("epoch", "time") or v is None:
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    parts.append(f"{logs.get('time', 0):.2f}s")
    return "  ".join(parts)


# ----------------------------------------------------------------------------- state <-> (JSON, tensors)


def _split_state(obj: Any, prefix: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able structure with every ndarray moved to `tensors` under a path key."""
    if isinstance(obj, np.ndarray):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, Tensor):
        return _split_state(obj.data, prefix, tensors)
    if isinstance(obj, dict):
        return {str(k): _split_state(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _join_state(obj: Any, tensors: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: _join_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_state(v, tensors) for v in obj]
    return obj


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


# ----------------------------------------------------------------------------- run directory


class RunLock:
    """An exclusive lock on a run directory (flock, released by the OS if the process dies)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): best effort, the file is the lock
            pass
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise TrainingError(f"{self.path.parent}: another training is using this run directory") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _StopOnInterrupt:
    """While training, a first Ctrl-C (SIGINT) only asks to stop at the next batch boundary, so that a consistent
    checkpoint can be written there; a second one interrupts at once (KeyboardInterrupt). Installed only in the
    main thread and only over Python's default SIGINT handler (an application's own handler is left alone)."""

    def __init__(self) -> None:
        self.requested = False
        self._prev: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._prev = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)
            self._prev = None


def _test_sigint_hook(epoch: int, batch: int, rank: int) -> None:
    if _SIGINT_AT in (f"{epoch}:{batch}", f"{epoch}:{batch}:{rank}"):
        os.kill(os.getpid(), signal.SIGINT)


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """The existing checkpoint file of a run directory, or where a new one goes."""
    for ext in (".safetensors", ".npz"):
        p = Path(run_dir) / (CHECKPOINT + ext)
        if p.exists():
            return p
    return Path(run_dir) / (CHECKPOINT + default_extension())


def _write_metrics_log(run_dir: Path, history: History) -> None:
    lines = "".join(json.dumps({k: _clean(v) for k, v in e.items()}) + "\n" for e in history.epochs)
    atomic_write_text(run_dir / METRICS_LOG, lines)


def _append_metrics(run_dir: Path, logs: dict[str, Any]) -> None:
    with open(run_dir / METRICS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({k: _clean(v) for k, v in logs.items()}) + "\n")


# ----------------------------------------------------------------------------- fit


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    best_value: float | None = None
    best_state: dict[str, np.ndarray] | None = None
    bad_epochs: int = 0
    slow_epochs: int = 0
    prev_loss: float | None = None
    best_epoch: int | None = None
    last_good: dict[str, np.ndarray] | None = None
    dist: Any = None  # the Communicator of a distributed run
    steps: int = 0  # steps taken by this process (for the distributed fault-injection hook)
    # where an interrupted epoch stopped: {"epoch", "batch" (batches done), "sums" ([loss·rows, rows, metric
    # sums]), "order" (the epoch's sample order or None), "epoch_start" (the weights at the epoch's start)}
    position: dict[str, Any] | None = None
    interrupt: _StopOnInterrupt | None = None
    saved: str = ""  # where the last checkpoint written by this process stands ("epoch 3, batch 40")
    stop_agreed: bool = False  # distributed: some rank saw Ctrl-C (agreed through the per-step allreduce)

    def where(self) -> str:
        """The training's position, as a checkpoint of it is described: "epoch 3" or "epoch 3, batch 40"."""
        return f"epoch {self.epoch}" + (f", batch {self.position['batch']}" if self.position else "")

    def interrupt_seen(self) -> float:
        return 1.0 if self.interrupt is not None and self.interrupt.requested else 0.0

    def stop_requested(self) -> bool:
        if self.dist is not None:
            return self.stop_agreed
        return self.interrupt is not None and self.interrupt.requested


def _lr(optimizer: Any) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _better(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _check_val(model: Any, val: tuple[np.ndarray, ...]) -> None:
    """Validation data that could only fail after the first epoch is a DataError before training (its first
    sample goes through the model, in evaluation mode)."""
    if len(val[0]) == 0:
        raise DataError("val_data has no samples")
    _check_finite(val, "val_data")
    try:
        predict(model, val[0][:1])
    except (ChainruleError, ValueError, TypeError, IndexError) as e:
        raise DataError(f"val_data does not fit the model: {e}") from None


def _check_finite(arrays: tuple[np.ndarray, ...], what: str) -> None:
    """Float arrays (N, ...) of a dataset: a NaN or inf is a DataError naming the sample (training would only
    'diverge', with the advice to lower the learning rate)."""
    for i, a in enumerate(arrays):
        if a.dtype.kind == "f" and not np.isfinite(a.sum(dtype=np.float64)) and not np.isfinite(a).all():  # no copy
            row = int(np.argwhere(~np.isfinite(a.reshape(len(a), -1)))[0][0])
            name = ("inputs", "targets")[i] if i < 2 else f"array {i}"
            raise DataError(f"{what}: the {name} of sample {row} hold NaN or inf")


def fit(
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    train_data: Any,
    val_data: Any = None,
    epochs: int = 10,
    batch_size: int | None = 32,
    scheduler: Any = None,
    callbacks: Iterable[Callback | Callable] = (),
    tol: float | None = None,
    patience: int = 5,
    target_loss: float | None = None,
    early_stopping: int | None = None,
    monitor: str = "val_loss",
    min_delta: float = 0.0,
    restore_best: bool = True,
    seed: int = 0,
    shuffle: bool = True,
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    grad_clip: float | None = None,
    detect_anomaly: bool = False,
    quiet: bool = False,
    metadata: dict[str, Any] | None = None,
    distributed: Any = None,
) -> History:
    """Train `model` by gradient descent on `train_data` ((x, y) arrays or a TensorDataset).

    Stopping rules, checked after every epoch in this order:
      - target_loss: the training loss reached it ("target_loss");
      - tol: the training loss improved by less than `tol` for `patience` epochs in a row ("converged");
      - early_stopping=N: `monitor` (e.g. "val_loss", "val_accuracy") did not improve by `min_delta` for
        N epochs ("early_stopping"); with `restore_best` the best epoch's weights are put back;
      - a callback's on_epoch_end returned True ("callback"); otherwise the budget ran out ("epochs").
    `scheduler` is stepped after every epoch, after validation (ReduceLROnPlateau with the val_loss, else the
    train_loss), or after every batch when it has `per_batch = True` (OneCycleLR).
    A NaN or infinite loss or gradient stops training ("diverged") with the last good weights kept.
    `detect_anomaly` runs every epoch under chainrule.detect_anomaly(): AnomalyError names the op that made
    the first NaN/Inf and where it was created. `grad_clip` scales gradients to at most that global norm.
    `seed` seeds the batch shuffling. `metadata` (JSON-able) is stored in checkpoints.
    Returns the History; `history.message` explains why training stopped.

    Ctrl-C (SIGINT, in the main thread) stops after the current batch with stop_reason "interrupted"; with
    `run_dir` a checkpoint of that position inside the epoch is written first, and `resume=True` continues from
    the next batch, bit-identical to an uninterrupted run. A second Ctrl-C stops at once (the last checkpoint
    stays; the weights of the epoch's start are put back).

    `distributed` (a `chainrule.distributed.Communicator`, one process per rank under mpiexec): data-parallel
    training. `batch_size` stays the global batch; every rank draws the same shuffled global batches and
    computes on its shard (`Communicator.shard`); gradients are averaged over the global batch (one allreduce
    per bucket) before clipping and the optimizer step, so N ranks follow one process with the same batches
    (to rounding). Parameters and buffers are broadcast from rank 0 at the start (after a resume every rank has
    loaded the same checkpoint). Per-step loss and metric sums are allreduced, validation is gathered
    (`evaluate`), so every rank makes the same stopping decisions. BatchNorm normalizes with per-rank batch
    statistics; its running statistics are averaged over the ranks after every epoch. Only rank 0 takes the
    run-directory lock and writes checkpoints, the metrics log and progress.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if tol is not None and (not math.isfinite(tol) or tol < 0):
        raise ConfigError(f"tol must be a non-negative number, got {tol}")
    if not isinstance(patience, int) or patience < 1:
        raise ConfigError(f"patience must be a positive integer, got {patience!r}")
    if early_stopping is not None and (not isinstance(early_stopping, int) or early_stopping < 1):
        raise ConfigError(f"early_stopping must be a positive integer, got {early_stopping!r}")
    task = loss_task(loss_fn)
    if early_stopping is not None and monitor.startswith("val_") and val_data is None:
        raise ConfigError(f"early stopping on {monitor!r} needs validation data")
    if early_stopping is not None:
        names = ["loss", *(["mse", "mae", "r2"] if task == "regression" else ["accuracy"])]
        known = [f"{p}_{n}" for p in ("val", "train") for n in names if not (p == "train" and n == "r2")]
        if monitor not in known:
            raise ConfigError(f"cannot monitor {monitor!r} for {task}; choose one of {', '.join(known)}")
    mode = "min" if monitor.split("_")[-1] in ("loss", "mse", "mae") else "max"
    dist = distributed
    main = dist is None or dist.is_main
    if isinstance(train_data, DataLoader):  # its own batch size, shuffling and generator are used
        loader = train_data
    else:
        loader = DataLoader(train_data, batch_size=batch_size, shuffle=shuffle, generator=Generator(seed))
    if len(loader.arrays[0]) == 0:
        raise DataError("the training data has no samples")
    _check_finite(loader.arrays, "train_data")
    if val_data is not None:
        _check_val(model, _arrays(val_data))
    _check_batch_memory(model, loader)
    cbs = [c if isinstance(c, Callback) else _FnCallback(c) for c in callbacks]
    history = History(task=task)
    st = _State()
    rdir = Path(run_dir) if run_dir is not None else None
    lock = contextlib.nullcontext()
    if rdir is not None:
        try:
            rdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{rdir}: cannot create the run directory ({e.strerror or e})") from None
        lock = RunLock(rdir) if dist is None or dist.is_main else contextlib.nullcontext()
    with lock:
        if dist is not None and rdir is not None and resume:
            dist.same_everywhere(checkpoint_path(rdir).exists(), "whether a checkpoint exists (shared run dir?)")
        if rdir is not None and resume and checkpoint_path(rdir).exists():
            history, st = _load_checkpoint(checkpoint_path(rdir), model, optimizer, scheduler, loader, history)
            if dist is not None:
                dist.same_everywhere(st.epoch, "the checkpoint's epoch (is the run directory shared by all hosts?)")
                dist.same_everywhere(st.position["batch"] if st.position else -1, "the checkpoint's batch")
            if st.position is not None and st.position["epoch"] > epochs:
                e = st.position["epoch"]
                raise ConfigError(f"{rdir}: the checkpoint is inside epoch {e}; give epochs={e} or more to continue")
            if not history.stop_reason and st.position is None and st.epoch > epochs:  # it said "full budget of 1"
                e = st.epoch
                raise ConfigError(f"{rdir}: the checkpoint has {e} epochs done; give epochs={e} or more to continue")
            if main:
                _write_metrics_log(rdir, history)
            if history.stop_reason == "epochs" and st.epoch < epochs:
                history.stop_reason, history.message = "", ""  # a larger budget continues the run
            if history.stop_reason:
                history.best_epoch = st.best_epoch
                if restore_best and st.best_state is not None:
                    model.load_state_dict(st.best_state)
                return history
        elif rdir is not None and main:
            _write_metrics_log(rdir, history)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters")
        st.dist = dist
        if dist is not None:
            dist.broadcast_parameters([*model.parameters(), *(b for b in model.buffers() if b is not None)])
        for c in cbs:
            c.on_train_begin(history)
        progress = _Progress(epochs, quiet or not main)
        t_start = time.perf_counter()
        start_epoch = st.epoch
        saved = st.where()
        st.interrupt = _StopOnInterrupt()

        def save() -> None:
            if rdir is not None and main:
                _save_checkpoint(rdir, model, optimizer, scheduler, loader, history, st, metadata)
                st.saved = st.where()

        try:
            with st.interrupt:
                for epoch in range(st.epoch + 1, epochs + 1):
                    anomaly = _detect_anomaly() if detect_anomaly else contextlib.nullcontext()
                    with np.errstate(over="ignore", invalid="ignore"), anomaly:  # divergence is reported below
                        try:
                            reason = _run_epoch(
                                epoch,
                                model,
                                loss_fn,
                                optimizer,
                                scheduler,
                                loader,
                                params,
                                task,
                                grad_clip,
                                progress,
                                cbs,
                                history,
                                st,
                            )
                        except AnomalyError as e:
                            raise AnomalyError(f"epoch {epoch}: {e}") from None
                    if reason == "diverged":
                        break
                    if reason == "interrupted":  # at a batch boundary inside the epoch: save the position
                        where = f"at epoch {epoch}, batch {st.position['batch']}/{len(loader)}"
                        save()
                        return _interrupted(history, where, rdir, main)
                    logs = history.epochs[-1]
                    if dist is not None:
                        dist.average_buffers(model.buffers())
                    if val_data is not None:
                        v = evaluate(model, loss_fn, val_data, distributed=dist)
                        logs.update({f"val_{k}": val for k, val in v.items()})
                    if scheduler is not None and not _per_batch(scheduler):  # after validation: for ReduceLROnPlateau
                        _scheduler_step(scheduler, logs)
                    logs["time"] = time.perf_counter() - logs.pop("_t0")
                    reason = _check_stop(
                        logs, st, target_loss, tol, patience, early_stopping, monitor, mode, min_delta, model
                    )
                    history.best_epoch = st.best_epoch  # also in the checkpoint and an interrupted run's history
                    for c in cbs:
                        if c.on_epoch_end(epoch, logs, history) and not reason:
                            reason = "callback"
                            history.message = f"stopped by a callback after epoch {epoch}"
                    if reason:
                        history.stop_reason = reason
                        history.message = history.message or _stop_message(reason, epoch, logs, tol, patience, monitor)
                    elif epoch == epochs:
                        history.stop_reason = "epochs"
                        history.message = f"ran the full budget of {epochs} epochs"
                    st.epoch = epoch
                    saved_now = False
                    if rdir is not None and main:
                        if epoch % checkpoint_every == 0 or history.stop_reason:
                            save()
                            saved_now = True
                        _append_metrics(rdir, logs)
                    elapsed = time.perf_counter() - t_start
                    done = epoch - start_epoch
                    progress.end_epoch(logs, elapsed / done * (epochs - epoch))
                    if history.stop_reason:
                        break
                    if st.stop_requested() and epoch < epochs:  # Ctrl-C during the epoch's last batch or its end
                        if not saved_now:
                            save()
                        return _interrupted(history, f"after epoch {epoch}", rdir, main)
                else:
                    if not history.stop_reason:
                        history.stop_reason = "epochs"
                        history.message = f"ran the full budget of {epochs} epochs"
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread: the last checkpoint stays
            progress.close()
            if st.last_good is not None:
                model.load_state_dict(st.last_good)
            history.stop_reason = "interrupted"
            saved = st.saved or saved
            where = f"; the last checkpoint ({saved}) is in {rdir}" if rdir is not None else ""
            history.message = f"interrupted during epoch {st.epoch + 1}{where}"
            return history
        finally:
            progress.close()
        history.best_epoch = st.best_epoch
        if restore_best and early_stopping is not None and st.best_state is not None:
            model.load_state_dict(st.best_state)
        for c in cbs:
            c.on_train_end(history)
    return history


def _interrupted(history: History, where: str, rdir: Path | None, main: bool) -> History:
    history.stop_reason = "interrupted"
    saved = f"; saved a checkpoint in {rdir}" if rdir is not None and main else ""
    history.message = f"interrupted {where}{saved}"
    return history


def _check_batch_memory(model: Any, loader: DataLoader) -> None:
    """Fail before training if one batch's activations (plus the model) would not fit in memory."""
    per_sample = getattr(model, "_chainrule_activations", None)
    if not per_sample:
        return
    n = loader.batch_size or len(loader.arrays[0])
    n = min(n, len(loader.arrays[0]))
    params = sum(p.data.nbytes for p in model.parameters()) * PARAM_COPIES
    itemsize = next((p.data.itemsize for p in model.parameters()), 4)
    need = params + per_sample * n * itemsize * ACTIVATION_COPIES
    check_fits(need, f"training with batches of {n} samples ({per_sample:,} activations per sample)")


def _run_epoch(
    epoch: int,
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    scheduler: Any,
    loader: DataLoader,
    params: list,
    task: str,
    grad_clip: float | None,
    progress: _Progress,
    cbs: list[Callback],
    history: History,
    st: _State,
) -> str:
    t0 = time.perf_counter()
    dist, threshold = st.dist, _threshold(loss_fn)
    pos, st.position = st.position, None
    if pos is not None and pos["epoch"] == epoch:  # resuming inside this epoch, after pos["batch"] batches
        st.last_good, order, start = pos["epoch_start"], pos["order"], pos["batch"]
        total, n, sums = float(pos["sums"][0]), int(pos["sums"][1]), pos["sums"][2:].copy()
    else:
        st.last_good = model.state_dict()
        order, start = loader.epoch_order(), 0
        total, n = 0.0, 0
        sums = np.zeros(3)  # classification: correct; regression: squared error, abs error
    model.train()
    progress.start_epoch(epoch, len(loader), start)
    for b, (xb, yb) in enumerate(loader.batches(order, start), start):
        optimizer.zero_grad()
        if dist is not None:  # this rank's shard of the global batch; loss and metric sums are allreduced
            rows, part = len(xb), dist.shard(len(xb))
            xb, yb = Tensor(xb.data[part]), Tensor(yb.data[part])
            dist.exit_hook(st.steps)
            st.steps += 1
        local = len(xb)
        out = model(xb) if local else None
        loss = loss_fn(out, yb) if local else None
        lv = float(loss.item()) if local else 0.0
        step = _step_sums(task, out, yb, threshold) if local else np.zeros(3)
        if dist is not None:  # with a Ctrl-C flag, so that all ranks stop after the same batch
            g = dist.allreduce_(np.array([lv * local, *step, st.interrupt_seen()]), "metric allreduce")
            lv, step = float(g[0]) / rows, g[1:4]
            st.stop_agreed = st.stop_agreed or g[4] > 0
        if not math.isfinite(lv):
            return _diverge(history, model, st, epoch, b + 1, f"the loss became {lv}", optimizer)
        if loss is not None:
            loss.backward()
        if dist is not None:
            dist.sync_gradients([p for _, p in params], local, rows)
        for name, p in params:
            if p.grad is not None and not np.isfinite(p.grad.data).all():
                return _diverge(
                    history, model, st, epoch, b + 1, f"the gradient of {name} became non-finite", optimizer
                )
        if grad_clip is not None:
            clip_grad_norm_([p for _, p in params], grad_clip)
        lr = _lr(optimizer)
        optimizer.step()
        if scheduler is not None and _per_batch(scheduler):
            scheduler.step()
        m = local if dist is None else rows
        total += lv * m
        n += m
        sums += step
        if progress.bar is not None:
            metric = f" mse={sums[1] / n:.4g}" if task == "regression" else f" acc={sums[0] / n:.3f}"
            progress.batch(lv, _lr(optimizer), metric)
        for c in cbs:
            c.on_batch_end(epoch, b + 1, lv)
        if _SIGINT_AT:
            _test_sigint_hook(epoch, b + 1, dist.rank if dist is not None else 0)
        if b + 1 < len(loader) and st.stop_requested():
            sums_all = np.array([total, n, *sums], dtype=np.float64)
            st.position = {
                "epoch": epoch,
                "batch": b + 1,
                "sums": sums_all,
                "order": order,
                "epoch_start": st.last_good,
            }
            return "interrupted"
    logs: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(n, 1)}
    if task != "regression":
        logs["train_accuracy"] = sums[0] / max(n, 1)
    else:
        logs["train_mse"] = sums[1] / max(n, 1)
        logs["train_mae"] = sums[2] / max(n, 1)
    logs["lr"] = lr  # the rate of the epoch's last batch (of every batch, unless the scheduler steps per batch)
    logs["_t0"] = t0
    history.epochs.append(logs)
    return ""


def _step_sums(task: str, out: Any, yb: Any, threshold: float | None) -> np.ndarray:
    """[correct, sum of per-row mean squared error, sum of per-row mean absolute error] of one batch."""
    s = np.zeros(3)
    o = out.data
    if task != "regression":
        s[0] = float(_hits(o, yb.data, threshold).sum())
    else:
        d = o.astype(np.float64) - yb.data.astype(np.float64).reshape(o.shape)
        d = d.reshape(len(d), -1)
        s[1] = float((d * d).mean(axis=1).sum())
        s[2] = float(np.abs(d).mean(axis=1).sum())
    return s


def _diverge(history: History, model: Any, st: _State, epoch: int, batch: int, what: str, optimizer: Any) -> str:
    if any(not np.isfinite(p.data).all() for p in model.parameters()):
        model.load_state_dict(st.last_good)
    history.stop_reason = "diverged"
    history.message = (
        f"training diverged at epoch {epoch}, batch {batch}: {what}; "
        f"try a lower learning rate (now {_lr(optimizer):g}); the last good weights were kept"
    )
    return "diverged"


def _per_batch(scheduler: Any) -> bool:
    """Whether the scheduler is stepped after every batch (OneCycleLR; any with `per_batch = True`)."""
    return bool(getattr(scheduler, "per_batch", False))


def _scheduler_step(scheduler: Any, logs: dict[str, Any]) -> None:
    import inspect

    try:
        takes_metric = "metrics" in inspect.signature(scheduler.step).parameters
    except (TypeError, ValueError):
        takes_metric = False
    if takes_metric:
        scheduler.step(logs.get("val_loss", logs["train_loss"]))
    else:
        scheduler.step()


def _check_stop(
    logs: dict[str, Any],
    st: _State,
    target_loss: float | None,
    tol: float | None,
    patience: int,
    early_stopping: int | None,
    monitor: str,
    mode: str,
    min_delta: float,
    model: Any,
) -> str:
    loss = logs["train_loss"]
    reason = ""
    if early_stopping is not None:
        if monitor not in logs:
            raise ConfigError(f"cannot monitor {monitor!r}: the logs have {sorted(logs)}")
        value = logs[monitor]
        if value is not None and math.isfinite(value) and _better(value, st.best_value, mode, min_delta):
            st.best_value, st.best_state, st.bad_epochs = value, model.state_dict(), 0
            st.best_epoch = logs["epoch"]
        else:
            st.bad_epochs += 1
            if st.bad_epochs >= early_stopping:
                reason = "early_stopping"
    if target_loss is not None and loss <= target_loss:
        reason = "target_loss"
    elif tol is not None:
        if st.prev_loss is not None and st.prev_loss - loss < tol:
            st.slow_epochs += 1
        else:
            st.slow_epochs = 0
        if st.slow_epochs >= patience and not reason:
            reason = "converged"
    st.prev_loss = loss
    return reason


def _stop_message(reason: str, epoch: int, logs: dict[str, Any], tol: Any, patience: int, monitor: str) -> str:
    if reason == "target_loss":
        return f"reached the target loss at epoch {epoch} (train loss {logs['train_loss']:.6g})"
    if reason == "converged":
        return f"converged at epoch {epoch}: the training loss improved by less than {tol:g} for {patience} epochs"
    if reason == "early_stopping":
        return f"early stopping at epoch {epoch}: {monitor} stopped improving"
    return reason


# ----------------------------------------------------------------------------- checkpoints


def _module_generators(model: Any) -> dict[str, Generator]:
    """Generators held by layers (e.g. a dropout layer's), so that a resumed run draws the same numbers."""
    found: dict[str, Generator] = {}
    seen: set[int] = {id(default_generator)}
    for name, m in model.named_modules() if hasattr(model, "named_modules") else ():
        for attr, v in vars(m).items():
            if isinstance(v, Generator) and id(v) not in seen:
                seen.add(id(v))
                found[f"{name}.{attr}" if name else attr] = v
    return found


def _save_checkpoint(
    rdir: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    loader: DataLoader,
    history: History,
    st: _State,
    metadata: dict[str, Any] | None,
) -> None:
    tensors: dict[str, np.ndarray] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if st.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in st.best_state.items()})
    opt = _split_state(optimizer.state_dict(), "optim", tensors)
    sched = _split_state(scheduler.state_dict(), "sched", tensors) if scheduler is not None else None
    meta = {
        "kind": "checkpoint",
        "spec": getattr(model, "_chainrule_spec", None),
        "epoch": st.epoch,
        "optimizer": opt,
        "scheduler": sched,
        "rng": {
            "loader": loader.get_state(),
            "default": default_generator.get_state(),
            "modules": {k: g.get_state() for k, g in _module_generators(model).items()},
        },
        "history": _split_state(history.to_dict(), "history", tensors),
        "state": {
            "best_value": _split_state(st.best_value, "", {}),
            "best_epoch": getattr(st, "best_epoch", None),
            "bad_epochs": st.bad_epochs,
            "slow_epochs": st.slow_epochs,
            "prev_loss": st.prev_loss,
        },
        "metadata": metadata or {},
    }
    pos = st.position
    if pos is not None:  # inside an epoch (Ctrl-C): where it stopped and what the rest of the epoch needs
        tensors["position.sums"] = pos["sums"]
        if pos["order"] is not None:
            tensors["position.order"] = pos["order"]
        tensors.update({f"epoch_start.{k}": v for k, v in pos["epoch_start"].items()})
        meta["position"] = {"epoch": pos["epoch"], "batch": pos["batch"], "batches": len(loader)}
    save_tensors(checkpoint_path(rdir), tensors, meta)


def _load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, loader: DataLoader, history: History
) -> tuple[History, _State]:
    from .serialize import load_state_into

    tensors, meta = load_tensors(path)
    if meta.get("kind") != "checkpoint":
        raise ModelFileError(f"{path}: not a checkpoint")
    try:
        load_state_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(path))
        optimizer.load_state_dict(_join_state(meta["optimizer"], tensors))
        if scheduler is not None and meta.get("scheduler") is not None:
            scheduler.load_state_dict(_join_state(meta["scheduler"], tensors))
        loader.set_state(meta["rng"]["loader"])
        default_generator.set_state(meta["rng"]["default"])
        gens = _module_generators(model)
        for k, state in meta["rng"].get("modules", {}).items():
            if k in gens:
                gens[k].set_state(state)
        h = History.from_dict(_join_state(meta["history"], tensors))
        s = meta["state"]
        st = _State(
            epoch=int(meta["epoch"]),
            best_value=_join_state(s["best_value"], {}),
            best_state={k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None,
            bad_epochs=int(s["bad_epochs"]),
            slow_epochs=int(s["slow_epochs"]),
            prev_loss=s["prev_loss"],
        )
        st.best_epoch = s.get("best_epoch")
        pos = meta.get("position")
        if pos is not None:
            if int(pos["epoch"]) != st.epoch + 1 or int(pos["batches"]) != len(loader):
                raise ValueError(f"its position {pos} does not fit {len(loader)} batches per epoch")
            st.position = {
                "epoch": int(pos["epoch"]),
                "batch": int(pos["batch"]),
                "sums": np.asarray(tensors["position.sums"], dtype=np.float64),
                "order": tensors.get("position.order"),
                "epoch_start": {k[12:]: v for k, v in tensors.items() if k.startswith("epoch_start.")},
            }
            if loader.shuffle != (st.position["order"] is not None):
                raise ValueError("it was written with a different shuffle setting")
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelFileError(f"{path}: the checkpoint does not fit this model or optimizer ({e})") from None
    h.task = history.task
    return h, st


def read_checkpoint(run_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(tensors, metadata) of a run directory's checkpoint."""
    p = checkpoint_path(run_dir)
    if not p.exists():
        raise ModelFileError(f"{run_dir}: no checkpoint in this run directory")
    return load_tensors(p)


def iter_metrics_log(run_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    p = Path(run_dir) / METRICS_LOG
    if not p.exists():
        return
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
