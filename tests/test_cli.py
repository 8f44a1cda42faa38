import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainrule.cli import main
from chainrule.data import load_dataset
from chainrule.errors import ConfigError
from chainrule.job import DEFAULTS, validate_config

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_train_without_arguments_default_job(in_tmp, capsys):
    code, out, err = run(capsys, "train", "--quiet", "--no-plot")
    assert code == 0, err
    acc = float(out.split("test accuracy:")[1].split()[0])
    assert acc >= 0.95
    run_dir = Path(out.split("run saved in ")[1].split()[0])
    assert run_dir.parent.name == "runs"
    names = set(os.listdir(run_dir))
    assert {"config.json", "metrics.jsonl", "model.safetensors", "results.json", "checkpoint.safetensors"} <= names
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 30
    code, out, _ = run(capsys, "evaluate", str(run_dir), "--json")
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(acc, abs=1e-4)


def test_train_evaluate_predict_plot_csv(in_tmp, capsys):
    b = load_dataset("moons", n=200)
    rows = ["u,v,kind"] + [f"{a},{c},{'ab'[k]}" for (a, c), k in zip(b.x.tolist(), b.y.tolist())]
    Path("d.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run(
        capsys,
        "train",
        "--data",
        "d.csv",
        "--target",
        "kind",
        "--model",
        "mlp:16,16",
        "--epochs",
        "60",
        "--lr",
        "0.01",
        "--out",
        "r",
        "--quiet",
        "--val-split",
        "0.2",
        "--early-stopping",
        "20",
    )
    assert code == 0, err
    assert float(out.split("test accuracy:")[1].split()[0]) > 0.8
    from PIL import Image

    assert Image.open("r/curves.png").size == (1000, 400)
    assert Image.open("r/boundary.png").size == (500, 400)
    Path("new.csv").write_text("v,u\n0.5,1.0\n-0.3,0.0\n")
    code, out, err = run(capsys, "predict", "r", "new.csv", "-o", "pred.csv")
    assert code == 0, err
    lines = Path("pred.csv").read_text().splitlines()
    assert lines[0] == "u,v,prediction" and lines[1].startswith("1,0.5,") and lines[1][-1] in "ab"
    code, out, err = run(capsys, "evaluate", "r/model.safetensors", "--data", "d.csv")
    assert code == 0 and "accuracy" in out
    Path("bad.csv").write_text("u,v,kind\n1,2,c\n")
    code, out, err = run(capsys, "evaluate", "r", "--data", "bad.csv")
    assert code == 2 and "label 'c' was not in the training labels" in one_error_line(err)
    Path("wide.csv").write_text("1,2,3\n")
    code, _, err = run(capsys, "predict", "r", "wide.csv")
    assert code == 2 and "expects 2 input columns" in one_error_line(err)
    for f in os.listdir(in_tmp):
        assert not f.endswith(".tmp")
    os.remove("r/boundary.png")
    code, out, _ = run(capsys, "plot", "r")
    assert code == 0 and "boundary.png" in out and Path("r/boundary.png").exists()


def test_regression_config_file_and_resume(in_tmp, capsys):
    Path("job.toml").write_text(
        'data = "sine"\nmodel = "mlp:16"\nactivation = "tanh"\nepochs = 6\nlr = 0.01\n'
        'batch_size = 32\nout = "s"\nplot = false\n'
    )
    code, out, err = run(capsys, "train", "job.toml", "--quiet")
    assert code == 0, err
    assert "R²" in out
    code, out, err = run(capsys, "train", "--resume", "s", "--epochs", "10", "--quiet")
    assert code == 0, err
    assert json.loads(Path("s/results.json").read_text())["epochs_run"] == 10
    code, out, err = run(capsys, "train", "job.toml", "--quiet", "--epochs", "10", "--out", "s2")
    assert code == 0
    from chainrule.serialize import load

    a, c = load("s/model.safetensors").state_dict(), load("s2/model.safetensors").state_dict()
    assert all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--lr", "-1"], "lr must be positive"),
        (["train", "--lr", "abc"], "invalid float value"),
        (["train", "--data", "nope"], "unknown dataset 'nope'"),
        (["train", "--data", "missing.csv"], "missing.csv: no such file"),
        (["train", "--model", "mlp:x"], "integers"),
        (["train", "--optimizer", "nadamx"], "unknown optimizer"),
        (["train", "--val-split", "1.5"], "val_split"),
        (["train", "--batch-size", "0"], "batch-size"),
        (["train", "--early-stopping", "3"], "validation split"),
        (["train", "cfg.json"], "unknown key 'lerning_rate'"),
        (["train", "broken.toml"], "not valid TOML"),
        (["train", "--resume", "nowhere"], "not a run directory"),
        (["evaluate", "nowhere"], "no such model file"),
        (["predict", "nowhere", "x.csv"], "no such model file"),
        (["plot", "nowhere"], "no such run directory"),
        (["train", "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_one_line_status_2_nothing_written(in_tmp, capsys, argv, match):
    Path("cfg.json").write_text('{"lerning_rate": 0.1}')
    Path("broken.toml").write_text("epochs = = 3")
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert match in one_error_line(err)
    assert not Path("runs").exists()


def test_out_dir_with_a_run_is_refused(in_tmp, capsys):
    assert run(capsys, "train", "--data", "xor", "--epochs", "1", "--out", "x", "-q", "--no-plot")[0] == 0
    code, _, err = run(capsys, "train", "--data", "xor", "--epochs", "1", "--out", "x", "-q")
    assert code == 2 and "already holds a run" in one_error_line(err)


def test_divergence_reported(in_tmp, capsys):
    code, _, err = run(
        capsys,
        "train",
        "--data",
        "sine",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--epochs",
        "5",
        "--out",
        "d",
        "-q",
        "--no-plot",
        "--no-standardize",
    )
    assert code == 2
    line = one_error_line(err)
    assert "diverged at epoch" in line and "batch" in line and "lower learning rate" in line


def test_help_has_examples_and_datasets_list(capsys):
    for cmd in ("train", "evaluate", "predict", "datasets", "plot"):
        assert main([cmd, "--help"]) == 0
        assert "examples:" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and lines[0].startswith("reference")


def test_subprocess_module_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "chainrule.cli",
            "train",
            "--data",
            "xor",
            "--epochs",
            "3",
            "--quiet",
            "--out",
            "x",
            "--no-plot",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and "run saved in x" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "chainrule.cli", "train", "--lr", "-3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_loss_that_does_not_fit_the_task_fails_before_writing(in_tmp, capsys):
    code, _, err = run(capsys, "train", "--data", "xor", "--loss", "mse", "--out", "m")
    assert code == 2 and "loss MSELoss does not fit the classification data" in one_error_line(err)
    assert not Path("m").exists()


def test_two_trainings_in_one_run_dir_refused(in_tmp, capsys):
    from chainrule.train import RunLock

    assert run(capsys, "train", "--data", "xor", "--epochs", "2", "--out", "x", "-q", "--no-plot")[0] == 0
    with RunLock("x"):
        code, _, err = run(capsys, "train", "--resume", "x", "--epochs", "4", "-q")
    assert code == 2 and "another training is using this run directory" in one_error_line(err)


def test_unwritable_out_dir(in_tmp, capsys):
    Path("file").write_text("x")
    code, _, err = run(capsys, "train", "--data", "xor", "--out", "file/sub", "-q")
    assert code == 2 and "file/sub" in one_error_line(err)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.floats(allow_nan=True, width=32),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*DEFAULTS, "bogus", "batch-size"]), _values, max_size=5))
def test_fuzz_config_valid_or_config_error(cfg):
    try:
        out = validate_config(cfg)
    except ConfigError as e:
        assert str(e)
    else:
        assert set(out) == set(DEFAULTS)


_tokens = st.sampled_from(
    [
        "--epochs",
        "--lr",
        "--batch-size",
        "--model",
        "--data",
        "--seed",
        "--val-split",
        "--activation",
        "0",
        "1",
        "-1",
        "full",
        "mlp:2",
        "xor",
        "nan",
        "x",
        "--tol",
        "1e-3",
    ]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_tokens, max_size=6))
def test_fuzz_train_arguments(in_tmp, capsys, argv):
    code = main(["train", "--quiet", "--no-plot", "--epochs", "0", "--data", "xor", *argv])
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        one_error_line(err)


def test_run_with_only_a_checkpoint_evaluates_and_regression_plot(in_tmp, capsys):
    assert run(capsys, "train", "--data", "sine", "--epochs", "3", "--out", "s", "-q")[0] == 0
    from PIL import Image

    assert Image.open("s/curves.png").size == (1000, 400) and not Path("s/boundary.png").exists()
    os.remove("s/model.safetensors")  # as after a crash: the checkpoint still serves
    code, out, err = run(capsys, "evaluate", "s", "--json")
    assert code == 0, err
    assert set(json.loads(out)) >= {"loss", "mse", "mae", "r2"}
    code, _, err = run(capsys, "evaluate", "s", "--data", "xor")
    assert code == 2 and "shape" in one_error_line(err)


@pytest.mark.parametrize("text", ["{not json", "[]"])
def test_damaged_config_json_of_a_run_is_one_error_line(in_tmp, capsys, text):
    """evaluate, explain --run and a checkpoint's evaluate printed a JSONDecodeError traceback; --resume a TypeError."""
    assert run(capsys, "train", "--data", "xor", "--epochs", "1", "--out", "r", "-q", "--no-plot")[0] == 0
    Path("r/config.json").write_text(text)
    for argv in (
        ["evaluate", "r"],
        ["evaluate", "r/checkpoint.safetensors", "--data", "xor"],
        ["explain", "--run", "r"],
        ["train", "--resume", "r", "--epochs", "2"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "r/config.json: unreadable" in one_error_line(err), argv


def test_checkpoint_without_its_run_directory(in_tmp, capsys):
    assert run(capsys, "train", "--data", "xor", "--epochs", "1", "--out", "r", "-q", "--no-plot")[0] == 0
    os.mkdir("lone")
    os.replace("r/checkpoint.safetensors", "lone/ck.safetensors")
    code, _, err = run(capsys, "evaluate", "lone/ck.safetensors", "--data", "xor")
    assert code == 2 and "lone: not a run directory (no config.json)" in one_error_line(err)


def test_evaluate_run_whose_config_json_does_not_match_its_model(in_tmp, capsys):
    """An edited config.json evaluated the model on other data, or on a split holding training rows, without a word."""
    assert run(capsys, "train", "--data", "moons", "--epochs", "1", "--out", "r", "-q", "--no-plot")[0] == 0
    cfg = json.loads(Path("r/config.json").read_text())
    for key, value, what in (
        ("data", "xor", "data 'xor', the model 'moons'"),
        ("seed", 7, "another split"),
        ("data", "digits", "data 'digits'"),  # 64 columns: comparing the standardizers raised ValueError
    ):
        Path("r/config.json").write_text(json.dumps({**cfg, key: value}))
        code, _, err = run(capsys, "evaluate", "r")
        assert code == 2 and f"r/config.json does not match the run's model ({what}" in one_error_line(err)
    Path("r/config.json").write_text(json.dumps(cfg))
    assert run(capsys, "evaluate", "r")[0] == 0


def test_config_file_errors_name_the_file(in_tmp, capsys):
    """A bad value in job.toml was reported as 'config: epochs must be >= 0', not naming the file."""
    for text, match in (("epochs = -3", "epochs must be >= 0"), ("lerning_rate = 0.1", "unknown key 'lerning_rate'")):
        Path("job.toml").write_text(f'data = "xor"\n{text}\n')
        code, _, err = run(capsys, "train", "job.toml", "-q", "--no-plot")
        assert code == 2 and f"job.toml: {match}" in one_error_line(err)
    assert not Path("runs").exists()


def test_bare_install_without_extras(in_tmp, capsys, monkeypatch):
    """Without safetensors/matplotlib/tqdm/scikit-learn the default job still runs (weights as .npz)."""
    for mod in ("safetensors", "safetensors.numpy", "matplotlib", "tqdm", "sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, mod, None)
    code, out, err = run(capsys, "train", "--out", "r", "--epochs", "3", "-q")
    assert code == 0, err
    assert "r/model.npz" in out
    assert {"model.npz", "checkpoint.npz"} <= set(os.listdir("r"))
    assert run(capsys, "evaluate", "r")[0] == 0
    code, _, err = run(capsys, "train", "--data", "iris", "-q")
    assert code == 2 and 'pip install "chainrule[data]"' in one_error_line(err)
    code, _, err = run(capsys, "plot", "r")
    assert code == 2 and 'pip install "chainrule[plot]"' in one_error_line(err)


def test_csv_header_and_delimiter_options(in_tmp, capsys):
    rows = load_dataset("xor", n=80)
    text = "\n".join(f"{a}|{b}|{k}" for (a, b), k in zip(rows.x.tolist(), rows.y.tolist()))
    Path("x.txt").write_text("1|2|3\n" + text + "\n")  # first row is data, not a header
    code, out, err = run(
        capsys,
        "train",
        "--data",
        "x.txt",
        "--no-header",
        "--delimiter",
        "|",
        "--task",
        "classification",
        "--epochs",
        "2",
        "--out",
        "h",
        "-q",
        "--no-plot",
    )
    assert code == 0, err
    cfg = json.loads(Path("h/config.json").read_text())
    assert cfg["header"] is False and cfg["delimiter"] == "|"
    code, _, err = run(capsys, "train", "--data", "x.txt", "--delimiter", "||", "-q")
    assert code == 2 and "delimiter must be one character" in one_error_line(err)


def test_train_with_a_bce_loss_prints_accuracy(in_tmp, capsys):
    """Logistic regression on a 0/1 column (--task regression --loss bce_with_logits): the summary is accuracy."""
    x = np.random.default_rng(0).normal(size=(80, 2))
    rows = ["a,b,y", *(f"{u:.4f},{v:.4f},{int(u + v > 0)}" for u, v in x)]
    Path("b.csv").write_text("\n".join(rows) + "\n")
    argv = ["train", "--data", "b.csv", "--task", "regression", "--loss", "bce_with_logits", "--epochs", "3"]
    code, out, err = run(capsys, *argv, "--out", "r", "--quiet", "--no-plot")
    assert code == 0, err
    assert "test accuracy:" in out
    assert "train_accuracy" in Path("r/metrics.jsonl").read_text().splitlines()[0]


def test_resume_honours_no_plot(in_tmp, capsys):
    """--resume accepts --no-plot (and --epochs); it was accepted and ignored: the plots were drawn again."""
    code, _, err = run(capsys, "train", "--data", "moons", "--epochs", "1", "--out", "r", "--quiet")
    assert code == 0, err
    for p in Path("r").glob("*.png"):
        p.unlink()
    code, _, err = run(capsys, "train", "--resume", "r", "--epochs", "2", "--no-plot", "--quiet")
    assert code == 0, err
    assert not list(Path("r").glob("*.png"))
    assert len(Path("r/metrics.jsonl").read_text().splitlines()) == 2
