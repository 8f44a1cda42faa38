"""`chainrule export`: a trained run as ONNX (equal outputs in onnxruntime) or as a plain model file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import chainrule as cr
from chainrule.cli import main
from chainrule.data import load_dataset
from chainrule.job import load_trained, prepare_inputs


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def moons_csv(tmp_path) -> tuple[Path, np.ndarray]:
    b = load_dataset("moons", n=120)
    x = b.x * np.array([10.0, 0.1]) + np.array([3.0, -1.0])  # far from standardized: the scaler matters
    rows = ["u,v,kind"] + [f"{a!r},{c!r},{'ab'[k]}" for (a, c), k in zip(x.tolist(), b.y.tolist())]
    path = tmp_path / "moons.csv"
    path.write_text("\n".join(rows) + "\n")
    return path, x


@pytest.mark.parametrize("model", ["mlp:8", "cnn1d:3"])
def test_export_run_to_onnx_matches_chainrule(tmp_path, capsys, moons_csv, model) -> None:
    csv_path, x = moons_csv
    run_dir = tmp_path / "run"
    argv = ["train", "--data", str(csv_path), "--model", model, "--epochs", "3", "--out", str(run_dir)]
    code, _, err = _run(capsys, *argv, "--no-plot", "--quiet")
    assert code == 0, err
    out = tmp_path / "model.onnx"
    code, stdout, err = _run(capsys, "export", str(run_dir), "--format", "onnx", "-o", str(out))
    assert code == 0, err
    assert f"wrote {out}" in stdout and "standardized inside" in stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)

    trained, meta, _ = load_trained(run_dir)
    trained.eval()
    want = trained(cr.tensor(prepare_inputs(x.astype(np.float32), meta, "test"))).data
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.astype(np.float32)})  # raw rows: the scaler is in the graph
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # the CSV predictions of `chainrule predict` are the ONNX argmax
    feats = tmp_path / "feats.csv"
    feats.write_text("u,v\n" + "".join(f"{a!r},{c!r}\n" for a, c in x.tolist()))
    code, stdout, err = _run(capsys, "predict", str(run_dir), str(feats))
    assert code == 0, err
    labels = [line.rsplit(",", 1)[1] for line in stdout.strip().splitlines()[1:]]
    assert labels == [meta["classes"][i] for i in got.argmax(axis=1)]


def test_export_without_standardize_and_to_model_files(tmp_path, capsys, moons_csv) -> None:
    csv_path, x = moons_csv
    run_dir = tmp_path / "run"
    argv = ["train", "--data", str(csv_path), "--model", "mlp:4", "--epochs", "2", "--out", str(run_dir)]
    assert _run(capsys, *argv, "--no-plot", "--quiet")[0] == 0
    trained, meta, _ = load_trained(run_dir)
    trained.eval()
    xs = prepare_inputs(x.astype(np.float32), meta, "test")

    code, stdout, err = _run(capsys, "export", str(run_dir), "--no-standardize")  # default: model.onnx in the run
    assert code == 0, err
    assert (run_dir / "model.onnx").exists() and "standardized" not in stdout
    session = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": xs})[0], trained(cr.tensor(xs)).data, rtol=1e-4, atol=1e-5)

    # a plain model file, format from the extension; evaluate gives the run's metrics with it
    _, base, _ = _run(capsys, "evaluate", str(run_dir), "--data", str(csv_path), "--json")
    for name in ("m.npz", "m.safetensors"):
        code, _, err = _run(capsys, "export", str(run_dir), "-o", str(tmp_path / name))
        assert code == 0, err
        code, got, err = _run(capsys, "evaluate", str(tmp_path / name), "--data", str(csv_path), "--json")
        assert code == 0, err
        assert json.loads(got) == json.loads(base)


def test_export_errors_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    code, _, err = _run(capsys, "export", str(tmp_path / "nope"), "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and "nope" in _one_error_line(err)
    code, _, err = _run(capsys, "export", str(tmp_path), "--format", "onnx", "-o", str(tmp_path / "m.npz"))
    assert code == 2 and ".onnx" in _one_error_line(err)

    # a model with a layer that has no export rule (every chainrule.nn layer has one: take one away)
    import chainrule.onnx
    from chainrule.serialize import save
    from chainrule.spec import build_model

    model = build_model([{"type": "Flatten"}, {"type": "Linear"}, {"type": "LogSoftmax", "dim": 1}], 3, 2, seed=0)
    save(model, tmp_path / "m.npz", task="classification", classes=["a", "b"])
    monkeypatch.delitem(chainrule.onnx._RULES, "LogSoftmax")
    code, _, err = _run(capsys, "export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and "'2' (LogSoftmax)" in _one_error_line(err) and not (tmp_path / "m.onnx").exists()


def test_export_help_has_an_example(capsys) -> None:
    assert main(["export", "--help"]) == 0
    assert "chainrule export runs/" in capsys.readouterr().out
