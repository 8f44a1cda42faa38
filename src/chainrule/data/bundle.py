"""DataBundle: inputs, targets and what is known about them (task, class labels, column names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError


@dataclass
class DataBundle:
    """x: (N, *features) float32; y: (N,) int64 class indices or (N, k) float32 regression targets.

    `classes[i]` is the original label of class index i. `x_test`/`y_test` are set when the data
    come with their own test split (mnist1d).
    """

    x: np.ndarray
    y: np.ndarray
    task: str  # "classification" or "regression"
    name: str = "data"
    classes: list[Any] | None = None
    feature_names: list[str] | None = None
    target_name: str | None = None
    description: str = ""
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    @property
    def out_features(self) -> int:
        if self.task == "classification":
            return self.num_classes
        return 1 if self.y.ndim == 1 else int(self.y.shape[1])

    def check(self) -> DataBundle:
        """Shapes, finiteness and (for classification) at least two classes."""
        if len(self.x) == 0:
            raise DataError(f"{self.name}: no samples")
        if len(self.x) != len(self.y):
            raise DataError(f"{self.name}: {len(self.x)} inputs but {len(self.y)} targets")
        if not np.isfinite(self.x).all():
            row = int(np.argwhere(~np.isfinite(self.x.reshape(len(self.x), -1)))[0][0])
            raise DataError(f"{self.name}: sample {row} has a NaN or infinite input")
        if self.task == "classification":
            if self.classes is None or len(self.classes) < 2:
                raise DataError(f"{self.name}: classification needs at least two classes, found {self.num_classes}")
        elif not np.isfinite(self.y).all():
            raise DataError(f"{self.name}: a regression target is NaN or infinite")
        return self


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Labels of any kind -> (int64 class indices, sorted list of distinct labels)."""
    classes = sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values.tolist()], dtype=np.int64), classes
