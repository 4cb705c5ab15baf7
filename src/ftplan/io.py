"""File input and output in one place: safe YAML, one-line validation errors, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ftplan.errors import FtplanError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> Any:
    """Load a YAML file with ``yaml.safe_load``; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FtplanError(f"{path}: file not found.") from None
    except OSError as exc:
        raise FtplanError(f"{path}: cannot read ({exc.strerror}).") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise FtplanError(f"{path}: not valid YAML{where}.") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line for a pydantic error: ': field 'a.b': message (and N more problems)'."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field (remove it or check its spelling)"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f": field '{loc}': {msg}{more}"


def validate_mapping(
    data: Any, model: type[M], source: str, error: type[FtplanError] = FtplanError, what: str = "fields"
) -> M:
    """Validate ``data`` as ``model``; errors are one line naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of {what}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}{describe_validation_error(exc)}") from None


def load_validated(path: Path, model: type[M], error: type[FtplanError] = FtplanError, what: str = "fields") -> M:
    """Read a YAML (or JSON) file and validate it as ``model``; errors are one line naming the file and field."""
    return validate_mapping(read_yaml(path), model, str(path), error, what)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
