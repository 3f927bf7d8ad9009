"""User-facing errors.

A `UserError` is a mistake the user can fix (a flag, a path, a value). Entry points print it as one line on stderr
and exit with status 2, with no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input. The message names the flag, path or value and says what to do."""
