"""Moved to `homodistil_hf.validate` (the task modules use it too, and must not import from the scripts); this old
import path stays an alias of it."""

import sys

from .. import validate as _module

sys.modules[__name__] = _module
