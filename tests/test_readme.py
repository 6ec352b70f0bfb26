"""The Python blocks of the README run.

Complete programs are fenced as ``python``; fragments that need a running model or
a process group (guard, distributed training) are fenced as ``py`` and not run here:
the examples and tests they come from run them.
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write figures
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        if "class ConvNet" in block:
            continue  # run, and checked more closely, by tests/nn/test_readme_example.py
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
