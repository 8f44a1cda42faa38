"""Rough memory estimates, checked before allocating, so that a model or batch too large fails with a
clear message instead of being killed by the operating system.

Training holds each parameter about 4 times (value, gradient, two optimizer moments for Adam) and, per
batch, every layer's output twice (the value kept for backward and its gradient).
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import ChainruleError

PARAM_COPIES = 4  # value + gradient + two optimizer moments (Adam)
ACTIVATION_COPIES = 2  # forward value + its gradient


class OutOfMemoryError(ChainruleError, MemoryError):
    """A model or batch would not fit in the available memory; the message gives the estimate."""


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, else free physical pages from os.sysconf; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def layer_param_count(type_name: str, layer: dict[str, Any]) -> int:
    """Parameters a layer of the spec will allocate (0 for types it does not know: they are small)."""

    def g(key: str, default: int = 0) -> int:
        v = layer.get(key, default)
        return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else default

    bias = 1 if layer.get("bias", True) else 0
    if type_name in ("Linear", "Bilinear"):
        return g("in_features") * g("out_features") + bias * g("out_features")
    if type_name.startswith("Conv"):
        k = layer.get("kernel_size", 1)
        k = math.prod(int(v) for v in k) if isinstance(k, list | tuple) else int(k) ** (2 if "2d" in type_name else 1)
        groups = max(g("groups", 1), 1)
        return g("in_channels") * g("out_channels") * k // groups + bias * g("out_channels")
    if type_name in ("RNN", "LSTM", "GRU"):
        gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[type_name]
        h, n = g("hidden_size"), max(g("num_layers", 1), 1)
        return gates * h * (g("input_size") + h + 2 * bias) * n
    if type_name == "Embedding":
        return g("num_embeddings") * g("embedding_dim")
    return 0


def check_fits(needed: int, what: str, available: int | None = None) -> None:
    """Raise OutOfMemoryError if `needed` bytes exceed the available memory."""
    available = available_bytes() if available is None else available
    if available is not None and needed > available:
        raise OutOfMemoryError(
            f"{what} would need about {human(needed)} but only {human(available)} of memory is available; "
            "use a smaller model or batch size"
        )
