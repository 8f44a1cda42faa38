"""How fast could a NumPy implementation run W3? The ideal replay: chainrule's own product layouts on one BLAS
thread, gradients computed straight into one flat buffer, and the flat Adam kernel called directly (no tensors,
no graph, no optimizer bookkeeping). Prints the median ms per epoch, in this one process (the runner's figures,
one epoch per repeat after a pause, are ~1 ms higher).

    PYTHONPATH=src python benchmarks/w3_replay_floor.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import epoch_permutation, load_mnist1d, mlp_init  # noqa: E402
from chainrule._blas import matmul as mm  # noqa: E402
from chainrule.optim.adam import _adam  # noqa: E402

KEYS = ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")


def main() -> None:
    data = load_mnist1d()
    x_all, y_all = data["x"], data["y"]
    state = mlp_init([40, 100, 100, 10], 3)
    n = sum(state[k].size for k in KEYS)
    flat, gflat, m, v = (np.zeros(n, np.float32) for _ in range(4))
    scratch = [np.empty(n, np.float32) for _ in range(2)]
    params, grads, off = [], [], 0
    for k in KEYS:
        a = state[k]
        params.append(flat[off : off + a.size].reshape(a.shape))
        params[-1][...] = a
        grads.append(gflat[off : off + a.size].reshape(a.shape))
        off += a.size
    w1, b1, w2, b2, w3, b3 = params
    rows, ones, step = np.arange(100), np.ones(100, np.float32), 0

    def epoch(x: np.ndarray, y: np.ndarray) -> None:
        nonlocal step
        for i in range(0, len(y), 100):
            xb, yb = x[i : i + 100], y[i : i + 100]
            a1 = mm(w1, xb.T).T
            a1 += b1
            m1 = a1 > 0
            np.maximum(a1, 0, out=a1)
            a2 = mm(w2, a1.T).T
            a2 += b2
            m2 = a2 > 0
            np.maximum(a2, 0, out=a2)
            z = mm(w3, a2.T).T
            z += b3
            shifted = z - np.maximum.reduce(z, axis=1, keepdims=True)
            logp = shifted - np.log(np.add.reduce(np.exp(shifted), axis=1, keepdims=True))
            _loss = -np.add.reduce(logp[rows, yb]) / 100  # computed, as a training loop reports it
            dz = np.exp(logp)
            dz[rows, yb] -= 1
            dz *= np.float32(0.01)
            np.matmul(np.ascontiguousarray(dz).T, a2, out=grads[4])
            np.matmul(ones, dz, out=grads[5])
            d2 = np.multiply(mm(w3.T, dz.T).T, m2, dtype=np.float32)
            np.matmul(d2.T, a1, out=grads[2])
            np.matmul(ones, d2, out=grads[3])
            d1 = np.multiply(mm(w2.T, d2.T).T, m1, dtype=np.float32)
            np.matmul(d1.T, xb, out=grads[0])
            np.matmul(ones, d1, out=grads[1])
            step += 1
            _adam(
                [flat, gflat, m, v, None], scratch, 0.9, 0.999, 1e-8, 0.0, None, False,
                1e-3 / (1 - 0.9**step), (1 - 0.999**step) ** 0.5,
            )  # fmt: skip

    times = []
    for e in range(25):
        perm = epoch_permutation(len(y_all), 3, e)
        t0 = time.perf_counter()
        epoch(x_all[perm], y_all[perm])
        times.append(time.perf_counter() - t0)
    print(f"W3 ideal NumPy replay: {np.median(times[3:]) * 1e3:.2f} ms/epoch (median of 22 epochs, this process)")


if __name__ == "__main__":
    main()
