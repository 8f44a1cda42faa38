"""Synchronous data-parallel training over MPI (mpi4py, extra "mpi").

Every rank holds the whole model. For each global batch of B rows, rank r computes the
gradient of the mean loss over its shard of about B/N rows; `sync_gradients` sums
grad·(n_r/B) over ranks with one allreduce per bucket of parameters, which gives every rank
exactly the gradient of the mean loss over the whole batch. Parameters start identical
(broadcast from rank 0), so the ranks stay in lockstep without ever sending weights.

Run with the `mpiexec` installed beside mpi4py: `mpiexec -n 2 chainrule train --distributed`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ChainruleError
from .tensor import Tensor


class DistributedError(ChainruleError, RuntimeError):
    """MPI is missing or misconfigured, or another rank stopped answering."""


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(
            f'distributed training needs mpi4py and an MPI library: pip install "chainrule[mpi]" ({e})'
        ) from None
    return MPI


def _launcher_size() -> tuple[int | None, int]:
    """(world size announced by the launcher or None, ranks it started on this host: a lower bound, else 1)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var]), 1
    local = os.environ.get("MPI_LOCALNRANKS", os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", ""))
    return None, int(local) if local.isdigit() else 1


def mpiexec_path() -> str:
    """The mpiexec installed with mpi4py/mpich (chainrule[mpi]): beside this Python, in its scripts folder
    (also the --user one), else the first on PATH (a different MPI's is refused by `Communicator`)."""
    import shutil
    import sysconfig

    places = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    try:
        places.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    except KeyError:
        pass
    for folder in places:
        for name in ("mpiexec", "mpiexec.exe"):
            if (folder / name).exists():
                return str(folder / name)
    return shutil.which("mpiexec") or "mpiexec"


class Communicator:
    """The MPI world as chainrule uses it: rank, size, broadcasts and timed allreduces.

    `timeout` (seconds) bounds every collective operation: a rank that died or hangs makes
    the others raise `DistributedError` instead of waiting forever.
    """

    def __init__(self, timeout: float = 300.0, bucket_bytes: int = 4 << 20) -> None:
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = float(timeout)
        self.bucket_bytes = int(bucket_bytes)
        self.allreduce_seconds = 0.0  # time spent in gradient allreduces, for the benchmark
        expected, on_this_host = _launcher_size()
        if expected is None and on_this_host > self.size:
            expected = on_this_host
        if expected is not None and expected != self.size:
            raise DistributedError(
                f"the launcher started {expected} processes but this MPI world has {self.size}: "
                "mpiexec belongs to a different MPI than mpi4py; use the mpiexec installed with chainrule[mpi]"
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _wait(self, request: Any, what: str) -> None:
        # MPICH makes progress only inside MPI calls, so a sleeping rank stalls the collective for everyone:
        # busy-poll (as a blocking MPI_Allreduce does) for 50 ms, then back off to short sleeps until the timeout
        start = time.monotonic()
        deadline, spin_until = start + self.timeout, start + min(0.05, self.timeout)
        while time.monotonic() < spin_until:
            if request.Test():
                return
        pause = 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"rank {self.rank}: {what} did not complete within {self.timeout:g} s; "
                    "another rank has probably died (see its output above)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.001)

    def allreduce_(self, buf: np.ndarray, what: str = "allreduce", op: str = "sum") -> np.ndarray:
        """Reduce `buf` (op "sum", "max" or "min") over all ranks, in place (non-blocking with a timeout)."""
        if self.size == 1:
            return buf
        mpi_op = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}[op]
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=mpi_op), what)
        return buf

    def same_everywhere(self, value: float, what: str) -> None:
        """Raise DistributedError unless every rank passes the same number (e.g. the epoch of a loaded checkpoint)."""
        if self.size == 1:
            return
        v = self.allreduce_(np.array([value, -value], dtype=np.float64), what, op="max")
        if v[0] != -v[1]:
            raise DistributedError(f"rank {self.rank}: the ranks disagree on {what} (from {0.0 - v[1]:g} to {v[0]:g})")

    def all_ok(self, ok: bool, what: str = "status") -> bool:
        """True when `ok` is true on every rank (an agreement step so that all ranks fail together)."""
        if self.size == 1:
            return ok
        return bool(self.allreduce_(np.array([1 if ok else 0], dtype=np.int64), what, op="min")[0])

    def broadcast_str(self, text: str, root: int = 0) -> str:
        """Rank `root`'s string on every rank (e.g. a run directory named after rank 0's clock)."""
        if self.size == 1:
            return text
        raw = text.encode()
        n = self.broadcast_(np.array([len(raw)], dtype=np.int64), root, "broadcast")
        buf = np.frombuffer(raw, dtype=np.uint8).copy() if self.rank == root else np.zeros(int(n[0]), np.uint8)
        return self.broadcast_(buf, root, "broadcast").tobytes().decode()

    def average_buffers(self, tensors: Iterable[Tensor]) -> None:
        """Replace floating-point buffers (BatchNorm running statistics) by their mean over ranks."""
        if self.size == 1:
            return
        for t in tensors:
            if t is not None and t.data.dtype.kind == "f" and t.data.size:
                flat = np.ascontiguousarray(t.data).copy()
                self.allreduce_(flat, "buffer allreduce")
                t.data = flat / np.asarray(self.size, dtype=flat.dtype)
                t._version += 1

    def on_main(self, fn: Callable[[], Any], what: str) -> Any:
        """Run `fn` on rank 0 only; if it raises, rank 0 re-raises and every other rank raises too (no hang)."""
        error: BaseException | None = None
        result = None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # re-raised below, after the other ranks have heard of it
                error = e
        if not self.all_ok(error is None, what):
            if error is not None:
                raise error
            raise DistributedError(f"rank {self.rank}: rank 0 failed while {what}")
        return result

    def exit_hook(self, step: int) -> None:
        """Fault injection for tests: CHAINRULE_DIST_EXIT="RANK:STEP" makes that rank exit (status 3) at that
        step of this process; "RANK:STEP:hang" makes it stop answering instead (sleep forever)."""
        spec = os.environ.get("CHAINRULE_DIST_EXIT")
        if not spec:
            return
        rank, at, *mode = spec.split(":")
        if int(rank) == self.rank and int(at) == step:
            what = "hanging" if mode == ["hang"] else "exiting"
            print(f"rank {self.rank}: {what} at step {step} (CHAINRULE_DIST_EXIT)", file=sys.stderr, flush=True)
            if mode == ["hang"]:
                while True:
                    time.sleep(60)
            os._exit(3)

    def broadcast_(self, buf: np.ndarray, root: int = 0, what: str = "broadcast") -> np.ndarray:
        if self.size == 1:
            return buf
        self._wait(self.comm.Ibcast(buf, root=root), what)
        return buf

    def barrier(self) -> None:
        if self.size > 1:
            self._wait(self.comm.Ibarrier(), "barrier")

    def broadcast_parameters(self, tensors: Iterable[Tensor], root: int = 0) -> None:
        """Copy rank `root`'s values of every tensor (parameters and buffers) to all ranks."""
        for t in tensors:
            if not t.data.flags.c_contiguous:
                t.data = np.ascontiguousarray(t.data)
            self.broadcast_(t.data, root, "parameter broadcast")
            t._version += 1

    def sync_gradients(self, params: Sequence[Tensor], local_rows: int, global_rows: int) -> None:
        """Replace each rank's gradient of its shard's mean loss by the gradient of the global batch's mean loss.

        Gradients are packed into few contiguous buckets (one allreduce each), not one message per parameter.
        """
        weight = local_rows / global_rows
        params = [p for p in params if p.requires_grad]
        start = time.perf_counter()
        for bucket in self._buckets(params):
            dtype = bucket[0].dtype
            flat = np.empty(sum(p.numel() for p in bucket), dtype=dtype)
            offset = 0
            for p in bucket:
                n = p.numel()
                if p.grad is None:
                    flat[offset : offset + n] = 0
                else:
                    np.multiply(p.grad.data.reshape(-1), weight, out=flat[offset : offset + n])
                offset += n
            self.allreduce_(flat, "gradient allreduce")
            offset = 0
            for p in bucket:
                n = p.numel()
                p.grad = Tensor(flat[offset : offset + n].reshape(p.shape))  # a view: flat is new each call
                offset += n
        self.allreduce_seconds += time.perf_counter() - start

    def _buckets(self, params: Sequence[Tensor]) -> list[list[Tensor]]:
        buckets: list[list[Tensor]] = []
        size = 0
        for p in params:
            if buckets and buckets[-1][0].dtype == p.dtype and size + p.data.nbytes <= self.bucket_bytes:
                buckets[-1].append(p)
                size += p.data.nbytes
            else:
                buckets.append([p])
                size = p.data.nbytes
        return buckets

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of a global batch of `n` rows (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def allgather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Concatenate every rank's `rows` (same trailing shape and dtype) in rank order."""
        if self.size == 1:
            return rows
        counts = np.zeros(self.size, dtype=np.int64)
        counts[self.rank] = rows.shape[0]
        self.allreduce_(counts, "allgather sizes")
        width = int(np.prod(rows.shape[1:])) if rows.ndim > 1 else 1
        out = np.zeros((int(counts.sum()),) + rows.shape[1:], dtype=rows.dtype)
        start = int(counts[: self.rank].sum())
        out[start : start + rows.shape[0]] = rows
        flat = out.reshape(-1)
        if width and flat.size:
            self.allreduce_(flat, "allgather")
        return out

    def abort(self, code: int = 1) -> None:
        if self.size > 1:
            self.comm.Abort(code)
