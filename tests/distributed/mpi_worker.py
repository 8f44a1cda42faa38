"""Run under mpiexec by test_distributed.py: data-parallel SGD on a small MLP, float64.

argv: OUT.npz GLOBAL_BATCH STEPS [die_at_step]
"""

import sys

import numpy as np

import chainrule as cr
from chainrule import functional as F
from chainrule.distributed import Communicator


def main() -> None:
    out, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    die_at = int(sys.argv[4]) if len(sys.argv) > 4 else -1
    comm = Communicator(timeout=float(sys.argv[5]) if len(sys.argv) > 5 else 60.0, bucket_bytes=2048)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5))
    y = rng.integers(0, 3, 64)
    # each rank seeds differently: the broadcast must make the starting weights identical
    cr.manual_seed(100 + comm.rank)
    model = cr.nn.Sequential(cr.nn.Linear(5, 16), cr.nn.Tanh(), cr.nn.Linear(16, 3)).double()
    comm.broadcast_parameters(model.parameters())
    opt = cr.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        if step == die_at and comm.rank == 1:
            sys.exit(3)
        lo = (step * batch) % 64
        xb, yb = x[lo : lo + batch], y[lo : lo + batch]
        part = comm.shard(len(xb))
        opt.zero_grad()
        loss = F.cross_entropy(model(cr.tensor(xb[part])), yb[part])
        loss.backward()
        comm.sync_gradients(list(model.parameters()), len(xb[part]), len(xb))
        opt.step()
    if comm.is_main:
        np.savez(out, **model.state_dict())


if __name__ == "__main__":
    main()
