import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, optim
from chainrule.data import Standardizer, load_dataset
from chainrule.errors import ConfigError, ModelFileError, TrainingError
from chainrule.serialize import load as load_model
from chainrule.spec import build_model
from chainrule.train import (
    Callback,
    History,
    RunLock,
    accuracy,
    checkpoint_path,
    evaluate,
    fit,
    iter_metrics_log,
    mae,
    mse,
    r2_score,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def moons(n=120):
    b = load_dataset("moons", seed=1, n=n)
    return Standardizer().fit_transform(b.x), b.y


def make(seed=0, hidden=8, lr=0.05, opt="adam"):
    m = build_model(f"mlp:{hidden}", 2, 2, seed=seed)
    o = optim.Adam(m.parameters(), lr=lr) if opt == "adam" else optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    return m, nn.CrossEntropyLoss(), o


def weights(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_metrics_values():
    out = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(out, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    y, p = np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 2.0])
    assert mse(p, y) == pytest.approx((0.25 + 1) / 3)
    assert mae(p, y) == pytest.approx(1.5 / 3)
    assert r2_score(p, y) == pytest.approx(1 - 1.25 / 2)


def test_learns_moons_and_history_fields():
    x, y = moons()
    m, loss, o = make()
    h = fit(m, loss, o, (x, y), val_data=(x, y), epochs=30, batch_size=16, quiet=True)
    assert isinstance(h, History) and len(h) == 30 and h.stop_reason == "epochs"
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time"):
        assert all(v is not None for v in h[key]), key
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert evaluate(m, loss, (x, y))["accuracy"] > 0.85
    assert h["val_loss"][-1] == pytest.approx(evaluate(m, loss, (x, y))["loss"], rel=1e-5)


def test_full_batch_is_one_step_per_epoch():
    x, y = moons(40)
    m, loss, o = make(lr=0.01)
    calls = []

    class Count(Callback):
        def on_batch_end(self, epoch, batch, loss):
            calls.append((epoch, batch))

    fit(m, loss, o, (x, y), epochs=3, batch_size=None, callbacks=[Count()], quiet=True)
    assert calls == [(1, 1), (2, 1), (3, 1)]
    assert o.state_dict()["state"][0]["step"] == 3


def test_same_seed_bit_identical_and_seed_matters():
    x, y = moons()
    runs = []
    for seed in (3, 3, 4):
        m, loss, o = make(seed=0)
        fit(m, loss, o, (x, y), epochs=4, batch_size=8, seed=seed, quiet=True)
        runs.append(weights(m))
    assert same(runs[0], runs[1])
    assert not same(runs[0], runs[2])


def test_regression_metrics_sine():
    b = load_dataset("sine", n=200)
    m = build_model("mlp:16", 1, 1, activation="tanh", seed=0)
    h = fit(
        m,
        nn.MSELoss(),
        optim.Adam(m.parameters(), lr=0.02),
        (b.x, b.y),
        val_data=(b.x, b.y),
        epochs=40,
        batch_size=32,
        quiet=True,
    )
    assert h.metric == "r2" and h["val_r2"][-1] > 0.8
    assert h["train_mse"][0] > h["train_mse"][-1]


def test_stop_target_loss():
    x, y = moons()
    m, loss, o = make()
    h = fit(m, loss, o, (x, y), epochs=500, batch_size=16, target_loss=0.3, quiet=True)
    assert h.stop_reason == "target_loss" and h["train_loss"][-1] <= 0.3 < h["train_loss"][-2]
    assert "target loss" in h.message


def test_stop_converged_tol_patience():
    x, y = moons()
    m, loss, o = make(lr=1e-6)  # barely moves: improvement < tol at once
    h = fit(m, loss, o, (x, y), epochs=100, batch_size=None, tol=1e-3, patience=3, quiet=True)
    assert h.stop_reason == "converged" and len(h) == 4
    assert "less than 0.001 for 3 epochs" in h.message


def test_early_stopping_restores_best():
    x, y = moons()
    m, loss, o = make(lr=0.5)  # noisy: the val loss goes up and down
    xv, yv = x[:30], y[:30]
    best = {}

    class Snap(Callback):
        def on_epoch_end(self, epoch, logs, history):
            best[epoch] = (logs["val_loss"], weights(m))

    h = fit(
        m,
        loss,
        o,
        (x[30:], y[30:]),
        val_data=(xv, yv),
        epochs=200,
        batch_size=8,
        early_stopping=3,
        callbacks=[Snap()],
        quiet=True,
    )
    assert h.stop_reason == "early_stopping"
    vals = h["val_loss"]
    be = int(np.argmin(vals)) + 1
    assert h.best_epoch == be and len(h) == be + 3
    assert same(weights(m), best[be][1])


def test_early_stopping_needs_val():
    x, y = moons()
    m, loss, o = make()
    with pytest.raises(ConfigError, match="validation"):
        fit(m, loss, o, (x, y), epochs=2, early_stopping=2, quiet=True)


def test_bad_monitor_and_empty_data():
    x, y = moons()
    m, loss, o = make()
    with pytest.raises(ConfigError, match="cannot monitor 'val_r2'"):
        fit(m, loss, o, (x, y), val_data=(x, y), epochs=2, early_stopping=2, monitor="val_r2", quiet=True)
    from chainrule.errors import DataError

    with pytest.raises(DataError, match="no samples"):
        fit(m, loss, o, (x[:0], y[:0]), epochs=2, quiet=True)


def test_nan_or_inf_in_the_data_is_named_before_training():
    """A NaN input 'diverged at epoch 1 ... try a lower learning rate', after weights of one epoch were changed."""
    from chainrule.errors import DataError

    x, y = moons()
    m, loss, o = make()
    before = weights(m)
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(DataError, match="train_data: the inputs of sample 7 hold NaN or inf"):
        fit(m, loss, o, (bad, y), epochs=2, quiet=True)
    bad[7, 1] = np.inf
    with pytest.raises(DataError, match="val_data: the inputs of sample 7 hold NaN or inf"):
        fit(m, loss, o, (x, y), val_data=(bad, y), epochs=2, quiet=True)
    with pytest.raises(DataError, match="train_data: the targets of sample 3 hold NaN or inf"):
        t = np.sin(x[:, :1])
        t[3] = np.nan
        fit(build_model("mlp:4", 2, 1, seed=0), nn.MSELoss(), o, (x, t), epochs=2, quiet=True)
    assert same(weights(m), before)


def test_early_stopping_on_accuracy_is_maximised():
    x, y = moons()
    m, loss, o = make(lr=0.05)
    h = fit(
        m,
        loss,
        o,
        (x[30:], y[30:]),
        val_data=(x[:30], y[:30]),
        epochs=60,
        batch_size=8,
        early_stopping=4,
        monitor="val_accuracy",
        quiet=True,
    )
    accs = h["val_accuracy"]
    assert h.best_epoch == int(np.argmax(accs)) + 1
    assert evaluate(m, loss, (x[:30], y[:30]))["accuracy"] == max(accs)


def test_callback_stop():
    x, y = moons()
    m, loss, o = make()
    h = fit(m, loss, o, (x, y), epochs=50, callbacks=[lambda logs: logs["epoch"] == 2], quiet=True)
    assert h.stop_reason == "callback" and len(h) == 2


def test_divergence_stops_with_epoch_and_batch_keeping_finite_weights():
    x, y = moons()
    x = x * 1e3
    m, loss, o = make(lr=1e6, opt="sgd")
    h = fit(m, loss, o, (x, y), epochs=20, batch_size=16, quiet=True)
    assert h.stop_reason == "diverged"
    assert "epoch" in h.message and "batch" in h.message and "lower learning rate" in h.message
    assert all(np.isfinite(v).all() for v in m.state_dict().values())


def test_divergence_on_nan_gradient():
    class NanGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(np.ones((2, 2), dtype=np.float32))

        def forward(self, x):
            return (x @ self.w) * cr.tensor(np.float32(0.0)) + (self.w.sum() * cr.tensor(np.float32(np.nan))).detach()

    m = NanGrad()
    h = fit(
        m,
        nn.MSELoss(),
        optim.SGD(m.parameters(), lr=0.1),
        (np.ones((4, 2), np.float32), np.ones((4, 2), np.float32)),
        epochs=3,
        quiet=True,
    )
    assert h.stop_reason == "diverged" and "epoch 1, batch 1" in h.message


class _Halve:
    """A scheduler (state_dict protocol of torch.optim.lr_scheduler): halves the lr every 2 epochs."""

    def __init__(self, optimizer):
        self.optimizer, self.count = optimizer, 0

    def step(self):
        self.count += 1
        if self.count % 2 == 0:
            for g in self.optimizer.param_groups:
                g["lr"] *= 0.5

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def _train_with_checkpoints(run_dir, epochs, resume=False, scheduler=True):
    x, y = moons()
    m, loss, o = make(seed=0, lr=0.05, opt="sgd")
    sched = _Halve(o) if scheduler else None
    h = fit(
        m,
        loss,
        o,
        (x, y),
        val_data=(x[:20], y[:20]),
        epochs=epochs,
        batch_size=16,
        seed=7,
        scheduler=sched,
        run_dir=run_dir,
        resume=resume,
        quiet=True,
        early_stopping=50,
    )
    return m, h


def test_resume_is_bit_identical(tmp_path):
    m_full, h_full = _train_with_checkpoints(tmp_path / "a", 8)
    _train_with_checkpoints(tmp_path / "b", 3)
    m_res, h_res = _train_with_checkpoints(tmp_path / "b", 8, resume=True)
    assert same(weights(m_full), weights(m_res))
    assert [e["train_loss"] for e in h_full.epochs] == [e["train_loss"] for e in h_res.epochs]
    assert [e["epoch"] for e in iter_metrics_log(tmp_path / "b")] == list(range(1, 9))
    assert h_res["lr"] == [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125, 0.00625, 0.00625]


def test_checkpoint_contents_and_lock(tmp_path):
    _train_with_checkpoints(tmp_path, 2)
    p = checkpoint_path(tmp_path)
    assert p.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    from chainrule.serialize import load_tensors

    tensors, meta = load_tensors(p)
    assert meta["epoch"] == 2 and meta["kind"] == "checkpoint" and "loader" in meta["rng"]
    assert any(k.startswith("optim.") for k in tensors)
    with RunLock(tmp_path), pytest.raises(TrainingError, match="another training"):
        _train_with_checkpoints(tmp_path, 3, resume=True)


def test_resume_refuses_damaged_checkpoint(tmp_path):
    _train_with_checkpoints(tmp_path, 2)
    p = checkpoint_path(tmp_path)
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        _train_with_checkpoints(tmp_path, 4, resume=True)


def test_bad_arguments():
    x, y = moons()
    m, loss, o = make()
    for kw in ({"epochs": -1}, {"tol": -1.0}, {"patience": 0}, {"checkpoint_every": 0}):
        with pytest.raises(ConfigError):
            fit(m, loss, o, (x, y), quiet=True, **kw)


def test_plain_progress_lines(capsys):
    x, y = moons(40)
    m, loss, o = make()
    fit(m, loss, o, (x, y), epochs=3, quiet=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[0].startswith("epoch 1") and "train_loss" in err[0]
    fit(m, loss, o, (x, y), epochs=3, quiet=True)
    assert capsys.readouterr().err == ""


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """Kill a CLI training with SIGKILL at a few moments; each resume ends bit-identical to a clean run."""
    env = {**os.environ, "PYTHONPATH": SRC}
    args = ["--data", "spirals", "--model", "mlp:32,32", "--epochs", "25", "--no-plot", "--quiet", "--seed", "1"]
    clean = tmp_path / "clean"
    subprocess.run(
        [sys.executable, "-m", "chainrule.cli", "train", *args, "--out", str(clean)],
        env=env,
        check=True,
        capture_output=True,
    )
    ref = load_model(clean / "model.safetensors").state_dict()
    for i, delay in enumerate((0.6, 0.9, 1.2)):
        run = tmp_path / f"k{i}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "chainrule.cli", "train", *args, "--out", str(run)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (run / "config.json").exists():
            continue  # killed before the run started: nothing to resume
        r = subprocess.run(
            [sys.executable, "-m", "chainrule.cli", "train", "--resume", str(run), "--quiet", "--no-plot"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        assert same(ref, load_model(run / "model.safetensors").state_dict())
        assert json.loads((run / "results.json").read_text())["epochs_run"] == 25
    run = tmp_path / "int"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chainrule.cli", "train", *args, "--out", str(run)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate()
    # (a SIGINT while Python itself is still starting up is outside chainrule's hands)
    if proc.returncode == 130 and (run / "config.json").exists():  # one line saying how to resume
        assert f"resume with: chainrule train --resume {run}" in err and len(err.strip().splitlines()) == 1
        r = subprocess.run(
            [sys.executable, "-m", "chainrule.cli", "train", "--resume", str(run), "-q", "--no-plot"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        assert same(ref, load_model(run / "model.safetensors").state_dict())


def test_tqdm_bar_on_a_terminal(monkeypatch, capsys):
    import chainrule.train as tr

    monkeypatch.setattr(tr, "_isatty", lambda stream: True)
    x, y = moons(40)
    m, loss, o = make()
    fit(m, loss, o, (x, y), epochs=2, batch_size=8, quiet=False)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "5/5" in err and "train_loss" in err and "lr 0.05" in err


def test_resume_restores_generators_held_by_layers(tmp_path, monkeypatch):
    """A layer with its own Generator (as a dropout layer may hold) continues its stream after a resume."""

    class Noise(nn.Module):
        def __init__(self, generator=None):
            super().__init__()
            self.gen = generator or cr.Generator(0)

        def forward(self, x):
            if not self.training:
                return x
            return x + cr.tensor(self.gen.np.standard_normal(x.shape).astype(np.float32) * np.float32(0.1))

    monkeypatch.setattr(nn, "Noise", Noise, raising=False)
    x, y = moons()

    def go(run_dir, epochs, resume=False):
        m = build_model(
            [{"type": "Linear", "out_features": 8}, {"type": "Noise"}, {"type": "ReLU"}, {"type": "Linear"}],
            2,
            2,
            seed=0,
        )
        fit(
            m,
            nn.CrossEntropyLoss(),
            optim.Adam(m.parameters(), lr=0.05),
            (x, y),
            epochs=epochs,
            batch_size=16,
            run_dir=run_dir,
            resume=resume,
            quiet=True,
        )
        return weights(m)

    full = go(tmp_path / "a", 5)
    go(tmp_path / "b", 2)
    assert same(full, go(tmp_path / "b", 5, resume=True))


class _Crash(BaseException):
    """Stands for the process dying: nothing in chainrule catches it."""


def _crash_run(run_dir, epochs, resume=False, callbacks=()):
    x, y = moons(60)
    m, loss, o = make(seed=0, lr=0.05, opt="sgd")
    fit(
        m,
        loss,
        o,
        (x, y),
        epochs=epochs,
        batch_size=16,
        seed=3,
        run_dir=run_dir,
        resume=resume,
        quiet=True,
        callbacks=callbacks,
    )
    return weights(m)


@pytest.mark.parametrize("where", ["batch", "write", "replace", "log"])
def test_crash_at_many_points_then_resume_is_bit_identical(tmp_path, monkeypatch, where):
    """Die during a batch, while writing a checkpoint's bytes, just before its rename, or while logging."""
    import chainrule.serialize as ser
    import chainrule.train as tr

    ref = _crash_run(tmp_path / "ref", 6)
    for k in range(1, 7):
        calls = {"n": 0}

        def hit():
            calls["n"] += 1
            if calls["n"] == k:
                raise _Crash

        run_dir = tmp_path / f"{where}{k}"
        cbs = []
        with monkeypatch.context() as mp:
            if where == "batch":

                class Die(Callback):
                    def on_batch_end(self, epoch, batch, loss):
                        if epoch == k and batch == 2:
                            raise _Crash

                cbs = [Die()]
            elif where == "write":
                orig = ser.atomic_write

                def aw(path, write):  # the temporary file gets half of its bytes, then the process dies
                    def w(fh):
                        calls["n"] += 1
                        if calls["n"] == k:
                            buf = io.BytesIO()
                            write(buf)
                            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                            raise _Crash
                        write(fh)

                    orig(path, w)

                mp.setattr(ser, "atomic_write", aw)
            elif where == "replace":
                real_replace = os.replace

                def replace(a, b):
                    hit()
                    real_replace(a, b)

                mp.setattr(ser.os, "replace", replace)
            else:
                real_append = tr._append_metrics

                def append(rdir, logs):
                    hit()
                    real_append(rdir, logs)

                mp.setattr(tr, "_append_metrics", append)
            with pytest.raises(_Crash):
                _crash_run(run_dir, 6, callbacks=cbs)
        assert same(ref, _crash_run(run_dir, 6, resume=True)), (where, k)
        assert [e["epoch"] for e in iter_metrics_log(run_dir)] == list(range(1, 7))


def test_clip_grad_norm():
    from chainrule.train import clip_grad_norm_

    p = nn.Parameter(np.zeros(2, np.float32))
    p.grad = cr.tensor(np.array([3.0, 4.0], np.float32))
    assert float(clip_grad_norm_([p], 1.0)) == pytest.approx(5.0)
    assert np.linalg.norm(p.grad.data) == pytest.approx(1.0, rel=1e-5)
    x, y = moons()
    m, loss, o = make(lr=10.0, opt="sgd")
    h = fit(m, loss, o, (x * 100, y), epochs=3, batch_size=16, grad_clip=0.01, quiet=True)
    assert h.stop_reason == "epochs"


def test_reduce_lr_on_plateau_is_stepped_with_the_validation_loss():
    """As in a PyTorch loop (scheduler.step(val_loss)): the epoch's validation loss, not its training loss."""
    from chainrule.optim.lr_scheduler import ReduceLROnPlateau

    x, y = moons()
    m, loss, o = make(lr=0.05, opt="sgd")
    sched = ReduceLROnPlateau(o, patience=0, factor=0.5)
    seen, step = [], sched.step
    sched.step = lambda metrics, epoch=None: (seen.append(metrics), step(metrics))
    h = fit(m, loss, o, (x, y), val_data=(x[:20], y[:20]), epochs=4, batch_size=16, scheduler=sched, quiet=True)
    assert seen == h["val_loss"]
    h2 = fit(m, loss, o, (x, y), epochs=2, batch_size=16, scheduler=sched, quiet=True)  # no validation data
    assert seen[4:] == h2["train_loss"]


def test_resuming_a_finished_run_keeps_best_epoch(tmp_path, monkeypatch):
    import chainrule.train as tr

    x, y = moons(40)
    hs = []
    for resume in (False, True):
        vals = iter([1.0, 0.5, 0.6, 0.7])  # best at epoch 2, early stopping (patience 2) after epoch 4
        monkeypatch.setattr(tr, "evaluate", lambda *a, **k: {"loss": next(vals), "accuracy": 0.5})
        m, loss, o = make()
        kw = dict(val_data=(x, y), epochs=10, early_stopping=2, run_dir=tmp_path, resume=resume, quiet=True)
        hs.append(fit(m, loss, o, (x, y), **kw))
    assert hs[0].stop_reason == hs[1].stop_reason == "early_stopping"
    assert hs[0].best_epoch == hs[1].best_epoch == 2


@pytest.mark.parametrize("loss_cls", [nn.BCEWithLogitsLoss, nn.BCELoss])
def test_binary_losses_report_accuracy(loss_cls):
    """One output per sample with a BCE loss: accuracy as Keras' binary_accuracy (a logit > 0, a probability > 0.5),
    not regression metrics of logits against 0/1 labels."""
    x, y = moons()
    yf = y.astype(np.float32)[:, None]
    cr.manual_seed(0)
    layers = [nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)] + ([nn.Sigmoid()] if loss_cls is nn.BCELoss else [])
    m = nn.Sequential(*layers)
    loss = loss_cls()
    h = fit(
        m,
        loss,
        optim.Adam(m.parameters(), lr=0.05),
        (x, yf),
        val_data=(x, yf),
        epochs=15,
        batch_size=16,
        early_stopping=20,
        monitor="val_accuracy",
        quiet=True,
    )
    assert h.task == "binary" and h.metric == "accuracy" and "train_mse" not in h.last
    out = m(cr.tensor(x)).detach().numpy()[:, 0]
    want = ((out > (0.0 if loss_cls is nn.BCEWithLogitsLoss else 0.5)) == y).mean()
    assert h["val_accuracy"][-1] == pytest.approx(want) and want > 0.8
    assert evaluate(m, loss, (x, yf))["accuracy"] == pytest.approx(want)
    assert 0.5 < h["train_accuracy"][-1] <= 1


def test_accuracy_of_one_column_uses_a_threshold():
    assert accuracy(np.array([[0.2], [0.7], [0.9]]), np.array([0, 0, 1])) == pytest.approx(2 / 3)
    assert accuracy(np.array([-1.0, 2.0, 0.5]), np.array([0.0, 1.0, 0.0]), threshold=0.0) == pytest.approx(2 / 3)


def test_accuracy_with_class_probability_targets():
    """CrossEntropyLoss with (N, C) probability targets: right when the largest logit is the likeliest class."""
    x, y = moons()
    probs = np.eye(2, dtype=np.float32)[y] * 0.9 + 0.05
    m, loss, o = make()
    h = fit(m, loss, o, (x, probs), val_data=(x, probs), epochs=10, batch_size=16, quiet=True)
    want = (m(cr.tensor(x)).detach().numpy().argmax(1) == y).mean()
    assert h["val_accuracy"][-1] == pytest.approx(want) and want > 0.8
    assert 0.5 < h["train_accuracy"][-1] <= 1


def test_one_cycle_lr_is_stepped_after_every_batch():
    """OneCycleLR says "step it after every batch": fit does, and the rates the batches use are torch's."""
    import torch  # a test dependency: the parity check must run, never skip

    from chainrule.optim.lr_scheduler import OneCycleLR

    x, y = moons(64)
    m, loss, o = make(lr=0.1, opt="sgd")
    sched = OneCycleLR(o, max_lr=0.1, epochs=3, steps_per_epoch=4)
    used, step = [], o.step
    o.step = lambda *a: (used.append(o.param_groups[0]["lr"]), step(*a))[1]
    h = fit(m, loss, o, (x, y), epochs=3, batch_size=16, scheduler=sched, quiet=True)
    to = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    ts = torch.optim.lr_scheduler.OneCycleLR(to, max_lr=0.1, epochs=3, steps_per_epoch=4)
    want = []
    for _ in range(12):
        want.append(to.param_groups[0]["lr"])
        to.step()
        ts.step()
    assert used == pytest.approx(want, rel=1e-12)
    assert h["lr"] == [used[3], used[7], used[11]]  # the rate of each epoch's last batch


@pytest.mark.parametrize(
    "val, match",
    [
        (lambda x, y: (x[:0], y[:0]), "val_data has no samples"),
        (lambda x, y: (np.c_[x, x][:10], y[:10]), "val_data does not fit the model: .*4 features"),
    ],
)
def test_validation_data_that_cannot_fit_is_refused_before_training(val, match):
    """Before: a whole epoch of training, then an error about an op that did not name val_data."""
    from chainrule.errors import DataError

    x, y = moons()
    m, loss, o = make()
    w = weights(m)
    with pytest.raises(DataError, match=match):
        fit(m, loss, o, (x, y), val_data=val(x, y), epochs=2, quiet=True)
    assert same(w, weights(m))


@pytest.mark.parametrize("stop_at", [2, 5, 8])
def test_resume_with_plateau_scheduler_and_early_stopping_is_bit_identical(tmp_path, stop_at):
    """ReduceLROnPlateau's state and the early-stopping counters survive a resume: same lrs, stop, best weights."""
    from chainrule.optim.lr_scheduler import ReduceLROnPlateau

    x, y = moons()

    def run(run_dir, epochs, resume=False):
        m, loss, o = make(seed=0, lr=0.5, opt="sgd")
        sched = ReduceLROnPlateau(o, patience=1, factor=0.5)
        kw = dict(epochs=epochs, batch_size=16, seed=7, scheduler=sched, early_stopping=4, quiet=True)
        h = fit(m, loss, o, (x, y), val_data=(x[:20], y[:20]), run_dir=run_dir, resume=resume, **kw)
        return weights(m), h

    w_full, h_full = run(tmp_path / "a", 60)
    assert h_full.stop_reason == "early_stopping" and len(h_full) == 9 and len(set(h_full["lr"])) == 3
    run(tmp_path / "b", stop_at)
    w_res, h_res = run(tmp_path / "b", 60, resume=True)
    assert same(w_full, w_res) and h_res["lr"] == h_full["lr"] and h_res["val_loss"] == h_full["val_loss"]
    assert (h_res.stop_reason, h_res.best_epoch) == (h_full.stop_reason, h_full.best_epoch)


def test_predict_on_no_rows_has_the_outputs_shape() -> None:
    """An empty input gives (0, outputs), as the model (and torch) does, not a shapeless (0,)."""
    from chainrule.train import predict

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    out = predict(model, np.zeros((0, 3), np.float32))
    assert out.shape == (0, 2) and out.dtype == np.float32 and model.training
    assert predict(model, np.ones((5, 3), np.float32), batch_size=2).shape == (5, 2)
