"""Compare the memory model with published measurements (``benchmarks/memory_cases.yaml``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ftplan.bands import memory_regime
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
    reason: str = ""  # why an out-of-scope case is not graded
    regime: tuple[str, ...] = ()  # the job's memory regime (ftplan.bands.memory_regime)

    @property
    def rel_error(self) -> float:
        return (self.estimate_gib - self.measured_gib) / self.measured_gib


def statistic(est: MemoryEstimate, metric: str) -> int:
    """The estimate's counterpart of a measured statistic.

    A run cannot reserve more than its GPU holds: the caching allocator frees its cached blocks and
    retries a failed cudaMalloc before it reports out of memory (c10/cuda/CUDACachingAllocator.cpp,
    ``release_cached_blocks``), so a published reserved or device figure is the estimate's, capped at
    the card (less what lives outside PyTorch) and never below what the step allocates.
    """
    outside = est.device_total_bytes - est.peak_reserved_bytes
    reserved = est.peak_reserved_bytes
    if est.gpu_memory_bytes is not None:
        reserved = min(reserved, max(est.peak_allocated_bytes, est.gpu_memory_bytes - outside))
    if metric in ("allocated", "active"):
        return est.peak_allocated_bytes
    if metric == "reserved":
        return reserved
    if metric == "device":
        return reserved + outside
    raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")


def _run(rows: list[dict], path: Path, catalog: Catalog) -> list[CaseResult]:
    out = []
    for row in rows:
        spec = parse_job(row["job"], f"{path}: {row['case']}")
        job = resolve_job(spec, catalog, row["case"])
        est = estimate_job(job)
        out.append(
            CaseResult(
                case=row["case"],
                source=row["case"].split("-", 1)[0],
                metric=row["metric"],
                measured_gib=float(row["measured_gib"]),
                estimate_gib=statistic(est, row["metric"]) / GIB,
                reason=row.get("reason", ""),
                regime=memory_regime(job.arch, job.training, job.layout),
            )
        )
    return out


def run_cases(path: Path, catalog: Catalog) -> list[CaseResult]:
    """The graded cases of a case file (``cases:``), estimated."""
    return _run(read_yaml(path)["cases"], path, catalog)


def run_out_of_scope(path: Path, catalog: Catalog) -> list[CaseResult]:
    """Cases translated but not graded (``out_of_scope:``), estimated, each with its reason."""
    return _run(read_yaml(path).get("out_of_scope", []), path, catalog)


def not_usable(path: Path) -> list[tuple[str, str]]:
    """Published cases that cannot be translated into a job, with the reason."""
    return [(row["case"], row["reason"]) for row in read_yaml(path).get("not_usable", [])]


def summarise(results: list[CaseResult]) -> dict[str, float]:
    """Median, 90th percentile and worst absolute relative error; the signed median, the lowest
    signed error and how many cases the estimate undershoots by more than 10% (the unsafe side)."""
    errs = sorted(abs(r.rel_error) for r in results)
    p90 = errs[min(len(errs) - 1, round(0.9 * (len(errs) - 1)))]
    signed = [r.rel_error for r in results]
    return {
        "n": len(errs), "median": statistics.median(errs), "p90": p90, "worst": errs[-1],
        "signed_median": statistics.median(signed), "lowest": min(signed),
        "under_10": sum(e < -0.10 for e in signed),
    }  # fmt: skip
