"""Moved to `homodistil_hf.pruning.schedule`; this old import path stays an alias of it."""

import sys

from .pruning import schedule as _module

sys.modules[__name__] = _module
