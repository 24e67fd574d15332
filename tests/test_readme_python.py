"""The README's Python example, extracted and run end to end (so the README stays true)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_python_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_example_runs(tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "README.md has no ```python block"
    # run it from a copy of the paths it names, so nothing is written into the repository
    shutil.copytree(os.path.join(ROOT, "tests", "models"), tmp_path / "tests" / "models",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (tmp_path / "build").mkdir()
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(2, 16, 256)" in r.stdout and "ms" in r.stdout, r.stdout
    assert (tmp_path / "build" / "gpt2.plan").is_file()
