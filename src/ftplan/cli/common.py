"""Helpers shared by commands: output formats, checking output paths, writing results."""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import typer
import yaml

from ftplan.bands import HeadroomPolicy, make_policy, parse_margin
from ftplan.errors import FtplanError
from ftplan.io import write_text_atomic


class Format(StrEnum):
    """What a command prints: every command offers all four, and each works."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"
    CSV = "csv"


FORMAT_HELP = "table | json | yaml | csv"


def render(
    fmt: Format,
    table: Callable[[], str],
    data: Callable[[], Any],
    rows: Callable[[], Sequence[dict[str, Any]] | pd.DataFrame],
) -> str:
    """The text of one result in ``fmt``: ``table`` for people, ``data`` (JSON-able) for json and
    yaml, ``rows`` (one mapping per row, the same keys) for csv."""
    if fmt is Format.JSON:
        return json.dumps(data(), indent=2, default=str)
    if fmt is Format.YAML:
        return yaml.safe_dump(json.loads(json.dumps(data(), default=str)), sort_keys=False)
    if fmt is Format.CSV:
        buf = io.StringIO()
        table_rows = rows()
        frame = table_rows if isinstance(table_rows, pd.DataFrame) else pd.DataFrame(list(table_rows))
        frame.to_csv(buf, index=False)
        return buf.getvalue()
    return table()


def check_writable(*paths: Path | None) -> None:
    """Refuse, before any work, output paths that cannot be written: a directory, a missing or
    read-only folder. One line naming the path and the fix."""
    for path in paths:
        if path is None or str(path) == "-":
            continue
        path = Path(path)
        if path.is_dir():
            raise FtplanError(f"{path}: is a directory. To fix: give a file name (e.g. {path / 'out.yaml'}).")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise FtplanError(f"{path}: folder {parent} does not exist. To fix: create it or write elsewhere.")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise FtplanError(f"{path}: folder {parent} is not writable. To fix: write elsewhere.")
        if path.exists() and not os.access(path, os.W_OK):
            raise FtplanError(f"{path}: file is read-only. To fix: write elsewhere or change its permissions.")


def emit(text: str, output: Path | None) -> None:
    """Print ``text`` or write it atomically to ``output`` ('-' is stdout)."""
    if output is None or str(output) == "-":
        typer.echo(text.rstrip("\n"))
    else:
        write_text_atomic(output, text if text.endswith("\n") else text + "\n")
        typer.echo(f"wrote {output}", err=True)


def number(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> Callable[[Any], Any]:
    """A typer callback holding a numeric option to [lo, hi] (open ends with ``lo_open``/``hi_open``),
    and rejecting nan and infinity: a bad number is a usage error (exit 2), like a malformed one."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number, got {value}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise typer.BadParameter(f"must be {'>' if lo_open else '≥'} {lo:g}, got {value:g}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise typer.BadParameter(f"must be {'<' if hi_open else '≤'} {hi:g}, got {value:g}")
        return value

    return check


POSITIVE = number(0, lo_open=True)
AT_LEAST_ONE = number(1)


def _margin_value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _check_margin(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        parse_margin(_margin_value(value), "--memory-margin")
    except FtplanError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--memory-margin: ")) from None
    return value


CONFIDENCE_OPTION: Any = typer.Option(
    None,
    "--memory-confidence",
    help="Fit only if this quantile of the peak memory fits (error band of published runs; default 0.99).",
    callback=number(0, 1, lo_open=True, hi_open=True),
)
TIME_CONFIDENCE_OPTION: Any = typer.Option(
    None,
    "--time-confidence",
    help="Plan every run at this quantile of its duration (the time model's error on published runs).",
    callback=number(0, 1, lo_open=True, hi_open=True),
)
MARGIN_OPTION: Any = typer.Option(
    None,
    "--memory-margin",
    help="Instead: memory to leave free, a fraction of the card (0.1) or an amount ('6 GiB').",
    callback=_check_margin,
)


def _check_from(value: str | None) -> str | None:
    from ftplan.importers import FORMATS

    if value is not None and value not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}")
    return value


FROM_OPTION: Any = typer.Option(
    None,
    "--from",
    help="Read JOB as an axolotl, torchtune, trl or deepspeed config (see `ftplan import`).",
    callback=_check_from,
)


def cli_policy(confidence: float | None, margin: str | None) -> HeadroomPolicy | None:
    """The headroom policy the command line states (None: the job's or scenario's, else the default)."""
    if confidence is not None and margin is not None:
        raise typer.BadParameter("give one of --memory-confidence and --memory-margin", param_hint="--memory-margin")
    return make_policy(confidence, None if margin is None else _margin_value(margin), "command line")


class Live:
    """One status line on stderr, rewritten in place, shown only on a terminal (and not ``quiet``):
    what a long command is doing now (building candidates, solving choice 3 of 11, the incumbent)."""

    def __init__(self, quiet: bool = False) -> None:
        self.on = not quiet and sys.stderr.isatty()
        self.width = 0

    def __call__(self, text: str) -> None:
        if self.on:
            line = f"  {text}"
            typer.echo("\r" + line.ljust(self.width), err=True, nl=False)
            self.width = len(line)

    def progress(self, p: Any) -> None:
        """A solver incumbent (:class:`ftplan.solver.Progress`)."""
        value = (lambda v: f"${v:,.2f}") if p.goal == "cost" else (lambda v: f"{v:,.2f} h")
        self(f"{p.goal}: incumbent {value(p.objective)}  bound {value(p.bound)}  gap {100 * p.gap:5.2f}%  "
             f"{p.elapsed_s:6.1f} s")  # fmt: skip

    def done(self) -> None:
        """Clear the line before the result is printed."""
        if self.on and self.width:
            typer.echo("\r" + " " * self.width + "\r", err=True, nl=False)
            self.width = 0
