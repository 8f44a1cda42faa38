"""Run under mpiexec by test_train_distributed.py: `fit(..., distributed=...)` on a float64 model.

argv: OUT_PREFIX DISTRIBUTED(0/1) BATCH_SIZE [bn]. Every rank writes OUT_PREFIX.rank<r>.npz (weights, buffers,
per-epoch train and validation losses) so that the test can check that all ranks agree.
"""

import sys

import numpy as np

import chainrule as cr
from chainrule.train import fit


def main() -> None:
    prefix, distributed, batch = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
    bn = len(sys.argv) > 4 and sys.argv[4] == "bn"
    comm = None
    if distributed:
        from chainrule.distributed import Communicator

        comm = Communicator(timeout=60.0, bucket_bytes=1024)  # small buckets: several allreduces per step
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 5))
    y = (x[:, 0] + x[:, 1] ** 2 > 0.5).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    xv, yv = rng.standard_normal((30, 5)), rng.integers(0, 3, 30)
    # a different seed on each rank: the broadcast from rank 0 must make the starting weights identical
    cr.manual_seed(7 + (comm.rank if comm is not None else 0))
    layers = [cr.nn.Linear(5, 16), *([cr.nn.BatchNorm1d(16)] if bn else []), cr.nn.Tanh(), cr.nn.Linear(16, 3)]
    model = cr.nn.Sequential(*layers).double()
    opt = cr.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    h = fit(
        model,
        cr.nn.CrossEntropyLoss(),
        opt,
        (x, y),
        val_data=(xv, yv),
        epochs=3,
        batch_size=batch,
        grad_clip=1.0,
        seed=3,
        quiet=True,
        distributed=comm,
    )
    rank = comm.rank if comm is not None else 0
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    np.savez(
        f"{prefix}.rank{rank}.npz",
        train_loss=np.array(h["train_loss"]),
        train_accuracy=np.array(h["train_accuracy"]),
        val_loss=np.array(h["val_loss"]),
        val_accuracy=np.array(h["val_accuracy"]),
        **state,
    )


if __name__ == "__main__":
    main()
