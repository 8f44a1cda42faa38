"""chainrule.capture: a captured SGD step on scalar graphs gives eager's results to the last bit (and PyTorch's)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chainrule as cr
import chainrule.nn.functional as F
from chainrule.errors import ConfigError


def reference_loss(w1, w2):
    """The reference example's loss: written with methods and operators only, so it runs on torch tensors too."""

    def loss_fn(x, y):
        return 0.5 * (y - w2 * (w1 * x).sigmoid()) ** 2

    return loss_fn


def make(lib=cr, values=(0.5, 0.3), loss=reference_loss, **sgd):
    """(parameters, SGD optimizer, loss_fn) for chainrule or torch, float64 scalars."""
    if lib is cr:
        ps = [cr.tensor(v, dtype=cr.float64, requires_grad=True) for v in values]
        opt = cr.optim.SGD(ps, **{"lr": 0.01, **sgd})
    else:
        ps = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
        opt = torch.optim.SGD(ps, **{"lr": 0.01, **sgd})
    return ps, opt, loss(*ps)


def eager_step(loss_fn, opt, *inputs) -> float:
    """What step(*inputs) must mean."""
    opt.zero_grad()
    loss = loss_fn(*(cr.tensor(float(v), dtype=cr.float64) for v in inputs))
    loss.backward()
    opt.step()
    return float(loss)


def torch_step(loss_fn, opt, *inputs) -> float:
    opt.zero_grad()
    loss = loss_fn(*(torch.tensor(float(v), dtype=torch.float64) for v in inputs))
    loss.backward()
    opt.step()
    return loss.item()


def count_traces(step) -> list[int]:
    """A counter of the eager (tracing) steps that `step` runs; the other calls replay the generated code."""
    count, trace = [0], step._trace

    def counted(inputs):
        count[0] += 1
        return trace(inputs)

    step._trace = counted
    return count


def bits(ps) -> list[float]:
    return [p.data.item() for p in ps]


def assert_same_state(ps, opt, qs, eopt) -> None:
    """Values, gradients and momentum buffers of two chainrule copies agree exactly."""
    assert bits(ps) == bits(qs)
    for p, q in zip(ps, qs):
        assert type(p.grad) is cr.Tensor and p.grad.shape == q.grad.shape == p.shape
        assert p.grad.data.item() == q.grad.data.item()
        b, c = opt.state.get(p, {}).get("momentum_buffer"), eopt.state.get(q, {}).get("momentum_buffer")
        assert (b is None) == (c is None)
        if b is not None:
            assert isinstance(b, np.ndarray) and b.shape == c.shape and b.item() == c.item()


def test_reference_example_100_steps_bit_identical_to_eager_and_close_to_torch():
    ps, opt, loss_fn = make()
    qs, eopt, eloss_fn = make()
    ts, topt, tloss_fn = make(torch)
    step = cr.capture(loss_fn, opt)
    assert step.source is None  # nothing runs before the first call
    traces = count_traces(step)
    for _ in range(100):
        loss = step(2.0, 0.5)
        assert loss == eager_step(eloss_fn, eopt, 2.0, 0.5)
        assert loss == pytest.approx(torch_step(tloss_fn, topt, 2.0, 0.5), rel=1e-12, abs=1e-300)
        assert_same_state(ps, opt, qs, eopt)
    np.testing.assert_allclose(bits(ps), [t.item() for t in ts], rtol=1e-12)
    np.testing.assert_allclose([p.grad.item() for p in ps], [t.grad.item() for t in ts], rtol=1e-12)
    assert ps[0]._version > 0
    assert traces == [1]


def test_source_is_the_forward_chain_rule_and_update_as_straight_line_code():
    ps, opt, loss_fn = make()
    step = cr.capture(loss_fn, opt)
    step(2.0, 0.5)
    src = step.source
    for line in (
        "def step(inputs):",
        "t0 = w0 * x0  # mul",
        "t1 = 1.0 / (1.0 + float(_exp(-t0))) if t0 > -700.0 else _sigmoid_low(t0)  # sigmoid",
        "t3 = x1 - t2  # sub",
        "t4 = t3 * t3  # pow",
        "t5 = 0.5 * t4  # mul",
        "dt3 = dt4 * 2.0 * t3  # pow",
        "dt0 = dt1 * t1 * (1.0 - t1)  # sigmoid",
        "dw0 = dt0 * x0  # mul",
        'lr0 = float(G0["lr"])',
        "n0 = w0 - dw0 * lr0",
        "A1[()] = n1",
        "return t5",
    ):
        assert line in src, line


def test_new_inputs_every_call_and_input_kinds():
    ps, opt, loss_fn = make()
    qs, eopt, eloss_fn = make()
    step = cr.capture(loss_fn, opt)
    rng = np.random.default_rng(0)
    for i in range(30):
        x, y = rng.normal(size=2) * 3
        xin = [x, np.float32(x), cr.tensor([x], dtype=cr.float64), np.array(x), int(round(x))][i % 5]
        assert step(xin, y) == eager_step(eloss_fn, eopt, float(np.asarray(xin, dtype=np.float64).item()), y)
        assert_same_state(ps, opt, qs, eopt)


@pytest.mark.parametrize(
    "options",
    [
        dict(momentum=0.9),
        dict(momentum=0.9, nesterov=True),
        dict(momentum=0.8, dampening=0.3),
        dict(weight_decay=0.1),
        dict(maximize=True),
        dict(momentum=0.7, dampening=0.1, weight_decay=0.05, maximize=True),
        dict(momentum=0.9, nesterov=True, weight_decay=0.02),
    ],
    ids=lambda o: ",".join(o),
)
def test_sgd_options_match_eager_bit_for_bit_and_torch(options):
    ps, opt, loss_fn = make(**options)
    qs, eopt, eloss_fn = make(**options)
    ts, topt, tloss_fn = make(torch, **options)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for i in range(40):
        x, y = 2.0 + 0.01 * i, 0.5
        assert step(x, y) == eager_step(eloss_fn, eopt, x, y)
        torch_step(tloss_fn, topt, x, y)
        assert_same_state(ps, opt, qs, eopt)
    np.testing.assert_allclose(bits(ps), [t.item() for t in ts], rtol=1e-12)
    assert traces == [1]
    if "momentum" in options:
        for p, t in zip(ps, ts):
            np.testing.assert_allclose(opt.state[p]["momentum_buffer"], topt.state[t]["momentum_buffer"], rtol=1e-12)


def test_lr_scheduler_changes_are_used():
    ps, opt, loss_fn = make(lr=0.5)
    qs, eopt, eloss_fn = make(lr=0.5)
    sched = cr.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    esched = cr.optim.lr_scheduler.StepLR(eopt, step_size=3, gamma=0.5)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for _ in range(10):
        assert step(2.0, 0.5) == eager_step(eloss_fn, eopt, 2.0, 0.5)
        sched.step()
        esched.step()
        assert_same_state(ps, opt, qs, eopt)
    assert opt.param_groups[0]["lr"] == 0.5 * 0.5**3
    assert traces == [1]


def test_eager_steps_continue_after_captured_ones_and_vice_versa():
    ps, opt, loss_fn = make(momentum=0.9)
    qs, eopt, eloss_fn = make(momentum=0.9)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for i in range(12):
        if i % 4 == 3:  # an eager step on the captured model, then captured steps again
            eager_step(loss_fn, opt, 2.0, 0.5)
        else:
            step(2.0, 0.5)
        eager_step(eloss_fn, eopt, 2.0, 0.5)
        assert_same_state(ps, opt, qs, eopt)
    assert traces == [1]


def two_layer(a1, b1, a2, b2, c):
    """A scalar net using tanh, relu, exp, log, div, neg, sub, and nodes used twice (gradient accumulation)."""

    def loss_fn(x, y):
        h1 = (a1 * x + b1).tanh()
        h2 = (a2 * x - b2).relu() + (-h1).exp()
        z = c * h1 * h1 + h2 / (1.0 + h1 * h1) + (h2 + 2.0).log() - h1
        d = z - y
        return d * d

    return loss_fn


def test_two_layer_net_with_shared_nodes_matches_eager_and_torch():
    values = (0.4, -0.1, 0.7, 0.2, 0.9)
    ps, opt, loss_fn = make(values=values, loss=two_layer, momentum=0.5)
    qs, eopt, eloss_fn = make(values=values, loss=two_layer, momentum=0.5)
    ts, topt, tloss_fn = make(torch, values=values, loss=two_layer, momentum=0.5)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    rng = np.random.default_rng(1)
    for _ in range(40):
        x, y = rng.normal(), rng.normal()
        assert step(x, y) == eager_step(eloss_fn, eopt, x, y)
        torch_step(tloss_fn, topt, x, y)
        assert_same_state(ps, opt, qs, eopt)
    np.testing.assert_allclose(bits(ps), [t.item() for t in ts], rtol=1e-12)
    assert traces == [1]
    assert "dt" in step.source and "+ " in step.source.split("# backward")[1]  # accumulation of a shared node


def other_ops(w, v):
    """pow with several exponents, sqrt, log1p, mean/sum/reshape, mse_loss, one-element tensors of other shapes."""

    def loss_fn(x, y):
        u = (w * x) ** 3 + (v * v + 1.0) ** 0.5 + (v * v + 1.0) ** -1 + w**0 + (w * w + 2.0).sqrt()
        u = u + (w * w).log1p() + (w * x).reshape(1, 1).mean() + (v * y).reshape(1).sum() - (v * x).sigmoid()
        u = u + (w * x).sin() * (v * y).cos() + (w - v).abs()
        pred = (u * 0.1).reshape(1).sigmoid()  # a sigmoid of a (1,) tensor: eager's n-d formula
        return F.mse_loss(pred, cr.tensor([0.25], dtype=cr.float64) + y * 0.0) + 0.5 * (v - 0.2) ** 2

    return loss_fn


def test_other_ops_and_shapes_match_eager_bit_for_bit():
    ps, opt, loss_fn = make(values=(0.3, -0.6), loss=other_ops, momentum=0.3)
    qs, eopt, eloss_fn = make(values=(0.3, -0.6), loss=other_ops, momentum=0.3)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for i in range(20):
        x, y = 1.0 + 0.1 * i, -0.5
        assert step(x, y) == eager_step(eloss_fn, eopt, x, y)
        assert_same_state(ps, opt, qs, eopt)
    assert traces == [1]
    for key in ("_pow(t", "float(_sqrt(", "float(_log1p(", "# mean", "# sum", "# reshape", "_sin(", "_sign("):
        assert key in step.source, key


def test_parameters_of_other_one_element_shapes_and_several_groups():
    def loss(a, b):
        return lambda x, y: ((a * x).sum() + (b * y).sum() - 1.0) ** 2

    def build():
        a = cr.tensor([0.5], dtype=cr.float64, requires_grad=True)
        b = cr.tensor([[0.25]], dtype=cr.float64, requires_grad=True)
        unused = cr.tensor(1.0, dtype=cr.float64, requires_grad=True)
        opt = cr.optim.SGD([{"params": [a, unused]}, {"params": [b], "lr": 0.05, "momentum": 0.9}], lr=0.01)
        return [a, b, unused], opt, loss(a, b)

    ps, opt, loss_fn = build()
    qs, eopt, eloss_fn = build()
    step = cr.capture(loss_fn, opt)
    for _ in range(10):
        assert step(1.5, -0.5) == eager_step(eloss_fn, eopt, 1.5, -0.5)
        assert bits(ps) == bits(qs)
        assert ps[2].grad is None and ps[0].grad.shape == (1,) and ps[1].grad.shape == (1, 1)
        assert [p.grad.item() for p in ps[:2]] == [q.grad.item() for q in qs[:2]]
        assert opt.state[ps[1]]["momentum_buffer"].item() == eopt.state[qs[1]]["momentum_buffer"].item()


def test_guards_recapture_when_the_optimizer_or_parameters_change():
    ps, opt, loss_fn = make()
    qs, eopt, eloss_fn = make()
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for i in range(12):
        if i == 3:  # .data replaced
            ps[0].data, qs[0].data = np.array(0.8), np.array(0.8)
        if i == 6:  # options that pick another update
            for o in (opt, eopt):
                o.param_groups[0]["momentum"] = 0.9
        if i == 9:  # the optimizer's state loaded from a state dict (new arrays)
            opt.load_state_dict(eopt.state_dict())
        assert step(2.0, 0.5) == eager_step(eloss_fn, eopt, 2.0, 0.5)
        assert_same_state(ps, opt, qs, eopt)
    assert traces == [4]  # the first call, then one eager step after each change
    assert "mom0" in step.source


def test_gradient_tensors_are_fresh_when_someone_holds_the_last_one():
    ps, opt, loss_fn = make()
    step = cr.capture(loss_fn, opt)
    step(2.0, 0.5)
    step(2.0, 0.5)
    held = ps[0].grad
    value = held.item()
    step(2.0, 0.5)
    assert ps[0].grad is not held and held.item() == value  # what eager's zero_grad + backward would give
    arr = ps[1].grad.data
    value = arr.item()
    step(2.0, 0.5)
    assert arr.item() == value


def test_division_by_zero_falls_back_to_the_eager_step():
    def loss(w):
        return lambda x: (w / x) * (w / x)

    ps, opt, loss_fn = make(values=(0.5,), loss=loss)
    qs, eopt, eloss_fn = make(values=(0.5,), loss=loss)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for x in (2.0, 1.0, 0.0, 3.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            got, want = step(x), eager_step(eloss_fn, eopt, x)
        assert got == want or (math.isnan(got) and math.isnan(want))
        np.testing.assert_array_equal(bits(ps), bits(qs))
    assert traces == [2]  # the first call and the division by zero


def test_relu_passes_no_inf_gradient_where_its_input_is_negative():
    """exp overflows to inf; relu's gradient where w·x <= 0 is still 0 (PyTorch's threshold_backward), not 0·inf."""

    def loss(w, v):
        return lambda x: (w * x).relu() * (v * x).exp()

    ps, opt, loss_fn = make(values=(-0.5, 1.0), loss=loss)
    qs, eopt, eloss_fn = make(values=(-0.5, 1.0), loss=loss)
    ts, topt, tloss_fn = make(torch, values=(-0.5, 1.0), loss=loss)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for _ in range(2):
        with np.errstate(over="ignore", invalid="ignore"):
            step(800.0), eager_step(eloss_fn, eopt, 800.0)
        torch_step(tloss_fn, topt, 800.0)
        assert bits(ps)[0] == bits(qs)[0] == ts[0].item() == -0.5
    assert traces == [1]


def test_constants_are_baked_in_and_detached_parameters_read_each_call():
    def loss(w1, w2):
        scale = cr.tensor(3.0, dtype=cr.float64)
        return lambda x: (w1 * x - w2.detach() - scale * w1 * w1) ** 2

    ps, opt, loss_fn = make(loss=loss)
    qs, eopt, eloss_fn = make(loss=loss)
    step = cr.capture(loss_fn, opt)
    for i in range(5):
        with cr.no_grad():
            ps[1].data[...] = qs[1].data[...] = 0.1 * i  # a parameter the step does not update: read at every call
        assert step(1.5) == eager_step(eloss_fn, eopt, 1.5)
        assert bits(ps) == bits(qs)
        assert ps[1].grad is None
    assert "t0 - w1  # sub" in step.source and "3.0 * w0" in step.source


def test_detached_results_are_recomputed_without_gradient():
    def loss(w1, w2):
        return lambda x, y: (w1 * x - (w2 * y).detach()) ** 2 + (w2 - (w1 * w2).detach().detach()) ** 2

    ps, opt, loss_fn = make(loss=loss, momentum=0.5)
    qs, eopt, eloss_fn = make(loss=loss, momentum=0.5)
    step = cr.capture(loss_fn, opt)
    traces = count_traces(step)
    for i in range(10):
        assert step(1.5, 0.1 * i) == eager_step(eloss_fn, eopt, 1.5, 0.1 * i)
        assert_same_state(ps, opt, qs, eopt)
    assert traces == [1]


finite = st.floats(-3.0, 3.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    values=st.tuples(finite, finite, finite, finite, finite),
    data=st.lists(st.tuples(finite, finite), min_size=2, max_size=6),
    lr=st.floats(1e-4, 0.5),
    momentum=st.sampled_from([0.0, 0.9]),
)
def test_random_nets_inputs_and_rates_match_eager_bit_for_bit(values, data, lr, momentum):
    values = tuple(v if v > 0.05 else 0.05 + abs(v) for v in values[:4]) + values[4:]  # keeps log's argument > 0
    ps, opt, loss_fn = make(values=values, loss=two_layer, lr=lr, momentum=momentum)
    qs, eopt, eloss_fn = make(values=values, loss=two_layer, lr=lr, momentum=momentum)
    step = cr.capture(loss_fn, opt)
    with np.errstate(all="ignore"):
        for x, y in data:
            got, want = step(x, y), eager_step(eloss_fn, eopt, x, y)
            assert got == want or (math.isnan(got) and math.isnan(want))
            np.testing.assert_array_equal(bits(ps), bits(qs))


def test_no_grad_and_detect_anomaly_run_the_eager_step():
    ps, opt, loss_fn = make()
    qs, eopt, eloss_fn = make()
    step = cr.capture(loss_fn, opt)
    step(2.0, 0.5)
    eager_step(eloss_fn, eopt, 2.0, 0.5)
    with cr.detect_anomaly():
        assert step(2.0, 0.5) == eager_step(eloss_fn, eopt, 2.0, 0.5)
    assert_same_state(ps, opt, qs, eopt)
    with cr.no_grad(), pytest.raises(RuntimeError, match="does not require grad"):
        step(2.0, 0.5)
    assert step(2.0, 0.5) == eager_step(eloss_fn, eopt, 2.0, 0.5)
    assert_same_state(ps, opt, qs, eopt)


# ----------------------------------------------------------------------------- refusals


def test_refuses_a_node_that_is_not_one_element_float64():
    ps, opt, _ = make()
    step = cr.capture(lambda x: (ps[0] * cr.tensor([1.0, 2.0], dtype=cr.float64)).sum(), opt)
    with pytest.raises(ConfigError, match=r"mul has shape \(2,\)"):
        step(1.0)
    step = cr.capture(lambda x: (ps[0] * cr.tensor(2.0, dtype=cr.float32)) * x, opt)
    with pytest.raises(ConfigError, match="dtype float32"):
        step(1.0)
    assert bits(ps) == [0.5, 0.3]  # refused before any update


def test_refuses_unsupported_ops_and_tensor_exponents():
    ps, opt, _ = make()
    with pytest.raises(ConfigError, match="'clamp'"):
        cr.capture(lambda x: (ps[0] * x).clamp(0.0, 1.0), opt)(1.0)
    with pytest.raises(ConfigError, match="tensor exponent"):
        cr.capture(lambda x: ps[0] ** (ps[1] * x), opt)(1.0)


def retained(w):
    h = w * 2.0
    h.retain_grad()  # a replay makes no h, so it can't give it a .grad: refused, as in array graphs
    return h * h


def test_refuses_retain_grad_before_any_update():
    ps, opt, _ = make()
    with pytest.raises(ConfigError, match=r"result of mul retains its gradient"):
        cr.capture(lambda x: retained(ps[0]) * x, opt)(1.0)
    assert bits(ps) == [0.5, 0.3]


def test_other_optimizers_and_parameters_take_the_array_path():
    """Not SGD over one-element float64 parameters: the array tape, which refuses the scalar ops it lacks."""
    w = cr.tensor(0.5, dtype=cr.float64, requires_grad=True)
    with pytest.raises(ConfigError, match="'mul' is not supported in array graphs"):
        cr.capture(lambda x: w * x, cr.optim.Adam([w]))(1.0)
    step = cr.capture(lambda x: x, cr.optim.SGD([cr.tensor(0.5, requires_grad=True)], lr=0.1))
    with pytest.raises(ConfigError, match="does not depend on any parameter"):
        step(1.0)
    assert step.source is None and not step._plans
    with pytest.raises(ConfigError, match="optimizer must be a chainrule optimizer"):
        cr.capture(lambda x: w * x, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1))


def test_refuses_bad_losses_inputs_and_signatures():
    ps, opt, _ = make()
    with pytest.raises(ConfigError, match="got float"):
        cr.capture(lambda x: 1.0, opt)(1.0)
    with pytest.raises(ConfigError, match=r"shape \(2,\)"):
        cr.capture(lambda x: ps[0] * cr.ones(2, dtype=cr.float64), opt)(1.0)
    with pytest.raises(ConfigError, match="does not depend on any parameter"):
        cr.capture(lambda x: x * 2.0, opt)(1.0)
    other = cr.tensor(1.0, dtype=cr.float64, requires_grad=True)
    with pytest.raises(ConfigError, match="not a parameter of the optimizer"):
        cr.capture(lambda x: ps[0] * other * x, opt)(1.0)
    step = cr.capture(reference_loss(*ps), opt)
    with pytest.raises(ConfigError, match="one-element loss"):  # not one-element: the array path
        step(2.0, [1.0, 2.0, 3.0])
    step(2.0, 0.5)
    with pytest.raises(ConfigError, match=r"input 1 has shape \(3,\)"):  # after a scalar trace
        step(2.0, [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="traced with 2 inputs, got 1"):
        step(2.0)
    with pytest.raises(ConfigError, match="input 0 is a str"):
        step("a", 0.5)


def test_docs_example_output_is_the_real_output(capsys):
    """docs/capture.md shows the example's real output and `step.source`."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "capture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(?:python)?\n(.*?)^```$", doc, flags=re.S | re.M)
    example, printed, source = blocks[0], blocks[1], blocks[2]
    exec(compile(example, "capture.md", "exec"), {})
    assert capsys.readouterr().out == printed + source + "\n"  # print adds a newline


@pytest.mark.parametrize(
    "change",
    [
        dict(momentum=0.5),
        dict(dampening=0.1),
        dict(nesterov=True),
        dict(weight_decay=0.1),
        dict(maximize=True),
        dict(momentum=0.0),
        dict(lr=np.float32(0.02)),
        dict(lr=cr.tensor(0.03)),
    ],
    ids=repr,
)
def test_option_changes_between_steps_match_eager(change):
    ps, opt, loss_fn = make(momentum=0.9)
    qs, eopt, eloss_fn = make(momentum=0.9)
    step = cr.capture(loss_fn, opt)
    for i in range(5):
        if i == 2:
            for o in (opt, eopt):
                o.param_groups[0].update(change)
        assert step(2.0, 0.5) == eager_step(eloss_fn, eopt, 2.0, 0.5)
        assert_same_state(ps, opt, qs, eopt)


def test_momentum_buffers_replaced_or_dropped_and_weights_edited_in_place():
    ps, opt, loss_fn = make(momentum=0.9)
    qs, eopt, eloss_fn = make(momentum=0.9)
    step = cr.capture(loss_fn, opt)
    for i in range(6):
        if i == 2:  # a new buffer array
            opt.state[ps[0]]["momentum_buffer"], eopt.state[qs[0]]["momentum_buffer"] = np.array(0.25), np.array(0.25)
        if i == 3:  # no state: the next step starts the buffer again
            del opt.state[ps[1]], eopt.state[qs[1]]
        if i == 4:
            with cr.no_grad():
                ps[0].mul_(1.5)
                qs[0].mul_(1.5)
        assert step(2.0, 0.5) == eager_step(eloss_fn, eopt, 2.0, 0.5)
        assert_same_state(ps, opt, qs, eopt)


def test_one_element_sum_and_mean_of_minus_zero_are_plus_zero_as_numpy_sums():
    """NumPy sums from 0.0, so -0.0 sums to 0.0: a pow of negative exponent then gives +inf, not -inf."""

    def loss(w1, w2):
        return lambda x: (w1 * x).reshape(1).sum() ** -1 + (w2 * x).reshape(1, 1).mean() ** -3

    ps, opt, loss_fn = make(loss=loss)
    qs, eopt, eloss_fn = make(loss=loss)
    step = cr.capture(loss_fn, opt)
    with np.errstate(divide="ignore", invalid="ignore"):
        for x in (1.0, -0.0, 2.0):
            got, want = step(x), eager_step(eloss_fn, eopt, x)
            np.testing.assert_array_equal([got] + bits(ps), [want] + bits(qs))
            np.testing.assert_array_equal([p.grad.item() for p in ps], [q.grad.item() for q in qs])


@pytest.mark.parametrize("j", [0, 1])
def test_read_only_parameter_after_capture_is_named_and_nothing_is_updated(j):
    """The generated code writes the values first, in turn: at a read-only one it undoes those written before it
    and runs the eager step, which names the parameter."""
    ps, opt, loss_fn = make(momentum=0.9)
    step = cr.capture(loss_fn, opt)
    step(2.0, 0.5), step(2.0, 0.5)
    ps[j].data.flags.writeable = False
    values, buffers = bits(ps), [opt.state[p]["momentum_buffer"].item() for p in ps]
    with pytest.raises(ValueError, match=rf"SGD: parameter {j} of parameter group 0 \(shape \(\)\).*read-only"):
        step(2.0, 0.5)
    assert bits(ps) == values and [opt.state[p]["momentum_buffer"].item() for p in ps] == buffers
