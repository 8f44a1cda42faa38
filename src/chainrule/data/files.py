"""Loading user data from CSV, .npz and .npy files. Every problem is a DataError naming file, row and column."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

import numpy as np

from ..errors import DataError
from .bundle import DataBundle, encode_labels

MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-"}
NOT_CSV = {".json", ".jsonl", ".xlsx", ".xls", ".ods", ".parquet", ".feather", ".pkl", ".pickle", ".h5", ".hdf5", ".gz"}
MAX_CLASSES = 20  # an integer target with at most this many distinct values is inferred as classification


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: row {line}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}: row {line}: contains a NUL byte; not a text CSV file")
    return text


def _sniff_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v


def _resolve_target(target: Any, names: list[str], path: str, has_header: bool) -> int:
    ncol = len(names)
    if isinstance(target, str) and target in names:
        return names.index(target)
    try:
        idx = int(target)
    except (TypeError, ValueError):
        known = ", ".join(names) if has_header else f"the file has no header; use an index 0..{ncol - 1}"
        raise DataError(f"{path}: no target column {target!r} ({known})") from None
    if not -ncol <= idx < ncol:
        raise DataError(f"{path}: target column index {idx} is out of range for {ncol} columns")
    return idx % ncol


def load_csv(
    path: str | os.PathLike,
    target: int | str | None = -1,
    header: bool | None = None,
    delimiter: str | None = None,
    task: str | None = None,
    classes: list[Any] | None = None,
    feature_names: list[str] | None = None,
) -> DataBundle:
    """Read a numeric CSV file into a DataBundle.

    target: column name or index (default: the last column); None reads inputs only (prediction).
    header: None detects it (a first row with a non-numeric cell, unless every row is non-numeric there).
    delimiter: None picks the most frequent of , ; tab | in the first line.
    task: "classification" or "regression"; None infers it (non-numeric labels, or at most 20 distinct
    integers, mean classification). classes: the label set of a trained model; other labels are an error.
    feature_names: with target=None, the model's input columns; a CSV with a header is matched by name.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in NOT_CSV:  # else read as CSV, with an error about its rows that would mislead
        raise DataError(
            f"{path}: a {ext} file; chainrule reads CSV text, .npz and .npy (convert it, e.g. pandas' to_csv)"
        )
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    if task not in (None, "classification", "regression"):
        raise DataError(f"task must be 'classification' or 'regression', got {task!r}")
    first = text.lstrip("\n").split("\n", 1)[0]
    delim = delimiter or _sniff_delimiter(first)
    try:
        rows = [
            (i + 1, r)
            for i, r in enumerate(csv.reader(io.StringIO(text), delimiter=delim))
            if any(c.strip() for c in r)
        ]
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    ncol = len(rows[0][1])
    if header is None:
        nonnum = [_number(c.strip()) is None and c.strip().lower() not in MISSING for c in rows[0][1]]
        second = rows[1][1] if len(rows) > 1 else None
        header = any(nonnum) and (
            second is None
            or any(nonnum[j] and j < len(second) and _number(second[j].strip()) is not None for j in range(ncol))
        )
        if header and second is not None and all(_number(c.strip()) is None for c in second):
            header = all(nonnum)
    names = [c.strip() for c in rows[0][1]] if header else [str(j) for j in range(ncol)]
    if len(set(names)) < ncol:  # a name picks one column (target, prediction inputs): it must be unique
        j = next(j for j in range(ncol) if names[j] in names[:j])
        raise DataError(f"{path}: column {j + 1} has the same name {names[j]!r} as column {names.index(names[j]) + 1}")
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    for line, r in body:
        if len(r) != ncol:
            raise DataError(f"{path}: row {line} has {len(r)} fields, expected {ncol} as in row {rows[0][0]}")

    def colname(j: int) -> str:
        return f"column {j + 1} ({names[j]!r})" if header else f"column {j + 1}"

    if target is None:
        tcol = None
        fcols = list(range(ncol))
        if feature_names is not None and header and all(n in names for n in feature_names):
            fcols = [names.index(n) for n in feature_names]
        elif feature_names is not None and header and any(n in names for n in feature_names):
            lack = [n for n in feature_names if n not in names]
            raise DataError(f"{path}: no column {lack[0]!r} of the model's inputs {feature_names} (header: {names})")
    else:
        tcol = _resolve_target(target, names, path, header)
        fcols = [j for j in range(ncol) if j != tcol]
    if not fcols:
        hint = f" (each row is one field when split at {delim!r}: is that the file's delimiter?)" if ncol == 1 else ""
        raise DataError(f"{path}: no input columns besides the target{hint}")
    x = np.empty((len(body), len(fcols)), dtype=np.float32)
    for i, (line, r) in enumerate(body):
        for k, j in enumerate(fcols):
            cell = r[j].strip()
            v = _number(cell)
            if v is None or cell.lower() in MISSING:
                what = "missing value" if cell.lower() in MISSING else f"not a number: {cell[:40]!r}"
                if i == 0 and not header and v is None and cell.lower() not in MISSING:
                    what += " (if the first row names the columns, drop --no-header / header=False)"
                raise DataError(f"{path}: row {line}, {colname(j)}: {what}")
            if not math.isfinite(v) or abs(v) > np.finfo(np.float32).max:
                raise DataError(f"{path}: row {line}, {colname(j)}: {cell[:40]!r} is not a finite float32 number")
            x[i, k] = v
    fnames = [names[j] for j in fcols]
    tname = names[tcol] if tcol is not None else None
    if tcol is None:
        return DataBundle(x, np.zeros((len(x),), dtype=np.int64), task or "unknown", name=path, feature_names=fnames)

    cells = [r[tcol].strip() for _, r in body]
    for (line, _), c in zip(body, cells):
        if c.lower() in MISSING and not (classes is not None and c in classes):
            raise DataError(f"{path}: row {line}, {colname(tcol)}: missing target value")
    nums = [_number(c) for c in cells]
    numeric = all(v is not None and math.isfinite(v) for v in nums)
    integral = numeric and all(float(v).is_integer() for v in nums)
    if task is None and not numeric and any(v is not None and math.isfinite(v) for v in nums):
        line, c = next((ln, c) for (ln, _), c, v in zip(body, cells, nums) if v is None or not math.isfinite(v))
        raise DataError(
            f"{path}: row {line}, {colname(tcol)}: target {c[:40]!r} is not a finite number, the others are numbers; "
            "fix the cell, or give task 'classification' (--task classification) to read every label as text"
        )
    if task is None:
        task = "classification" if (not numeric or (integral and len(set(nums)) <= MAX_CLASSES)) else "regression"
    if task == "regression":
        if not numeric:
            line, c = next((ln, c) for (ln, _), c, v in zip(body, cells, nums) if v is None or not math.isfinite(v))
            raise DataError(f"{path}: row {line}, {colname(tcol)}: regression target {c[:40]!r} is not a finite number")
        y = np.asarray(nums, dtype=np.float32).reshape(-1, 1)
        return DataBundle(x, y, "regression", name=path, feature_names=fnames, target_name=tname)
    # "12345678901234567" read exactly (float64 would merge it with ...568)
    labels = [int(c) if c.lstrip("+-").isdigit() else int(v) for c, v in zip(cells, nums)] if integral else cells
    if classes is None:
        y, found = encode_labels(np.array(labels, dtype=object))
    else:
        index = {c: i for i, c in enumerate(classes)}
        index.update({str(c): i for i, c in enumerate(classes)})
        y = np.empty(len(labels), dtype=np.int64)
        for i, ((line, _), lab) in enumerate(zip(body, labels)):
            if lab not in index:
                raise DataError(
                    f"{path}: row {line}, {colname(tcol)}: label {lab!r} was not in the training labels {classes}"
                )
            y[i] = index[lab]
        found = list(classes)
    return DataBundle(x, y, "classification", name=path, classes=found, feature_names=fnames, target_name=tname)


def load_array_file(path: str | os.PathLike, target: int | str | None = -1, task: str | None = None) -> DataBundle:
    """A .npz with arrays x and y (optionally x_test, y_test), or a 2-D .npy whose `target` column is y."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not magic.startswith((b"PK", b"\x93NUMPY")):  # np.load would unpickle anything else
        raise DataError(f"{path}: not a NumPy .npy/.npz file (it starts with {magic!r})")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
        else:
            arrays = {"_": loaded}
    except ValueError as e:
        msg = "contains Python objects (refused: loading them could run code)" if "pickle" in str(e) else str(e)
        raise DataError(f"{path}: {msg}") from None
    except Exception as e:  # zip and format errors of a damaged file
        raise DataError(f"{path}: not a readable NumPy file ({type(e).__name__}: {e})") from None
    if "_" in arrays:
        a = arrays["_"]
        if a.ndim != 2 or a.shape[1] < 2:
            raise DataError(f"{path}: a .npy file must be a 2-D array (samples, columns), got shape {a.shape}")
        t = int(target) if target is not None else -1
        if not -a.shape[1] <= t < a.shape[1]:
            raise DataError(f"{path}: target column index {t} is out of range for {a.shape[1]} columns")
        t %= a.shape[1]
        arrays = {"x": np.delete(a, t, axis=1), "y": a[:, t]}
    lower = {k.lower(): k for k in arrays}
    if "x" not in lower or "y" not in lower:
        raise DataError(f"{path}: expected arrays named 'x' and 'y', found {sorted(arrays)}")
    x, y = arrays[lower["x"]], arrays[lower["y"]]
    for name in ("x", "y", "x_test", "y_test"):
        if name in lower and arrays[lower[name]].dtype.kind not in "biuf":
            raise DataError(f"{path}: array {name!r} has dtype {arrays[lower[name]].dtype}, expected numbers")
    bundle = _bundle_from_arrays(path, x, y, task)
    if ("x_test" in lower) != ("y_test" in lower):
        have, lack = ("x_test", "y_test") if "x_test" in lower else ("y_test", "x_test")
        raise DataError(f"{path}: found an array {have!r} but no {lack!r}; a test split needs both")
    if "x_test" in lower:
        xt, yt = arrays[lower["x_test"]], arrays[lower["y_test"]]
        test = _bundle_from_arrays(path, xt, yt, bundle.task, bundle.classes, "_test")
        bundle.x_test, bundle.y_test = test.x, test.y
    return bundle.check()


def _whole(y: np.ndarray) -> np.ndarray:
    """Float labels (N,) -> (N,) bool: an integer that int64 holds exactly (|y| <= 2**53), not NaN/inf."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(y) & (y == np.round(y)) & (np.abs(y) <= 2.0**53)


def _bundle_from_arrays(
    path: str, x: np.ndarray, y: np.ndarray, task: str | None, classes: list | None = None, suffix: str = ""
) -> DataBundle:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # a column of labels is labels (inferred as 2-D regression targets)
        y = y[:, 0]
    if len(x) != len(y):
        raise DataError(f"{path}: x{suffix} has {len(x)} samples but y{suffix} has {len(y)}")
    if task is None:
        integral = y.dtype.kind in "biu" or (y.ndim == 1 and np.all(_whole(y)))
        task = "classification" if y.ndim == 1 and integral and len(np.unique(y)) <= MAX_CLASSES else "regression"
    if task == "classification":
        if y.ndim != 1:
            raise DataError(f"{path}: classification labels y must be 1-D, got shape {y.shape}")
        if y.dtype.kind == "f":
            bad = np.flatnonzero(~_whole(y))
            if bad.size:
                i = int(bad[0])
                raise DataError(f"{path}: y{suffix}[{i}]: classification label {float(y[i])} is not an integer")
            y = y.astype(np.int64)
        vals = [int(v) for v in y.tolist()]
        if classes is None:
            idx, classes = encode_labels(np.array(vals, dtype=object))
        else:
            index = {c: i for i, c in enumerate(classes)}
            bad = [i for i, v in enumerate(vals) if v not in index]
            if bad:
                raise DataError(f"{path}: row {bad[0]}: label {vals[bad[0]]} was not in the training labels {classes}")
            idx = np.array([index[v] for v in vals], dtype=np.int64)
        return DataBundle(x, idx, "classification", name=path, classes=classes)
    yf = np.asarray(y, dtype=np.float32)
    return DataBundle(x, yf.reshape(-1, 1) if yf.ndim == 1 else yf, "regression", name=path)


def load_file(path: str | os.PathLike, target: int | str | None = -1, task: str | None = None, **kw: Any) -> DataBundle:
    """Dispatch on the extension: .npz/.npy arrays, anything else as CSV."""
    p = os.fspath(path)
    if p.lower().endswith((".npz", ".npy")):
        return load_array_file(p, target, task)
    return load_csv(p, target=target, task=task, **kw).check()
