"""A training job as the `chainrule` command runs it: config -> data -> model -> fit -> run directory.

A run directory holds config.json (the resolved job), checkpoint.safetensors, metrics.jsonl,
model.safetensors (spec, weights, preprocessing, class labels), results.json and PNG plots.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataBundle, Standardizer, load_dataset, load_file, train_val_test_split
from .data.builtin import DATASETS
from .errors import ChainruleError, ConfigError, DataError, ModelFileError, TrainingError
from .random import manual_seed
from .serialize import atomic_write_text, default_extension, load_with_metadata, save
from .spec import build_model, make_loss, make_optimizer, make_scheduler, parse_spec
from .tensor import Tensor, no_grad
from .train import checkpoint_path, evaluate, fit

DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "target": None,
    "header": None,
    "delimiter": None,
    "task": None,
    "model": "mlp:128",
    "activation": "relu",
    "loss": None,
    "optimizer": "adam",
    "lr": None,
    "momentum": None,
    "weight_decay": None,
    "scheduler": None,
    "epochs": 30,
    "batch_size": 32,
    "tol": None,
    "patience": 5,
    "early_stopping": None,
    "target_loss": None,
    "grad_clip": None,
    "val_split": 0.0,
    "test_split": 0.25,
    "standardize": True,
    "seed": 0,
    "n_samples": None,
    "out": None,
    "checkpoint_every": 1,
    "plot": True,
    "detect_anomaly": False,
}
DEFAULT_LR = {"sgd": 0.1}

_TYPES: dict[str, tuple[type, ...]] = {
    "data": (str,),
    "target": (str, int),
    "header": (bool,),
    "delimiter": (str,),
    "task": (str,),
    "model": (str, list, dict),
    "activation": (str,),
    "loss": (str,),
    "optimizer": (str,),
    "lr": (int, float),
    "momentum": (int, float),
    "weight_decay": (int, float),
    "scheduler": (str, dict),
    "epochs": (int,),
    "batch_size": (int,),
    "tol": (int, float),
    "patience": (int,),
    "early_stopping": (int,),
    "target_loss": (int, float),
    "grad_clip": (int, float),
    "val_split": (int, float),
    "test_split": (int, float),
    "standardize": (bool,),
    "seed": (int,),
    "n_samples": (int,),
    "out": (str,),
    "checkpoint_every": (int,),
    "plot": (bool,),
    "detect_anomaly": (bool,),
}


def validate_config(cfg: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check keys, types and ranges; returns the config merged over DEFAULTS. Errors name the key."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: expected a table of options, got {type(cfg).__name__}")
    if "batch-size" in cfg or any("-" in k for k in cfg):
        cfg = {k.replace("-", "_"): v for k, v in cfg.items()}
    for k, v in cfg.items():
        if k not in DEFAULTS:
            raise ConfigError(f"{source}: unknown key {k!r} (known: {', '.join(DEFAULTS)})")
        if v is None:
            continue
        types = _TYPES[k]
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            raise ConfigError(f"{source}: {k} must be {' or '.join(t.__name__ for t in types)}, got {v!r}"[:300])
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None or k in ("batch_size",)}}
    if "batch_size" in cfg and cfg["batch_size"] is None:
        out["batch_size"] = None

    def positive(key: str, allow_zero: bool = False) -> None:
        v = out[key]
        if v is None:
            return
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{source}: {key} must be a finite number, got {v}")
        if v < 0 or (v == 0 and not allow_zero):
            raise ConfigError(f"{source}: {key} must be {'>= 0' if allow_zero else 'positive'}, got {v}")

    for key in ("lr", "batch_size", "patience", "checkpoint_every", "early_stopping", "n_samples", "grad_clip"):
        positive(key)
    for key in ("epochs", "tol", "momentum", "weight_decay"):
        positive(key, allow_zero=True)
    if out["target_loss"] is not None and not math.isfinite(out["target_loss"]):
        raise ConfigError(f"{source}: target_loss must be a finite number")
    for key in ("val_split", "test_split"):
        if not 0 <= out[key] < 1:
            raise ConfigError(f"{source}: {key} must be a fraction in [0, 1), got {out[key]}")
    if out["val_split"] + out["test_split"] >= 1:
        raise ConfigError(f"{source}: val_split + test_split must be below 1")
    if out["delimiter"] is not None and len(out["delimiter"]) != 1:
        raise ConfigError(f"{source}: delimiter must be one character, got {out['delimiter']!r}")
    if out["task"] not in (None, "classification", "regression"):
        raise ConfigError(f"{source}: task must be 'classification' or 'regression', got {out['task']!r}")
    if out["early_stopping"] is not None and out["val_split"] == 0:
        raise ConfigError(f"{source}: early_stopping needs a validation split (val_split > 0)")
    if not isinstance(out["model"], str):
        parse_spec(out["model"])
    if out["seed"] < 0:
        raise ConfigError(f"{source}: seed must be >= 0, got {out['seed']}")
    return out


def load_bundle(
    data: str, target: Any = None, task: str | None = None, seed: int = 0, n: int | None = None, **csv: Any
) -> DataBundle:
    """A built-in dataset by name, or a .csv/.npz/.npy file by path (`csv`: header, delimiter)."""
    key = data.lower().replace("_", "-")
    if key in DATASETS and not os.path.exists(data):
        return load_dataset(key, seed=seed, n=n)
    if os.path.exists(data) or any(c in data for c in "/\\.") or data.lower().endswith((".csv", ".npz", ".npy")):
        csv = {k: v for k, v in csv.items() if v is not None}
        return load_file(data, target=-1 if target is None else target, task=task, **csv)
    return load_dataset(data)  # raises the unknown-dataset error


@dataclass
class Prepared:
    bundle: DataBundle
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None
    test: tuple[np.ndarray, np.ndarray] | None
    scaler: Standardizer | None


def prepare(cfg: dict[str, Any]) -> Prepared:
    b = load_bundle(
        cfg["data"],
        cfg["target"],
        cfg["task"],
        cfg["seed"],
        cfg["n_samples"],
        header=cfg["header"],
        delimiter=cfg["delimiter"],
    ).check()
    if b.x_test is not None:
        (xtr, ytr), (xva, yva), _ = train_val_test_split(b.x, b.y, cfg["val_split"], 0.0, cfg["seed"])
        xte, yte = b.x_test, b.y_test
    elif len(b.x) == 1:
        xtr, ytr, xva, yva, xte, yte = b.x, b.y, b.x[:0], b.y[:0], b.x[:0], b.y[:0]
    else:
        (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(
            b.x, b.y, cfg["val_split"], cfg["test_split"], cfg["seed"]
        )
    scaler = None
    if cfg["standardize"] and len(xtr) > 1:
        scaler = Standardizer().fit(xtr)
        xtr, xva, xte = scaler.transform(xtr), scaler.transform(xva), scaler.transform(xte)
    if b.task == "classification" and len(np.unique(ytr)) < 2:
        raise DataError(f"{b.name}: the training split has a single class; need at least two")
    return Prepared(b, (xtr, ytr), (xva, yva) if len(xva) else None, (xte, yte) if len(xte) else None, scaler)


def _default_out(cfg: dict[str, Any]) -> Path:
    base = Path("runs") / f"{Path(str(cfg['data'])).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    p, i = base, 1
    while p.exists():
        p, i = Path(f"{base}-{i}"), i + 1
    return p


def build(cfg: dict[str, Any], prep: Prepared):
    manual_seed(cfg["seed"])
    b = prep.bundle
    n = len(prep.train[0])
    bs = min(cfg["batch_size"] or n, n)  # no batch is larger than the training set
    model = build_model(
        cfg["model"], prep.train[0].shape[1:], b.out_features, cfg["activation"], seed=cfg["seed"], batch_size=bs
    )
    loss_fn = make_loss(cfg["loss"], b.task)
    opt_name = cfg["optimizer"]
    lr = cfg["lr"] if cfg["lr"] is not None else DEFAULT_LR.get(str(opt_name).lower(), 1e-3)
    opts = {"momentum": cfg["momentum"], "weight_decay": cfg["weight_decay"]}
    optimizer = make_optimizer(opt_name, model.parameters(), lr=lr, **opts)
    scheduler = make_scheduler(cfg["scheduler"], optimizer, cfg["epochs"]) if cfg["scheduler"] is not None else None
    x, y = prep.train
    try:  # one forward pass on two samples, so a loss that does not fit the task fails before anything is written
        with no_grad():
            loss_fn(model(Tensor(x[:2])), Tensor(y[:2]))
    except ChainruleError as e:
        raise ConfigError(f"loss {type(loss_fn).__name__} does not fit the {b.task} data: {e}") from None
    except (ValueError, TypeError, IndexError) as e:
        raise ConfigError(f"model and loss do not fit the data ({type(e).__name__}: {e})") from None
    return model, loss_fn, optimizer, scheduler


def run_training(
    cfg: dict[str, Any], resume_dir: str | None = None, quiet: bool = False, distributed: Any = None
) -> dict[str, Any]:
    """Train as configured; returns a summary dict (test metrics, run directory, stop reason...).

    With a `distributed` Communicator (one call per MPI rank) training is data-parallel; only rank 0 creates
    and writes the run directory (its name is broadcast), the other ranks only read a checkpoint to resume.
    """
    if resume_dir is not None:
        out = Path(resume_dir)
        if not (out / "config.json").exists():
            raise ModelFileError(f"{out}: not a run directory (no config.json)")
        saved = read_run_config(out)
        for key in ("epochs", "plot"):  # what a resume may change
            if cfg.get(key) is not None:
                saved[key] = cfg[key]
        cfg = validate_config(saved, f"{out}/config.json")
    else:
        cfg = validate_config(cfg)
    prep = prepare(cfg)
    model, loss_fn, optimizer, scheduler = build(cfg, prep)  # all checks pass before anything is written
    if resume_dir is None:
        out = Path(cfg["out"]) if cfg["out"] else _default_out(cfg)
        if distributed is not None:
            out = Path(distributed.broadcast_str(str(out)))
        cfg["out"] = str(out)
        if distributed is None:
            _create_run_dir(out, cfg)
        else:
            distributed.on_main(lambda: _create_run_dir(out, cfg), "creating the run directory")
    try:
        return _train_in(
            cfg, prep, model, loss_fn, optimizer, scheduler, out, resume_dir is not None, quiet, distributed
        )
    except KeyboardInterrupt as e:
        msg = str(e) if "resume with" in str(e) else f"interrupted; resume with: chainrule train --resume {out}"
        raise KeyboardInterrupt(msg) from None


def _create_run_dir(out: Path, cfg: dict[str, Any]) -> None:
    if out.exists() and (checkpoint_path(out).exists() or (out / "config.json").exists()):
        raise ConfigError(f"{out}: already holds a run; resume it with --resume {out} or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{out}: cannot create the run directory ({e.strerror or e})") from None
    atomic_write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")


def _train_in(
    cfg: dict[str, Any],
    prep: Prepared,
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    scheduler: Any,
    out: Path,
    resume: bool,
    quiet: bool,
    distributed: Any = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    history = fit(
        model,
        loss_fn,
        optimizer,
        prep.train,
        val_data=prep.val,
        scheduler=scheduler,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        tol=cfg["tol"],
        patience=cfg["patience"],
        target_loss=cfg["target_loss"],
        early_stopping=cfg["early_stopping"],
        grad_clip=cfg["grad_clip"],
        detect_anomaly=cfg["detect_anomaly"],
        seed=cfg["seed"],
        run_dir=out,
        checkpoint_every=cfg["checkpoint_every"],
        resume=resume,
        quiet=quiet,
        distributed=distributed,
    )
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "run_dir": str(out),
        "data": cfg["data"],
        "task": prep.bundle.task,
        "epochs_run": len(history),
        "stop_reason": history.stop_reason,
        "message": history.message,
        "seconds": seconds,
    }
    if history.stop_reason == "interrupted":
        raise KeyboardInterrupt(f"{history.message}; resume with: chainrule train --resume {out}")
    test = prep.test or prep.val or prep.train
    summary["evaluated_on"] = "test" if prep.test else ("validation" if prep.val else "train")
    summary["metrics"] = evaluate(model, loss_fn, test)  # every rank holds the same weights: same numbers
    if distributed is not None and not distributed.is_main:
        summary["model"] = str(out / f"model{default_extension()}")
        if history.stop_reason == "diverged":
            raise TrainingError(f"{history.message} (run saved in {out})")
        return summary
    meta = {
        "task": prep.bundle.task,
        "classes": prep.bundle.classes,
        "feature_names": prep.bundle.feature_names,
        "target_name": prep.bundle.target_name,
        "scaler": prep.scaler.to_dict() if prep.scaler else None,
        "loss": type(loss_fn).__name__,
        "data": cfg["data"],
        "metrics": summary["metrics"],
    }
    model_path = out / f"model{default_extension()}"
    save(model, model_path, **meta)
    summary["model"] = str(model_path)
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2, default=str) + "\n")
    if cfg["plot"]:
        try:
            from .plot import plot_run

            summary["plots"] = [str(p) for p in plot_run(out)]
        except ConfigError:
            summary["plots"] = []  # matplotlib is an extra: no plots without it
    if history.stop_reason == "diverged":
        raise TrainingError(f"{history.message} (run saved in {out})")
    return summary


# ----------------------------------------------------------------------------- using a trained model


def read_run_config(run: Path) -> dict[str, Any]:
    """The options saved in RUN/config.json, unvalidated; a damaged file is a ModelFileError naming it."""
    try:
        saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{run}: not a run directory (no config.json)") from None
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{run}/config.json: unreadable ({e})") from None
    if not isinstance(saved, dict):
        raise ModelFileError(f"{run}/config.json: unreadable (a JSON {type(saved).__name__}, not an object of options)")
    return saved


def run_config(run: Path) -> dict[str, Any]:
    """RUN/config.json read and validated (errors name the file)."""
    return validate_config(read_run_config(run), f"{run}/config.json")


def find_model(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in ("model.safetensors", "model.npz"):
            if (p / name).exists():
                return p / name
        if checkpoint_path(p).exists():
            return checkpoint_path(p)
        raise ModelFileError(f"{p}: no model or checkpoint in this directory")
    if not p.exists():
        raise ModelFileError(f"{p}: no such model file or run directory")
    return p


def load_trained(path: str | os.PathLike):
    """(model, metadata, loss_fn) of a model file, run directory or checkpoint."""
    mp = find_model(path)
    model, meta = load_with_metadata(mp)
    if meta.get("kind") == "checkpoint":
        run = mp.parent
        cfg = run_config(run)
        prep = prepare(cfg)
        meta = {
            **meta,
            "task": prep.bundle.task,
            "classes": prep.bundle.classes,
            "feature_names": prep.bundle.feature_names,
            "scaler": prep.scaler.to_dict() if prep.scaler else None,
        }
    task = meta.get("task") or "classification"
    loss_fn = make_loss(meta.get("loss"), task)
    return model, meta, loss_fn


def input_width(meta: dict[str, Any]) -> int:
    return int(np.prod(meta["spec"]["input_shape"]))


def prepare_inputs(x: np.ndarray, meta: dict[str, Any], source: str) -> np.ndarray:
    shape = tuple(meta["spec"]["input_shape"])
    if x.shape[1:] != shape:
        if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
            x = x.reshape((len(x), *shape))
        else:
            raise DataError(
                f"{source}: the model expects inputs of shape {shape} ({int(np.prod(shape))} columns), "
                f"got {x.shape[1:]}"
            )
    if meta.get("scaler"):
        x = Standardizer.from_dict(meta["scaler"]).transform(x).astype(np.float32)
    return x
