"""The runtime error type, apart from the registry so runtime modules can import it."""

from __future__ import annotations


class ModelRuntimeError(RuntimeError):
    """The model cannot be loaded or run (broken file, missing package, wrong input)."""
