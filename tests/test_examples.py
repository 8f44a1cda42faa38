import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainrule import nn
from chainrule.job import validate_config
from chainrule.spec import build_model, read_config_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn", "gru"])
def test_mnist1d_configs_are_valid(name):
    cfg = validate_config(read_config_file(ROOT / "examples" / "mnist1d" / f"{name}.toml"))
    assert cfg["data"] == "mnist1d" and cfg["epochs"] >= 60
    needs = {"cnn": "Conv1d", "gru": "GRU"}.get(name)
    if needs is None or hasattr(nn, needs):  # the layer list builds once chainrule.nn has the layer
        m = build_model(cfg["model"], 40, 10, seed=0)
        assert m(nn.Parameter(__import__("numpy").zeros((2, 40), "float32"))).shape == (2, 10)


@pytest.mark.parametrize("script", ["reference_example.py", "xor.py"])
def test_quick_examples_run(script):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
