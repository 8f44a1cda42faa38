"""Datasets, DataLoader, splits, standardization and one-hot encoding (torch.utils.data's names).

Arrays are NumPy arrays or Tensors with samples along the first axis. Every random choice takes a
`chainrule.random.Generator`, so the same seed gives the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..random import Generator, default_generator
from ..tensor import Tensor


def _np(a: Any) -> np.ndarray:
    return a.data if isinstance(a, Tensor) else np.asarray(a)


class Dataset:
    """Anything with `__len__` and `__getitem__(index) -> sample`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: Any) -> Any:
        raise NotImplementedError


class TensorDataset(Dataset):
    """Arrays of equal length N; sample i is the tuple of their i-th rows.

    `dataset[idx]` with an integer array returns the tuple of sub-arrays (a whole batch at once).
    """

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise DataError("TensorDataset needs at least one array")
        self.arrays = tuple(_np(a) for a in arrays)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if a.ndim == 0 or len(a) != n:
                raise DataError(f"TensorDataset: array {i} has {len(a) if a.ndim else 0} samples, array 0 has {n}")

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        return tuple(Tensor(a) for a in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(a[index] for a in self.arrays)


class Subset(Dataset):
    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[self.indices[index]]


def _arrays(data: Any) -> tuple[np.ndarray, ...]:
    """(x, y) tuple, TensorDataset or Subset of one -> tuple of arrays."""
    if isinstance(data, TensorDataset):
        return data.arrays
    if isinstance(data, Subset):
        return tuple(a[data.indices] for a in _arrays(data.dataset))
    if isinstance(data, tuple | list):
        return TensorDataset(*data).arrays
    raise DataError(f"expected an (inputs, targets) tuple or a TensorDataset, got {type(data).__name__}")


class DataLoader:
    """Batches of a dataset: yields tuples of Tensors of up to `batch_size` samples.

    batch_size=None gives the whole dataset as one batch (full-batch gradient descent). With
    `shuffle`, each pass draws a permutation from `generator`; `get_state`/`set_state` save and
    restore the generator so a resumed training sees the same batches.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: Generator | None = None,
    ) -> None:
        self.arrays = _arrays(dataset)
        self.dataset = dataset
        n = len(self.arrays[0])
        if batch_size is not None and (
            not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise DataError(f"DataLoader: batch_size must be a positive integer or None, got {batch_size!r}")
        self.batch_size = max(n, 1) if batch_size is None else int(batch_size)  # an empty dataset: 0 batches
        self.shuffle, self.drop_last = shuffle, drop_last
        self.generator = generator if generator is not None else default_generator

    def __len__(self) -> int:
        n = len(self.arrays[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        yield from self.batches(self.epoch_order())

    def epoch_order(self) -> np.ndarray | None:
        """The sample order of one pass: a permutation drawn from `generator` with `shuffle`, else None."""
        return self.generator.np.permutation(len(self.arrays[0])) if self.shuffle else None

    def batches(self, order: np.ndarray | None, start: int = 0) -> Iterator[tuple[Tensor, ...]]:
        """The batches of one pass in `order` (from `epoch_order`), from batch index `start` on (to resume)."""
        n = len(self.arrays[0])
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            idx = order[sl] if order is not None else sl
            yield tuple(Tensor(a[idx]) for a in self.arrays)

    def get_state(self) -> dict[str, Any]:
        return self.generator.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state)


def random_split(dataset: Any, lengths: Sequence[float | int], generator: Generator | None = None) -> list[Subset]:
    """Split into non-overlapping random subsets; lengths are counts or fractions summing to 1."""
    ds = dataset if isinstance(dataset, Dataset) else TensorDataset(*dataset)
    n = len(ds)
    if all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1) < 1e-6:
        counts = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        counts = [int(x) for x in lengths]
    if sum(counts) != n or any(c < 0 for c in counts):
        raise DataError(f"random_split: lengths {list(lengths)} do not add up to the dataset's {n} samples")
    perm = (generator or default_generator).np.permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(ds, perm[start : start + c]))
        start += c
    return out


def train_val_test_split(
    x: Any, y: Any, val: float = 0.0, test: float = 0.25, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Shuffle with `seed` and cut into (train, val, test) pairs of (x, y); val/test are fractions."""
    x, y = _np(x), _np(y)
    n = len(x)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"split fractions val={val}, test={test} must be in [0, 1) and sum to less than 1")
    perm = Generator(seed).np.permutation(n)
    n_test, n_val = int(round(n * test)), int(round(n * val))
    if n - n_test - n_val < 1:
        raise DataError(f"{n} samples are too few for a split with val={val}, test={test}")
    te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te])


@dataclass
class Standardizer:
    """x -> (x - mean) / std per feature, fitted on training data only (std 0 is treated as 1)."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, x: Any) -> Standardizer:
        x = _np(x).astype(np.float64)
        if len(x) == 0:
            raise DataError("cannot standardize an empty dataset")
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, x: Any) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise DataError("Standardizer.transform called before fit")
        x = _np(x)
        if x.shape[1:] != self.mean.shape:
            raise DataError(f"expected samples of shape {self.mean.shape}, got {x.shape[1:]}")
        dt = x.dtype if x.dtype.kind == "f" else np.float32
        return ((x - self.mean) / self.std).astype(dt)

    def fit_transform(self, x: Any) -> np.ndarray:
        return self.fit(x).transform(x)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """(N,) integer class indices -> (N, num_classes) array of 0/1."""
    y = _np(labels)
    if y.dtype.kind not in "iu":
        raise DataError(f"one_hot: labels must be integers, got dtype {y.dtype}")
    c = int(y.max()) + 1 if num_classes is None else num_classes
    if y.size and (y.min() < 0 or y.max() >= c):
        raise DataError(f"one_hot: labels must be in [0, {c}), got {y.min()}..{y.max()}")
    out = np.zeros((len(y), c), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out
