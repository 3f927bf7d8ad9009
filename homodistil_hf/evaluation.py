"""Moved to `homodistil_hf.metrics.sentence_similarity`; this old import path stays an alias of it."""

import sys

from .metrics import sentence_similarity as _module

sys.modules[__name__] = _module
