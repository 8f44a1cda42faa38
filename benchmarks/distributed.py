"""Data-parallel throughput of W2 with N = 1 and 2 MPI ranks, and the time spent in the gradient allreduce.

W2: MLP 784-256-256-10 (269,322 float32 parameters, 1.08 MB of gradients), global batch 128, SGD momentum 0.9,
cross-entropy, synthetic MNIST-sized data. Each configuration runs `chainrule.train.fit` under the mpiexec
installed beside mpi4py (`fit(distributed=None)` for the single-process baseline) and reports the steady-state
epoch (the first epoch is a warm-up). A raw allreduce (median of 50) of the gradient size and of 8 bytes gives
the bandwidth and latency terms of the cost model in docs/distributed.md.

    python -m benchmarks.distributed                 # table for N = 1, 2 (BLAS threads: 1 per rank)
    python -m benchmarks.distributed --ranks 1 2 4 --steps 64 --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from chainrule.distributed import mpiexec_path  # noqa: E402


def _worker(distributed: bool, steps: int, repeats: int, batch: int) -> None:
    import numpy as np

    import chainrule as cr
    from chainrule.train import fit

    comm = None
    if distributed:
        from chainrule.distributed import Communicator

        comm = Communicator(timeout=120.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch * steps)
    cr.manual_seed(0)
    model = cr.nn.Sequential(cr.nn.Linear(784, 256), cr.nn.ReLU(), cr.nn.Linear(256, 256), cr.nn.ReLU(),
                             cr.nn.Linear(256, 10))  # fmt: skip
    opt = cr.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    epoch_times: list[float] = []
    allreduce: list[float] = []

    def on_epoch(logs: dict) -> None:
        epoch_times.append(logs["time"])
        if comm is not None:
            allreduce.append(comm.allreduce_seconds)

    fit(model, cr.nn.CrossEntropyLoss(), opt, (x, y), epochs=1 + repeats, batch_size=batch, callbacks=[on_epoch],
        quiet=True, distributed=comm)  # fmt: skip
    # the fastest timed epoch: the machine is shared, the minimum is the least disturbed measurement
    best = min(range(1, len(epoch_times)), key=lambda i: epoch_times[i])
    result = {
        "ranks": comm.size if comm is not None else 1,
        "step_ms": epoch_times[best] / steps * 1e3,
        "samples_per_s": batch * steps / epoch_times[best],
        "allreduce_ms": (allreduce[best] - allreduce[best - 1]) / steps * 1e3 if comm is not None else 0.0,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if comm is not None and comm.size > 1:
        result.update(_raw_allreduce(comm, result["params"]))
    if comm is None or comm.is_main:
        print("RESULT " + json.dumps(result), flush=True)


def _raw_allreduce(comm, n: int) -> dict[str, float]:
    import numpy as np

    out = {}
    for key, size in (("raw_allreduce_ms", n), ("latency_us", 2)):
        buf = np.ones(size, dtype=np.float32)
        for _ in range(5):
            comm.allreduce_(buf)
        comm.barrier()
        times = []
        for _ in range(50):
            t = time.perf_counter()
            comm.allreduce_(buf)
            times.append(time.perf_counter() - t)
        dt = float(np.median(times))
        out[key] = dt * (1e3 if key.endswith("ms") else 1e6)
    return out


def _launch(ranks: int, steps: int, threads: int, repeats: int, batch: int = 128) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    me = [sys.executable, "-m", "benchmarks.distributed", "--worker", "--steps", str(steps)]
    me += ["--repeats", str(repeats), "--batch", str(batch)]
    if ranks == 1:
        cmd = me
    else:
        cmd = [mpiexec_path(), "-n", str(ranks), *me, "--distributed"]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [s for s in r.stdout.splitlines() if s.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"benchmark with {ranks} ranks failed:\n{r.stderr}")
    return json.loads(lines[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=40, help="steps per epoch")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs after a warm-up one; the fastest counts")
    ap.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.distributed, args.steps, args.repeats, args.batch)
        return
    print(f"W2 (784-256-256-10, float32, global batch 128, SGD momentum), {os.cpu_count()} CPUs, "
          f"{args.threads} BLAS thread(s) per rank, best of {args.repeats} epochs of {args.steps} steps")  # fmt: skip
    rows = [_launch(n, args.steps, args.threads, args.repeats) for n in args.ranks]
    # compute(B/N): one process stepping on the per-rank batch, for the cost model step = compute(B/N) + allreduce
    compute = {n: _launch(1, args.steps, args.threads, args.repeats, 128 // n)["step_ms"] for n in args.ranks}
    base = rows[0]["samples_per_s"]
    print(f"{'ranks':>5} {'step ms':>8} {'samples/s':>10} {'speedup':>8} {'allreduce ms/step':>18} {'share':>6} "
          f"{'compute(B/N) ms':>16} {'model ms':>9}")  # fmt: skip
    for r in rows:
        share = r["allreduce_ms"] / r["step_ms"]
        model = compute[r["ranks"]] + r.get("raw_allreduce_ms", 0.0)
        print(f"{r['ranks']:>5} {r['step_ms']:>8.2f} {r['samples_per_s']:>10.0f} {r['samples_per_s'] / base:>8.2f} "
              f"{r['allreduce_ms']:>18.3f} {share:>6.1%} {compute[r['ranks']]:>16.2f} {model:>9.2f}")  # fmt: skip
    for r in rows:
        if "raw_allreduce_ms" in r:
            mb = r["params"] * 4 / 1e6
            gbs = mb / r["raw_allreduce_ms"]
            print(f"raw allreduce on {r['ranks']} ranks: {mb:.2f} MB in {r['raw_allreduce_ms']:.3f} ms "
                  f"({gbs:.2f} GB/s algorithmic), 8 bytes in {r['latency_us']:.1f} us")  # fmt: skip


if __name__ == "__main__":
    main()
