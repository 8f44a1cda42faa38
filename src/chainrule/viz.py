"""Pictures for explain mode: loss surfaces with the gradient-descent path, and loss curves (PNG via matplotlib).

matplotlib is an optional extra (`pip install "chainrule[plot]"`), imported inside the functions; figures are
drawn with the Agg canvas directly, so no pyplot state or display backend is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError


def _figure(size: tuple[int, int]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError('drawing PNG files needs matplotlib: pip install "chainrule[plot]"') from None
    w, h = size
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str) -> None:
    if not str(path).lower().endswith(".png"):
        raise ConfigError(f"the picture file must end in .png, got {path!r}")
    try:
        fig.savefig(path, dpi=100, format="png")
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e}") from None


def _window(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = max(0.5 * (hi - lo), 0.25, 0.1 * max(abs(lo), abs(hi)))
    return lo - pad, hi + pad


def surface(
    loss_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    path_a: Sequence[float],
    path_b: Sequence[float],
    out: str,
    size: tuple[int, int] = (800, 600),
    labels: tuple[str, str] = ("w1", "w2"),
    title: str = "loss surface and gradient-descent path",
    resolution: int = 81,
) -> None:
    """Contour plot of `loss_at(A, B)` (grids of the two parameters) with the path, start and end marked."""
    fig = _figure(size)
    a0, a1 = _window(path_a)
    b0, b1 = _window(path_b)
    A, B = np.meshgrid(np.linspace(a0, a1, resolution), np.linspace(b0, b1, resolution))
    Z = np.asarray(loss_at(A, B), dtype=np.float64)
    ax = fig.add_subplot(1, 1, 1)
    finite = Z[np.isfinite(Z)]
    levels = np.unique(np.quantile(finite, np.linspace(0, 1, 25))) if finite.size else np.array([0.0])
    if levels.size < 2:  # a flat slice (e.g. the parameters do not affect the loss): one band
        c = float(levels[0])
        levels = np.array([c - 1e-9 - 1e-9 * abs(c), c + 1e-9 + 1e-9 * abs(c)])
    cs = ax.contourf(A, B, Z, levels=levels, cmap="viridis")
    ax.contour(A, B, Z, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label="loss")
    ax.plot(path_a, path_b, "-", color="white", linewidth=1.8, label=f"gradient descent ({len(path_a) - 1} steps)")
    ax.plot(path_a[0], path_b[0], "o", color="lime", markersize=9, markeredgecolor="k", label="start")
    ax.plot(path_a[-1], path_b[-1], "*", color="red", markersize=14, markeredgecolor="k", label="end")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, out)


def example_surface(result: Any, out: str, size: tuple[int, int] = (800, 600)) -> None:
    """The reference example's loss over (w1, w2) with the path of `result` (an explain.ExampleResult)."""
    from . import ops
    from .tensor import Tensor

    cfg = result.config
    act = {"sigmoid": ops.sigmoid, "tanh": ops.tanh, "relu": ops.relu}[cfg.activation]

    def loss_at(W1: np.ndarray, W2: np.ndarray) -> np.ndarray:
        h = act(Tensor(W1) * cfg.x)
        return (0.5 * (cfg.y - Tensor(W2) * h) ** 2).data

    traj = result.trajectory
    surface(
        loss_at,
        [r[1] for r in traj],
        [r[2] for r in traj],
        out,
        size,
        ("w1", "w2"),
        f"L = ½(y − w2·{cfg.activation}(w1·x))², η = {cfg.lr:g}",
    )


def loss_curve(
    epochs: Sequence[int], losses: Sequence[float], out: str, size: tuple[int, int] = (800, 600), title: str = ""
) -> None:
    """Loss against epoch (log scale when the loss stays positive)."""
    fig = _figure(size)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(list(epochs), list(losses), "-", color="tab:blue", linewidth=1.5)
    if len(losses) and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss during gradient descent")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, out)
