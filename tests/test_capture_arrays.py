"""chainrule.capture on array graphs (MLPs): a captured step gives the eager step's results to the last bit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import chainrule as cr
import chainrule.nn.functional as F
from chainrule import nn
from chainrule.errors import ConfigError, DataError

N_IN, N_OUT = 6, 4


def mlp(dtype=np.float32, seed=0) -> nn.Module:
    """Linear+ReLU (fused by Sequential), Tanh, Sigmoid, a ReLU after a Tanh (the unfused relu op), a last Linear."""
    cr.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(N_IN, 9),
        nn.ReLU(),
        nn.Linear(9, 8),
        nn.Tanh(),
        nn.ReLU(),
        nn.Linear(8, 7),
        nn.Sigmoid(),
        nn.Linear(7, N_OUT),
    )
    return model.double() if dtype == np.float64 else model


def data(n=20, dtype=np.float32, seed=1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, N_IN)).astype(dtype), rng.integers(0, N_OUT, n).astype(np.int64)


OPTIMIZERS = {
    "adam": lambda ps: cr.optim.Adam(ps, lr=1e-2),
    "adamw": lambda ps: cr.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "sgd-momentum": lambda ps: cr.optim.SGD(ps, lr=0.1, momentum=0.9),
}


def pair(dtype, make_opt, model=mlp):
    """Two identical (model, optimizer) pairs: one for the captured step, one for eager steps."""
    m1, m2 = model(dtype), model(dtype)
    return (m1, make_opt(list(m1.parameters()))), (m2, make_opt(list(m2.parameters())))


def eager_step(model, opt, xb, yb, reduction="mean") -> float:
    opt.zero_grad()
    loss = F.cross_entropy(model(cr.from_numpy(xb)), cr.from_numpy(yb), reduction=reduction)
    loss.backward()
    opt.step()
    return float(loss)


def count_traces(step) -> list[int]:
    """A counter of the eager (tracing) steps that `step` runs; the other calls replay the tape."""
    count, trace = [0], step._trace_arrays

    def counted(inputs, capture=True):
        count[0] += 1
        return trace(inputs, capture)

    step._trace_arrays = counted
    return count


def assert_same(m1, m2, o1=None, o2=None) -> None:
    """Parameters and gradients (and optimizer state) of two copies agree bit for bit."""
    for (name, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert_array_equal(p.data, q.data, err_msg=name)
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert type(p.grad) is cr.Tensor and p.grad.dtype == q.grad.dtype
            assert_array_equal(p.grad.data, q.grad.data, err_msg=f"{name}.grad")
    if o1 is not None:
        s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
        assert s1.keys() == s2.keys()
        for k in s1:
            for key, v in s1[k].items():
                assert_array_equal(v, s2[k][key], err_msg=f"state {k} {key}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_captured_mlp_steps_are_eager_bit_for_bit(dtype, opt_name, reduction):
    (m1, o1), (m2, o2) = pair(dtype, OPTIMIZERS[opt_name])
    x, y = data(dtype=dtype)
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb, reduction=reduction), o1)
    traces = count_traces(step)
    for i in range(6):
        xb, yb = x[i : i + 8], y[i : i + 8]
        assert step(xb, yb) == eager_step(m2, o2, xb, yb, reduction)
        assert_same(m1, m2, o1, o2)
    assert traces[0] == 1  # one trace, five replays


def test_new_batch_shape_traces_once_then_replays():
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["adam"])
    x, y = data(n=23)
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    traces = count_traces(step)
    for _ in range(2):  # two epochs: batches of 8, 8 and a last one of 7
        for i in range(0, 23, 8):
            assert step(x[i : i + 8], y[i : i + 8]) == eager_step(m2, o2, x[i : i + 8], y[i : i + 8])
            assert_same(m1, m2, o1, o2)
    assert traces[0] == 2 and len(step._plans) == 2
    # tensors as inputs replay the same tape
    assert step(cr.from_numpy(x[:8]), cr.from_numpy(y[:8])) == eager_step(m2, o2, x[:8], y[:8])
    assert_same(m1, m2, o1, o2)
    assert traces[0] == 2


def test_lr_scheduler_and_eager_steps_in_between():
    (m1, o1), (m2, o2) = pair(np.float64, OPTIMIZERS["sgd-momentum"])
    s1, s2 = cr.optim.lr_scheduler.StepLR(o1, 2, gamma=0.5), cr.optim.lr_scheduler.StepLR(o2, 2, gamma=0.5)
    x, y = data(dtype=np.float64)
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    traces = count_traces(step)
    for i in range(6):
        xb, yb = x[i : i + 10], y[i : i + 10]
        if i == 3:  # an eager step on the captured model: the next replays go on from its state
            eager_step(m1, o1, xb, yb)
        else:
            step(xb, yb)
        eager_step(m2, o2, xb, yb)
        s1.step()
        s2.step()
        assert_same(m1, m2, o1, o2)
    assert o1.param_groups[0]["lr"] == 0.1 * 0.5**3
    assert traces[0] == 1
    for i in range(3):  # and eager steps after captured ones
        eager_step(m1, o1, x[i : i + 10], y[i : i + 10])
        eager_step(m2, o2, x[i : i + 10], y[i : i + 10])
    assert_same(m1, m2, o1, o2)


class Tied(nn.Module):
    """A square weight used by two layers (weight tying): its gradient is the sum of two, in eager's order."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(N_IN, 5)
        self.shared = nn.Linear(5, 5)
        self.out = nn.Linear(5, N_OUT, bias=False)

    def forward(self, x):
        h = F.relu(self.inp(x))
        h = F.tanh(F.linear(h, self.shared.weight, self.shared.bias))
        h = F.linear(h, self.shared.weight)
        return self.out(F.sigmoid(h))


def tied(dtype, seed=0):
    cr.manual_seed(seed)
    m = Tied()
    return m.double() if dtype == np.float64 else m


def test_weight_tying_accumulates_as_eager():
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["adam"], model=tied)
    x, y = data()
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    for i in range(4):
        assert step(x[i : i + 8], y[i : i + 8]) == eager_step(m2, o2, x[i : i + 8], y[i : i + 8])
        assert_same(m1, m2, o1, o2)


def test_unused_and_frozen_parameters_get_no_gradient():
    (m1, o1), (m2, o2) = pair(np.float32, lambda ps: cr.optim.SGD(ps, lr=0.1))
    extra1, extra2 = cr.zeros(3, requires_grad=True), cr.zeros(3, requires_grad=True)
    o1.add_param_group({"params": [extra1]})
    o2.add_param_group({"params": [extra2]})
    m1[0].bias.requires_grad_(False)
    m2[0].bias.requires_grad_(False)
    x, y = data()
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    for i in range(3):
        assert step(x[i : i + 8], y[i : i + 8]) == eager_step(m2, o2, x[i : i + 8], y[i : i + 8])
        assert_same(m1, m2)
        assert extra1.grad is None and m1[0].bias.grad is None


def test_guards_trace_again_when_parameters_change():
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["sgd-momentum"])
    x, y = data()
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    traces = count_traces(step)
    step(x[:8], y[:8])
    eager_step(m2, o2, x[:8], y[:8])
    for m in (m1, m2):  # a parameter's array replaced (load_state_dict-like): read at every call anyway
        m[0].weight.data = m[0].weight.data.copy()
    step(x[:8], y[:8])
    eager_step(m2, o2, x[:8], y[:8])
    assert traces[0] == 1
    for m in (m1, m2):  # a parameter frozen: the graph changes, the step traces again
        m[2].weight.requires_grad_(False)
    step(x[:8], y[:8])
    eager_step(m2, o2, x[:8], y[:8])
    assert traces[0] == 2
    assert_same(m1, m2, o1, o2)
    with cr.no_grad(), pytest.raises(RuntimeError):  # under no_grad: the eager step (which has nothing to do)
        step(x[:8], y[:8])


def test_invalid_targets_run_the_eager_step():
    (m1, o1), _ = pair(np.float32, OPTIMIZERS["adam"])
    x, y = data()
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    step(x[:8], y[:8])
    bad = y[:8].copy()
    bad[3] = N_OUT  # out of range: eager cross_entropy says so
    with pytest.raises(DataError, match="out of range"):
        step(x[:8], bad)
    bad[3] = -100  # the default ignore_index: eager ignores that row (not the fused rule), so must the step
    (m2, o2) = pair(np.float32, OPTIMIZERS["adam"])[1]
    m2.load_state_dict(m1.state_dict())
    o2.load_state_dict(o1.state_dict())
    assert step(x[:8], bad) == eager_step(m2, o2, x[:8], bad)
    assert_same(m1, m2)


def test_refusals_name_the_op():
    cr.manual_seed(0)
    model = nn.Sequential(nn.Linear(N_IN, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, N_OUT))
    opt = cr.optim.Adam(model.parameters())
    x, y = data()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ConfigError, match="'dropout'.*Dropout"):
        cr.capture(lambda xb, yb: F.cross_entropy(model(xb), yb), opt)(x[:8], y[:8])
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, N_OUT))
    copt = cr.optim.SGD(conv.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="'conv2d'"):
        cr.capture(lambda xb, yb: F.cross_entropy(conv(xb), yb), copt)(np.ones((2, 1, 4, 4), np.float32), y[:2])
    for p, b in zip(model.parameters(), before):  # refused before any update
        assert_array_equal(p.data, b)
    other = cr.zeros(N_OUT, requires_grad=True)
    with pytest.raises(ConfigError, match="not a parameter of the optimizer"):
        cr.capture(lambda xb, yb: F.cross_entropy(model[3](model[0](xb)) * other, yb), opt)(x[:8], y[:8])
    with pytest.raises(ConfigError, match="not one of the step's inputs"):
        cr.capture(lambda xb, yb: F.cross_entropy(model[3](model[0](xb)), cr.from_numpy(y[:8].copy())), opt)(
            x[:8], y[:8]
        )
    with pytest.raises(ConfigError, match="one-element loss"):
        cr.capture(lambda xb, yb: F.cross_entropy(model[3](model[0](xb)), yb, reduction="none"), opt)(x[:8], y[:8])
    with pytest.raises(ConfigError, match="optimizer must be"):
        cr.capture(lambda xb: xb, object())


def test_one_captured_step_matches_torch_float64():
    model = mlp(np.float64)
    opt = cr.optim.Adam(model.parameters(), lr=1e-2)
    tmodel = torch.nn.Sequential(
        torch.nn.Linear(N_IN, 9),
        torch.nn.ReLU(),
        torch.nn.Linear(9, 8),
        torch.nn.Tanh(),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 7),
        torch.nn.Sigmoid(),
        torch.nn.Linear(7, N_OUT),
    ).double()
    tmodel.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-2)
    x, y = data(dtype=np.float64)
    step = cr.capture(lambda xb, yb: F.cross_entropy(model(xb), yb), opt)
    for i in range(2):  # the trace, then a replay
        xb, yb = x[i : i + 8], y[i : i + 8]
        loss = step(xb, yb)
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(xb)), torch.from_numpy(yb))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
        for p, (name, q) in zip(model.parameters(), tmodel.named_parameters()):
            np.testing.assert_allclose(p.grad.data, q.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)
            np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-14, err_msg=name)


def test_docs_array_example_output_is_the_real_output(capsys):
    """docs/capture.md shows the MLP example's real output."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "capture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(?:python)?\n(.*?)^```$", doc, flags=re.S | re.M)
    example, printed = blocks[3], blocks[4]
    assert "cr.capture(" in example
    exec(compile(example, "capture.md", "exec"), {})
    assert capsys.readouterr().out == printed


def test_cross_entropy_module_is_captured():
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["adam"])
    loss = nn.CrossEntropyLoss()
    x, y = data()
    step = cr.capture(lambda xb, yb: loss(m1(xb), yb), o1)
    traces = count_traces(step)
    for i in range(3):
        assert step(x[i : i + 8], y[i : i + 8]) == eager_step(m2, o2, x[i : i + 8], y[i : i + 8])
    assert_same(m1, m2, o1, o2)
    assert traces[0] == 1


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@settings(max_examples=15, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=0, max_size=3),
    acts=st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=3, max_size=3),
    batches=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    float64=st.booleans(),
    opt_name=st.sampled_from(sorted(OPTIMIZERS)),
    seed=st.integers(0, 2**16),
)
def test_random_mlps_and_batches_match_eager_bit_for_bit(widths, acts, batches, float64, opt_name, seed):
    dtype = np.float64 if float64 else np.float32

    def model(dtype):
        cr.manual_seed(seed)
        layers, n = [], N_IN
        for w, a in zip(widths, acts):
            layers += [nn.Linear(n, w), ACTIVATIONS[a]()]
            n = w
        m = nn.Sequential(*layers, nn.Linear(n, N_OUT))
        return m.double() if dtype == np.float64 else m

    (m1, o1), (m2, o2) = pair(dtype, OPTIMIZERS[opt_name], model=model)
    x, y = data(n=sum(batches), dtype=dtype, seed=seed)
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    start = 0
    for b in batches + batches:
        xb, yb = x[start : start + b], y[start : start + b]
        assert step(xb, yb) == eager_step(m2, o2, xb, yb)
        start = (start + b) % (len(y) - 9) if len(y) > 9 else 0
    assert_same(m1, m2, o1, o2)


def test_ignore_index_that_is_a_class_runs_the_eager_step_for_batches_that_hold_it():
    """With ignore_index in [0, C) eager takes the fused rule only for batches without that class (a batch with
    it ignores those rows): the replay must not compute the fused loss over them."""
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["adam"])
    x, y = data()
    y = np.where(y == 0, 1, y)
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb, ignore_index=0), o1)
    traces = count_traces(step)

    def eager(xb, yb):
        o2.zero_grad()
        loss = F.cross_entropy(m2(cr.from_numpy(xb)), cr.from_numpy(yb), ignore_index=0)
        loss.backward()
        o2.step()
        return float(loss)

    held = y[:8].copy()
    held[2] = 0
    for yb in (y[:8], y[1:9], held, y[:8]):
        assert step(x[:8], yb) == eager(x[:8], yb)
        assert_same(m1, m2, o1, o2)
    assert traces[0] == 2  # the trace, and the batch holding the ignored class (eagerly, not captured)


def test_errors_leave_parameters_gradients_and_optimizer_state_as_they_were():
    (m1, o1), _ = pair(np.float32, OPTIMIZERS["adam"])
    x, y = data()
    scale = {"on": False}
    other = cr.ones(N_OUT, requires_grad=True)  # not a parameter of the optimizer: refused when used
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb) * other if scale["on"] else m1(xb), yb), o1)
    step(x[:8], y[:8])
    step(x[:8], y[:8])
    grads = [p.grad for p in m1.parameters()]
    values = [p.data.copy() for p in m1.parameters()]
    state = {k: {n: np.copy(v) for n, v in s.items()} for k, s in o1.state_dict()["state"].items()}
    bad = y[:8].copy()
    bad[0] = N_OUT
    with pytest.raises(DataError, match="out of range"):  # a replayed signature: the eager step raises
        step(x[:8], bad)
    scale["on"] = True
    with pytest.raises(ConfigError, match="not a parameter of the optimizer"):  # a new signature: the trace refuses
        step(x[:7], y[:7])
    assert all(p.grad is g for p, g in zip(m1.parameters(), grads))
    for p, v in zip(m1.parameters(), values):
        assert_array_equal(p.data, v)
    for k, s in o1.state_dict()["state"].items():
        for n, v in s.items():
            assert_array_equal(v, state[k][n])


def test_class_indices_of_another_integer_dtype_are_refused_with_their_dtype():
    """cross_entropy converts int32 targets to a new int64 array, which the tape can't tie to the input."""
    (m1, o1), _ = pair(np.float32, OPTIMIZERS["adam"])
    x, y = data()
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    with pytest.raises(ConfigError, match=r"dtype int64 that is not one of the step's inputs.*input 1 is int32"):
        step(x[:8], y[:8].astype(np.int32))


def _inplace_edit(m, o):
    with cr.no_grad():
        m[0].weight.mul_(2.0)


def _adam_options(m, o):
    o.param_groups[0].update(lr=0.05, betas=(0.8, 0.9), weight_decay=0.01)


def _float64_weight(m, o):
    m[2].weight.data = m[2].weight.data.astype(np.float64)


def _fortran_weight(m, o):
    m[0].weight.data = np.asfortranarray(m[0].weight.data)


def _new_group(m, o):
    o.add_param_group({"params": [cr.zeros(3, requires_grad=True)], "lr": 0.3})


def _unfreeze(m, o):
    m[0].bias.requires_grad_(not m[0].bias.requires_grad)


def _load_state(m, o):
    m.load_state_dict({k: v * 0.5 for k, v in m.state_dict().items()})
    o.load_state_dict(o.state_dict())


@pytest.mark.parametrize(
    "change", [_inplace_edit, _adam_options, _float64_weight, _fortran_weight, _new_group, _unfreeze, _load_state]
)
def test_changes_between_steps_are_seen_as_by_eager(change):
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["adam"])
    x, y = data()
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    for i in range(6):
        if i in (2, 4):  # the same change on both copies, twice (a toggle goes back)
            change(m1, o1)
            change(m2, o2)
        assert step(x[i : i + 8], y[i : i + 8]) == eager_step(m2, o2, x[i : i + 8], y[i : i + 8])
        assert_same(m1, m2, o1, o2)


def test_non_contiguous_and_float64_inputs_to_a_float32_model():
    (m1, o1), (m2, o2) = pair(np.float32, OPTIMIZERS["sgd-momentum"])
    x, y = data(n=40)
    step = cr.capture(lambda xb, yb: F.cross_entropy(m1(xb), yb), o1)
    batches = [x[:8], x[::2][:8], np.asfortranarray(x[:8]), x[:8].astype(np.float64), x[::3][:8]]
    for xb, yb in zip(batches * 2, [y[:8], y[1::3][:8], y[::2][:8]] * 4):
        assert step(xb, yb) == eager_step(m2, o2, xb, yb)
        assert_same(m1, m2, o1, o2)
