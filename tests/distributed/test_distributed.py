"""Data-parallel equivalence and failure handling, run under the mpiexec installed with mpi4py/mpich."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("mpi_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _mpiexec() -> str:
    exe = Path(sys.executable).with_name("mpiexec")
    return str(exe) if exe.exists() else "mpiexec"


def _run(n: int, out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(WORKER), str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("ranks", [2, 4])
def test_n_ranks_equal_one_process(tmp_path: Path, ranks: int) -> None:
    single, multi = tmp_path / "one.npz", tmp_path / "many.npz"
    r1 = _run(1, single, "16", "6")
    rn = _run(ranks, multi, "16", "6")
    assert r1.returncode == 0, r1.stderr
    assert rn.returncode == 0, rn.stderr
    a, b = np.load(single), np.load(multi)
    assert set(a.files) == set(b.files)
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)


def test_uneven_shards_still_equal(tmp_path: Path) -> None:
    r1 = _run(1, tmp_path / "one.npz", "13", "4")
    r2 = _run(2, tmp_path / "two.npz", "13", "4")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)


def test_dead_rank_stops_the_others(tmp_path: Path) -> None:
    start = time.monotonic()
    r = _run(2, tmp_path / "x.npz", "16", "6", "2", "2")
    assert r.returncode != 0
    assert time.monotonic() - start < 60
    assert not (tmp_path / "x.npz").exists()
