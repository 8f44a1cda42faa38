"""chainrule._blas: small products on one BLAS thread, same results, the caller's thread setting kept."""

import numpy as np
import pytest

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
