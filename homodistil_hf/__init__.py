"""homodistil_hf: HomoDistil (homotopic distillation) for Hugging Face Transformers 5.

The student starts as an exact copy of the teacher and is pruned, a little at a time, to the target widths while it
is distilled; the result is exported as a physically smaller model with a stock config.

The public names below are loaded on first use (as transformers does), so that importing one light module, e.g.
`homodistil_hf.config` to parse flags, does not import the pruning machinery and every model family.
"""

from importlib import import_module

from .version import __version__

_PUBLIC = {
    "HomoDistilConfig": "config",
    "HomoDistilTrainer": "trainer",
    "UserError": "errors",
    "export_model": "export",
    "prune_to_shape": "export",
    "register_adapter": "arch",
    "register_importance": "registry",
    "Shape": "arch",
    "Importance": "pruning.importance",
    "ActivationImportance": "pruning.importance",
    "MagnitudeImportance": "pruning.importance",
    "RandomImportance": "pruning.importance",
    "SensitivityImportance": "pruning.importance",
    "StructureImportance": "pruning.importance",
    "TaylorStructureImportance": "pruning.importance",
    "Pruner": "pruning.pruner",
    "PruningState": "pruning.state",
    "WidthSchedule": "pruning.schedule",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
