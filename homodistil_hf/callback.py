"""Moved to `homodistil_hf.pruning.callback`; this old import path stays an alias of it."""

import sys

from .pruning import callback as _module

sys.modules[__name__] = _module
