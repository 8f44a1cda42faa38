"""`fit(distributed=...)` and `chainrule train --distributed` under the mpiexec installed beside mpi4py/mpich.

N ranks with the same global batch give one process's weights (float64: 1e-12, float32: rounding); a resumed
2-rank run is bit-identical to an uninterrupted one; a rank that dies or hangs makes the others stop with an
error within the timeout, leaving a loadable checkpoint; a launcher/MPI mismatch is refused.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chainrule.distributed import mpiexec_path
from chainrule.train import read_checkpoint

HERE = Path(__file__).parent
SRC = HERE.resolve().parents[1] / "src"
MPIEXEC = mpiexec_path()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CHAINRULE_DIST_EXIT"}
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return {**env, **extra}


def _launch(n: int | None, args: list[str], cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *args] if n is None else [MPIEXEC, "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, env=_env(**env), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _train(n: int | None, out: str, cwd: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    args = ["-m", "chainrule.cli", "train", "--data", "moons", "--samples", "300", "--model", "mlp:16,16"]
    args += ["--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--batch-size", "30", "--val-split", "0.2"]
    args += ["--no-plot", "-q", "--out", out, *extra]
    if n is not None:
        args.append("--distributed")
    return _launch(n, args, cwd, **env)


def _weights(run: Path) -> dict[str, np.ndarray]:
    tensors, _ = read_checkpoint(run)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_fit_float64_n_ranks_equal_one_process(tmp_path: Path) -> None:
    """Uneven shards (batch 13 over 2 and 4 ranks), clipping, gathered validation: same as one process."""
    worker = str(HERE / "fit_worker.py")
    r = _launch(None, [worker, str(tmp_path / "one"), "0", "13"], tmp_path)
    assert r.returncode == 0, r.stderr
    ref = dict(np.load(tmp_path / "one.rank0.npz"))
    for n in (2, 4):
        r = _launch(n, [worker, str(tmp_path / f"n{n}"), "1", "13"], tmp_path)
        assert r.returncode == 0, r.stderr
        for rank in range(n):
            got = np.load(tmp_path / f"n{n}.rank{rank}.npz")
            assert set(got.files) == set(ref)
            for k in ref:
                np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=f"{n} ranks, rank {rank}, {k}")


def test_fit_ranks_with_empty_shards(tmp_path: Path) -> None:
    """Global batch 4 over 4 ranks; the last batch (90 = 22·4 + 2 rows) leaves ranks 2 and 3 without rows."""
    worker = str(HERE / "fit_worker.py")
    r1 = _launch(None, [worker, str(tmp_path / "one"), "0", "4"], tmp_path)
    r4 = _launch(4, [worker, str(tmp_path / "four"), "1", "4"], tmp_path)
    assert r1.returncode == 0 and r4.returncode == 0, r1.stderr + r4.stderr
    ref, got = np.load(tmp_path / "one.rank0.npz"), np.load(tmp_path / "four.rank3.npz")
    for k in ref.files:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=k)


def test_batchnorm_running_stats_agree_across_ranks(tmp_path: Path) -> None:
    r = _launch(2, [str(HERE / "fit_worker.py"), str(tmp_path / "bn"), "1", "16", "bn"], tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = np.load(tmp_path / "bn.rank0.npz"), np.load(tmp_path / "bn.rank1.npz")
    assert "model.1.running_mean" in a.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.allclose(a["model.1.running_mean"], 0)


@pytest.mark.parametrize("ranks", [2, 4])
def test_cli_float32_n_ranks_equal_one_process(tmp_path: Path, ranks: int) -> None:
    one = _train(None, "one", tmp_path, "--epochs", "3")
    many = _train(ranks, "many", tmp_path, "--epochs", "3")
    assert one.returncode == 0, one.stderr
    assert many.returncode == 0, many.stderr
    assert many.stdout.count("test accuracy") == 1  # only rank 0 prints
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "many")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6 * np.abs(a[k]).max(), err_msg=k)
    la = [json.loads(s) for s in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(s) for s in (tmp_path / "many" / "metrics.jsonl").read_text().splitlines()]
    assert len(la) == len(lb) == 3
    for ea, eb in zip(la, lb):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert eb[key] == pytest.approx(ea[key], rel=1e-5), key
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_cli_resume_two_ranks_is_bit_identical(tmp_path: Path) -> None:
    full = _train(2, "full", tmp_path, "--epochs", "4")
    part = _train(2, "part", tmp_path, "--epochs", "2")
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr
    args = ["-m", "chainrule.cli", "train", "--resume", "part", "--epochs", "4", "-q", "--no-plot", "--distributed"]
    resumed = _launch(2, args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    drop = lambda e: {k: v for k, v in e.items() if k != "time"}
    la = [drop(json.loads(s)) for s in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    lb = [drop(json.loads(s)) for s in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert la == lb and len(la) == 4


@pytest.mark.parametrize("mode", ["exit", "hang", "exit-cleanup"])
def test_a_dead_rank_stops_the_others(tmp_path: Path, mode: str) -> None:
    """Rank 1 exits (or stops answering) at step 25 of 8 per epoch: rank 0 fails within the timeout with a clear
    error, the job exits non-zero, and the checkpoint of epoch 3 stays loadable. With Hydra's default
    auto-cleanup ("exit-cleanup") mpiexec itself kills rank 0 at once."""
    spec = "1:25:hang" if mode == "hang" else "1:25"
    start = time.monotonic()
    # without auto-cleanup, Hydra leaves rank 0 running after rank 1 exits: the timeout must stop it
    extra = ("--allreduce-timeout", "2", "--epochs", "10")
    args = ["-m", "chainrule.cli", "train", "--data", "moons", "--samples", "300", "--batch-size", "30", "-q"]
    args += ["--no-plot", "--out", "dead", "--distributed", *extra]
    cmd = [MPIEXEC, *(["-disable-auto-cleanup"] if mode == "exit" else []), "-n", "2", sys.executable, *args]
    r = subprocess.run(
        cmd, env=_env(CHAINRULE_DIST_EXIT=spec), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - start
    assert r.returncode != 0
    assert elapsed < 20
    if mode != "exit-cleanup":
        assert "rank 0:" in r.stderr and "did not complete within 2 s" in r.stderr, r.stderr
    assert "rank 1: " + ("hanging" if mode == "hang" else "exiting") + " at step 25" in r.stderr
    tensors, meta = read_checkpoint(tmp_path / "dead")
    assert meta["epoch"] == 3
    assert all(np.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))
    assert not (tmp_path / "dead" / "model.safetensors").exists()


@pytest.mark.parametrize("var", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"])
def test_launcher_mpi_mismatch_is_refused(tmp_path: Path, var: str) -> None:
    r = _train(None, "x", tmp_path, "--epochs", "1", "--distributed", **{var: "3"})
    assert r.returncode == 2
    assert "the launcher started 3 processes but this MPI world has 1" in r.stderr
    assert not (tmp_path / "x").exists()


def test_without_mpi4py_the_error_names_the_extra(tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "mpi4py"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no MPI library here')\n")
    args = ["-m", "chainrule.cli", "train", "--data", "xor", "--epochs", "1", "--out", "x", "--distributed"]
    env = _env()
    env["PYTHONPATH"] = f"{shim.parent}{os.pathsep}{env['PYTHONPATH']}"
    r = subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert 'pip install "chainrule[mpi]"' in r.stderr and "no MPI library here" in r.stderr
    assert r.stderr.count("\n") == 1


def test_ctrl_c_on_one_rank_stops_all_after_the_same_batch_and_resumes_bit_identically(tmp_path: Path) -> None:
    """SIGINT reaches rank 1 only, after batch 2 of epoch 2 (6 batches per epoch): the flag travels in the next
    step's allreduce, so both ranks stop after batch 3 and rank 0 checkpoints that position; a 2-rank resume ends
    bit-identical to an uninterrupted run."""
    full = _train(2, "full", tmp_path, "--epochs", "3")
    part = _train(2, "part", tmp_path, "--epochs", "3", CHAINRULE_TEST_SIGINT_AT="2:2:1")
    assert full.returncode == 0, full.stderr
    assert part.returncode == 130, part.stderr
    assert "interrupted at epoch 2, batch 3/6; saved a checkpoint in part; resume with" in part.stderr, part.stderr
    meta = read_checkpoint(tmp_path / "part")[1]
    assert meta["epoch"] == 1 and meta["position"] == {"epoch": 2, "batch": 3, "batches": 6}
    args = ["-m", "chainrule.cli", "train", "--resume", "part", "-q", "--no-plot", "--distributed"]
    resumed = _launch(2, args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def _mpmd(dirs: list[Path], args: list[str]) -> subprocess.CompletedProcess:
    """One rank per folder (rank r runs in dirs[r]), as if each host saw a different filesystem."""
    cmd = [MPIEXEC]
    for i, d in enumerate(dirs):
        cmd += ([":"] if i else []) + ["-n", "1", "-wdir", str(d), sys.executable, *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)


def test_ranks_that_see_different_run_directories_are_refused(tmp_path: Path) -> None:
    """The two errors between ranks of docs/errors.md with real MPI: `--resume` where only rank 0 sees the
    checkpoint (the ranks disagree), and rank 0 failing to create the run directory (rank 1 says so)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert _train(None, "run", a, "--epochs", "1").returncode == 0
    (b / "run").mkdir()
    (b / "run" / "config.json").write_text((a / "run" / "config.json").read_text())
    args = ["-m", "chainrule.cli", "train", "--resume", "run", "-q", "--distributed", "--allreduce-timeout", "20"]
    r = _mpmd([a, b], args)
    assert r.returncode == 2, r.stderr
    assert "the ranks disagree on whether a checkpoint exists" in r.stderr, r.stderr
    (a / "file").write_text("")  # rank 0 cannot create file/sub
    args = ["-m", "chainrule.cli", "train", "--data", "xor", "--epochs", "1", "-q", "--no-plot", "--distributed"]
    r = _mpmd([a, b], [*args, "--out", "file/sub", "--allreduce-timeout", "20"])
    assert r.returncode == 2, r.stderr
    assert "rank 1: rank 0 failed while creating the run directory" in r.stderr, r.stderr
    assert "file/sub: cannot create the run directory" in r.stderr, r.stderr
