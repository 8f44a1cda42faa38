"""Time forward + backward of LSTM(28, 128) on (L, 64, 28) float32, chainrule vs PyTorch CPU (1 thread).

Run: PYTHONPATH=src python3 benchmarks/conv_lstm_step.py [L, default 28]
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import chainrule as cr  # noqa: E402
from chainrule.nn.rnn import LSTM  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    seq = int(sys.argv[1]) if len(sys.argv) > 1 else 28
    tm = torch.nn.LSTM(28, 128)
    cm = LSTM(28, 128)
    cm.load_state_dict(tm.state_dict())
    x = np.random.default_rng(0).standard_normal((seq, 64, 28)).astype(np.float32)
    xt, xc = torch.tensor(x), cr.tensor(x)

    def tstep() -> None:
        tm.zero_grad()
        tm(xt)[0].sum().backward()

    def cstep() -> None:
        cm.zero_grad()
        cm(xc)[0].sum().backward()

    for name, step in (("torch", tstep), ("chainrule", cstep)):
        step()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(f"L={seq} {name}: {min(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
