"""Moved to `homodistil_hf.pruning.surgery`; this old import path stays an alias of it."""

import sys

from .pruning import surgery as _module

sys.modules[__name__] = _module
