"""Moved to `homodistil_hf.pruning.importance`; this old import path stays an alias of it."""

import sys

from .pruning import importance as _module

sys.modules[__name__] = _module
