"""The trainer's user-input error: raised for what the caller must fix, so the CLI can tell it
apart from a bug.

``edge-trainer`` maps :class:`InputError` (and its subclasses: DatasetError, ExportError,
RunConfigError) to exit 2 with a one-line message; any other exception is a bug in this code and
keeps its traceback. It subclasses ValueError so library callers that catch ValueError still do
(paho-mqtt's convention: a caller's mistake is a ValueError).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a flag, a file, a dataset. The message names the file or field,
    what was expected and what was found."""
