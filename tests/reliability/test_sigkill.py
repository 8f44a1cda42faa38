"""SIGKILL a `chainrule train` subprocess at >= 20 points, during epochs and during checkpoint writes; each
`chainrule train --resume` must finish with weights bit-identical to an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from chainrule.serialize import load_tensors

SRC = str(Path(__file__).resolve().parents[2] / "src")
ARGS = ["--data", "moons", "--samples", "1500", "--model", "mlp:8", "--epochs", "5", "--batch-size", "8"]
ARGS += ["--no-plot", "-q"]


def _cli(args, env_extra=None, wait=True):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {})}
    cmd = [sys.executable, "-m", "chainrule.cli", *args]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return p
    out, err = p.communicate(timeout=60)
    return p.returncode, out.decode(), err.decode()


def _weights(run):
    arrays, _ = load_tensors(next(Path(run).glob("model.*")))
    return arrays


def _resume(run):
    if not (run / "config.json").exists():  # killed before the run existed: start it again
        code, _, err = _cli(["train", *ARGS, "--out", str(run)])
    else:
        for f in run.glob("checkpoint.*"):
            load_tensors(f)  # whatever survived the kill is a complete, loadable checkpoint
        code, _, err = _cli(["train", "--resume", str(run), "-q"])
    assert code == 0, err
    return _weights(run)


def _hooked(tmp, stage, n):
    run = tmp / f"{stage}{n}"
    code, _, err = _cli(["train", *ARGS, "--out", str(run)], {"CHAINRULE_TEST_KILL_AT": f"{stage}:{n}"})
    assert code == -signal.SIGKILL, (stage, n, code, err)
    return _resume(run)


def _timed(tmp, k, delay):
    run = tmp / f"t{k}"
    p = _cli(["train", *ARGS, "--out", str(run)], wait=False)
    t0 = time.monotonic()
    while not (run / "config.json").exists() and p.poll() is None and time.monotonic() - t0 < 30:
        time.sleep(0.005)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    return _resume(run), p.returncode == -signal.SIGKILL


def _sigint(tmp, k, delay):
    run = tmp / f"i{k}"
    p = _cli(["train", *ARGS, "--out", str(run)], wait=False)
    t0 = time.monotonic()
    while not list(run.glob("checkpoint.*")) and p.poll() is None and time.monotonic() - t0 < 30:
        time.sleep(0.005)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate()
    if p.returncode != 0:  # stopped: one line saying where the checkpoint is and how to resume
        assert p.returncode == 130, err
        assert f"resume with: chainrule train --resume {run}" in err.decode() and "saved a checkpoint" in err.decode()
    return _resume(run)


def test_sigkill_at_many_points_then_resume_is_bit_identical(tmp_path):
    code, _, err = _cli(["train", *ARGS, "--out", str(tmp_path / "ref")])
    assert code == 0, err
    ref = _weights(tmp_path / "ref")
    rng = random.Random(7)
    jobs = [("write", n) for n in range(1, 10)] + [("rename", n) for n in range(1, 10)]
    delays = sorted(rng.uniform(0.0, 0.6) for _ in range(8))
    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(_hooked, tmp_path, s, n) for s, n in jobs]
        timed = [pool.submit(_timed, tmp_path, k, d) for k, d in enumerate(delays)]
        futs += [pool.submit(_sigint, tmp_path, k, d) for k, d in enumerate((0.0, 0.05))]
        results = [f.result() for f in futs]
        killed = [t.result() for t in timed]
    results += [r for r, _ in killed]
    assert len(jobs) + sum(k for _, k in killed) >= 22  # kills that landed before the run ended
    for r in results:
        assert r.keys() == ref.keys()
        for k in ref:
            assert np.array_equal(r[k], ref[k]), k
