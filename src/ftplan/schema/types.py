"""Numeric and boolean field types of the file schemas: no type slips into another.

Pydantic's default (lax) mode reads ``true`` as 1 for an integer and ``"12"`` as 12; a job with
``count: true`` would silently run once. These types accept only real numbers (an integer field
also takes a float with no fractional part, e.g. ``1e9``) and only real booleans.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value!r}")
    if isinstance(value, str):
        raise ValueError(f"expected a number, got the text {value!r} (write it without quotes)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, Strict()]


def _digits(value: Any) -> Any:
    """A mapping's integer key written as text (a JSON object's keys are text) is read as the integer."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


# An integer key of a mapping (a histogram's lengths): an integer, or its digits as text
LengthKey = Annotated[int, BeforeValidator(_number), BeforeValidator(_digits)]


def _identifier(value: str) -> str:
    if not value:
        raise ValueError("an id must have at least 1 character")
    if len(value) > 200:
        raise ValueError(f"an id has at most 200 characters, this one {len(value)}")
    bad = sorted({c for c in value if c in "#/" or c.isspace() or not c.isprintable()})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(
            f"{value!r} contains {shown}; ids may not contain '#' (it numbers a sweep's runs), '/' or spaces"
        )
    return value


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(
            f"expected text, got the boolean {str(value).lower()} (YAML reads yes/no/on/off/true/false as "
            "booleans): put it in quotes"
        )
    if isinstance(value, int | float):
        raise ValueError(f"expected text, got the number {value}: put it in quotes")
    return value


Identifier = Annotated[str, BeforeValidator(_text), AfterValidator(_identifier)]
