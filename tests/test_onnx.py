"""ONNX export: every exportable layer passes onnx.checker and gives chainrule's outputs in onnxruntime.

Layers are built in PyTorch (random weights and running statistics) and brought over to the real chainrule
layers with `from_torch`; onnxruntime's outputs are compared with chainrule's.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import chainrule as cr
from chainrule import nn, spec
from chainrule.errors import ChainruleError
from chainrule.interop import from_torch
from chainrule.onnx import SUPPORTED_LAYERS, export
from chainrule.spec import build_model

T = torch.nn
# torch warns that padding="same" with an even kernel copies its input; that is about torch's speed only
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _chainrule(layer: torch.nn.Module) -> nn.Module:
    """The real chainrule counterpart of a torch layer (tree), with the same weights."""
    return from_torch(layer)


def _randomize(layer: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in layer.modules():
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if t.is_floating_point():
                with torch.no_grad():
                    t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype))
        if hasattr(m, "running_var") and m.running_var is not None:
            with torch.no_grad():
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.running_mean.normal_(0, 1, generator=g)
    return layer.double().eval()


def _flat(x):
    if isinstance(x, (tuple, list)):
        return [a for item in x for a in _flat(item)]
    return [np.asarray(x.data)]


# (id, torch layer, input shape after the batch dim, integer input range or None)
CASES = [
    ("Linear", lambda: T.Linear(4, 3), (4,), None),
    ("Linear-3d", lambda: T.Linear(4, 3), (5, 4), None),
    ("Linear-nobias", lambda: T.Linear(4, 3, bias=False), (4,), None),
    (
        "MLP",
        lambda: T.Sequential(T.Linear(6, 8), T.ReLU(), T.Linear(8, 8), T.Sigmoid(), T.Identity(), T.Tanh()),
        (6,),
        None,
    ),
    ("nested", lambda: T.Sequential(T.Sequential(T.Flatten(), T.Linear(12, 5)), T.ReLU()), (3, 4), None),
    ("Flatten-2", lambda: T.Flatten(2), (2, 3, 4), None),
    ("Flatten-0", lambda: T.Flatten(0), (2, 3), None),
    ("Unflatten", lambda: T.Unflatten(1, (2, 3)), (6,), None),
    ("Conv1d", lambda: T.Conv1d(3, 4, 3, stride=2, padding=1), (3, 9), None),
    ("Conv2d", lambda: T.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2), (2, 7, 6), None),
    ("Conv2d-same", lambda: T.Conv2d(2, 3, (4, 3), padding="same", bias=False), (2, 6, 5), None),
    ("MaxPool1d", lambda: T.MaxPool1d(2), (3, 8), None),
    ("MaxPool2d", lambda: T.MaxPool2d(3, stride=2, padding=1), (2, 7, 7), None),
    ("AvgPool1d", lambda: T.AvgPool1d(3, stride=2), (2, 9), None),
    ("AvgPool2d", lambda: T.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), (2, 5, 5), None),
    ("AdaptiveAvgPool1d", lambda: T.AdaptiveAvgPool1d(3), (2, 9), None),
    ("AdaptiveAvgPool2d-1", lambda: T.AdaptiveAvgPool2d(1), (3, 4, 5), None),
    ("AdaptiveAvgPool2d-2", lambda: T.AdaptiveAvgPool2d((2, 2)), (3, 4, 6), None),
    ("BatchNorm1d", lambda: T.BatchNorm1d(4), (4,), None),
    ("BatchNorm1d-3d", lambda: T.BatchNorm1d(3), (3, 5), None),
    ("BatchNorm2d", lambda: T.BatchNorm2d(3), (3, 4, 4), None),
    ("LayerNorm", lambda: T.LayerNorm(5), (5,), None),
    ("LayerNorm-2d", lambda: T.LayerNorm((3, 5)), (3, 5), None),
    ("LayerNorm-plain", lambda: T.LayerNorm(5, elementwise_affine=False), (2, 5), None),
    ("Dropout", lambda: T.Dropout(0.5), (6,), None),
    ("LeakyReLU", lambda: T.LeakyReLU(0.2), (6,), None),
    ("ELU", lambda: T.ELU(0.7), (6,), None),
    ("GELU", lambda: T.GELU(), (6,), None),
    ("GELU-tanh", lambda: T.GELU("tanh"), (6,), None),
    ("Softplus", lambda: T.Softplus(beta=2.0, threshold=1.0), (6,), None),
    ("Softmax", lambda: T.Softmax(dim=1), (6,), None),
    ("LogSoftmax", lambda: T.LogSoftmax(dim=-1), (2, 6), None),
    ("SiLU", lambda: T.SiLU(), (6,), None),
    ("LogSigmoid", lambda: T.LogSigmoid(), (6,), None),
    ("Embedding", lambda: T.Sequential(T.Embedding(10, 4), T.Flatten()), (6,), 10),
    ("RNN", lambda: T.RNN(4, 5, num_layers=2, batch_first=True, nonlinearity="relu"), (7, 4), None),
    ("GRU", lambda: T.GRU(4, 5, bidirectional=True, batch_first=True), (7, 4), None),
    ("LSTM", lambda: T.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True), (7, 4), None),
]


@pytest.mark.parametrize("make, shape, int_range", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_export_matches_chainrule(tmp_path, make, shape, int_range) -> None:
    torch.manual_seed(0)
    model = _chainrule(_randomize(make())).eval()
    rng = np.random.default_rng(0)

    def sample(n: int) -> np.ndarray:
        if int_range:
            return rng.integers(0, int_range, (n, *shape)).astype(np.int64)
        return rng.standard_normal((n, *shape)).astype(np.float32)

    path = tmp_path / "model.onnx"
    export(model, sample(3), path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (2, 5):  # neither is the traced batch size
        x = sample(n)
        got = session.run(None, {"input": x})
        want = _flat(model(cr.tensor(x if int_range else x.astype(np.float64))))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == np.float32
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


# models built from a spec (what `chainrule train` makes): recurrent layers come wrapped in Select, Last takes
# the last step of a sequence
SPEC_CASES = [
    ("spec-GRU-Last", [{"type": "GRU", "hidden_size": 5, "batch_first": True}, {"type": "Last"}, {"type": "Linear"}]),
    (
        "spec-LSTM-2-layers",
        [
            {"type": "LSTM", "hidden_size": 4, "num_layers": 2, "batch_first": True, "bidirectional": True},
            {"type": "Last"},
            {"type": "ReLU"},
            {"type": "Linear"},
        ],
    ),
    (
        "spec-cnn1d",
        "cnn1d:4,3",
    ),
]


def _spec_model(layers) -> nn.Module:
    shape = (14,) if isinstance(layers, str) else (7, 3)
    return build_model(layers, shape, out_features=2, seed=0, dtype=np.float64).eval(), shape


@pytest.mark.parametrize("layers", [c[1] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_export_spec_models(tmp_path, layers) -> None:
    model, shape = _spec_model(layers)
    rng = np.random.default_rng(1)
    path = tmp_path / "model.onnx"
    export(model, rng.standard_normal((3, *shape)).astype(np.float32), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((5, *shape)).astype(np.float32)
    (got,) = session.run(None, {"input": x})
    want = model(cr.tensor(x.astype(np.float64))).data
    assert got.shape == want.shape == (5, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_every_rule_is_tested() -> None:
    tested = {type(m).__name__ for c in CASES for m in _chainrule(c[1]()).modules()}
    tested |= {type(m).__name__ for c in SPEC_CASES for m in _spec_model(c[1])[0].modules()}
    assert set(SUPPORTED_LAYERS) <= tested
    # no rule for a layer chainrule does not have
    assert all(isinstance(getattr(nn, name, getattr(spec, name, None)), type) for name in SUPPORTED_LAYERS)


def test_standardize_is_part_of_the_graph(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 2, dtype=cr.float64)).eval()
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    path = tmp_path / "m.onnx"
    export(model, np.zeros((1, 3), np.float32), path, standardize=(mean, std))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32) * 3
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    np.testing.assert_allclose(got, model(cr.tensor((x - mean) / std)).data, rtol=1e-5, atol=1e-6)
    with pytest.raises(ChainruleError, match="standardize"):
        export(model, np.zeros((1, 3), np.float32), standardize=(np.zeros(4), np.ones(4)))


def test_unsupported_layers_are_named() -> None:
    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ChainruleError, match=r"layer '0\.1' \(Mine\)"):
        export(nn.Sequential(nn.Sequential(nn.Linear(2, 2), Mine())), np.zeros((1, 2), np.float32))
    lstm = _chainrule(T.LSTM(2, 3, batch_first=True).double())
    with pytest.raises(ChainruleError, match=r"layer '1' \(Linear\).*tuple"):
        export(nn.Sequential(lstm, nn.Linear(3, 1)), np.zeros((1, 4, 2), np.float32))
    with pytest.raises(ChainruleError, match="opset"):
        export(nn.Linear(2, 2), np.zeros((1, 2), np.float32), opset=11)


def test_static_batch_and_returned_proto_without_path() -> None:
    proto = export(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), np.ones((4, 3), np.float32), dynamic_batch=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3]
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Identity"]


def test_recurrent_sequence_length_is_dynamic(tmp_path) -> None:
    model = _chainrule(_randomize(T.GRU(3, 4, num_layers=2))).eval()  # sequence first
    path = tmp_path / "gru.onnx"
    proto = export(model, np.zeros((5, 2, 3), np.float32), path)
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["sequence", "batch", ""]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seq, batch in ((2, 1), (9, 4)):
        x = np.random.default_rng(seq).standard_normal((seq, batch, 3)).astype(np.float32)
        got = session.run(None, {"input": x})
        want = _flat(model(cr.tensor(x.astype(np.float64))))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_export_leaves_each_layers_mode_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a frozen BatchNorm in a training model
    export(model, np.zeros((2, 3), np.float32))
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_export_writes_atomically(tmp_path, monkeypatch) -> None:
    import errno
    import os

    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def disk_full(fd: int) -> None:  # a full disk is often only reported when the data is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        export(nn.Linear(3, 2), np.zeros((1, 3), np.float32), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]
    monkeypatch.undo()
    export(nn.Linear(3, 2), np.zeros((1, 3), np.float32), path)
    onnx.checker.check_model(str(path), full_check=True)
