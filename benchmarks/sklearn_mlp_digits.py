"""chainrule.sklearn.MLPClassifier vs scikit-learn's MLPClassifier on digits: accuracy and training time.

Same hidden sizes, epochs (tol=0 so both run max_iter epochs), batch size, solver and learning rate; both get
the same data, in float64 and in float32. scikit-learn computes in the dtype of X; chainrule's estimator in its
`dtype` parameter's, float32 by default (chainrule's default dtype; --dtype float64 for double precision, --dtype x
for X's dtype, as scikit-learn). Prints the median of
--repeats fits and the time ratio sklearn/chainrule (> 1: chainrule is faster). Repeat r uses random_state=r
in both libraries; the accuracy difference is paired over the repeats and given with its standard error (the
spread over seeds, about 0.004 here, is larger than any systematic difference: use --repeats 30 to see one).
--sklearn-defaults fits with scikit-learn's defaults instead (max_iter=200, tol=1e-4, batch_size='auto').

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python3 benchmarks/sklearn_mlp_digits.py
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP

from chainrule.sklearn import MLPClassifier as CrMLP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[100])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sklearn-defaults", action="store_true", help="scikit-learn's defaults except hidden sizes")
    ap.add_argument("--dtype", default="float32", help="chainrule's compute dtype: float32 (default), float64 or x")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    threads = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    kw = dict(
        hidden_layer_sizes=tuple(args.hidden), max_iter=args.epochs, batch_size=args.batch_size, tol=0.0, random_state=0
    )
    if args.sklearn_defaults:
        kw = dict(hidden_layer_sizes=tuple(args.hidden), random_state=0)
    shown = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "random_state")
    cr_dtype = None if args.dtype == "x" else args.dtype
    print(f"digits: {X_train.shape[0]} train / {X_test.shape[0]} test; {shown}; chainrule dtype={cr_dtype or 'of X'}; "
          f"threads: {threads}")  # fmt: skip
    libs = (("sklearn", SkMLP), ("chainrule", CrMLP))
    for dtype in (np.float64, np.float32):
        times: dict[str, list[float]] = {name: [] for name, _ in libs}
        accs: dict[str, list[float]] = {name: [] for name, _ in libs}
        for r in range(args.repeats):  # interleaved, so that a burst of load hits both libraries alike
            for name, cls in libs:
                extra = {"dtype": cr_dtype} if cls is CrMLP else {}
                model = cls(**{**kw, **extra, "random_state": r})
                t0 = time.perf_counter()
                model.fit(X_train.astype(dtype), y_train)
                times[name].append(time.perf_counter() - t0)
                accs[name].append(model.score(X_test.astype(dtype), y_test))
        for name, _ in libs:
            t, a = np.median(times[name]), accs[name]
            print(f"  {np.dtype(dtype).name:8s} {name:9s} fit {t:.3f} s (median of {args.repeats}), "
                  f"test accuracy mean {np.mean(a):.4f} (min {min(a):.4f})")  # fmt: skip
        ratio = np.median(times["sklearn"]) / np.median(times["chainrule"])
        diff = np.subtract(accs["chainrule"], accs["sklearn"])
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        print(f"  {np.dtype(dtype).name:8s} time ratio sklearn/chainrule = {ratio:.2f}; accuracy chainrule - sklearn "
              f"= {diff.mean():+.4f} ± {se:.4f} (paired over seeds)")  # fmt: skip


if __name__ == "__main__":
    main()
