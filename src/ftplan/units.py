"""Units and conversions, in one place. Inside ftplan bytes are integers; GiB/GB only at the edges."""

from __future__ import annotations

import math
from enum import StrEnum

KIB = 1024
MIB = 1024**2
GIB = 1024**3
GB = 10**9


class Dtype(StrEnum):
    """Storage types of tensors, with their width in bits."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    NF4 = "nf4"

    @property
    def bits(self) -> int:
        return {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8, "nf4": 4}[self.value]

    @property
    def bytes(self) -> int:
        """Whole bytes per element; sub-byte types raise (count them in bits)."""
        if self.bits % 8:
            raise ValueError(f"{self.value} is {self.bits} bits per element: count it in bits")
        return self.bits // 8


def bits_to_bytes(total_bits: float) -> int:
    """Round a bit count up to whole bytes (sub-byte formats such as NF4 are counted in bits)."""
    return int(-(-total_bits // 8))


def to_gib(n_bytes: float) -> float:
    return n_bytes / GIB


def fmt_gib(n_bytes: float) -> str:
    """Human form used in tables and messages, e.g. '79.62 GiB'."""
    return f"{n_bytes / GIB:.2f} GiB"


# ---- the planner's integer units (CP-SAT works in integers) ------------------------------------
MINUTES_PER_HOUR = 60  # time in whole minutes
MONEY_UNITS_PER_USD = 10_000  # money in hundredths of a cent: rounding stays below $0.0001 a run


def hours_to_minutes(hours: float) -> int:
    """Whole minutes, rounded up so a planned interval never undercuts the job."""
    return max(1, math.ceil(round(hours * MINUTES_PER_HOUR, 6)))


def usd_to_units(usd: float) -> int:
    """Whole money units (hundredths of a cent), rounded up."""
    return math.ceil(round(usd * MONEY_UNITS_PER_USD, 6))


def deadline_minutes(hours: float) -> int:
    """A deadline in whole minutes, rounded down: a plan that ends by it never ends after the
    deadline the user wrote (2.05 h is 123 minutes; 2.051 h is 123 minutes too). The solver, the
    greedy warm start and the verifier all compare ends with this one conversion."""
    return math.floor(round(hours * MINUTES_PER_HOUR, 6))


def end_minutes(hours: float) -> int:
    """A plan's end time in whole minutes (plans store minutes / 60; rounded up if edited)."""
    return math.ceil(round(hours * MINUTES_PER_HOUR, 6))


def start_minutes(hours: float) -> int:
    """A plan's start time in whole minutes (rounded down if edited: a run starts no later)."""
    return math.floor(round(hours * MINUTES_PER_HOUR, 6))


def budget_units(usd: float) -> int:
    """A budget in whole money units, rounded down: a plan within it is within the user's budget."""
    return math.floor(round(usd * MONEY_UNITS_PER_USD, 6))
