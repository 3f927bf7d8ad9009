"""Moved to `homodistil_hf.pruning.masking`; this old import path stays an alias of it."""

import sys

from .pruning import masking as _module

sys.modules[__name__] = _module
