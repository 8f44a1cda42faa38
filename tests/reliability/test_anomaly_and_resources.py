"""detect_anomaly(), memory estimates before allocating, and a full disk during a checkpoint write."""

import errno
import sys
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
from chainrule import nn, serialize
from chainrule.cli import main
from chainrule.errors import AnomalyError, ChainruleError, TrainingError
from chainrule.memory import OutOfMemoryError, available_bytes, check_fits, layer_param_count
from chainrule.spec import build_model
from chainrule.train import fit


def _line():
    return sys._getframe(1).f_lineno


def test_forward_nan_names_op_and_user_location():
    x = cr.tensor([1.0, -1.0], requires_grad=True)
    with cr.detect_anomaly():
        assert cr.is_anomaly_enabled()
        with pytest.raises(AnomalyError) as e:
            line = _line() + 1
            cr.log(x)
    assert not cr.is_anomaly_enabled()
    msg = str(e.value)
    assert "forward of log produced NaN" in msg and f"{__file__}:{line}" in msg and "cr.log(x)" in msg
    assert isinstance(e.value, TrainingError)


def test_backward_inf_names_op_and_forward_location():
    x = cr.tensor([0.0, 4.0], requires_grad=True)
    with cr.detect_anomaly():
        line = _line() + 1
        y = cr.sqrt(x * 2.0)
        with pytest.raises(AnomalyError, match=r"backward of sqrt produced Inf") as e:
            y.sum().backward()
    assert f"{__file__}:{line}" in str(e.value)


def test_nan_input_reported_as_received_and_inactive_mode_is_silent():
    x = cr.tensor([np.nan, 1.0], requires_grad=True)
    with cr.detect_anomaly(), pytest.raises(AnomalyError, match="exp received an input containing NaN"):
        cr.exp(x)
    with np.errstate(invalid="ignore"):
        y = cr.log(cr.tensor([-1.0], requires_grad=True))  # inactive: no check
    assert np.isnan(y.data).all()
    with cr.detect_anomaly():  # finite values pass, gradients are unchanged
        a = cr.tensor([1.0, 2.0], requires_grad=True)
        (a * a).sum().backward()
    assert np.array_equal(a.grad.data, [2.0, 4.0])


class _Sqrt(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        return cr.sqrt(self.lin(x) - 100.0)


def test_fit_detect_anomaly_names_epoch_and_op():
    m = _Sqrt()
    x = np.ones((8, 2), np.float32)
    y = np.zeros((8, 1), np.float32)
    opt = cr.optim.SGD(m.parameters(), lr=0.1)
    with np.errstate(invalid="ignore"), pytest.raises(AnomalyError) as e:
        fit(m, nn.MSELoss(), opt, (x, y), epochs=2, batch_size=4, quiet=True, detect_anomaly=True)
    assert "epoch 1" in str(e.value) and "sqrt" in str(e.value) and __file__ in str(e.value)


def test_cli_detect_anomaly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ok = main(["train", "--data", "xor", "--epochs", "1", "--detect-anomaly", "-q", "--no-plot", "--out", "a"])
    assert ok == 0
    capsys.readouterr()
    argv = ["train", "--data", "sine", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "5", "--out", "d"]
    code = main([*argv, "-q", "--no-plot", "--no-standardize", "--detect-anomaly"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "produced" in err[0] and "epoch" in err[0], err


def test_memory_estimate_refuses_huge_model_before_allocating(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--model", "mlp:100000000", "--data", "digits", "-q", "--no-plot", "--out", "big"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "would need about" in err[0] and "GiB" in err[0] and "available" in err[0]
    assert not (Path("big") / "checkpoint.safetensors").exists()


def test_memory_estimate_pieces():
    assert available_bytes() > 0
    assert layer_param_count("Linear", {"in_features": 3, "out_features": 4}) == 16
    assert layer_param_count("Linear", {"in_features": 3, "out_features": 4, "bias": False}) == 12
    assert layer_param_count("Conv1d", {"in_channels": 2, "out_channels": 3, "kernel_size": 5}) == 33
    assert layer_param_count("Conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3}) == 57
    assert layer_param_count("LSTM", {"input_size": 3, "hidden_size": 4}) == 4 * 4 * (3 + 4 + 2)
    check_fits(10, "x", available=100)
    with pytest.raises(OutOfMemoryError, match="would need about 1.0 KiB but only 100 B"):
        check_fits(1024, "x", available=100)
    assert issubclass(OutOfMemoryError, ChainruleError)
    m = build_model("mlp:16", 4, 3, batch_size=32)
    assert m._chainrule_activations == 4 + 16 + 16 + 3  # Flatten, Linear, ReLU, Linear
    with pytest.raises(OutOfMemoryError, match="batches of 10000000"):
        build_model("mlp:100000", 4, 3, batch_size=10_000_000)


def test_full_disk_during_checkpoint_keeps_previous_and_no_temp(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["--data", "xor", "-q", "--no-plot"]
    assert main(["train", *base, "--epochs", "2", "--out", "r"]) == 0
    ck = next(Path("r").glob("checkpoint.*"))
    before = ck.read_bytes()
    capsys.readouterr()
    orig = serialize.atomic_write

    def full_disk(path, write):
        def half(f):
            f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        return orig(path, half)

    monkeypatch.setattr(serialize, "atomic_write", full_disk)
    code = main(["train", "--resume", "r", "--epochs", "4", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left on device" in err[0], err
    assert ck.read_bytes() == before  # the previous good checkpoint is intact
    assert not [p for p in Path("r").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(serialize, "atomic_write", orig)
    assert main(["train", "--resume", "r", "--epochs", "4", "-q"]) == 0
