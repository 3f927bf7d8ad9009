"""Moved to `homodistil_hf.pruning.pruner`; this old import path stays an alias of it."""

import sys

from .pruning import pruner as _module

sys.modules[__name__] = _module
