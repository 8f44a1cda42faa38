"""Benchmarks of chainrule against PyTorch, scikit-learn, a scalar autograd and hand-written NumPy.

Run `python -m benchmarks --help` (from the repository root, with `src` on PYTHONPATH). Each
implementation of each workload runs in its own subprocess; see `runner.py` and `WORKLOADS`.
"""

WORKLOADS = {
    "W1": "benchmarks.w1_reference",
    "W2": "benchmarks.w2_mlp",
    "W3": "benchmarks.w3_mnist1d",
    "W4": "benchmarks.w4_cnn",
    "W5": "benchmarks.w5_digits",
}
