"""Names that flags accept, kept apart from what they name, so that parsing flags imports no torch module.

`--importance` takes the name of a registered metric. Built-in metrics are listed here by import path; a metric of
one's own (or a benchmark's ablation) is registered with `register_importance(name, cls)` before the flags are
parsed. `listed=False` keeps a name out of `--help` (ablations no user should pick), but it is still accepted.
"""

from __future__ import annotations

from importlib import import_module

_IMPORTANCES: dict[str, str | type] = {
    "sensitivity": "homodistil_hf.pruning.importance:SensitivityImportance",
    "taylor_structure": "homodistil_hf.pruning.importance:TaylorStructureImportance",
    "magnitude": "homodistil_hf.pruning.importance:MagnitudeImportance",
    "activation": "homodistil_hf.pruning.importance:ActivationImportance",
    "random": "homodistil_hf.pruning.importance:RandomImportance",
}
_UNLISTED: set[str] = set()


def register_importance(name: str, target: str | type, listed: bool = True) -> None:
    """Make `--importance name` build `target` (an `Importance` subclass, or its 'module:Class' path)."""
    _IMPORTANCES[name] = target
    (_UNLISTED.discard if listed else _UNLISTED.add)(name)


def importance_names(listed_only: bool = False) -> list[str]:
    """The names `--importance` accepts (`listed_only`: those `--help` shows)."""
    return [n for n in _IMPORTANCES if not (listed_only and n in _UNLISTED)]


def importance_class(name: str) -> type:
    """The metric class registered as `name`; `KeyError` names the registered ones."""
    if name not in _IMPORTANCES:
        raise KeyError(f"unknown importance {name!r}; registered: {', '.join(_IMPORTANCES)}")
    target = _IMPORTANCES[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = _IMPORTANCES[name] = getattr(import_module(module), attr)
    return target
