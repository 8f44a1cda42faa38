"""Pieces shared by the workloads: seeded initial weights, data caching and the NumPy loss."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

THREADS = 2


def cache_dir() -> Path:
    d = Path(os.environ.get("CHAINRULE_CACHE", Path.home() / ".cache" / "chainrule"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def mlp_init(sizes: list[int], seed: int, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """PyTorch-style U(-1/sqrt(in), 1/sqrt(in)) weights for Linear layers at Sequential indices 0, 2, 4, ...

    Keys follow a Sequential(Linear, ReLU, Linear, ...) state dict: "0.weight" is (out, in).
    """
    rng = np.random.default_rng(seed)
    state = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(n_in)
        state[f"{2 * i}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(dtype)
        state[f"{2 * i}.bias"] = rng.uniform(-bound, bound, (n_out,)).astype(dtype)
    return state


def np_mlp_logits(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    n = len(state) // 2
    h = x
    for i in range(n):
        h = h @ state[f"{2 * i}.weight"].T + state[f"{2 * i}.bias"]
        if i < n - 1:
            h = np.maximum(h, 0)
    return h


def np_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle of epoch `epoch`, shared by every implementation so that they see the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def load_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D with the package's default arguments (4000 train, 1000 test, 40 features), cached as .npz."""
    path = cache_dir() / "mnist1d_default.npz"
    if not path.exists():
        import mnist1d.data  # reseeds global RNGs and imports pyplot: only here, once

        d = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            x=np.asarray(d["x"], np.float32),
            y=np.asarray(d["y"], np.int64),
            x_test=np.asarray(d["x_test"], np.float32),
            y_test=np.asarray(d["y_test"], np.int64),
        )
        tmp.replace(path)
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_digits_split() -> dict[str, np.ndarray]:
    """scikit-learn's digits: 75/25 stratified split (random_state 0), standardized on the train part, float32."""
    path = cache_dir() / "digits_split.npz"
    if not path.exists():
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        x, y = load_digits(return_X_y=True)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
        sc = StandardScaler().fit(xtr)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            x=sc.transform(xtr).astype(np.float32),
            y=ytr.astype(np.int64),
            x_test=sc.transform(xte).astype(np.float32),
            y_test=yte.astype(np.int64),
        )
        tmp.replace(path)
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def torch_setup():
    import torch

    torch.set_num_threads(int(os.environ.get("CHAINRULE_BENCH_THREADS", THREADS)))
    return torch
