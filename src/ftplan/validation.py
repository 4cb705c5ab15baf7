"""Compare the memory model with published measurements (``benchmarks/memory_cases.yaml``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ftplan.catalog import Catalog
from ftplan.io import read_yaml
from ftplan.job import estimate_job, resolve_job
from ftplan.memory import MemoryEstimate
from ftplan.schema.job import parse_job
from ftplan.units import GIB

METRICS = ("allocated", "active", "reserved", "device")


@dataclass(frozen=True)
class CaseResult:
    case: str
    source: str
    metric: str
    measured_gib: float
    estimate_gib: float

    @property
    def rel_error(self) -> float:
        return (self.estimate_gib - self.measured_gib) / self.measured_gib


def statistic(est: MemoryEstimate, metric: str) -> int:
    """The estimate's counterpart of a measured statistic."""
    if metric in ("allocated", "active"):
        return est.peak_allocated_bytes
    if metric == "reserved":
        return est.peak_reserved_bytes
    if metric == "device":
        return est.device_total_bytes
    raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")


def run_cases(path: Path, catalog: Catalog) -> list[CaseResult]:
    data = read_yaml(path)
    out = []
    for row in data["cases"]:
        spec = parse_job(row["job"], f"{path}: {row['case']}")
        est = estimate_job(resolve_job(spec, catalog, row["case"]))
        out.append(
            CaseResult(
                case=row["case"],
                source=row["case"].split("-", 1)[0],
                metric=row["metric"],
                measured_gib=float(row["measured_gib"]),
                estimate_gib=statistic(est, row["metric"]) / GIB,
            )
        )
    return out


def summarise(results: list[CaseResult]) -> dict[str, float]:
    """Median, 90th percentile and worst absolute relative error."""
    errs = sorted(abs(r.rel_error) for r in results)
    p90 = errs[min(len(errs) - 1, round(0.9 * (len(errs) - 1)))]
    return {"n": len(errs), "median": statistics.median(errs), "p90": p90, "worst": errs[-1]}
