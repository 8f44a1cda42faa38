"""The command outputs shown in docs/ are the real outputs: every block that starts with `$ chainrule ...` is run
and its output compared line by line (regenerate a block by running its command)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import chainrule

DOCS = Path(__file__).resolve().parents[1] / "docs"


def shown_commands(path: Path) -> list[tuple[str, list[str], str]]:
    """(first line of the command, argv after `chainrule`, expected output) of each `$ chainrule` block."""
    found = []
    for block in re.findall(r"^```\n(\$ chainrule .*?)^```$", path.read_text(encoding="utf-8"), flags=re.S | re.M):
        lines = block.splitlines()
        cmd = lines.pop(0)
        while cmd.endswith("\\"):
            cmd = cmd[:-1] + lines.pop(0)
        found.append((cmd[:60], shlex.split(cmd)[2:], "\n".join(lines) + "\n"))
    return found


CASES = [(p.name, *c) for p in sorted(DOCS.glob("*.md")) for c in shown_commands(p)]


def test_docs_show_commands() -> None:
    assert len([c for c in CASES if c[0] == "explain.md"]) >= 2


@pytest.mark.parametrize("doc,title,argv,expected", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_shown_output_is_the_real_output(doc: str, title: str, argv: list[str], expected: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(chainrule.__file__).parents[1])}  # this chainrule, from any cwd
    out = subprocess.run(
        [sys.executable, "-m", "chainrule", *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected, f"{doc}: the output of `chainrule {' '.join(argv)}` changed; update the doc"
