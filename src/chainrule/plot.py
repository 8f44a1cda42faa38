"""PNG plots of a run (matplotlib, extra "plot"): loss and metric curves; decision boundary for 2-D data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelFileError

CURVES = "curves.png"
BOUNDARY = "boundary.png"
SIZE = (10.0, 4.0)  # inches; at DPI this gives 1000 x 400 pixels
DPI = 100


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError('plots need matplotlib: pip install "chainrule[plot]"') from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    from .serialize import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
    return path


def plot_history(epochs: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Loss (train/val) on the left, the task's metric (accuracy or R²) on the right."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=SIZE)
    try:
        ep = [e["epoch"] for e in epochs]
        for key in ("train_loss", "val_loss"):
            vals = [e.get(key) for e in epochs]
            if any(v is not None for v in vals):
                a1.plot(ep, [np.nan if v is None else v for v in vals], label=key.replace("_", " "))
        a1.set_xlabel("epoch")
        a1.set_ylabel("loss")
        a1.set_yscale("log" if all((e.get("train_loss") or 0) > 0 for e in epochs) and epochs else "linear")
        a1.legend()
        metric = "accuracy" if any("train_accuracy" in e for e in epochs) else "r2"
        for key in (f"train_{metric}", f"val_{metric}", "train_mse"):
            vals = [e.get(key) for e in epochs]
            if any(v is not None for v in vals) and not (
                key == "train_mse" and metric == "r2" and "val_r2" in epochs[0]
            ):
                a2.plot(ep, [np.nan if v is None else v for v in vals], label=key.replace("_", " "))
        a2.set_xlabel("epoch")
        a2.set_ylabel(metric)
        a2.legend()
        fig.tight_layout()
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_decision_boundary(model: Any, x: np.ndarray, y: np.ndarray, path: str | os.PathLike) -> Path:
    """Predicted class over a grid covering x (N, 2), with the samples on top."""
    from .train import predict

    plt = _pyplot()
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * (hi - lo + 1e-9)
    gx, gy = np.meshgrid(
        np.linspace(lo[0] - pad[0], hi[0] + pad[0], 200), np.linspace(lo[1] - pad[1], hi[1] + pad[1], 200)
    )
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    out = predict(model, grid)
    z = out.argmax(axis=1) if out.ndim == 2 and out.shape[1] > 1 else out.reshape(-1)
    fig, ax = plt.subplots(figsize=(SIZE[1] * 1.25, SIZE[1]))
    try:
        ax.contourf(gx, gy, z.reshape(gx.shape), alpha=0.3, cmap="coolwarm" if out.ndim == 2 else "viridis")
        ax.scatter(
            x[:, 0], x[:, 1], c=y.reshape(len(y), -1)[:, 0], s=8, cmap="coolwarm", edgecolors="k", linewidths=0.2
        )
        ax.set_xlabel("x1 (standardized)")
        ax.set_ylabel("x2 (standardized)")
        ax.set_title("decision boundary")
        fig.tight_layout()
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Write curves.png (and boundary.png for 2-D inputs) into a run directory; returns the paths."""
    from .job import load_trained, prepare, validate_config
    from .train import iter_metrics_log

    run = Path(run_dir)
    if not run.is_dir():
        raise ModelFileError(f"{run}: no such run directory")
    epochs = list(iter_metrics_log(run))
    if not epochs:
        raise ModelFileError(f"{run}: no metrics log (metrics.jsonl) to plot")
    _pyplot()
    paths = [plot_history(epochs, run / CURVES)]
    cfg_path = run / "config.json"
    if cfg_path.exists():
        try:
            cfg = validate_config(json.loads(cfg_path.read_text(encoding="utf-8")), str(cfg_path))
        except ValueError as e:
            raise ModelFileError(f"{cfg_path}: unreadable ({e})") from None
        model, meta, _ = load_trained(run)
        if tuple(meta["spec"]["input_shape"]) == (2,):
            prep = prepare(cfg)
            x, y = prep.train
            paths.append(plot_decision_boundary(model, x, y, run / BOUNDARY))
    return paths
