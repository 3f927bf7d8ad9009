"""Importance metrics measured as ablations (benchmarks/README.md, "importance"), registered for the benchmark runs
only: no user should pick them, so they are not in `--help` (`register_importance(..., listed=False)`).

Each is the per-structure family `StructureImportance` with another per-weight value, reduction or score; the
default per-structure metric is `taylor_structure`. Importing this module registers them (`distill_cli.py` does).
"""

from homodistil_hf.pruning.importance import StructureImportance
from homodistil_hf.registry import register_importance


def _variant(name: str, doc: str, **choices) -> type[StructureImportance]:
    def __init__(self, beta1: float = 0.85, beta2: float = 0.95):
        StructureImportance.__init__(self, beta1=beta1, beta2=beta2, **choices)

    cls = type(f"Ablation_{name}", (StructureImportance,), {"name": name, "__init__": __init__, "__doc__": doc})
    register_importance(name, cls, listed=False)
    return cls


# PLATON's statistics kept per structure: EMA(I_s) * EMA(|I_s - EMA(I_s)|) with I_s = sum |w * grad|.
SensitivityStructure = _variant(
    "sensitivity_structure", "Per-structure PLATON: EMA(I_s) x uncertainty, I_s = sum over the structure of |w*g|.",
    element="abs", score="ema_x_uncertainty")
# The same without the uncertainty factor.
SensitivityStructureEMA = _variant(
    "sensitivity_structure_ema", "Per-structure sensitivity without uncertainty: EMA(sum |w*g|).", element="abs")
# EMA of the summed squared sensitivity: sum EMA(I_j^2) = sum (I_bar_j^2 + variance), a variance term like PLATON's.
SensitivityStructureSq = _variant(
    "sensitivity_structure_sq", "Per-structure second moment: EMA(sum (w*g)^2).", element="square")
