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
        """Shapes, finiteness and (for classification) at least two classes; the test split's too."""
        if len(self.x) == 0:
            raise DataError(f"{self.name}: no samples")
        self._check_split(self.x, self.y, "")
        if self.task == "classification":
            if self.classes is None or len(self.classes) < 2:
                raise DataError(f"{self.name}: classification needs at least two classes, found {self.num_classes}")
        if self.x_test is not None:
            if self.x_test.shape[1:] != self.x.shape[1:]:
                raise DataError(
                    f"{self.name}: test samples have shape {self.x_test.shape[1:]}, training samples {self.x.shape[1:]}"
                )
            self._check_split(self.x_test, self.y_test, "test ")
        return self

    def _check_split(self, x: np.ndarray, y: np.ndarray, which: str) -> None:
        """x (N, *features) and y (N, ...) of one split: equal lengths, finite inputs and regression targets."""
        if len(x) != len(y):
            raise DataError(f"{self.name}: {len(x)} {which}inputs but {len(y)} {which}targets")
        if not np.isfinite(x).all():
            row = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
            raise DataError(f"{self.name}: {which}sample {row} has a NaN or infinite input")
        if self.task != "classification" and not np.isfinite(y).all():
            raise DataError(f"{self.name}: a {which}regression target is NaN or infinite")


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Labels of any kind -> (int64 class indices, sorted list of distinct labels)."""
    classes = sorted(set(values.tolist()), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values.tolist()], dtype=np.int64), classes
