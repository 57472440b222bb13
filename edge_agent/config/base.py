"""The base of every config section model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Section(BaseModel):
    """Unknown keys are refused: a misspelt key silently ignored is a night of debugging on a
    device nobody can reach.

    A config file is validated in strict mode (``loader.read_config_text``): YAML already types
    ``8883`` as a number, so pydantic's lax conversions only ever turn a mistake into a value:
    ``port: true`` into port 1, ``threads: yes`` into 1 thread, ``threads: 2.5`` into an error
    but ``2.0`` into 2, ``fps_limit: '5'`` (quoted) into 5.0. Strict is asked for at that call,
    not in ``model_config``, where pydantic's mypy plugin would also type every constructor
    call strictly. NaN and infinity are not numbers a setting can hold (``fps_limit: .inf``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _to_path(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty: an empty path would name the current folder")
        return Path(value)
    return value


#: A file or folder path written in the config: a string in YAML, made a Path before the
#: strict check (which wants a Path instance).
ConfigPath = Annotated[Path, BeforeValidator(_to_path)]
