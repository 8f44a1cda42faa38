"""Time one training step of a small CNN on 64x1x28x28 float32, chainrule vs PyTorch CPU (2 threads).

Run: PYTHONPATH=src python3 benchmarks/conv_cnn_step.py [threads, default 2]
Best of several interleaved rounds, to be robust to other load on the machine.
Model: Conv2d(1,16,3)-ReLU-MaxPool2d(2)-Conv2d(16,32,3)-ReLU-MaxPool2d(2)-Flatten-Linear(800,10), SGD lr 0.01.
"""

from __future__ import annotations

import os
import sys
import time

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))  # NumPy's BLAS gets torch's thread budget

import numpy as np  # noqa: E402
import torch  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule.functional import cross_entropy  # noqa: E402
from chainrule.nn import Flatten, Linear, ReLU, Sequential  # noqa: E402
from chainrule.nn.conv import Conv2d  # noqa: E402
from chainrule.nn.pooling import MaxPool2d  # noqa: E402


def best_of(step, repeats: int = 7, inner: int = 10) -> float:
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - t0) / inner)
    return min(times)


def main() -> None:
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)

    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(800, 10),
    )  # fmt: skip
    cm = Sequential(
        Conv2d(1, 16, 3), ReLU(), MaxPool2d(2), Conv2d(16, 32, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(800, 10)
    )
    cm.load_state_dict(tm.state_dict())
    topt = torch.optim.SGD(tm.parameters(), lr=0.01)
    copt = cr.optim.SGD(cm.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xc, yc = cr.tensor(x), cr.tensor(y)

    def tstep() -> None:
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tm(xt), yt).backward()
        topt.step()

    def cstep() -> None:
        copt.zero_grad()
        cross_entropy(cm(xc), yc).backward()
        copt.step()

    tt = ct = float("inf")
    for _ in range(5):
        tt, ct = min(tt, best_of(tstep, 3)), min(ct, best_of(cstep, 3))
    print(f"threads={THREADS}  torch: {tt * 1e3:.2f} ms/step  chainrule: {ct * 1e3:.2f} ms/step  ratio: {ct / tt:.2f}")


if __name__ == "__main__":
    main()
