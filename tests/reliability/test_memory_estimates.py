"""Memory estimates before allocating: exact parameter counts (against the real chainrule and PyTorch modules),
output shapes of conv/pool layers (against the real modules), activations kept by recurrent layers (against the
autograd graph), and too-large conv/RNN configurations refused before any layer is built."""

from pathlib import Path

import numpy as np
import pytest
import torch

import chainrule as cr
from chainrule import nn, spec
from chainrule.cli import main
from chainrule.memory import OutOfMemoryError, layer_activation_count, layer_output_shape, layer_param_count
from chainrule.spec import build_model

PARAM_CASES = [
    ("Linear", {"in_features": 7, "out_features": 3}),
    ("Linear", {"in_features": 7, "out_features": 3, "bias": False}),
    ("Conv1d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}),
    ("Conv2d", {"in_channels": 3, "out_channels": 5, "kernel_size": [2, 4], "bias": False}),
    ("Embedding", {"num_embeddings": 11, "embedding_dim": 4}),
    ("BatchNorm1d", {"num_features": 6}),
    ("BatchNorm2d", {"num_features": 6, "affine": False}),
    ("LayerNorm", {"normalized_shape": [3, 4]}),
    ("LayerNorm", {"normalized_shape": 5, "elementwise_affine": False}),
] + [
    (kind, {"input_size": 5, "hidden_size": 7, "num_layers": layers, "bidirectional": bi, "bias": bias})
    for kind in ("RNN", "GRU", "LSTM")
    for layers in (1, 3)
    for bi in (False, True)
    for bias in (True, False)
]


@pytest.mark.parametrize(("kind", "cfg"), PARAM_CASES)
def test_param_count_is_exact(kind, cfg):
    real = sum(p.numel() for p in getattr(nn, kind)(**cfg).parameters())
    assert layer_param_count(kind, cfg) == real
    tcfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    assert real == sum(p.numel() for p in getattr(torch.nn, kind)(**tcfg).parameters())


SHAPE_CASES = [
    ("Conv1d", {"in_channels": 2, "out_channels": 4, "kernel_size": 5, "stride": 2, "padding": 1}, (2, 31)),
    ("Conv1d", {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "dilation": 3, "padding": "same"}, (2, 20)),
    ("Conv1d", {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": "valid"}, (2, 20)),
    (
        "Conv2d",
        {"in_channels": 3, "out_channels": 2, "kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0]},
        (3, 9, 8),
    ),
    ("MaxPool1d", {"kernel_size": 3, "stride": 2, "ceil_mode": True}, (2, 10)),
    ("MaxPool2d", {"kernel_size": 2, "dilation": 2, "padding": 1}, (2, 9, 7)),
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 10, 11)),
    ("AvgPool1d", {"kernel_size": 4}, (3, 17)),
    ("AvgPool2d", {"kernel_size": 2, "stride": 3, "ceil_mode": True}, (1, 10, 8)),
    ("AdaptiveAvgPool1d", {"output_size": 4}, (3, 17)),
    ("AdaptiveAvgPool2d", {"output_size": [3, None]}, (2, 9, 7)),
    ("BatchNorm1d", {"num_features": 3}, (3, 10)),
    ("LayerNorm", {"normalized_shape": 10}, (3, 10)),
    ("Linear", {"in_features": 10, "out_features": 4}, (3, 10)),
]


@pytest.mark.parametrize(("kind", "cfg", "shape"), SHAPE_CASES)
def test_output_shape_matches_the_real_layer(kind, cfg, shape):
    m = getattr(nn, kind)(**cfg)
    out = m(cr.tensor(np.zeros((2, *shape), np.float32)))
    assert layer_output_shape(kind, cfg, shape) == tuple(out.shape[1:])
    n = int(np.prod(out.shape[1:]))
    acts = layer_activation_count(kind, cfg, shape)
    if kind.startswith("Conv"):  # + the im2col matrix kept for the weight gradient
        assert acts == n + cfg["in_channels"] * int(np.prod(cfg["kernel_size"])) * int(np.prod(out.shape[2:]))
    else:
        assert acts in (n, 2 * n)
    idx = cr.tensor(np.zeros((2, 5), np.int64))
    assert layer_output_shape("Embedding", {"embedding_dim": 3}, (5,)) == nn.Embedding(4, 3)(idx).shape[1:]


def _kept_elements(out):
    """Elements of the memory that the op outputs of the autograd graph behind `out` hold (a view counts its base
    array once, whatever layout an op chose for its result)."""
    seen, bases, stack = set(), {}, [out]
    while stack:
        t = stack.pop()
        if id(t) in seen or t._op is None:
            continue
        seen.add(id(t))
        base = t.data
        while isinstance(base.base, np.ndarray):
            base = base.base
        bases[id(base)] = base.size
        stack.extend(t._prev)
    return sum(bases.values())


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize(("layers", "bi"), [(1, False), (2, True)])
def test_recurrent_activation_estimate_matches_the_graph(kind, layers, bi):
    cfg = {"input_size": 5, "hidden_size": 7, "num_layers": layers, "bidirectional": bi, "batch_first": True}
    x = cr.tensor(np.random.default_rng(0).normal(size=(3, 9, 5)).astype(np.float32))
    out = getattr(nn, kind)(**cfg)(x)[0]
    measured = _kept_elements(out) / 3
    assert layer_activation_count(kind, cfg, (9, 5)) == pytest.approx(measured, rel=0.25)


def _count_builds(monkeypatch):
    built = []
    orig = spec._make_layer

    def make(i, layer, *a):
        built.append(layer["type"])
        return orig(i, layer, *a)

    monkeypatch.setattr(spec, "_make_layer", make)
    return built


def test_too_large_rnn_is_refused_before_allocating(monkeypatch):
    """A small LSTM (600k parameters) on sequences of 10,000 steps in batches of 100,000: the activations of the
    recurrence (about 160 TiB) are refused before the LSTM is built."""
    built = _count_builds(monkeypatch)
    layers = [{"type": "LSTM", "hidden_size": 256, "num_layers": 2, "bidirectional": True}, {"type": "Last"}]
    with pytest.raises(OutOfMemoryError) as e:
        build_model(layers, (10_000, 8), batch_size=100_000)
    msg = str(e.value)
    assert "layer 0, LSTM" in msg and "activations for batches of 100000" in msg and "would need about" in msg
    assert "TiB" in msg and built == []
    build_model(layers, (10, 8), batch_size=4)  # a sequence of 10 steps fits


def test_too_large_conv_is_refused_before_allocating(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    built = _count_builds(monkeypatch)
    layers = [{"type": "Conv2d", "out_channels": 512, "kernel_size": 3}, {"type": "Flatten"}, {"type": "Linear"}]
    with pytest.raises(OutOfMemoryError, match=r"layer 0, Conv2d.*activations for batches of 1000000"):
        build_model(layers, (3, 224, 224), 10, batch_size=1_000_000)
    assert built == []
    code = main(["train", "--data", "digits", "--model", "cnn1d:10000000", "--batch-size", "1000", "-q", "--out", "c"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "Conv1d" in err[0] and "activations for batches of 1000" in err[0] and "would need about" in err[0]
    assert "Conv1d" not in built and not list(Path("c").glob("checkpoint.*"))


def test_batch_estimate_uses_at_most_the_training_set(tmp_path, monkeypatch):
    """`--batch-size` above the number of rows trains with one batch of all rows: the estimate counts those."""
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", "xor", "--model", "mlp:2000", "--batch-size", "1000000000", "--epochs", "1"]
    assert main([*argv, "-q", "--no-plot", "--out", "r"]) == 0
