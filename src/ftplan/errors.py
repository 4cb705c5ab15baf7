"""Exception tree. Every error a user can cause is an ``FtplanError`` with a one-line message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FtplanError(Exception):
    """Base of all errors ftplan raises for bad input or impossible requests."""


class CatalogError(FtplanError):
    """A catalog file is malformed or a name is not in it."""


class JobError(FtplanError):
    """A job description is malformed or asks for an impossible layout."""


class MeasureError(FtplanError):
    """A measurement cannot run here (missing extra, missing device, too large)."""


def did_you_mean(name: str, choices: Iterable[str], limit: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of ``name`` in ``choices`` (or '')."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.5)
    if not close:
        close = [c for c in lowered if name.lower() in c][:limit]
    return f" Did you mean: {', '.join(lowered[c] for c in close)}?" if close else ""
