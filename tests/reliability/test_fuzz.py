"""Property fuzzing: the model-spec parser, config files and the CLI arguments of every command either work
or raise the project's own error (the CLI: exit status 2 with one line); no other exception escapes."""

import json
import string

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainrule.cli import main
from chainrule.errors import ChainruleError
from chainrule.job import validate_config
from chainrule.spec import build_model, parse_spec, read_config_file

_names = st.sampled_from(
    ["Linear", "linear", "relu", "ReLU", "Tanh", "Conv1d", "LSTM", "GRU", "Dropout", "Flatten", "BatchNorm1d"]
    + ["Embedding", "Softmax", "LayerNorm", "Sequential", "Module", "os", "__init__", "", "x" * 3, "MaxPool1d"]
)
_small = st.one_of(
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(-1, 4), max_size=3),
)
_keys = st.sampled_from(
    ["out_features", "in_features", "kernel_size", "out_channels", "hidden_size", "p", "dim", "select"]
    + ["bias", "stride", "padding", "num_layers", "normalized_shape", "num_embeddings", "embedding_dim", "bogus"]
)
_layer = st.one_of(
    _names,
    st.fixed_dictionaries({"type": _names}, optional={}).flatmap(
        lambda d: st.dictionaries(_keys, _small, max_size=3).map(lambda extra: {**d, **extra})
    ),
    _small,
)
_spec = st.one_of(
    st.lists(_layer, max_size=4),
    st.builds(lambda layers: {"layers": layers}, st.lists(_layer, max_size=3)),
    st.text(alphabet=string.ascii_letters + string.digits + ':,-[]{}" .', max_size=20),
    st.sampled_from(["mlp:", "mlp:4,", "mlp:0", "mlp:-1", "cnn1d:2", "cnn1d:", "linear", "mlp:4,4", "rnn:3"]),
    _small,
)


@settings(max_examples=300, deadline=None)
@given(spec=_spec, shape=st.sampled_from([(3,), (2, 5), (1, 8), ()]), out=st.sampled_from([1, 2, None]))
def test_fuzz_model_spec(spec, shape, out):
    try:
        with np.errstate(all="ignore"):
            m = build_model(spec, shape, out, seed=0)
    except ChainruleError as e:
        assert str(e)
    else:
        assert m._chainrule_spec["layers"]
    try:
        parse_spec(json.dumps(spec) if not isinstance(spec, str) else spec)
    except ChainruleError as e:
        assert str(e)
    except (TypeError, ValueError):  # json.dumps of NaN etc. is fine to refuse before the parser
        pass


_text = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.builds(lambda d: json.dumps(d), st.dictionaries(st.text(max_size=8), _small, max_size=4)),
    st.builds(
        lambda k, v: f"{k} = {v}\n",
        st.sampled_from(["epochs", "lr", "model", "batch_size", "x"]),
        st.sampled_from(["3", "-1", '"a"', "[1, 2]", "{a = 1}", "nan", "inf", "true", "1e999", "'mlp:2'"]),
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_text, ext=st.sampled_from([".json", ".toml", ".cfg"]), raw=st.booleans())
def test_fuzz_config_files(tmp_path, text, ext, raw):
    p = tmp_path / f"c{ext}"
    p.write_bytes(text.encode("latin-1", "replace") if raw else text.encode("utf-8", "surrogatepass"))
    try:
        cfg = read_config_file(p)
        validate_config(cfg, str(p))
    except ChainruleError as e:
        assert str(e)


_tok = st.sampled_from(
    ["train", "evaluate", "predict", "datasets", "plot", "example", "explain", "--data", "xor", "moons", "-o"]
    + ["--epochs", "0", "1", "-1", "--model", "mlp:2", "mlp:", "--json", "--target", "y", "nope", "r", "x.csv"]
    + ["--lr", "nan", "--batch-size", "full", "--resume", "--out", "--quiet", "-q", "--no-plot", "--", "é", ""]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(_tok, min_size=1, max_size=6))
def test_fuzz_cli_arguments(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "train":
        argv = [*argv, "--epochs", "0", "--no-plot", "-q"]
    try:
        code = main(argv)
    except SystemExit as e:  # --help / --version
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if code == 2 and err.strip() and not err.startswith("usage"):
        assert len(err.strip().splitlines()) == 1, err
