"""The pruning machinery, one module per concept, generic over model families (the adapters in `..arch` say where
each structure lives):

- `shape`: the widths a stock config holds; `targets`: a requested shape validated against the teacher;
- `modules`: how each module type is sliced (Linear, Conv1D, fused projections, LayerNorm, RMSNorm, Embedding);
- `groups`: which weights and activations make up each prunable structure;
- `importance`: scores per structure (a name -> class registry);
- `schedule`: how widths fall over training; `state`: which teacher structures the student keeps;
- `surgery` (physical) and `masking` (same function, full-size tensors); `pruner` ties them together and
  `callback` runs it inside the Trainer.

Names are imported lazily (`from homodistil_hf.pruning import Pruner`), so that `..arch` and `..config` can import
the small modules here without a cycle.
"""

from importlib import import_module

_EXPORTS = {
    "Shape": "shape", "check_target": "targets", "resolve_target": "targets", "count_backbone_params": "targets",
    "Group": "groups", "build_groups": "groups", "IMPORTANCES": "importance", "Importance": "importance",
    "WidthSchedule": "schedule", "PruningState": "state", "prune_model": "surgery", "Masker": "masking",
    "Pruner": "pruner", "PruningCallback": "callback",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
