"""The `ftplan` command: global options and error handling (one line, no traceback).

Exit codes: 0 success, 1 bad input or an impossible request (an ``FtplanError``), 2 a usage error
(unknown option or command, a missing or malformed argument), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys

import typer

from ftplan.cli import (
    budget_cmd,
    catalog_cmd,
    compare_cmd,
    export_cmd,
    fit_cmd,
    import_cmd,
    measure_cmd,
    memory_cmd,
    plan_cmd,
    replan_cmd,
    report_cmd,
)
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
app.command("replan")(replan_cmd.replan)
app.command("schema")(plan_cmd.schema)
app.command("compare")(compare_cmd.compare)
app.command("budget")(budget_cmd.budget)
app.command("report")(report_cmd.report)
app.command("export")(export_cmd.export)
app.command("import")(import_cmd.import_)

_state = {"debug": False}

USAGE_EXIT = 2
INTERRUPTED_EXIT = 130


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _is_click(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is click's ``name`` exception, from the standalone click or the copy typer bundles."""
    return any(cls.__name__ == name and cls.__module__.endswith("click.exceptions") for cls in type(exc).__mro__)


def usage_line(exc: BaseException) -> str:
    """One line for a click usage error: the problem and where to read the usage."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {' '.join(message.split())}{where}"


def run(args: list[str] | None = None) -> int:
    """Run the command line ``args`` (default ``sys.argv[1:]``) and return its exit code."""
    try:
        result = app(args=args, standalone_mode=False)
    except FtplanError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return INTERRUPTED_EXIT
    except Exception as exc:
        if _is_click(exc, "Exit"):
            return int(getattr(exc, "exit_code", 0) or 0)
        if _is_click(exc, "Abort"):
            typer.echo("interrupted", err=True)
            return INTERRUPTED_EXIT
        if _is_click(exc, "NoArgsIsHelpError"):  # bare `ftplan` or `ftplan catalog`: the help is the answer
            ctx = getattr(exc, "ctx", None)
            typer.echo(ctx.get_help() if ctx is not None else str(exc))
            return USAGE_EXIT
        if _is_click(exc, "UsageError") or _is_click(exc, "BadParameter"):
            typer.echo(usage_line(exc), err=True)
            return USAGE_EXIT
        if _is_click(exc, "ClickException"):  # e.g. a file argument that cannot be opened
            typer.echo(f"error: {exc.format_message()}", err=True)  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 1))
        if _state["debug"]:
            raise
        first = " ".join(str(exc).split())[:300]
        typer.echo(
            f"internal error: {type(exc).__name__}: {first} (a defect in ftplan, not in your input; "
            "--debug shows the traceback)",
            err=True,
        )
        return 1
    code = int(result) if isinstance(result, int) else 0
    if code == INTERRUPTED_EXIT:  # typer turns Ctrl-C outside our handlers into a returned 130
        typer.echo("interrupted", err=True)
    return code


def main() -> None:
    """Console entry point. An interrupted run (Ctrl-C, handled by :func:`run`) leaves with 130 at once, its output
    flushed, without the interpreter's teardown: a CI run saw an interrupted ``ftplan plan`` print "interrupted"
    and still end by SIGINT instead of 130, from somewhere in that teardown (the solver's threads, signal handlers
    and C extensions unwind there); nothing of it is needed once the run has stopped."""
    code = run()
    if code == INTERRUPTED_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED_EXIT)
    sys.exit(code)
