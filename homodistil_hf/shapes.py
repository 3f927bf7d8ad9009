"""Moved: `Shape` to `homodistil_hf.pruning.shape`, target checks to `homodistil_hf.pruning.targets`; this old import
path re-exports both."""

from .pruning.shape import Shape
from .pruning.targets import (
    check_target,
    config_for_shape,
    count_backbone_params,
    resolve_target,
    shape_for_params,
    valid_head_counts,
)

__all__ = ["Shape", "check_target", "config_for_shape", "count_backbone_params", "resolve_target",
           "shape_for_params", "valid_head_counts"]
