"""homodistil_hf: HomoDistil (homotopic distillation) for Hugging Face Transformers 5.

The student starts as an exact copy of the teacher and is pruned, a little at a time, to the target widths while it
is distilled; the result is exported as a physically smaller model with a stock config.
"""

from .arch import register_adapter
from .config import HomoDistilConfig
from .errors import UserError
from .export import export_model, prune_to_shape
from .pruning.importance import (
    ActivationImportance,
    Importance,
    MagnitudeImportance,
    RandomImportance,
    SensitivityImportance,
    StructureSensitivityImportance,
)
from .pruning.pruner import Pruner
from .pruning.schedule import WidthSchedule
from .pruning.shape import Shape
from .pruning.state import PruningState
from .trainer import HomoDistilTrainer
from .version import __version__

__all__ = [
    "ActivationImportance",
    "HomoDistilConfig",
    "HomoDistilTrainer",
    "Importance",
    "MagnitudeImportance",
    "Pruner",
    "PruningState",
    "RandomImportance",
    "SensitivityImportance",
    "StructureSensitivityImportance",
    "Shape",
    "UserError",
    "WidthSchedule",
    "__version__",
    "export_model",
    "prune_to_shape",
    "register_adapter",
]
