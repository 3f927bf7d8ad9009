"""The package's structure, as issue 18 set it: one import order with no cycles, no alias modules, short modules,
one name per class or function, and flag parsing that does not load the pruning machinery."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "homodistil_hf"
# What each layer may import from the package (besides itself). Lower layers never reach back up.
ALLOWED = {
    "errors": set(),
    "version": set(),
    "registry": set(),
    "config": {"errors", "registry"},
    "arch": {"errors"},
    "pruning": {"arch", "errors", "config", "registry"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        yield ".".join(rel.parts), path


def _package_imports(name: str, path: Path) -> set[str]:
    """Top-level package parts (`arch`, `pruning`, `config`, ...) that module `name` imports, anywhere in it."""
    out = set()
    parts = name.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level] if not path.name == "__init__.py" else parts[
                    : len(parts) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
                if not target:  # `from . import x` at the top level
                    target = [node.names[0].name]
            elif node.module and node.module.startswith("homodistil_hf."):
                target = node.module.split(".")[1:]
            else:
                continue
            out.add(target[0])
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_below_them(layer):
    for name, path in _modules():
        if name.split(".")[0] != layer:
            continue
        reached = _package_imports(name, path) - {layer}
        assert reached <= ALLOWED[layer], f"{name} imports {sorted(reached - ALLOWED[layer])}"


def test_no_alias_modules_and_no_long_modules():
    for name, path in _modules():
        text = path.read_text()
        assert "sys.modules[__name__]" not in text, f"{name} is an alias of another module"
        assert len(text.splitlines()) <= 500, f"{name} has {len(text.splitlines())} lines (at most 500)"


def test_one_name_per_class_and_function():
    """No two classes or top-level functions of the same name (the scripts' `main` / `cli` entry points aside)."""
    seen: dict[str, str] = {}
    for name, path in _modules():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name not in ("main", "cli"):
                assert node.name not in seen, f"{node.name} is defined in {seen[node.name]} and {name}"
                seen[node.name] = name


def test_parsing_flags_does_not_import_pruning():
    code = ("import sys, homodistil_hf.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('homodistil_hf.pruning', 'homodistil_hf.arch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api():
    import homodistil_hf

    for name in homodistil_hf.__all__:
        assert getattr(homodistil_hf, name) is not None
    assert {"HomoDistilTrainer", "HomoDistilConfig", "prune_to_shape", "export_model", "register_adapter",
            "SensitivityImportance", "TaylorStructureImportance"} <= set(homodistil_hf.__all__)
