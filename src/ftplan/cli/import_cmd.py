"""`ftplan import`: a job file from an axolotl, torchtune, TRL or DeepSpeed config."""

from __future__ import annotations

from pathlib import Path

import typer

from ftplan.catalog import load_catalog
from ftplan.cli.common import AT_LEAST_ONE, check_writable, emit
from ftplan.importers import FORMATS, import_config
from ftplan.job import resolve_job
from ftplan.schema.job import parse_job


def import_(
    fmt: str = typer.Argument(..., metavar="FORMAT", help=f"{' | '.join(FORMATS)}"),
    config: Path = typer.Argument(..., help="The config file (YAML or JSON)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the job here instead of stdout."),
    model: str | None = typer.Option(None, "--model", help="Catalog model id (where the config names none)."),
    seq_len: int | None = typer.Option(
        None, "--seq-len", help="Tokens per sequence (where the config has none).", callback=AT_LEAST_ONE
    ),
    gpus: int = typer.Option(
        1, "--gpus", help="Data-parallel GPUs the run uses (configs leave it to the launcher).", callback=AT_LEAST_ONE
    ),
) -> None:
    """Map every field ftplan models from a config you already have to a job file; list the rest as ignored."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="FORMAT")
    check_writable(output)
    catalog = load_catalog()
    imported = import_config(fmt, config, catalog, model, seq_len, gpus)
    resolve_job(parse_job(imported.job, str(config)), catalog, str(config))  # the job must be valid as written
    emit(imported.to_yaml(), output)
    if imported.ignored:
        typer.echo(f"ignored (not modelled): {', '.join(imported.ignored)}", err=True)
