"""Moved to `homodistil_hf.pruning.groups`; this old import path stays an alias of it."""

import sys

from .pruning import groups as _module

sys.modules[__name__] = _module
