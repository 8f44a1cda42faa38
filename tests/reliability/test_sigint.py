"""Ctrl-C (SIGINT): training stops at the next batch boundary after writing a checkpoint of its position inside the
epoch; `chainrule train --resume` then finishes bit-identical to an uninterrupted run (weights and metrics log).
An interrupt during a checkpoint write (one Ctrl-C, or two: the second one interrupts at once) leaves a loadable
run. The SIGINTs are sent deterministically by test hooks: CHAINRULE_TEST_SIGINT_AT="EPOCH:BATCH" (after that
batch) and CHAINRULE_TEST_KILL_AT="sigint:N" / "sigint2:N" (during the N-th atomic file write)."""

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, train
from chainrule.serialize import load_tensors
from chainrule.train import fit, read_checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")
MODEL = json.dumps(
    [{"type": "Linear", "out_features": 16}, {"type": "ReLU"}, {"type": "Dropout", "p": 0.2}, {"type": "Linear"}]
)
# 975 training rows in batches of 8: 122 batches per epoch, the last one of 7 rows
ARGS = ["--data", "moons", "--samples", "1500", "--model", MODEL, "--epochs", "4", "--batch-size", "8"]
ARGS += ["--val-split", "0.1", "--no-plot", "-q"]


def _cli(args, env=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_TEST_")}
    env = {**base, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    p = subprocess.run([sys.executable, "-m", "chainrule.cli", *args], env=env, capture_output=True, timeout=120)
    return p.returncode, p.stderr.decode()


def _weights(run):
    return load_tensors(next(Path(run).glob("model.*")))[0]


def _log(run):
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "ref"
    code, err = _cli(["train", *ARGS, "--checkpoint-every", "2", "--out", str(run)])
    assert code == 0, err
    return _weights(run), _log(run)


def _interrupt_and_resume(run, env, expect):
    code, err = _cli(["train", *ARGS, "--checkpoint-every", "2", "--out", str(run)], env)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0] and f"resume with: chainrule train --resume {run}" in lines[0], err
    for f in run.glob("checkpoint.*"):
        load_tensors(f)  # loadable
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    meta = read_checkpoint(run)[1] if list(run.glob("checkpoint.*")) else None
    code, err = _cli(["train", "--resume", str(run), "-q"])
    assert code == 0, err
    return meta


# (epoch, batch) -> what the message says; checkpoints are written every 2 epochs
POINTS = {
    (1, 1): "at epoch 1, batch 1/122; saved a checkpoint",
    (2, 70): "at epoch 2, batch 70/122; saved a checkpoint",
    (3, 121): "at epoch 3, batch 121/122; saved a checkpoint",
    (1, 122): "after epoch 1; saved a checkpoint",  # the epoch's last batch: the epoch ends, then a checkpoint
}


def test_sigint_mid_epoch_then_resume_is_bit_identical(tmp_path, reference):
    ref_w, ref_log = reference

    def one(point):
        run = tmp_path / f"e{point[0]}b{point[1]}"
        meta = _interrupt_and_resume(run, {"CHAINRULE_TEST_SIGINT_AT": f"{point[0]}:{point[1]}"}, POINTS[point])
        return run, meta

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(one, POINTS))
    for (run, meta), (epoch, batch) in zip(done, POINTS, strict=True):
        if batch < 122:  # the checkpoint recorded the position inside the epoch
            assert meta["position"] == {"epoch": epoch, "batch": batch, "batches": 122}
            assert meta["epoch"] == epoch - 1
        w = _weights(run)
        assert w.keys() == ref_w.keys()
        for k in ref_w:
            assert np.array_equal(w[k], ref_w[k]), (run, k)
        assert _log(run) == ref_log, run  # the epoch's loss and accuracy continue from the saved running sums


@pytest.mark.parametrize("hook", ["sigint:4", "sigint2:4"])
def test_sigint_during_checkpoint_write_leaves_a_loadable_run(tmp_path, reference, hook):
    """Write 4 is the checkpoint of epoch 2 (1: config.json, 2: metrics.jsonl, 3: the checkpoint of epoch 1 —
    with --checkpoint-every 1). One Ctrl-C lets the write finish, then stops; a second one aborts the write, the
    checkpoint of epoch 1 stays."""
    ref_w, ref_log = reference
    run = tmp_path / hook.replace(":", "")
    code, err = _cli(["train", *ARGS, "--out", str(run)], {"CHAINRULE_TEST_KILL_AT": hook})
    assert code == 130, err
    expect = "after epoch 2; saved a checkpoint" if hook == "sigint:4" else "the last checkpoint (epoch 1)"
    assert expect in err and "resume with" in err, err
    tensors, meta = load_tensors(next(run.glob("checkpoint.*")))
    assert meta["epoch"] == (2 if hook == "sigint:4" else 1) and "position" not in meta
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    code, err = _cli(["train", "--resume", str(run), "-q"])
    assert code == 0, err
    w = _weights(run)
    for k in ref_w:
        assert np.array_equal(w[k], ref_w[k]), k


def _data():
    g = np.random.default_rng(0)
    x = g.normal(size=(100, 3)).astype(np.float32)
    return x, (x.sum(1) > 0).astype(np.int64)


def _model():
    cr.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 2))


def _fit(model, run=None, resume=False, epochs=3):
    opt = cr.optim.Adam(model.parameters(), lr=0.01)
    return fit(
        model, nn.CrossEntropyLoss(), opt, _data(), epochs=epochs, batch_size=16, run_dir=run, resume=resume,
        quiet=True,
    )  # fmt: skip


def test_fit_interrupt_in_process(tmp_path, monkeypatch):
    """Through the Python API: the default Ctrl-C handler is back afterwards, the dropout masks (drawn from the
    default generator, which also shuffles here) continue identically, and without a run directory the history
    just says where it stopped."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ref = _model()
    h_ref = _fit(ref)
    monkeypatch.setattr(train, "_SIGINT_AT", "2:3")
    m = _model()
    h = _fit(m, tmp_path / "r")
    assert h.stop_reason == "interrupted" and "at epoch 2, batch 3/7; saved a checkpoint in" in h.message
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(train, "_SIGINT_AT", "")
    with pytest.raises(cr.errors.ConfigError, match="inside epoch 2; give epochs=2 or more"):
        _fit(_model(), tmp_path / "r", resume=True, epochs=1)
    m2 = _model()
    h2 = _fit(m2, tmp_path / "r", resume=True)
    assert h2.stop_reason == "epochs"
    for k, v in ref.state_dict().items():
        assert np.array_equal(m2.state_dict()[k], v), k
    assert [e["train_loss"] for e in h2.epochs] == [e["train_loss"] for e in h_ref.epochs]
    monkeypatch.setattr(train, "_SIGINT_AT", "1:2")
    h3 = _fit(_model())
    assert h3.stop_reason == "interrupted" and h3.message == "interrupted at epoch 1, batch 2/7"
    assert len(h3) == 0


def test_resume_with_fewer_epochs_than_done_is_refused(tmp_path):
    """A run stopped after epoch 2 (here by a callback failing in epoch 3) resumed with epochs=1 reported 'ran the
    full budget of 1 epochs' over a history of 2; like a checkpoint inside an epoch, it now asks for enough epochs."""

    class Crash(train.Callback):
        def on_epoch_end(self, epoch, logs, history):
            if epoch == 3:  # epoch 2's checkpoint is written
                raise RuntimeError("boom")

    model = _model()
    opt = cr.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, nn.CrossEntropyLoss(), opt, _data(), epochs=4, batch_size=16, run_dir=tmp_path / "r",
            quiet=True, callbacks=[Crash()])  # fmt: skip
    with pytest.raises(cr.errors.ConfigError, match="has 2 epochs done; give epochs=2 or more to continue"):
        _fit(_model(), tmp_path / "r", resume=True, epochs=1)
    assert _fit(_model(), tmp_path / "r", resume=True, epochs=3).stop_reason == "epochs"
