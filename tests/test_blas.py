"""chainrule._blas: small products on one BLAS thread, same results, the caller's thread setting kept."""

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import _blas


@pytest.mark.parametrize(
    "shapes", [((7, 5), (5, 3)), ((4, 7, 5), (5, 3)), ((2, 1, 6, 5), (3, 5, 2)), ((300, 200), (200, 100))]
)
def test_matmul_equals_numpy(shapes: tuple) -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    np.testing.assert_array_equal(_blas.matmul(a, b), a @ b)


def test_thread_setting_restored() -> None:
    if _blas._SET is None:  # NumPy without a bundled OpenBLAS: a plain product, nothing to restore
        assert _blas.matmul(np.eye(2), np.eye(2)).tolist() == [[1, 0], [0, 1]]
        return
    before = _blas._GET()
    _blas.matmul(np.ones((10, 10)), np.ones((10, 10)))
    assert _blas._GET() == before
    with pytest.raises(ValueError):
        _blas.matmul(np.ones((10, 3)), np.ones((4, 10)))
    assert _blas._GET() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [10, _blas.AXPY_MIN, 3 * _blas.AXPY_MIN + 7])
def test_axpy_matches_numpy(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    want = y + dtype(-0.3) * x  # BLAS may fuse the multiply-add: one rounding instead of two
    _blas.axpy(-0.3, x, y)
    np.testing.assert_allclose(y, want, rtol=2 * np.finfo(dtype).eps, atol=2 * np.finfo(dtype).eps)
    assert _blas.axpy_ok(x, y) == (n >= _blas.AXPY_MIN and np.dtype(dtype) in _blas._AXPY)


def test_axpy_refuses_a_read_only_output_and_falls_back_on_other_layouts() -> None:
    x = np.ones(_blas.AXPY_MIN, np.float32)
    y = np.zeros(_blas.AXPY_MIN, np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _blas.axpy(1.0, x, y)
    z = np.zeros((2, _blas.AXPY_MIN), np.float32)[:, ::2]  # strided: NumPy's path, same result
    _blas.axpy(2.0, np.ones_like(z), z)
    assert np.all(z == 2.0) and not _blas.axpy_ok(np.ones_like(z), z)


def test_axpy_on_overlapping_arrays_equals_numpy() -> None:
    n = _blas.AXPY_MIN + 10
    base = np.arange(n + 5, dtype=np.float64)
    want = base.copy()
    want[5:] += 2.0 * want[:-5].copy()
    _blas.axpy(2.0, base[:-5], base[5:])
    np.testing.assert_array_equal(base, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_with_alpha_zero_still_adds_zero_times_x(dtype: type) -> None:
    """0·inf and 0·NaN are NaN, as in NumPy and in torch.optim.SGD with lr=0 (BLAS's axpy skips alpha = 0)."""
    x = np.full(_blas.AXPY_MIN, np.inf, dtype)
    x[1] = np.nan
    y = np.ones(_blas.AXPY_MIN, dtype)
    p, t = cr.nn.Parameter(y.copy()), torch.nn.Parameter(torch.tensor(y))
    p.grad, t.grad = cr.tensor(x), torch.tensor(x)
    with np.errstate(invalid="ignore"):
        _blas.axpy(0.0, x, y)
        cr.optim.SGD([p], lr=0.0).step()
    torch.optim.SGD([t], lr=0.0).step()
    assert np.isnan(y).all() and np.isnan(p.data).all() and torch.isnan(t).all()
