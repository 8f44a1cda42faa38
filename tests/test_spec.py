import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainrule import nn, optim
from chainrule.errors import ConfigError
from chainrule.spec import build_model, find_class, make_loss, make_optimizer, parse_spec


def types(m):
    return [type(x).__name__ for x in m]


def test_compact_mlp_with_activation():
    m = build_model("mlp:16,8", 4, 3, activation="tanh", seed=0)
    assert types(m) == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert (m[1].in_features, m[1].out_features, m[5].out_features) == (4, 16, 3)


def test_linear_form_and_image_input():
    m = build_model("linear", (8, 8), 10, seed=0)
    assert types(m) == ["Flatten", "Linear"] and m[1].in_features == 64


def test_layer_list_infers_sizes_and_case_insensitive_names():
    spec = [{"type": "linear", "out_features": 6}, {"type": "sigmoid"}, {"type": "Linear"}]
    m = build_model(spec, 3, 2, seed=0)
    assert types(m) == ["Linear", "Sigmoid", "Linear"]
    assert m._chainrule_spec["layers"][2] == {"type": "Linear", "in_features": 6, "out_features": 2}


def test_json_string_toml_and_json_files(tmp_path):
    layers = [{"type": "Linear", "out_features": 4}, {"type": "ReLU"}, {"type": "Linear"}]
    assert parse_spec(json.dumps(layers)) == layers
    assert parse_spec({"layers": layers}) == layers
    (tmp_path / "m.json").write_text(json.dumps({"layers": layers}))
    (tmp_path / "m.toml").write_text(
        '[[layers]]\ntype = "Linear"\nout_features = 4\n[[layers]]\ntype = "ReLU"\n[[layers]]\ntype = "Linear"\n'
    )
    assert parse_spec(str(tmp_path / "m.json")) == layers == parse_spec(str(tmp_path / "m.toml"))


def test_same_seed_same_weights():
    a, b = build_model("mlp:8", 3, 2, seed=5), build_model("mlp:8", 3, 2, seed=5)
    c = build_model("mlp:8", 3, 2, seed=6)
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not np.array_equal(a.state_dict()["1.weight"], c.state_dict()["1.weight"])


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mlp:a,b", "integers"),
        ("mlp:4,,4", "integers"),  # an empty size was skipped: a layer silently missing
        ("mlp:64,", "integers"),
        ("mlp:0", "positive"),
        ("transformer:3", "unknown model form"),
        ([{"type": "Conv9d"}], "unknown layer type"),
        ([{"type": "Linear", "out_featurez": 3}], "unknown option 'out_featurez'"),
        ([{"out_features": 3}], "'type'"),
        ([], "non-empty"),
        ({"layer": []}, "'layers'"),
        ("[1, 2", "not valid JSON"),
        ([{"type": "Linear", "out_features": 5}], "output shape"),
        ([{"type": "Linear", "out_features": -2}], "layer 0"),
        # text, a bool or a float for a number or flag option was built (bias "false" meant a bias) or failed unnamed
        ([{"type": "Linear", "out_features": 2, "bias": "false"}], "layer 0 .Linear.: option 'bias' must be bool"),
        ([{"type": "Linear", "out_features": "2"}], "option 'out_features' must be int, got '2'"),
        ([{"type": "Linear", "out_features": True}], "option 'out_features' must be int, got True"),
        ([{"type": "Dropout", "p": "0.5"}, {"type": "Linear"}], r"layer 0 \(Dropout\): option 'p' must be float"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_model(spec, 3, 2)


def test_unknown_activation_and_missing_file():
    with pytest.raises(ConfigError, match="unknown activation 'swishy'"):
        build_model("mlp:4", 3, 2, activation="swishy")
    for layer in ("linear", "dropout", "sequential", "mseloss"):  # layers, not activations: Linear was inserted
        with pytest.raises(ConfigError, match=rf"unknown activation '{layer}' \(known: ELU, GELU, Identity, "):
            build_model("mlp:4", 3, 2, activation=layer)
    assert isinstance(build_model("mlp:4", 3, 2, activation="none")[2], nn.Identity)
    with pytest.raises(ConfigError, match="no such file"):
        parse_spec("nothere.toml")


def test_losses_and_optimizers_by_name():
    m = build_model("mlp:4", 3, 2)
    assert isinstance(make_loss(None, "classification"), nn.CrossEntropyLoss)
    assert isinstance(make_loss("mse", "classification"), nn.MSELoss)
    with pytest.raises(ConfigError, match=r"^unknown loss 'nope' \(known: BCELoss, BCEWithLogitsLoss, CrossE"):
        make_loss("nope", "regression")  # it said 'nopeLoss' and listed every layer as a loss
    assert isinstance(make_optimizer("adamw", m.parameters(), lr=0.1), optim.AdamW)
    o = make_optimizer("SGD", m.parameters(), lr=0.1, momentum=0.9)
    assert o.param_groups[0]["momentum"] == 0.9
    for bad in (lambda: make_optimizer("sgd", m.parameters(), lr=-1.0), lambda: make_optimizer("nadamx", [])):
        with pytest.raises(ConfigError):
            bad()
    assert find_class("leaky-relu".replace("-", "_"), nn, nn.Module, "x") if hasattr(nn, "LeakyReLU") else True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["type", "out_features", "x"]), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(json_values | st.text(max_size=20))
def test_fuzz_spec_builds_or_config_error(spec):
    try:
        build_model(spec, 3, 2)
    except ConfigError as e:
        assert str(e)


def test_new_nn_layers_by_name_tuple_outputs_and_last(monkeypatch, tmp_path):
    """A layer added to chainrule.nn later works by name; tuple outputs (as GRU's) are wrapped with Select."""
    import chainrule as cr
    from chainrule.serialize import load, save
    from chainrule.train import predict

    class Seq2(nn.Module):  # (N, L, F) -> ((N, L, hidden), None), like a batch_first recurrent layer
        def __init__(self, input_size, hidden_size, generator=None):
            super().__init__()
            self.input_size, self.hidden_size = input_size, hidden_size
            self.w = nn.Parameter(
                (generator.np if generator else np.random.default_rng(0))
                .standard_normal((input_size, hidden_size))
                .astype(np.float32)
            )

        def forward(self, x):
            return (x @ self.w).tanh(), None

    monkeypatch.setattr(nn, "Seq2", Seq2, raising=False)
    spec = [
        {"type": "Unflatten", "dim": 1, "unflattened_size": [4, 1]},
        {"type": "seq2", "hidden_size": 3},
        {"type": "Last"},
        {"type": "Linear"},
    ]
    m = build_model(spec, 4, 2, seed=0)
    assert m._chainrule_spec["layers"][1] == {"type": "Seq2", "hidden_size": 3, "input_size": 1, "select": 0}
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y = m(cr.tensor(x))
    assert y.shape == (2, 2)
    save(m, tmp_path / "m.npz")
    assert np.array_equal(predict(load(tmp_path / "m.npz"), x), predict(m, x))


def test_yaml_spec(tmp_path):
    (tmp_path / "m.yaml").write_text("layers:\n  - {type: Linear, out_features: 4}\n  - type: ReLU\n  - type: Linear\n")
    m = build_model(str(tmp_path / "m.yaml"), 3, 2, seed=0)
    assert types(m) == ["Linear", "ReLU", "Linear"]
    (tmp_path / "bad.yaml").write_text("layers: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        parse_spec(str(tmp_path / "bad.yaml"))


# ----------------------------------------------------------------------------- learning-rate schedulers


def test_parse_scheduler_forms() -> None:
    from chainrule.spec import parse_scheduler

    assert parse_scheduler("cosine") == ("cosine", {})
    assert parse_scheduler("step:step_size=10,gamma=0.5") == ("step", {"step_size": 10, "gamma": 0.5})
    assert parse_scheduler("multistep:milestones=10/20") == ("multistep", {"milestones": [10, 20]})
    assert parse_scheduler("plateau:mode=max,factor=1e-1") == ("plateau", {"mode": "max", "factor": 0.1})
    assert parse_scheduler({"name": "step", "step_size": 3}) == ("step", {"step_size": 3})
    with pytest.raises(ConfigError, match="not key=value"):
        parse_scheduler("step:10")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        parse_scheduler({"step_size": 3})


def test_scheduler_option_that_is_not_a_number_refused_before_training() -> None:
    """step_size=x built a StepLR that raised TypeError at its first step, mid-training, leaving a partial run."""
    from chainrule import nn, optim
    from chainrule.spec import make_scheduler

    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    for spec, match in [
        ("step:step_size=x", "scheduler StepLR: option 'step_size' must be a number, got 'x'"),
        ({"name": "exponential", "gamma": "0.9"}, "option 'gamma' must be a number, got '0.9'"),
        ("multistep:milestones=2/a", r"option 'milestones' must be a number, got \['2/a'\]"),
        ("step:step_size=0", "^StepLR: step_size must be a positive number of epochs, got 0$"),  # named once
        ("cosine:T_max=-1", "^CosineAnnealingLR: T_max must be positive, got -1$"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make_scheduler(spec, opt, epochs=4)
    assert make_scheduler("plateau:mode=max", opt, epochs=4).mode == "max"  # a word where the option takes one


def test_make_scheduler_matches_torch_schedule() -> None:
    import torch

    from chainrule import nn, optim
    from chainrule.spec import make_scheduler

    for spec, make_torch in [
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8)),
        ("step:step_size=3,gamma=0.5", lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        ("multistep:milestones=2/5", lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5])),
        ("exponential:gamma=0.9", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    ]:
        ours = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        theirs = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        s1, s2 = make_scheduler(spec, ours, epochs=8), make_torch(theirs)
        for _ in range(8):
            ours.step()
            theirs.step()
            s1.step()
            s2.step()
            assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12), spec


def test_train_with_scheduler_logs_the_schedule_and_resumes(tmp_path) -> None:
    import json

    from chainrule.job import run_training, validate_config

    cfg = validate_config(
        {"data": "xor", "epochs": 5, "optimizer": "sgd", "lr": 0.2, "scheduler": "step:step_size=2,gamma=0.5"}
    )
    run_training({**cfg, "out": str(tmp_path / "r"), "plot": False}, quiet=True)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05])
