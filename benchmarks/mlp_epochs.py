"""One epoch of mini-batch Adam on an MLP classifier, for W3 and W5, in each implementation.

Every implementation gets the same initial weights (a state dict of NumPy arrays), the same
per-epoch shuffle (`epoch_permutation`) and the same batches; the data is permuted once per
epoch and sliced into batches. scikit-learn gets `shuffle=False` and the permuted data, with
`alpha=0` (no L2) so that it optimizes the same loss.
"""

from __future__ import annotations

import numpy as np

from .common import epoch_permutation, mlp_init, np_cross_entropy, np_mlp_logits

LR, BATCH, SEED = 1e-3, 100, 3


class _Base:
    def __init__(self, data: dict[str, np.ndarray], sizes: list[int]) -> None:
        self.data, self.sizes = data, sizes
        self.state0 = mlp_init(sizes, seed=SEED)
        self.epoch = 0

    def run(self, n: int) -> None:
        x, y = self.data["x"], self.data["y"]
        for _ in range(n):
            perm = epoch_permutation(len(y), SEED, self.epoch)
            self.train_epoch(x[perm], y[perm])
            self.epoch += 1

    def loss(self) -> float:
        return np_cross_entropy(np_mlp_logits(self.state(), self.data["x"]), self.data["y"])

    def accuracy(self, epochs: int) -> float:
        if epochs > self.epoch:
            self.run(epochs - self.epoch)
        pred = np_mlp_logits(self.state(), self.data["x_test"]).argmax(1)
        return float((pred == self.data["y_test"]).mean())


class Chainrule(_Base):
    def __init__(self, data, sizes) -> None:
        super().__init__(data, sizes)
        import chainrule as cr
        from chainrule import nn

        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.model = nn.Sequential(*layers[:-1])
        self.model.load_state_dict(self.state0)
        self.opt = cr.optim.Adam(self.model.parameters(), lr=LR)
        self.cr = cr

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        model, opt, ce, T = self.model, self.opt, self.cr.functional.cross_entropy, self.cr.from_numpy
        for i in range(0, len(y), BATCH):
            opt.zero_grad()
            loss = ce(model(T(x[i : i + BATCH])), T(y[i : i + BATCH]))
            loss.backward()
            opt.step()

    def state(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()


class Captured(Chainrule):
    """chainrule.capture: the same step traced once per batch shape, then replayed as a tape of NumPy rules."""

    def __init__(self, data, sizes) -> None:
        super().__init__(data, sizes)
        model, ce = self.model, self.cr.functional.cross_entropy
        self.step = self.cr.capture(lambda xb, yb: ce(model(xb), yb), self.opt)

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        step = self.step
        for i in range(0, len(y), BATCH):
            step(x[i : i + BATCH], y[i : i + BATCH])


class Torch(_Base):
    def __init__(self, data, sizes) -> None:
        super().__init__(data, sizes)
        from .common import torch_setup

        torch = torch_setup()
        nn = torch.nn
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.model = nn.Sequential(*layers[:-1])
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in self.state0.items()})
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.torch = torch

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        model, opt, ce = self.model, self.opt, self.torch.nn.functional.cross_entropy
        xt, yt = self.torch.from_numpy(x), self.torch.from_numpy(y)
        for i in range(0, len(y), BATCH):
            opt.zero_grad()
            loss = ce(model(xt[i : i + BATCH]), yt[i : i + BATCH])
            loss.backward()
            opt.step()

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.model.state_dict().items()}


class Sklearn(_Base):
    def __init__(self, data, sizes) -> None:
        super().__init__(data, sizes)
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        self.clf = MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]),
            solver="adam",
            batch_size=BATCH,
            learning_rate_init=LR,
            alpha=0.0,
            shuffle=False,
            max_iter=1,
            tol=0.0,
            n_iter_no_change=10**9,
            random_state=0,
        )
        # A first partial_fit builds the estimator's attributes; then the shared weights replace
        # its random ones and a fresh Adam state is made on the next call.
        self.clf.partial_fit(data["x"][:BATCH], data["y"][:BATCH], classes=np.arange(sizes[-1]))
        n = len(sizes) - 1
        self.clf.coefs_ = [self.state0[f"{2 * i}.weight"].T.copy() for i in range(n)]
        self.clf.intercepts_ = [self.state0[f"{2 * i}.bias"].copy() for i in range(n)]
        del self.clf._optimizer

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        self.clf.partial_fit(x, y)

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for i, (w, b) in enumerate(zip(self.clf.coefs_, self.clf.intercepts_)):
            out[f"{2 * i}.weight"], out[f"{2 * i}.bias"] = w.T, b
        return out


class Numpy(_Base):
    """The floor: forward, backward and Adam (PyTorch's arithmetic) written by hand on NumPy arrays."""

    def __init__(self, data, sizes) -> None:
        super().__init__(data, sizes)
        n = len(sizes) - 1
        self.params = [
            a.copy() for i in range(n) for a in (self.state0[f"{2 * i}.weight"], self.state0[f"{2 * i}.bias"])
        ]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.rows = np.arange(BATCH)

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        params, ms, vs = self.params, self.m, self.v
        ws, bs, n = params[0::2], params[1::2], len(params) // 2
        b1, b2, eps = 0.9, 0.999, 1e-8
        for i in range(0, len(y), BATCH):
            xb, yb = x[i : i + BATCH], y[i : i + BATCH]
            hs = [xb]
            for k in range(n):
                a = hs[-1] @ ws[k].T
                a += bs[k]
                hs.append(np.maximum(a, 0, out=a) if k < n - 1 else a)
            z = hs.pop()
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            z[self.rows[: len(yb)], yb] -= 1.0
            z *= np.float32(1.0 / len(yb))  # dL/dlogits
            grads = [None] * len(params)
            for k in range(n - 1, -1, -1):
                grads[2 * k], grads[2 * k + 1] = z.T @ hs[k], z.sum(0)
                if k:
                    z = z @ ws[k]
                    z *= hs[k] > 0
            self.t += 1
            step_size, bc2_sqrt = LR / (1 - b1**self.t), (1 - b2**self.t) ** 0.5
            for p, g, m, v in zip(params, grads, ms, vs):
                m += (g - m) * np.float32(1 - b1)
                v *= np.float32(b2)
                v += np.float32(1 - b2) * g * g
                p -= np.float32(step_size) * (m / (np.sqrt(v) / np.float32(bc2_sqrt) + np.float32(eps)))

    def state(self) -> dict[str, np.ndarray]:
        return {f"{2 * (i // 2)}.{'bias' if i % 2 else 'weight'}": p for i, p in enumerate(self.params)}


class Floor(_Base):
    """The ideal NumPy replay, the most any NumPy implementation of this loop could gain: chainrule's product
    layouts on one BLAS thread, gradients written straight into one flat buffer, chainrule's flat Adam kernel
    called directly; no tensors, graph, optimizer bookkeeping or checks."""

    def __init__(self, data, sizes) -> None:
        super().__init__(data, sizes)
        keys = [f"{2 * i}.{k}" for i in range(len(sizes) - 1) for k in ("weight", "bias")]
        n = sum(self.state0[k].size for k in keys)
        self.flat, self.gflat, self.m, self.v = (np.zeros(n, np.float32) for _ in range(4))
        self.scratch = [np.empty(n, np.float32) for _ in range(2)]
        params, grads, off = [], [], 0
        for k in keys:
            a = self.state0[k]
            params.append(self.flat[off : off + a.size].reshape(a.shape))
            params[-1][...] = a
            grads.append(self.gflat[off : off + a.size].reshape(a.shape))
            off += a.size
        self.keys, self.params, self.grads = keys, params, grads
        self.rows, self.ones, self.t = np.arange(BATCH), np.ones(BATCH, np.float32), 0

    def train_epoch(self, x: np.ndarray, y: np.ndarray) -> None:
        from chainrule._blas import matmul as mm
        from chainrule.optim.adam import _adam

        ws, bs, gws, gbs = self.params[0::2], self.params[1::2], self.grads[0::2], self.grads[1::2]
        n, rows, ones = len(ws), self.rows, self.ones
        for i in range(0, len(y), BATCH):
            xb, yb = x[i : i + BATCH], y[i : i + BATCH]
            hs, masks = [xb], []
            for k in range(n):
                a = mm(ws[k], hs[-1].T).T
                a += bs[k]
                if k < n - 1:
                    masks.append(a > 0)
                    np.maximum(a, 0, out=a)
                hs.append(a)
            z = hs.pop()
            shifted = z - np.maximum.reduce(z, axis=1, keepdims=True)
            logp = shifted - np.log(np.add.reduce(np.exp(shifted), axis=1, keepdims=True))
            _loss = -np.add.reduce(logp[rows[: len(yb)], yb]) / len(yb)  # computed, as a training loop reports it
            d = np.exp(logp)
            d[rows[: len(yb)], yb] -= 1
            d *= np.float32(1.0 / len(yb))
            for k in range(n - 1, -1, -1):  # the last layer's few columns: a row-major copy multiplies faster
                np.matmul((np.ascontiguousarray(d) if k == n - 1 else d).T, hs[k], out=gws[k])
                np.matmul(ones[: len(yb)], d, out=gbs[k])
                if k:
                    d = np.multiply(mm(ws[k].T, d.T).T, masks[k - 1], dtype=np.float32)
            self.t += 1
            step_size, bc2_sqrt = LR / (1 - 0.9**self.t), (1 - 0.999**self.t) ** 0.5
            arrays = [self.flat, self.gflat, self.m, self.v, None]
            _adam(arrays, self.scratch, 0.9, 0.999, 1e-8, 0.0, None, False, step_size, bc2_sqrt)

    def state(self) -> dict[str, np.ndarray]:
        return dict(zip(self.keys, self.params))


IMPLS = {
    "chainrule": Chainrule,
    "captured": Captured,
    "torch": Torch,
    "sklearn": Sklearn,
    "numpy": Numpy,
    "floor": Floor,
}
