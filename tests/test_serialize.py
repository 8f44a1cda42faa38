import json
import os
import struct

import numpy as np
import pytest

from chainrule import nn
from chainrule.errors import ModelFileError
from chainrule.serialize import (
    FORMAT_VERSION,
    atomic_write,
    checksum,
    load,
    load_tensors,
    load_with_metadata,
    save,
    save_tensors,
)
from chainrule.spec import build_model


@pytest.fixture
def model():
    return build_model("mlp:5", 3, 2, seed=1)


def x():
    return np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def out(m):
    from chainrule.train import predict

    return predict(m, x())


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_round_trip_same_outputs(tmp_path, model, ext):
    p = tmp_path / f"m{ext}"
    save(model, p, task="classification", classes=["a", "b"])
    m2, meta = load_with_metadata(p)
    assert np.array_equal(out(model), out(m2))
    assert meta["classes"] == ["a", "b"] and meta["version"] == FORMAT_VERSION
    assert meta["spec"]["layers"][1] == {"type": "Linear", "out_features": 5, "in_features": 3}
    assert isinstance(load(p), nn.Sequential)
    assert os.listdir(tmp_path) == [p.name]


def test_float64_and_int_tensors(tmp_path):
    t = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    save_tensors(tmp_path / "t.safetensors", t, {"note": "x"})
    back, meta = load_tensors(tmp_path / "t.safetensors")
    assert back["a"].dtype == np.float64 and np.array_equal(back["b"], t["b"]) and meta["note"] == "x"


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_truncation_at_many_offsets_is_refused(tmp_path, model, ext):
    p = tmp_path / f"m{ext}"
    save(model, p)
    raw = p.read_bytes()
    for cut in sorted({0, 1, 7, 8, 9, 20, len(raw) // 3, len(raw) // 2, len(raw) - 10, len(raw) - 1}):
        bad = tmp_path / f"cut{ext}"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="cut"):
            load(bad)


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_bit_flips_are_refused(tmp_path, model, ext):
    p = tmp_path / f"m{ext}"
    save(model, p)
    raw = p.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(raw), 25):
        b = bytearray(raw)
        b[pos] ^= 1 << int(rng.integers(0, 8))
        q = tmp_path / f"flip{ext}"
        q.write_bytes(bytes(b))
        try:
            m2 = load(q)
        except ModelFileError as e:
            assert "flip" in str(e)
        else:  # a flip in padding or in an unused header byte: the weights must still be the original ones
            assert np.array_equal(out(m2), out(model))


def test_newer_version_refused(tmp_path, model):
    p = tmp_path / "m.safetensors"
    save(model, p)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["chainrule"])
    meta["version"] = FORMAT_VERSION + 1
    header["__metadata__"]["chainrule"] = json.dumps(meta)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    p.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    with pytest.raises(ModelFileError, match="newer"):
        load(p)


def test_npz_object_arrays_refused(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="Python objects"):
        load(p)


def test_wrong_shapes_for_spec_refused(tmp_path, model):
    p = tmp_path / "m.npz"
    state = model.state_dict()
    state["1.weight"] = np.zeros((5, 4), np.float32)
    spec = model._chainrule_spec
    save_tensors(p, state, {"kind": "model", "spec": spec})
    with pytest.raises(ModelFileError, match=r"1\.weight.*shape"):
        load(p)
    del state["1.weight"]
    save_tensors(p, state, {"kind": "model", "spec": spec})
    with pytest.raises(ModelFileError, match="missing"):
        load(p)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load(tmp_path / "nope.safetensors")
    (tmp_path / "x.txt").write_text("hello world, not a model")
    with pytest.raises(ModelFileError, match=r"x.txt: not a chainrule file \(neither .safetensors nor .npz: it starts"):
        load(tmp_path / "x.txt")  # it said "truncated (header longer than the file)"
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    with pytest.raises(ModelFileError, match="not a chainrule file"):
        load(tmp_path / "plain.npz")


def test_save_needs_spec(tmp_path):
    with pytest.raises(ModelFileError, match="spec"):
        save(nn.Linear(2, 2), tmp_path / "m.npz")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_checksum_depends_on_name_dtype_shape_values():
    a = np.zeros((2, 2), np.float32)
    base = checksum({"a": a})
    assert base != checksum({"b": a})
    assert base != checksum({"a": a.astype(np.float64)})
    assert base != checksum({"a": a.reshape(4)})
    assert base != checksum({"a": a + 1})
    assert base == checksum({"a": a.copy()})


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_batchnorm_model_round_trips_with_0d_buffer(tmp_path, ext):
    layers = [{"type": "Linear", "out_features": 4}, {"type": "BatchNorm1d"}, {"type": "Linear"}]
    model = build_model(layers, 3, 2, seed=1, dtype=np.float64)
    model[1].num_batches_tracked.data[...] = 7
    p = tmp_path / f"m{ext}"
    save(model, p)
    back = load(p)
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and a.shape == b.shape and a.dtype == b.dtype, k
        np.testing.assert_array_equal(a, b)
    assert load_tensors(p)[0]["1.num_batches_tracked"].shape == ()


def test_file_with_1d_copy_of_0d_buffer_still_loads(tmp_path):
    """Files written before 0-d arrays were kept 0-d hold num_batches_tracked as shape (1,)."""
    model = build_model([{"type": "Linear", "out_features": 4}, {"type": "BatchNorm1d"}], 3, seed=1)
    state = {k: v.reshape(1) if v.ndim == 0 else v for k, v in model.state_dict().items()}
    save_tensors(tmp_path / "old.npz", state, {"kind": "model", "spec": model._chainrule_spec})
    assert load(tmp_path / "old.npz")[1].num_batches_tracked.shape == ()


def test_atomic_write_into_missing_folder_names_the_file(tmp_path):
    p = tmp_path / "nodir" / "m.npz"
    with pytest.raises(FileNotFoundError) as e:
        atomic_write(p, lambda f: f.write(b"x"))
    assert e.value.filename == str(p) and ".tmp" not in str(e.value)
