"""Smoke test of the benchmark suite: every workload runs for one unit per implementation, in worker
processes, and every implementation reaches the same loss as chainrule (no timing is asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import WORKLOADS  # noqa: E402
from benchmarks.runner import format_table, run_workload  # noqa: E402


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workload_runs_and_implementations_agree(name: str) -> None:
    steps = 2 if name in ("W1", "W2") else 1
    result = run_workload(name, repeats=1, steps=steps, epochs=0, log=lambda s: None)
    rows = {r["impl"]: r for r in result["rows"]}
    assert "chainrule" in rows and "torch" in rows
    ran = [r for r in rows.values() if "loss" in r]
    assert "torch" in {r["impl"] for r in ran}
    if name != "W4":  # W4 needs chainrule's Conv2d/MaxPool2d, which may not be merged yet
        assert "loss" in rows["chainrule"], rows["chainrule"]
    for r in ran:
        assert r["check"] == "ok", (r["impl"], r["loss"], result)
        assert r["median_s"] > 0 and r["maxrss_mb"] > 0
    assert result["ok"]
    assert name in format_table([result])
