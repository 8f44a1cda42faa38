"""`python -m chainrule` is the `chainrule` command."""

import subprocess
import sys


def test_python_m_chainrule_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "chainrule", "example"], capture_output=True, text=True, check=True)
    assert "∂L/∂w1" in out.stdout and "-0.03311130869" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "chainrule", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no-such-command" in bad.stderr
