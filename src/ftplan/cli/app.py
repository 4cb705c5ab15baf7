"""The `ftplan` command: global options and error handling (one line, exit 1, no traceback)."""

from __future__ import annotations

import sys

import typer

from ftplan.cli import budget_cmd, catalog_cmd, compare_cmd, fit_cmd, measure_cmd, memory_cmd, plan_cmd, report_cmd
from ftplan.errors import FtplanError

app = typer.Typer(
    name="ftplan",
    help="Plan LLM fine-tuning: memory per GPU, layouts, and where to run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog_cmd.app, name="catalog")
app.command("memory")(memory_cmd.memory)
app.command("measure")(measure_cmd.measure)
app.command("fit")(fit_cmd.fit)
app.command("plan")(plan_cmd.plan)
app.command("check")(plan_cmd.check)
app.command("schema")(plan_cmd.schema)
app.command("compare")(compare_cmd.compare)
app.command("budget")(budget_cmd.budget)
app.command("report")(report_cmd.report)

_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


def main() -> None:
    """Console entry point."""
    try:
        app(standalone_mode=False)
    except FtplanError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
