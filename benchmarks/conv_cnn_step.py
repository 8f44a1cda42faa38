"""Time one training step of a small CNN on 64x1x28x28 float32, chainrule vs PyTorch CPU (2 threads).

Run: PYTHONPATH=src python3 benchmarks/conv_cnn_step.py [--threads 2] [--rounds 5] [--baseline-src DIR]

Each implementation runs in its own process (BLAS threads of one library slow the other in the same
process on 2 cores), the processes are interleaved over several rounds, and the median of the
per-round medians is reported (and the ratio of the best rounds, less sensitive to other load on the
machine), with the minor page faults per step (fresh memory from the OS) and the peak RSS.
`--baseline-src DIR` also times the chainrule found in DIR (e.g. an older checkout's src) as "before".
Model: Conv2d(1,16,3)-ReLU-MaxPool2d(2)-Conv2d(16,32,3)-ReLU-MaxPool2d(2)-Flatten-Linear(800,10), SGD lr 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _child(impl: str, threads: int, steps: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        tm = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(800, 10),
        )  # fmt: skip
        topt = torch.optim.SGD(tm.parameters(), lr=0.01)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step() -> float:
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(tm(xt), yt)
            loss.backward()
            topt.step()
            return loss.item()
    else:
        import chainrule as cr
        from chainrule.functional import cross_entropy
        from chainrule.nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

        cr.manual_seed(0)
        cm = Sequential(
            Conv2d(1, 16, 3), ReLU(), MaxPool2d(2), Conv2d(16, 32, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(800, 10)
        )
        copt = cr.optim.SGD(cm.parameters(), lr=0.01)
        xc, yc = cr.tensor(x), cr.tensor(y)

        def step() -> float:
            copt.zero_grad()
            loss = cross_entropy(cm(xc), yc)
            loss.backward()
            copt.step()
            return float(loss.data)

    for _ in range(10):
        step()
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    faults = (r1.ru_minflt - r0.ru_minflt) / steps
    print(json.dumps({"ms": statistics.median(times) * 1e3, "faults": faults, "maxrss_mb": r1.ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per process")
    ap.add_argument("--baseline-src", help="another chainrule src directory to time as 'before'")
    ap.add_argument("--child", choices=["torch", "chainrule"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.threads, args.steps)
        return
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)  # NumPy's BLAS gets torch's thread budget
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    impls = {"torch": ("torch", env.get("PYTHONPATH", "")), "chainrule": ("chainrule", here)}
    if args.baseline_src:
        impls["chainrule-before"] = ("chainrule", args.baseline_src)
    results: dict[str, list[dict]] = {k: [] for k in impls}
    for _ in range(args.rounds):
        for name, (impl, path) in impls.items():
            cmd = [sys.executable, __file__, "--child", impl, "--threads", str(args.threads)]
            cmd += ["--steps", str(args.steps)]
            out = subprocess.run(cmd, env={**env, "PYTHONPATH": path}, capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    print(f"threads={args.threads} rounds={args.rounds} steps/process={args.steps} loadavg={load[0]:.2f},{load[1]:.2f}")
    torch_ms = statistics.median(r["ms"] for r in results["torch"])
    torch_best = min(r["ms"] for r in results["torch"])
    for name, rs in results.items():
        ms = statistics.median(r["ms"] for r in rs)
        best = min(r["ms"] for r in rs)
        faults = statistics.median(r["faults"] for r in rs)
        rss = max(r["maxrss_mb"] for r in rs)
        rounds = " ".join(f"{r['ms']:.2f}" for r in rs)
        print(
            f"{name:17s} {ms:7.2f} ms/step (rounds: {rounds})  "
            f"torch/this {torch_ms / ms:5.2f} (best rounds: {torch_best / best:5.2f})  "
            f"page faults/step {faults:5.0f}  peak RSS {rss:4.0f} MB"
        )


if __name__ == "__main__":
    main()
