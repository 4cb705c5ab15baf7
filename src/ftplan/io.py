"""File input and output in one place: safe YAML and JSON, one-line validation errors, atomic writes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ftplan.errors import FtplanError
from ftplan.limits import MAX_FILE_MIB

M = TypeVar("M", bound=BaseModel)

MAX_FILE_BYTES = MAX_FILE_MIB * 2**20  # job, scenario and plan files (see ftplan.limits)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """``yaml.safe_load`` with two differences: a key given twice in one mapping is an error (YAML
    forbids it; PyYAML silently keeps the last), and numbers such as ``1e9`` are numbers (YAML 1.2;
    YAML 1.1 reads them as strings)."""


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # the keys written here; a merge (``<<: *anchor``) may be overridden
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar", key_node.start_mark)
        key = key_node.value if key_node.tag == "tag:yaml.org,2002:str" else loader.construct_object(key_node)
        if key in seen:
            raise DuplicateKeyError(key, key_node.start_mark.line + 1, seen[key])
        seen[key] = key_node.start_mark.line + 1
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"key {key!r} appears twice (lines {first} and {line})")
        self.key, self.line, self.first = key, line, first


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML (or JSON) text; errors are one line naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except DuplicateKeyError as exc:
        raise FtplanError(
            f"{source}: line {exc.line}: key {exc.key!r} is given twice (first at line {exc.first}). To fix: keep one."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise FtplanError(f"{source}: not valid YAML{where}" + (f" ({problem})." if problem else ".")) from None


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """A UTF-8 text file's contents; a missing, unreadable, oversized or non-UTF-8 file is one line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise FtplanError(f"{path}: is a directory, not a file.")
        if size > limit:
            raise FtplanError(
                f"{path}: {size / 2**20:.1f} MiB is larger than the {limit // 2**20} MiB ftplan reads "
                "(see Limits in the README)."
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise FtplanError(f"{path}: file not found.") from None
    except OSError as exc:
        raise FtplanError(f"{path}: cannot read ({exc.strerror}).") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FtplanError(
            f"{path}: not UTF-8 text (byte {exc.start}, line {line}). To fix: save it as UTF-8."
        ) from None


def read_yaml(path: Path) -> Any:
    """Load a YAML (or JSON) file safely; errors name the file and line."""
    return parse_yaml(read_text(path), str(path))


def read_json(path: Path) -> Any:
    """Load a JSON file; a syntax error is one line naming the file, the line and the column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise FtplanError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}). To fix: correct it there."
        ) from None


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """A pydantic location as a user reads it: ``pools[0].quota_nodes``. The tag a discriminated
    union adds (``pools.0.cloud.quota_nodes``) is dropped: it is the ``kind:`` the user wrote."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # the union's tag
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out


def describe_validation_error(exc: ValidationError, data: Any = None) -> str:
    """One line for a pydantic error: ': field 'a.b': message (and N more problems)'."""
    errors = exc.errors()
    first = errors[0]
    loc = _where(tuple(first["loc"]), data)
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field (remove it or check its spelling)"
    if not loc:
        return f": {msg}" + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")
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
        raise error(f"{source}{describe_validation_error(exc, data)}") from None


def load_validated(path: Path, model: type[M], error: type[FtplanError] = FtplanError, what: str = "fields") -> M:
    """Read a YAML (or JSON) file and validate it as ``model``; errors are one line naming the file and field."""
    return validate_mapping(read_yaml(path), model, str(path), error, what)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    write_bytes_atomic(path, text.encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    The file gets the permissions a plain ``open`` would give (0666 less the umask), not the
    temporary file's 0600. Failures are one line naming the path.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise FtplanError(f"{path}: is a directory. To fix: give a file name.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise FtplanError(f"{path}: cannot write ({exc.strerror}). To fix: write elsewhere.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise FtplanError(f"{path}: cannot write ({exc.strerror}). To fix: write elsewhere.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
