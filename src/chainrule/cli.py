"""The `chainrule` command. Each subcommand parses its options here and calls the library.

User errors (`ChainruleError`, bad options) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ChainruleError, ConfigError, ModelFileError

EPILOG = """examples:
  chainrule train                        train the default MLP on the digits dataset (under a minute)
  chainrule train --data moons --model mlp:16,16 --epochs 200
  chainrule evaluate runs/digits-...     accuracy of a trained run on its test split
  chainrule predict runs/my-run new.csv -o predictions.csv
  chainrule export runs/digits-... --format onnx -o model.onnx   the trained model as ONNX
  chainrule datasets                     the built-in datasets, one line each
  chainrule plot runs/moons-...          loss curves and decision boundary as PNG
  chainrule example                      walk through one step of backpropagation on the reference example
  chainrule explain --model mlp:3 --inputs "1,2;3,4" --targets "0.5;1"   trace one step of a small network
"""

TRAIN_EPILOG = """examples:
  chainrule train                                   MLP on digits, Adam, 75/25 split: prints test accuracy
  chainrule train --data xor --model mlp:8 --activation tanh --epochs 300 --lr 0.01
  chainrule train --data sine --model mlp:32,32 --loss mse --optimizer sgd --lr 0.05 --momentum 0.9
  chainrule train --optimizer sgd --lr 0.1 --epochs 40 --scheduler cosine    lr annealed to 0 over the 40 epochs
  chainrule train --data my.csv --target price --val-split 0.2 --early-stopping 10
  chainrule train job.toml --epochs 50              options from a TOML/JSON file, overridden on the line
  chainrule train --resume runs/digits-20260101-120000   continue an interrupted run
  mpiexec -n 2 chainrule train --distributed       data-parallel over 2 MPI ranks (docs/distributed.md)

a CONFIG file holds the same options as keys (batch_size, val_split, ...); "model" may also be a list
of layers, e.g. [{type = "Linear", out_features = 64}, {type = "ReLU"}, {type = "Linear"}], and "scheduler"
a table, e.g. {name = "step", step_size = 10, gamma = 0.5}.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (status 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _batch_size(s: str) -> int | None:
    if s.lower() in ("full", "none", "all"):
        return None
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {s!r}")
    return v


# ----------------------------------------------------------------------------- example (chainrule.explain)


def _cmd_example(args: argparse.Namespace) -> int:
    from .explain import run_example_cli

    return run_example_cli(args)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import run_explain_cli

    return run_explain_cli(args)


def _add_example(sub: argparse._SubParsersAction) -> None:
    from .explain import add_example_arguments, add_explain_arguments

    p = sub.add_parser(
        "example",
        help="the reference example, every number of one learning step",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_example_arguments(p)
    p.set_defaults(func=_cmd_example)
    p = sub.add_parser(
        "explain",
        help="trace any small network: every node's value and gradient, every update",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_explain_arguments(p)
    p.set_defaults(func=_cmd_explain)


# ----------------------------------------------------------------------------- train

_TRAIN_KEYS = (
    "data",
    "target",
    "header",
    "delimiter",
    "task",
    "model",
    "activation",
    "loss",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "scheduler",
    "epochs",
    "tol",
    "patience",
    "early_stopping",
    "target_loss",
    "grad_clip",
    "val_split",
    "test_split",
    "seed",
    "n_samples",
    "out",
    "checkpoint_every",
    "detect_anomaly",
)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network and write a run directory",
        description="Train a network by gradient descent; writes model, checkpoint, metrics log and plots.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="TOML or JSON file with options")
    p.add_argument("--data", metavar="NAME|PATH", help="built-in dataset or .csv/.npz/.npy file (default: digits)")
    p.add_argument("--target", metavar="COL", help="target column of a CSV, by name or index (default: last)")
    p.add_argument("--task", choices=("classification", "regression"), help="override the inferred task")
    p.add_argument("--delimiter", metavar="CHAR", help="CSV delimiter, or 'tab' (default: detected from , ; tab |)")
    hdr = p.add_mutually_exclusive_group()
    hdr.add_argument("--header", dest="header", action="store_const", const=True, help="the CSV has a header row")
    hdr.add_argument("--no-header", dest="header", action="store_const", const=False, help="the CSV has no header")
    p.add_argument(
        "--model", metavar="SPEC", help="mlp:64,64 | linear | cnn1d:32,32 | JSON list | file (default: mlp:128)"
    )
    p.add_argument("--activation", help="activation between hidden layers (default: relu)")
    p.add_argument("--loss", help="cross_entropy | mse | any chainrule.nn loss (default: from the task)")
    p.add_argument("--optimizer", help="sgd | adam | adamw | ... (default: adam)")
    p.add_argument("--lr", type=float, help="learning rate (default: 0.001 for Adam, 0.1 for SGD)")
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--weight-decay", type=float)
    p.add_argument(
        "--scheduler",
        metavar="NAME[:K=V,...]",
        help="learning-rate schedule, stepped each epoch: cosine | step:step_size=10,gamma=0.5 | "
        "multistep:milestones=10/20 | exponential:gamma=0.95 | linear | plateau:factor=0.5,patience=2 (default: none)",
    )
    p.add_argument("--epochs", type=int, help="epoch budget (default: 30)")
    p.add_argument("--batch-size", type=_batch_size, default=argparse.SUPPRESS, help="samples per step or 'full'")
    p.add_argument("--tol", type=float, help="converged when the loss improves by less than this ...")
    p.add_argument("--patience", type=int, help="... for this many epochs in a row (default: 5)")
    p.add_argument("--early-stopping", type=int, metavar="N", help="stop when val loss stalls N epochs")
    p.add_argument("--target-loss", type=float, help="stop when the training loss reaches this")
    p.add_argument("--grad-clip", type=float, metavar="NORM", help="scale gradients to at most this global L2 norm")
    p.add_argument("--val-split", type=float, help="fraction of the data held out for validation (default 0)")
    p.add_argument("--test-split", type=float, help="fraction held out for the final test (default 0.25)")
    p.add_argument("--seed", type=int, help="seed of the split, initial weights and batch order (default 0)")
    p.add_argument("--samples", dest="n_samples", type=int, help="number of samples of a synthetic dataset")
    p.add_argument("--no-standardize", action="store_true", help="do not standardize the inputs")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="epochs between checkpoints (default 1)")
    p.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    p.add_argument(
        "--detect-anomaly", action="store_true", default=None, help="name the op that makes the first NaN/Inf"
    )
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<data>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI ranks: mpiexec -n N chainrule train --distributed (needs chainrule[mpi])",
    )
    p.add_argument(
        "--allreduce-timeout",
        type=float,
        metavar="SECONDS",
        default=300.0,
        help="with --distributed: fail when a collective takes longer, e.g. a rank died (default 300)",
    )
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    if not args.distributed:
        return _train(args, None)
    from .distributed import Communicator, DistributedError

    if not args.allreduce_timeout > 0:
        raise ConfigError(f"--allreduce-timeout must be positive, got {args.allreduce_timeout}")
    comm = Communicator(timeout=args.allreduce_timeout)
    try:
        return _train(args, comm)
    except DistributedError as e:
        # the other ranks may never answer again: MPI_Finalize at exit could hang, so abort the whole job
        print(f"chainrule train: error: {e}", file=sys.stderr, flush=True)
        import time

        time.sleep(0.5)  # let mpiexec forward the message before MPI_Abort tears the job down
        comm.abort(2)
        raise


def _train(args: argparse.Namespace, comm: Any) -> int:
    from .job import run_training, validate_config
    from .spec import read_config_file

    cfg: dict[str, Any] = {}
    if args.delimiter in ("\\t", "tab"):
        args.delimiter = "\t"
    if args.config:
        if args.resume:
            raise ConfigError("give either a CONFIG file or --resume DIR, not both")
        loaded = read_config_file(args.config)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a table of options, got {type(loaded).__name__}")
        cfg.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for k in _TRAIN_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            cfg[k] = v
    if hasattr(args, "batch_size"):
        cfg["batch_size"] = args.batch_size
    if args.no_standardize:
        cfg["standardize"] = False
    if args.no_plot:
        cfg["plot"] = False
    if args.resume:
        extra = sorted(set(cfg) - {"epochs", "plot"})
        if extra:
            raise ConfigError(f"--resume continues the saved run; only --epochs may change (got {', '.join(extra)})")
        summary = run_training(
            {k: cfg.get(k) for k in ("epochs", "plot")}, resume_dir=args.resume, quiet=args.quiet, distributed=comm
        )
    else:
        if args.config:  # its errors name the file (run_training's would say "config")
            validate_config(cfg, args.config)
        summary = run_training(cfg, quiet=args.quiet, distributed=comm)
    if comm is not None and not comm.is_main:
        return 0
    m = summary["metrics"]
    where = summary["evaluated_on"]
    if "accuracy" in m:  # classification, or a BCE loss on 0/1 targets
        print(f"{where} accuracy: {m['accuracy']:.4f}  ({where} loss {m['loss']:.4g})")
    else:
        print(f"{where} R²: {m['r2']:.4f}  MSE {m['mse']:.4g}  MAE {m['mae']:.4g}")
    print(f"stopped: {summary['message']} ({summary['epochs_run']} epochs, {summary['seconds']:.1f} s)")
    print(f"run saved in {summary['run_dir']}  (model: {summary['model']})")
    return 0


# ----------------------------------------------------------------------------- evaluate / predict


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="loss and metrics of a trained model on data",
        description="Evaluate a trained model (a run directory or model file) on a dataset.",
        epilog="examples:\n  chainrule evaluate runs/digits-20260101-120000            on the run's own test split\n"
        "  chainrule evaluate model.safetensors --data test.csv --target label\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="RUN_OR_MODEL")
    p.add_argument("--data", metavar="NAME|PATH", help="dataset name or file (default: the run's test split)")
    p.add_argument("--target", metavar="COL", help="target column of a CSV (default: as in training, else last)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_csv
    from .errors import DataError
    from .job import load_bundle, load_trained, prepare, prepare_inputs, run_config
    from .train import evaluate

    model, meta, loss_fn = load_trained(args.model)
    task, classes = meta.get("task"), meta.get("classes")
    if args.data is None:
        run = Path(args.model)
        if not (run.is_dir() and (run / "config.json").exists()):
            raise ConfigError("--data is required unless RUN_OR_MODEL is a run directory")
        cfg = run_config(run)
        prep = prepare(cfg)
        scaler, saved = (prep.scaler.to_dict() if prep.scaler else None), meta.get("scaler")
        same_split = "scaler" not in meta or (
            (saved is None) == (scaler is None)
            and (saved is None or all(_close(saved[k], scaler[k]) for k in ("mean", "std")))
        )
        data = meta.get("data", cfg["data"])
        if data != cfg["data"] or not same_split:
            what = f"data {cfg['data']!r}, the model {data!r}" if data != cfg["data"] else "another split or scaling"
            raise ModelFileError(
                f"{run}/config.json does not match the run's model ({what}): was it, or the data, changed?"
            )
        x, y = prep.test or prep.val or prep.train
        source = f"{cfg['data']} (test split)"
    else:
        source = args.data
        if args.data.lower().endswith((".csv", ".txt", ".tsv")):
            target = args.target if args.target is not None else (meta.get("target_name") or -1)
            b = load_csv(args.data, target=target, task=task, classes=classes if task == "classification" else None)
        else:
            b = load_bundle(args.data, args.target, task)
            if task == "classification" and b.classes != classes:
                index = {c: i for i, c in enumerate(classes or [])}
                labels = [b.classes[i] for i in b.y.tolist()]
                bad = [i for i, v in enumerate(labels) if v not in index]
                if bad:
                    raise DataError(f"{args.data}: sample {bad[0]}: label {labels[bad[0]]!r} not in {classes}")
                b.y = np.array([index[v] for v in labels], dtype=np.int64)
        x, y = prepare_inputs(b.x, meta, args.data), b.y
    m = evaluate(model, loss_fn, (x, y))
    if args.json:
        print(json.dumps({"data": source, "samples": len(x), **m}))
    else:
        print(f"{source}: {len(x)} samples  " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    return 0


def _close(a: Any, b: Any) -> bool:
    """Two saved standardizer vectors: the same length and values (to rounding across machines)."""
    import numpy as np

    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-6)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predictions of a trained model for a CSV of inputs",
        description="Write the model's prediction for each row of INPUT (CSV) as a new column.",
        epilog="examples:\n  chainrule predict runs/my-run new.csv -o predictions.csv\n"
        "  chainrule predict model.safetensors new.csv            (to standard output)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="RUN_OR_MODEL")
    p.add_argument("input", metavar="INPUT.csv")
    p.add_argument("-o", "--output", metavar="OUT.csv", help="output file (default: standard output)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .data import load_csv
    from .job import input_width, load_trained, prepare_inputs
    from .serialize import atomic_write_text
    from .train import predict

    model, meta, _ = load_trained(args.model)
    names = meta.get("feature_names")
    b = load_csv(args.input, target=None, feature_names=names)
    width = input_width(meta)
    if b.x.shape[1] != width:
        raise ChainruleError(f"{args.input}: the model expects {width} input columns, the file has {b.x.shape[1]}")
    out = predict(model, prepare_inputs(b.x, meta, args.input))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = list(b.feature_names or [])
    if meta.get("task") == "classification":
        classes = meta.get("classes") or list(range(out.shape[1]))
        w.writerow([*header, "prediction"])
        for row, o in zip(b.x.tolist(), out.argmax(axis=1).tolist()):
            w.writerow([*(f"{v:.9g}" for v in row), classes[o]])
    else:
        outs = out.reshape(len(out), -1)
        cols = ["prediction"] if outs.shape[1] == 1 else [f"prediction_{i}" for i in range(outs.shape[1])]
        w.writerow([*header, *cols])
        for row, o in zip(b.x.tolist(), outs.tolist()):
            w.writerow([*(f"{v:.9g}" for v in row), *(f"{v:.9g}" for v in o)])
    if args.output:
        try:
            atomic_write_text(args.output, buf.getvalue())
        except OSError as e:
            raise ConfigError(f"{args.output}: cannot write ({e.strerror or e})") from None
        print(f"wrote {len(out)} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(buf.getvalue())
    return 0


# ----------------------------------------------------------------------------- export

_EXPORT_FORMATS = {".onnx": "onnx", ".safetensors": "safetensors", ".npz": "npz"}


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model as ONNX (or as a safetensors/npz model file)",
        description="Export a trained model (a run directory, model file or checkpoint). ONNX (needs the onnx extra) "
        "takes raw input rows of the spec's input shape, with any batch size; the run's input standardization is "
        "part of the graph unless --no-standardize. Outputs are the model's raw outputs (logits for classification).",
        epilog="examples:\n  chainrule export runs/digits-20260101-120000 --format onnx -o digits.onnx\n"
        "  chainrule export runs/my-run -o model.npz             a plain model file (format from the extension)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="RUN_OR_MODEL")
    p.add_argument("--format", choices=("onnx", "safetensors", "npz"), help="default: from -o's extension, else onnx")
    p.add_argument("-o", "--output", metavar="PATH", help="output file (default: model.<format> beside the model)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--no-standardize", action="store_true", help="ONNX: leave the input standardization out")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from .job import find_model, load_trained

    fmt = args.format or _EXPORT_FORMATS.get(Path(args.output or "").suffix.lower(), "onnx")
    suffix = {v: k for k, v in _EXPORT_FORMATS.items()}[fmt]
    given = Path(args.output).suffix.lower() if args.output else suffix
    if given != suffix and given in _EXPORT_FORMATS:
        raise ConfigError(f"-o {args.output} does not end in {suffix}, as --format {fmt} writes")
    out = Path(args.output) if args.output else find_model(args.model).with_name(f"model{suffix}")
    model, meta, _ = load_trained(args.model)
    if fmt != "onnx":
        from .serialize import save

        keep = ("task", "classes", "feature_names", "target_name", "scaler", "loss", "data", "metrics")
        save(model, str(out), **{k: meta[k] for k in keep if k in meta})
        print(f"wrote {out}")
        return 0
    from .onnx import export

    spec = meta["spec"]
    example = np.zeros((1, *spec["input_shape"]), dtype=np.dtype(spec.get("dtype", "float32")))
    scaler = meta.get("scaler") if not args.no_standardize else None
    standardize = (scaler["mean"], scaler["std"]) if scaler else None
    export(model, example, str(out), opset=args.opset, standardize=standardize)
    shape = ", ".join(["batch", *map(str, spec["input_shape"])])
    what = "raw inputs (standardized inside)" if standardize else "inputs"
    print(f"wrote {out}: input 'input' ({shape}) {what}, output 'output'")
    return 0


# ----------------------------------------------------------------------------- datasets / plot


def _add_datasets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "datasets",
        help="list the built-in datasets",
        description="The built-in datasets, one line each. None downloads anything.",
        epilog="examples:\n  chainrule datasets\n  chainrule train --data spirals --model mlp:32,32\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from .data.builtin import DATASETS

    width = max(len(k) for k in DATASETS)
    for name, (_, desc) in DATASETS.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG plots of a run: loss/metric curves, decision boundary for 2-D data",
        description="Write curves.png (and boundary.png for 2-D inputs) into a run directory (needs matplotlib).",
        epilog="examples:\n  chainrule plot runs/moons-20260101-120000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    for path in plot_run(args.run):
        print(path)
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chainrule",
        description="Neural networks that learn by backpropagation, with every number explained.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"chainrule {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_datasets(sub)
    _add_plot(sub)
    _add_example(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ChainruleError as e:
        print(f"chainrule {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"chainrule {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a full disk, a read-only or vanished folder: one line, nothing half-written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"chainrule {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
