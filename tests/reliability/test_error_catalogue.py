"""Every message of docs/errors.md is triggered through the CLI and appears on one stderr line (exit 2)."""

import contextlib
import errno
import io
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from chainrule import distributed, serialize, train
from chainrule.cli import main
from chainrule.errors import ModelFileError
from chainrule.serialize import FORMAT_VERSION, load, save_tensors
from chainrule.train import RunLock

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
T = ["train", "-q", "--no-plot"]
TX = [*T, "--data", "xor", "--epochs", "1"]

CSV = {
    "ok.csv": b"a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n",
    "nan.csv": b"a,b,y\n1,nan,0\n3,4,1\n",
    "inf.csv": b"a,b,y\n1,inf,0\n3,4,1\n",
    "empty.csv": b"",
    "ragged.csv": b"a,b,y\n1,2,0\n3,4\n",
    "text.csv": b"a,b,y\n1,x,0\n3,4,1\n",
    "dupname.csv": b"a,a,y\n1,2,0\n3,4,1\n",
    "text.npz": b"a,b,y\n1,2,0\n",
    "partial.csv": b"b,c\n1,2\n",
    "data.json": b'[{"a": 1, "y": 0}]',
    "oddtarget.csv": b"a,y\n1,0.5\n2,inf\n3,0.25\n4,1.75\n",
    "single.csv": b"a,b,y\n1,2,0\n3,4,0\n5,6,0\n",
    "enc.csv": b"a,b,y\n1,2,\xff\n",
    "newlab.csv": b"a,b,y\n1,2,7\n3,4,9\n",
    "wide.csv": b"a,b,c,y\n1,2,3,0\n",
    "narrow.csv": b"1\n2\n",
    "cfg.json": b'{"lerning_rate": 0.1}',
    "typ.json": b'{"epochs": "x"}',
    "broken.toml": b"epochs = = 3",
}


def _model_file(name, tensors=None, **meta):
    arrays, m = serialize.load_tensors(next(Path("r").glob("model.*")))
    m = {k: v for k, v in m.items() if k not in ("format", "version", "checksum", "metadata_checksum")}
    save_tensors(name, arrays if tensors is None else tensors(arrays), {**m, **meta})
    return name


def _damaged(name, how):
    raw = bytearray(next(Path("r").glob("model.*")).read_bytes())
    raw = how(raw)
    Path(name).write_bytes(bytes(raw))
    return name


def _edited_config():
    Path("r/config.json").write_text(Path("r/config.json").read_text().replace('"seed": 0', '"seed": 3'))
    return ["evaluate", "r"]


def _flip(raw):
    raw[-3] ^= 0x10
    return raw


def _evil():
    np.savez("evil.npz", w=np.array([{"a": 1}], dtype=object))
    return "evil.npz"


def _wrong_shape(a):
    k = next(k for k, v in a.items() if v.ndim == 2)
    return {**a, k: np.zeros((a[k].shape[0] + 1, a[k].shape[1]), a[k].dtype)}


def _interrupt(monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_run_epoch", boom)


def _interrupted_mid_epoch(monkeypatch):
    """A run stopped by Ctrl-C after batch 1 of epoch 2 (3 batches of one row per epoch)."""
    monkeypatch.setattr(train, "_SIGINT_AT", "2:1")
    with contextlib.redirect_stderr(io.StringIO()):
        assert main([*T, "--data", "ok.csv", "--batch-size", "1", "--epochs", "3", "--out", "mid"]) == 130
    monkeypatch.setattr(train, "_SIGINT_AT", "")
    return [*T, "--resume", "mid", "--epochs", "1"]


def _full_disk(monkeypatch):
    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(serialize, "atomic_write", full)


class _Done:
    def __init__(self, answer):
        self.answer = answer

    def Test(self):  # noqa: N802 (mpi4py's name)
        return self.answer


class _FakeMPI:
    """An in-process stand-in for mpi4py.MPI, so that the failures between ranks are triggered without mpiexec:
    this process is rank `rank` of `size`; `peer(buf, op)` adds the other ranks' part to an allreduce; with
    `answer=False` no collective ever completes (a rank died); Abort ends the process like MPI_Abort."""

    SUM, MAX, MIN, IN_PLACE = "sum", "max", "min", None

    def __init__(self, rank=0, size=2, peer=None, answer=True):
        self.COMM_WORLD, self.rank, self.size, self.peer, self.answer = self, rank, size, peer, answer

    def Get_rank(self):  # noqa: N802
        return self.rank

    def Get_size(self):  # noqa: N802
        return self.size

    def Iallreduce(self, _in_place, buf, op):  # noqa: N802
        if self.peer is not None:
            self.peer(buf, op)
        return _Done(self.answer)

    def Ibcast(self, buf, root=0):  # noqa: N802
        return _Done(self.answer)

    def Abort(self, code):  # noqa: N802
        raise SystemExit(code)


def _mpi(mp, **fake):
    mp.setattr(distributed, "_mpi", lambda: _FakeMPI(**fake))
    mp.setattr("time.sleep", lambda s: None)


def _no_checkpoint_on_rank_1(buf, op):  # rank 1 reports 0 (no checkpoint) to same_everywhere's max-reduction
    if op == "max":
        np.maximum(buf, [0.0, -0.0], out=buf)


def _rank_0_failed(buf, op):  # rank 0's "ok" is 0 in all_ok's min-reduction
    if op == "min":
        buf[:] = 0


DIST = [*TX, "--distributed", "--out", "d"]


# fragment -> (argv or a function of monkeypatch returning argv, exit status)
CASES = {
    "unrecognized arguments": (["train", "--bogus"], 2),
    "invalid choice": (["frobnicate"], 2),
    "invalid float value": (["train", "--lr", "abc"], 2),
    "must be a positive integer or 'full'": (["train", "--batch-size", "x"], 2),
    "must be >= 0": ([*T, "--epochs", "-1"], 2),
    "must be positive": ([*T, "--lr", "-1"], 2),
    "must be a finite number": ([*T, "--tol", "nan"], 2),
    "give smaller numbers": (["example", "--w1", "1e200", "--x", "1e200"], 2),
    "nodes, more than the": (["explain", "--model", "mlp:3,3", "--max-nodes", "10"], 2),
    "must be a fraction in [0, 1)": ([*T, "--val-split", "1.5"], 2),
    "early_stopping needs a validation split": ([*TX, "--early-stopping", "2"], 2),
    "unknown key": ([*T, "cfg.json"], 2),
    "must be int": ([*T, "typ.json"], 2),
    "not valid TOML": ([*T, "broken.toml"], 2),
    "give either a CONFIG file or --resume DIR, not both": ([*T, "cfg.json", "--resume", "r"], 2),
    "only --epochs may change": ([*T, "--resume", "r", "--lr", "1"], 2),
    "unknown dataset": ([*T, "--data", "nope"], 2),
    "sizes must be integers": ([*TX, "--model", "mlp:x"], 2),
    "model spec must be a non-empty list of layers": ([*TX, "--model", "[]"], 2),
    "unknown layer type": ([*TX, "--model", '[{"type": "Nope"}]'], 2),
    "unknown option": ([*TX, "--model", '[{"type": "Linear", "foo": 1}]'], 2),
    "unknown optimizer": ([*TX, "--optimizer", "nadamx"], 2),
    "has no option 'momentum'": ([*TX, "--optimizer", "adam", "--momentum", "0.9"], 2),
    "unknown scheduler": ([*TX, "--scheduler", "cosin"], 2),
    "has no option 'gama'": ([*TX, "--scheduler", "step:gama=0.5"], 2),
    "option 'step_size' must be a number": ([*TX, "--scheduler", "step:step_size=x"], 2),
    "needs a function or per-batch steps": ([*TX, "--scheduler", "onecycle"], 2),
    "unknown activation": ([*TX, "--activation", "nope"], 2),
    "delimiter must be one character": ([*T, "--data", "ok.csv", "--delimiter", "ab"], 2),
    "already holds a run": ([*TX, "--out", "r"], 2),
    "cannot create the run directory": ([*TX, "--out", "ok.csv/sub"], 2),
    "no such file": ([*T, "--data", "missing.csv"], 2),
    "the file is empty": ([*T, "--data", "empty.csv"], 2),
    "missing value": ([*T, "--data", "nan.csv"], 2),
    "is not a finite float32 number": ([*T, "--data", "inf.csv"], 2),
    "not a number": ([*T, "--data", "text.csv"], 2),
    "the others are numbers": ([*T, "--data", "oddtarget.csv"], 2),
    "has the same name": ([*T, "--data", "dupname.csv"], 2),
    "chainrule reads CSV text, .npz and .npy": ([*T, "--data", "data.json"], 2),
    "not a NumPy .npy/.npz file": ([*T, "--data", "text.npz"], 2),
    "fields, expected": ([*T, "--data", "ragged.csv"], 2),
    "not UTF-8 text": ([*T, "--data", "enc.csv"], 2),
    "no target column": ([*T, "--data", "ok.csv", "--target", "zz"], 2),
    "is out of range for": ([*T, "--data", "ok.csv", "--target", "9"], 2),
    "needs at least two classes": ([*T, "--data", "single.csv"], 2),
    "too few for a split": ([*T, "--data", "ok.csv", "--test-split", "0.9"], 2),
    "was not in the training labels": (["evaluate", "r", "--data", "newlab.csv"], 2),
    "of the model's inputs": (["predict", "r", "partial.csv", "-o", "out.csv"], 2),
    "the model expects 2 input columns": (["predict", "r", "narrow.csv", "-o", "out.csv"], 2),
    "the model expects inputs of shape": (["evaluate", "r", "--data", "wide.csv"], 2),
    "cannot write": (["predict", "r", "ok.csv", "-o", "ok.csv/out.csv"], 2),
    "no such model file or run directory": (["evaluate", "nowhere"], 2),
    "no such run directory": (["plot", "nowhere"], 2),
    "not a run directory": ([*T, "--resume", "nowhere"], 2),
    "truncated": (lambda mp: ["evaluate", _damaged("cut.safetensors", lambda r: r[:5])], 2),
    "checksum mismatch": (lambda mp: ["evaluate", _damaged("flip.safetensors", _flip)], 2),
    "newer than this chainrule reads": (lambda mp: ["evaluate", _model_file("new.npz", version=FORMAT_VERSION + 1)], 2),
    "contains Python objects": (lambda mp: ["evaluate", _evil()], 2),
    "does not fit the model spec": (
        lambda mp: ["evaluate", _model_file("miss.npz", lambda a: dict(list(a.items())[1:]))],
        2,
    ),
    "the model spec needs": (lambda mp: ["evaluate", _model_file("shape.npz", _wrong_shape)], 2),
    "does not match the run's model": (lambda mp: _edited_config(), 2),
    "not a chainrule file": (lambda mp: ["evaluate", (np.savez("plain.npz", w=np.zeros(2)), "plain.npz")[1]], 2),
    "diverged at epoch": (
        [*T, "--data", "sine", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "5", "--no-standardize"],
        2,
    ),
    "produced": (
        [*T, "--data", "sine", "--optimizer", "sgd", "--lr", "1e6", "--epochs", "5", "--no-standardize"]
        + ["--detect-anomaly"],
        2,
    ),
    "would need about": ([*T, "--data", "xor", "--model", "mlp:100000000"], 2),
    "another training is using this run directory": (None, 2),  # holds the lock: see the test
    "does not fit the classification data": ([*TX, "--loss", "mse"], 2),
    "No space left on device": (lambda mp: (_full_disk(mp), [*TX, "--out", "full"])[1], 2),
    "distributed training needs mpi4py": (
        lambda mp: (mp.setitem(sys.modules, "mpi4py", None), [*TX, "--distributed", "--out", "mpi"])[1],
        2,
    ),
    "--allreduce-timeout must be positive": ([*TX, "--distributed", "--allreduce-timeout", "0"], 2),
    "the launcher started": (
        lambda mp: (_mpi(mp, size=1), mp.setenv("PMI_SIZE", "3"), DIST)[-1],
        2,
    ),
    "did not complete within": (lambda mp: (_mpi(mp, answer=False), [*DIST, "--allreduce-timeout", "0.05"])[1], 2),
    "the ranks disagree on": (
        lambda mp: (_mpi(mp, peer=_no_checkpoint_on_rank_1), [*T, "--resume", "r", "--distributed"])[1],
        2,
    ),
    "rank 0 failed while": (lambda mp: (_mpi(mp, rank=1, peer=_rank_0_failed), DIST)[1], 2),
    "resume with: chainrule train --resume": (lambda mp: (_interrupt(mp), [*TX, "--out", "intr"])[1], 130),
    "the checkpoint is inside epoch": (_interrupted_mid_epoch, 2),
}


def _doc_fragments():
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", DOC.read_text(encoding="utf-8"), re.M)]


def test_catalogue_and_tests_list_the_same_messages():
    frags = _doc_fragments()
    assert len(frags) == len(set(frags))
    assert set(frags) == set(CASES)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cat")
    for name, data in CSV.items():
        (d / name).write_bytes(data)
    argv = ["train", "--data", str(d / "ok.csv"), "--epochs", "2", "-q", "--no-plot", "--out", str(d / "r")]
    assert main(argv) == 0
    return d


@pytest.mark.parametrize("fragment", list(CASES))
def test_catalogued_error(workdir, tmp_path, monkeypatch, capsys, fragment):
    shutil.copytree(workdir, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    capsys.readouterr()
    argv, status = CASES[fragment]
    if argv is None:
        with RunLock("r"):
            code = main([*T, "--resume", "r", "--epochs", "3"])
    else:
        try:
            code = main(argv(monkeypatch) if callable(argv) else argv)
        except SystemExit as e:  # MPI_Abort (of the stand-in MPI) ends the process after the error line
            code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == status and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert fragment in lines[0], lines[0]
    assert not Path("out.csv").exists()
    leftovers = [p for p in Path(".").rglob("*.tmp")]
    assert not leftovers
    if "model spec" in fragment and callable(argv):  # the same refusal through the Python API
        with pytest.raises(ModelFileError, match=re.escape(fragment)):
            load(argv(monkeypatch)[1])
