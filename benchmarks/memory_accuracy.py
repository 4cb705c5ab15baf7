"""Memory model vs published measurements: per-case and summary error by source, and what the headroom
policies would have done with these runs.

Usage: python benchmarks/memory_accuracy.py

The last table plans every graded published run under each headroom policy: the policy accepts a card of
exactly the memory it asks for (``HeadroomPolicy.required``), and the run would have run out of memory on
that card when it measured more. In-sample uses the bands of ``catalogs/error_bands.yaml``, which hold the
run itself; leave-one-out rebuilds each run's band without it, as a run the bands never saw.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ftplan.bands import ErrorBands, HeadroomPolicy, load_bands
from ftplan.catalog import load_catalog
from ftplan.report.tables import render_table
from ftplan.validation import not_usable, run_cases, run_out_of_scope, summarise

CASES = Path(__file__).with_name("memory_cases.yaml")
ALLOCATOR_FIT_CASE = "aa-l2-7b-lora-ctx2048-bs1"  # src/ftplan/memory/overheads.py: ALLOCATOR_FRACTION


def main() -> None:
    catalog = load_catalog()
    results = run_cases(CASES, catalog)
    rows = [
        [r.case, r.metric, f"{r.measured_gib:.2f}", f"{r.estimate_gib:.2f}", f"{r.rel_error:+.1%}"] for r in results
    ]
    print("Graded cases")
    print(render_table(["case", "metric", "measured GiB", "estimate GiB", "error"], rows, right={2, 3, 4}))
    print()
    by_source: dict[str, list] = {}
    for r in results:
        by_source.setdefault(r.source, []).append(r)
    summary = []
    for name, rs in [*sorted(by_source.items()), ("all", results)]:
        s = summarise(rs)
        summary.append([name, str(s["n"]), f"{s['median']:.1%}", f"{s['p90']:.1%}", f"{s['worst']:.1%}",
                        f"{s['signed_median']:+.1%}", f"{s['lowest']:+.1%}", str(s["under_10"])])  # fmt: skip
    headers = ["source", "cases", "median |err|", "p90 |err|", "worst |err|", "median err", "lowest err", "< -10%"]
    print(render_table(headers, summary, right=set(range(1, 8))))
    # the allocator's fragmentation fraction is fitted on the one published run with both statistics
    held_out = [r for r in results if r.metric in ("reserved", "device") and r.case != ALLOCATOR_FIT_CASE]
    s = summarise(held_out)
    print(
        f"allocator_fraction, fitted on {ALLOCATOR_FIT_CASE}: on the {s['n']} other reserved/device cases "
        f"median |err| {s['median']:.1%}, from {s['lowest']:+.1%} to {max(r.rel_error for r in held_out):+.1%}"
    )
    print()
    out = run_out_of_scope(CASES, catalog)
    rows = [[r.case, r.reason, f"{r.measured_gib:.2f}", f"{r.estimate_gib:.2f}", f"{r.rel_error:+.1%}"] for r in out]
    print("Out of scope (estimated, not graded)")
    print(render_table(["case", "why", "measured GiB", "estimate GiB", "error"], rows, right={2, 3, 4}))
    s = summarise([*results, *out])
    print(f"graded and out of scope together: {s['n']} cases, median |err| {s['median']:.1%}, p90 {s['p90']:.1%}")
    print()
    print(policy_table(results))
    print()
    print("Not usable")
    print(render_table(["case", "why"], [list(row) for row in not_usable(CASES)]))


POLICIES = (
    HeadroomPolicy(confidence=0.5), HeadroomPolicy(confidence=0.9), HeadroomPolicy(confidence=0.95),
    HeadroomPolicy(), HeadroomPolicy(confidence=None, margin=0.05), HeadroomPolicy(confidence=None, margin=0.1),
)  # fmt: skip


def policy_table(results: list) -> str:
    """Per policy: published runs planned into out-of-memory (in-sample, leave-one-out) and the memory asked
    beyond planning at the median of the band."""
    bands = load_bands()
    rows = []
    for policy in POLICIES:
        oom = oom_out = 0
        extra, short = [], []
        for r in results:
            gib = 2**30
            est, meas = r.estimate_gib * gib, r.measured_gib * gib
            band = bands.band("memory", r.regime)
            without = ErrorBands({k: tuple(c for c in v if c[0] != r.case) for k, v in bands.cases.items()})
            band_out = without.band("memory", r.regime)
            need, need_out = policy.required(est, band), policy.required(est, band_out)
            oom += need < meas
            oom_out += need_out < meas
            if need_out < meas:
                short.append(f"{r.case} {meas / need_out - 1:.1%} short")
            extra.append(need / band.value(est, 0.5) - 1)
        name = policy.label + (" (default)" if policy == HeadroomPolicy() else "")
        rows.append([name, f"{oom} of {len(results)}", f"{oom_out} of {len(results)}" + (
                     f" ({', '.join(short)})" if policy == HeadroomPolicy() else ""),
                     f"{statistics.median(extra):+.1%}", f"{max(extra):+.1%}"])  # fmt: skip
    heads = ["headroom policy", "out of memory (in-sample)", "out of memory (leave-one-out)",
             "memory asked vs median, median", "worst"]  # fmt: skip
    return "Headroom policies on the graded published runs\n" + render_table(heads, rows, right={1, 2, 3, 4})


if __name__ == "__main__":
    main()
