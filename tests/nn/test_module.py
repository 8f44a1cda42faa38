"""Module mechanics against PyTorch: registration, traversal, modes, state dicts, dtype, repr, containers."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch

import chainrule as cr
import chainrule.nn as nn
from chainrule.errors import ChainruleError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4))
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 2)])
        self.extra = nn.ModuleDict({"emb": nn.Embedding(5, 4, padding_idx=0)})
        self.scale = nn.Parameter(cr.ones(1))
        self.register_buffer("steps", cr.zeros(2))
        self.register_buffer("scratch", cr.zeros(3), persistent=False)
        self.note = "plain attribute"

    def forward(self, x: cr.Tensor) -> cr.Tensor:
        h = self.body(x)
        return (self.heads[0](h) + self.heads[1](h)) * self.scale


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.BatchNorm1d(4))
        self.heads = torch.nn.ModuleList([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)])
        self.extra = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 4, padding_idx=0)})
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.register_buffer("steps", torch.zeros(2))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return (self.heads[0](h) + self.heads[1](h)) * self.scale


TorchNet.__name__ = "Net"  # so that reprs and type names compare equal


def test_registration_and_traversal_match_torch() -> None:
    ours, theirs = Net(), TorchNet()
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    assert [k for k, _ in ours.named_modules()] == [k for k, _ in theirs.named_modules()]
    assert [k for k, _ in ours.named_children()] == [k for k, _ in theirs.named_children()]
    assert [type(m).__name__ for m in ours.children()] == [type(m).__name__ for m in theirs.children()]
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    assert [k for k, _ in ours.named_buffers()] == [k for k, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    assert len(list(ours.parameters(recurse=False))) == 1
    assert ours.note == "plain attribute" and "note" not in ours.state_dict()
    assert ours.get_submodule("body.0") is ours.body[0]
    assert isinstance(ours.scale, nn.Parameter) and ours.scale.requires_grad


def test_reassignment_and_deletion() -> None:
    m = nn.Linear(2, 2)
    m.weight = nn.Parameter(np.zeros((2, 2)))
    assert np.all(next(m.parameters()).data == 0)
    m.extra = nn.ReLU()
    assert "extra" in dict(m.named_children())
    del m.extra
    assert "extra" not in dict(m.named_children())
    m.bias = m.bias  # re-setting keeps registration and order
    assert [k for k, _ in m.named_parameters()] == ["weight", "bias"]
    with pytest.raises(TypeError, match="Parameter or None"):
        m.bias = cr.zeros(2)
    m.bias = None
    assert [k for k, _ in m.named_parameters()] == ["weight"] and m.bias is None
    assert list(m.state_dict()) == ["weight"]
    shared = nn.Linear(2, 2)
    tied = nn.Sequential(shared, shared)
    assert len(list(tied.parameters())) == 2  # shared parameters are listed once, like PyTorch
    with pytest.raises(AttributeError, match="super"):

        class Bad(nn.Module):
            def __init__(self) -> None:
                self.w = nn.Parameter(np.ones(1))

        Bad()


def test_train_eval_and_zero_grad() -> None:
    m = Net()
    assert m.training and all(c.training for c in m.modules())
    assert m.eval() is m and not any(c.training for c in m.modules())
    m.train()
    assert all(c.training for c in m.modules())
    m(cr.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in m.body.parameters())
    m.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.data == 0) for p in m.body.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("train", [True, False])
def test_torch_state_dict_loads_unchanged_and_outputs_agree(train: bool) -> None:
    torch.manual_seed(0)
    theirs = TorchNet().double().train(train)
    theirs.body[2].running_mean.normal_()
    ours = Net().double().train(train)
    missing, unexpected = ours.load_state_dict(theirs.state_dict())
    assert missing == [] and unexpected == []
    x = np.random.default_rng(1).standard_normal((5, 3))
    xc, xt = cr.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yc, yt = ours(xc), theirs(xt)
    np.testing.assert_allclose(yc.data, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
    yc.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xc.grad.data, xt.grad.numpy(), rtol=1e-12, atol=1e-13)
    for (k, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        if q.grad is None:  # the embedding is not used in forward
            assert p.grad is None, k
        else:
            np.testing.assert_allclose(p.grad.data, q.grad.numpy(), rtol=1e-12, atol=1e-13, err_msg=k)
    # and back: torch takes our NumPy state dict (running stats and num_batches_tracked included)
    fresh = TorchNet().double()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ours.state_dict()[k], err_msg=k)


def test_load_state_dict_accepts_numpy_chainrule_and_torch_values() -> None:
    src = nn.Linear(3, 2)
    for convert in (lambda v: v, cr.tensor, torch.from_numpy):
        dst = nn.Linear(3, 2)
        dst.load_state_dict({k: convert(v) for k, v in src.state_dict().items()})
        for k, v in dst.state_dict().items():
            np.testing.assert_array_equal(v, src.state_dict()[k])
    sd = src.state_dict()
    sd["weight"][:] = 7  # the state dict holds copies
    assert not np.any(src.weight.data == 7)
    assert src.state_dict(keep_vars=True)["weight"] is src.weight
    assert list(src.state_dict(prefix="enc.")) == ["enc.weight", "enc.bias"]


def test_load_state_dict_takes_a_bfloat16_torch_state_dict() -> None:
    """PyTorch copies bfloat16 into float32 parameters; .numpy() of a bfloat16 tensor raised TypeError."""
    theirs = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ours = nn.Linear(3, 2)
    ours.load_state_dict(theirs.state_dict())
    assert ours.weight.dtype == np.float32
    np.testing.assert_array_equal(ours.weight.data, theirs.weight.float().detach().numpy())


def test_load_state_dict_strictness_and_errors() -> None:
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    sd = m.state_dict()
    before = m.state_dict()
    partial = {k: v for k, v in sd.items() if k != "1.running_var"}
    partial["extra.weight"] = np.ones(1)
    with pytest.raises(ChainruleError, match=r"missing keys \['1.running_var'\].*unexpected keys \['extra.weight'\]"):
        m.load_state_dict(partial)
    result = m.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["1.running_var"] and result.unexpected_keys == ["extra.weight"]
    bad = dict(sd)
    bad["0.weight"] = np.zeros((3, 2)) + 5
    with pytest.raises(ChainruleError, match=r"'0.weight' has shape \(3, 2\) in the state dict but \(2, 3\)"):
        m.load_state_dict(bad)
    bad = {**sd, "1.running_mean": np.array(["a", "b"])}  # after 0.weight, 0.bias, 1.weight, 1.bias in order
    with pytest.raises(ChainruleError, match=r"'1.running_mean' has dtype <U1, not numbers"):
        m.load_state_dict({k: v + 1 if v.dtype.kind == "f" else v for k, v in bad.items()})
    for k, v in m.state_dict().items():  # nothing changed by the failed loads
        np.testing.assert_array_equal(v, before[k])
    for other in (nn.Linear(3, 2), "m.safetensors", [np.ones(2)]):  # PyTorch: "Expected state_dict to be dict-like"
        with pytest.raises(ChainruleError, match=r"expected a dict of arrays, got (Linear|str|list)"):
            m.load_state_dict(other)
    # a torch state dict for a different architecture is rejected with the key names
    with pytest.raises(ChainruleError, match="missing keys"):
        nn.Linear(3, 2).load_state_dict(torch.nn.Linear(3, 2, bias=False).state_dict())


def test_to_double_float_and_default_dtype() -> None:
    m = Net()
    assert all(p.dtype == np.float32 for p in m.parameters())
    assert m.double() is m
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m.body[2].running_mean.dtype == np.float64 and m.body[2].num_batches_tracked.dtype == np.int64
    m.float()
    assert all(b.dtype in (np.float32, np.int64) for b in m.buffers())
    m.to(cr.float64)
    assert m.heads[0].weight.dtype == np.float64
    m.to("cpu", dtype=np.float32)
    assert m.heads[0].weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating"):
        m.to(np.int32)
    cr.set_default_dtype(cr.float64)
    try:
        assert all(p.dtype == np.float64 for p in Net().parameters())
        assert nn.LayerNorm(3).weight.dtype == np.float64 and nn.BatchNorm2d(2).running_var.dtype == np.float64
    finally:
        cr.set_default_dtype(cr.float32)
    assert nn.Linear(2, 2).weight.dtype == np.float32


def test_repr_matches_torch() -> None:
    pairs = [
        (Net(), TorchNet()),
        (nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Flatten()), torch.nn.Sequential(
            torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Flatten())),
        (nn.ModuleList([nn.Linear(2, 2)] * 3 + [nn.Tanh()]), torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 3
                                                                                  + [torch.nn.Tanh()])),
        (nn.Unflatten(1, (2, 3)), torch.nn.Unflatten(1, (2, 3))),
        (nn.Identity(), torch.nn.Identity()),
        (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
        (nn.ELU(), torch.nn.ELU()),
        (nn.GELU("tanh"), torch.nn.GELU("tanh")),
        (nn.Softplus(), torch.nn.Softplus()),
        (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)),
        (nn.LogSoftmax(dim=-1), torch.nn.LogSoftmax(dim=-1)),
        (nn.Dropout(0.2), torch.nn.Dropout(0.2)),
        (nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None)),
        (nn.LayerNorm([2, 3]), torch.nn.LayerNorm([2, 3])),
        (nn.LayerNorm(3, bias=False), torch.nn.LayerNorm(3, bias=False)),
        (nn.BatchNorm1d(3, affine=False), torch.nn.BatchNorm1d(3, affine=False)),
        (nn.Embedding(4, 2, padding_idx=1), torch.nn.Embedding(4, 2, padding_idx=1)),
        (nn.Linear(2, 3, bias=False), torch.nn.Linear(2, 3, bias=False)),
        (nn.MSELoss(), torch.nn.MSELoss()),
    ]  # fmt: skip
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_containers() -> None:
    seq = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 3)), ("act", nn.ReLU())]))
    assert list(seq.state_dict()) == ["fc.weight", "fc.bias"]
    assert isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.ReLU) and len(seq) == 2
    assert isinstance(seq[:1], nn.Sequential) and len(seq[:1]) == 1
    seq.append(nn.Tanh())
    assert len(seq) == 3 and seq(cr.randn(4, 2)).shape == (4, 3)
    ml = nn.ModuleList()
    ml.append(nn.Linear(1, 1)).extend([nn.ReLU(), nn.Tanh()])
    assert len(ml) == 3 and [type(m).__name__ for m in ml] == ["Linear", "ReLU", "Tanh"]
    assert len(ml[1:]) == 2
    md = nn.ModuleDict({"a": nn.ReLU()})
    md["b"] = nn.Linear(2, 2)
    assert list(md.keys()) == ["a", "b"] and "b" in md and len(md) == 2
    assert list(md.state_dict()) == ["b.weight", "b.bias"]
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    np.testing.assert_array_equal(nn.Flatten()(cr.tensor(x)).data, torch.nn.Flatten()(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(nn.Flatten(0, 1)(cr.tensor(x)).data, torch.nn.Flatten(0, 1)(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(
        nn.Unflatten(2, (2, 2))(cr.tensor(x)).data, torch.nn.Unflatten(2, (2, 2))(torch.tensor(x)).numpy()
    )
    assert nn.Identity(54, unused="x")(cr.tensor(x)).shape == x.shape
    with pytest.raises(KeyError, match="'.'"):
        nn.Module().add_module("a.b", nn.ReLU())
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(cr.randn(1))


def test_apply_and_requires_grad() -> None:
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    m.apply(lambda mod: nn.init.zeros_(mod.weight) if isinstance(mod, nn.Linear) else None)
    assert all(np.all(lin.weight.data == 0) for lin in m)
    m.requires_grad_(False)
    assert m.num_parameters(trainable_only=True) == 0 and m.num_parameters() == 24


def test_forward_hooks() -> None:
    m = nn.Linear(2, 2)
    seen = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0.0,))
    h2 = m.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    y = m(cr.ones(3, 2))
    np.testing.assert_allclose(y.data, np.broadcast_to(m.bias.data, (3, 2)))
    assert seen == [(3, 2)]
    h1.remove()
    h2.remove()
    assert np.any(m(cr.ones(3, 2)).data != y.data) and seen == [(3, 2)]
    with m.register_forward_hook(lambda mod, args, out: out * 2.0):
        np.testing.assert_allclose(m(cr.ones(1, 2)).data, 2 * m.forward(cr.ones(1, 2)).data)
    assert m(cr.ones(1, 2)).data.tolist() == m.forward(cr.ones(1, 2)).data.tolist()


def test_container_editing_matches_torch_numbering() -> None:
    seq = nn.Sequential(nn.ReLU(), nn.Tanh())
    seq.insert(1, nn.Linear(2, 2))
    seq.extend([nn.Sigmoid()])
    assert [type(m).__name__ for m in seq] == ["ReLU", "Linear", "Tanh", "Sigmoid"]
    assert list(seq.state_dict()) == ["1.weight", "1.bias"]
    assert isinstance(seq.pop(0), nn.ReLU) and list(seq.state_dict()) == ["0.weight", "0.bias"]
    del seq[0]
    seq[0] = nn.GELU()
    assert [type(m).__name__ for m in seq] == ["GELU", "Sigmoid"]
    ml = nn.ModuleList([nn.ReLU(), nn.Linear(1, 1)])
    ml.insert(0, nn.Linear(2, 2))
    assert list(ml.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    del ml[0]
    assert list(ml.state_dict()) == ["1.weight", "1.bias"]
    md = nn.ModuleDict()
    md.update({"a": nn.Linear(1, 1), "b": nn.ReLU()})
    assert isinstance(md.pop("b"), nn.ReLU) and list(md) == ["a"]
    md.clear()
    assert len(md) == 0


def _calls(lib, method: str) -> list[str]:
    """The module classes that `method` (apply or train) reaches, in call order, on a nested model of `lib`."""

    def build(L):
        seen = []

        class Spy(L.Linear):
            def train(self, mode=True):
                seen.append("train")
                return super().train(mode)

        m = L.Sequential(L.Linear(2, 2), L.Sequential(L.ReLU(), Spy(2, 2)), L.Tanh())
        return m, seen

    m, seen = build(lib)
    if method == "apply":
        assert m.apply(lambda mod: seen.append(type(mod).__name__)) is m
    else:
        assert m.eval() is m
    return seen


@pytest.mark.parametrize("method", ["apply", "train"])
def test_apply_and_train_reach_modules_as_torch(method: str) -> None:
    """apply(fn) calls fn children first (post-order); train()/eval() call each child's own train()."""
    assert _calls(nn, method) == _calls(torch.nn, method)


def test_train_mode_must_be_bool() -> None:
    for L in (nn, torch.nn):
        with pytest.raises(ValueError, match="mode"):
            L.Linear(1, 1).train("no")


@pytest.mark.parametrize("idx", [slice(1, None), slice(None, None, 2), slice(-1, None), slice(5, None)])
def test_sequential_slice_keeps_names_as_torch(idx: slice) -> None:
    """seq[1:] keeps the keys "1", "2" (so its state dict loads into the same layers of the full model)."""

    def sliced(L):
        seq = L.Sequential(OrderedDict(a=L.Linear(1, 2), b=L.ReLU(), c=L.Linear(2, 1)))
        part = seq[idx]
        return type(part).__name__, list(part.state_dict()), list(L.Sequential(*seq)[idx].state_dict())

    assert sliced(nn) == sliced(torch.nn)


def test_shared_module_is_in_the_state_dict_under_every_name() -> None:
    """A layer used twice: parameters() lists it once, the state dict under both names (torch's keys), so a torch
    state dict of a tied model loads strictly and to_torch works."""
    tied, ttied = nn.Linear(2, 2), torch.nn.Linear(2, 2)
    ours, theirs = nn.Sequential(tied, nn.ReLU(), tied), torch.nn.Sequential(ttied, torch.nn.ReLU(), ttied)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    assert ours.load_state_dict(theirs.state_dict()) == ([], [])
    np.testing.assert_array_equal(tied.weight.data, ttied.weight.detach().numpy())
    x = np.ones((1, 2), np.float32)
    np.testing.assert_allclose(cr.to_torch(ours)(torch.tensor(x)).detach().numpy(), ours(cr.tensor(x)).data, rtol=1e-6)


def test_register_buffer_checks_and_persistence_as_torch() -> None:
    """Re-registering a buffer as persistent puts it back in the state dict; bad names and values are refused."""
    for L, lib in ((nn, cr), (torch.nn, torch)):
        m = L.Linear(1, 1)
        m.register_buffer("steps", lib.zeros(1), persistent=False)
        m.register_buffer("steps", lib.ones(1))
        assert list(m.state_dict()) == ["weight", "bias", "steps"]
        m.register_buffer("steps", lib.ones(1), persistent=False)
        assert list(m.state_dict()) == ["weight", "bias"]
        for name in ("weight", "forward", "a.b", ""):
            with pytest.raises(KeyError):
                m.register_buffer(name, lib.zeros(1))
        with pytest.raises(TypeError, match="'c'"):
            m.register_buffer("c", np.zeros(1))
        m.register_buffer("none", None)
        assert [k for k, _ in m.named_buffers()] == ["steps"]


def test_named_buffers_recurse_and_shared_as_torch() -> None:
    def names(L, lib):
        shared = lib.zeros(2)
        m = L.Sequential(L.BatchNorm1d(2), L.Linear(2, 2))
        m.register_buffer("top", lib.zeros(1))
        m[1].register_buffer("same", shared)
        m[0].register_buffer("same", shared)
        return (
            [k for k, _ in m.named_buffers()],
            [k for k, _ in m.named_buffers(prefix="p", recurse=False)],
            len(list(m.buffers(recurse=False))),
        )

    assert names(nn, cr) == names(torch.nn, torch)


def test_everyday_module_api_matches_torch() -> None:
    """Shared parameters once, modes, requires_grad_, zero_grad (set_to_none=True by default), dtype moves, containers
    and repr, on the same model built with both libraries."""

    def build(L):
        a, b, head = L.Linear(2, 3), L.Linear(3, 3), L.Linear(3, 2)
        b.bias = a.bias  # one Parameter in two layers
        return L.Sequential(a, L.ReLU(), b, L.ModuleList([head, head]), L.ModuleDict({"drop": L.Dropout(0.5)}))

    ours, theirs = build(nn), build(torch.nn)
    for f in (
        lambda m: [k for k, _ in m.named_parameters()],
        lambda m: [k for k, _ in m.named_modules()],
        lambda m: [k for k, _ in m.named_children()],
        lambda m: list(m.state_dict()),
        lambda m: (len(m), type(m[-2]).__name__, type(m[1:3][0]).__name__, len(m[3]), list(m[4].keys())),
        lambda m: [x.training for x in m.eval().modules()] + [x.training for x in m.train().modules()],
        lambda m: [p.requires_grad for p in m.requires_grad_(False).parameters()] + [m.requires_grad_() is m],
        lambda m: (m.double() is m, str(m[0].weight.dtype)[-7:], m.float() is m, str(m[0].weight.dtype)[-7:]),
        lambda m: repr(m),
    ):
        assert f(ours) == f(theirs)
    assert ours[0].bias is ours[2].bias and len(list(ours.parameters())) == len(list(theirs.parameters())) == 5
    for m, lib in ((ours, cr), (theirs, torch)):
        m[0](lib.ones(1, 2)).sum().backward()
        grad = m[0].weight.grad
        m.zero_grad(set_to_none=False)
        assert m[0].weight.grad is grad and not np.asarray(grad.data if lib is cr else grad).any()
        m.zero_grad()
        assert m[0].weight.grad is None


def test_state_dict_values_are_copies_not_views() -> None:
    """A documented difference: torch's state_dict() holds detached tensors sharing the parameters' storage (writing
    into one changes the model); chainrule's holds NumPy copies (keep_vars=True gives the tensors themselves)."""
    ours, theirs = nn.Linear(2, 2), torch.nn.Linear(2, 2)
    theirs.state_dict()["bias"].fill_(7.0)
    assert theirs.bias.detach().tolist() == [7.0, 7.0]
    sd = ours.state_dict()
    assert isinstance(sd["bias"], np.ndarray)
    sd["bias"][...] = 7.0
    assert not np.any(ours.bias.data == 7.0)
    assert ours.state_dict(keep_vars=True)["bias"] is ours.bias
    assert theirs.state_dict(keep_vars=True)["bias"] is theirs.bias
