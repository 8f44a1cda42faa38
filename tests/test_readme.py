"""The README's Python example runs and prints what it claims."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "0.0393913122" in out and "-0.0331113086" in out and "-0.2051952956" in out
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert accuracy >= 0.95


def test_readme_quick_start_has_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, re.S)[0].strip().splitlines()
    assert commands == ["pip install -e . && chainrule train", 'pip install -e ".[test]" && pytest']


def test_readme_example_output_is_what_chainrule_example_prints(capsys) -> None:
    from chainrule.cli import main

    assert main(["example"]) == 0
    printed = capsys.readouterr().out
    shown = re.search(r"```\n(Step 1 · forward pass.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    assert shown.strip() in printed
