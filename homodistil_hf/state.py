"""Moved to `homodistil_hf.pruning.state`; this old import path stays an alias of it."""

import sys

from .pruning import state as _module

sys.modules[__name__] = _module
