"""Damaged, crafted and mismatched model files and checkpoints: always one ModelFileError line naming the file,
never a traceback, never code execution; through the Python API and the CLI (exit status 2)."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainrule.cli import main
from chainrule.errors import ModelFileError
from chainrule.serialize import FORMAT_VERSION, load, load_tensors, save, save_tensors
from chainrule.spec import build_model
from chainrule.train import predict

EXTS = [".safetensors", ".npz"]
X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return build_model("mlp:4", 3, 2, seed=1)


def _saved(tmp_path, model, ext):
    p = tmp_path / f"m{ext}"
    save(model, p, task="regression", classes=None, feature_names=["a", "b", "c"])
    return p, p.read_bytes()


def _refused_or_same(path, model):
    try:
        m2 = load(path)
    except ModelFileError as e:
        msg = str(e)
        assert str(path) in msg and "\n" not in msg
        return True
    assert np.array_equal(predict(m2, X), predict(model, X))  # a flip in unused padding: weights unharmed
    return False


@pytest.mark.parametrize("ext", EXTS)
def test_truncation_at_every_offset(tmp_path, model, ext):
    p, raw = _saved(tmp_path, model, ext)
    bad = tmp_path / f"cut{ext}"
    for cut in range(len(raw)):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="cut"):
            load(bad)


@pytest.mark.parametrize("ext", EXTS)
def test_a_flipped_bit_in_every_byte(tmp_path, model, ext):
    p, raw = _saved(tmp_path, model, ext)
    q = tmp_path / f"flip{ext}"
    refused = 0
    for pos in range(len(raw)):
        b = bytearray(raw)
        b[pos] ^= 1 << (pos % 8)
        q.write_bytes(bytes(b))
        refused += _refused_or_same(q, model)
    assert refused > len(raw) * 0.8


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ext=st.sampled_from(EXTS), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1))
def test_random_multi_bit_flips(tmp_path, model, ext, flips):
    p, raw = _saved(tmp_path, model, ext)
    b = bytearray(raw)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    q = tmp_path / f"multi{ext}"
    q.write_bytes(bytes(b))
    _refused_or_same(q, model)


@pytest.mark.parametrize("ext", EXTS)
def test_versions_keys_shapes(tmp_path, model, ext):
    state, spec = model.state_dict(), model._chainrule_spec
    p = tmp_path / f"v{ext}"
    cases = [
        ({"version": FORMAT_VERSION + 1}, state, "newer than this chainrule reads"),
        ({"version": 0}, state, "invalid format version"),
        ({"version": "1"}, state, "invalid format version"),
        ({}, {k: v for k, v in state.items() if k != "3.bias"}, "missing ['3.bias']"),
        ({}, {**state, "extra": np.zeros(2, np.float32)}, "unexpected ['extra']"),
        ({}, {**state, "1.weight": np.zeros((4, 5), np.float32)}, "the model spec needs (4, 3)"),
    ]
    for meta, tensors, fragment in cases:
        save_tensors(p, tensors, {"kind": "model", "spec": spec, **meta})
        with pytest.raises(ModelFileError) as e:
            load(p)
        assert str(p) in str(e.value) and fragment in str(e.value)
    save_tensors(p, state, {"kind": "model", "spec": {"layers": [{"type": "NoSuchLayer"}]}})
    with pytest.raises(ModelFileError, match="spec cannot be built"):
        load(p)
    save_tensors(p, state, {"kind": "model"})
    with pytest.raises(ModelFileError, match="no model spec"):
        load(p)


class _Evil:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["EVIL_TARGET"]), "pwned"))


def test_npz_object_arrays_never_execute(tmp_path, monkeypatch):
    target = tmp_path / "pwned.txt"
    monkeypatch.setenv("EVIL_TARGET", str(target))
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil()
    p = tmp_path / "evil.npz"
    np.savez(p, w=arr, __chainrule_metadata__=np.frombuffer(b'{"format": "chainrule"}', np.uint8))
    pickle.dumps(arr)  # the payload is a real pickle that would write the file if loaded
    with pytest.raises(ModelFileError, match="Python objects"):
        load(p)
    with pytest.raises(ModelFileError):
        load_tensors(p)
    assert not target.exists()
    assert main(["evaluate", str(p)]) == 2
    assert not target.exists()


def _cli_refuses(capsys, argv, fragment):
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("ext", EXTS)
def test_cli_refuses_damaged_model_and_checkpoint(tmp_path, monkeypatch, capsys, ext):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "xor", "--epochs", "2", "-q", "--no-plot", "--out", "r"]) == 0
    capsys.readouterr()
    Path("in.csv").write_text("x0,x1\n0.1,0.2\n")
    model_file = next(Path("r").glob("model.*"))
    m = load(model_file)
    p = Path(f"m{ext}")
    save(m, p, task="classification", classes=[0, 1], feature_names=["x0", "x1"])
    raw = p.read_bytes()
    for cut in (0, 5, len(raw) // 2, len(raw) - 1):
        p.write_bytes(raw[:cut])
        _cli_refuses(capsys, ["predict", str(p), "in.csv"], str(p))
        _cli_refuses(capsys, ["evaluate", str(p), "--data", "in.csv"], str(p))
    ck = next(Path("r").glob("checkpoint.*"))
    good = ck.read_bytes()
    for cut in (3, len(good) // 2):
        ck.write_bytes(good[:cut])
        _cli_refuses(capsys, ["train", "--resume", "r", "--epochs", "3", "-q"], str(ck))
    b = bytearray(good)
    b[len(b) - 3] ^= 0x10
    ck.write_bytes(bytes(b))
    _cli_refuses(capsys, ["train", "--resume", "r", "--epochs", "3", "-q"], "checksum mismatch")
    assert not Path("out.csv").exists()
