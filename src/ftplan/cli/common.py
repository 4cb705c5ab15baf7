"""Helpers shared by commands: output formats and writing results."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from ftplan.io import write_text_atomic


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    YAML = "yaml"


def emit(text: str, output: Path | None) -> None:
    """Print ``text`` or write it atomically to ``output`` ('-' is stdout)."""
    if output is None or str(output) == "-":
        typer.echo(text)
    else:
        write_text_atomic(output, text if text.endswith("\n") else text + "\n")
        typer.echo(f"wrote {output}", err=True)
