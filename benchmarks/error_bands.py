"""Error bands: every validation case's signed error by regime, and each regime's quantiles.

Usage: python benchmarks/error_bands.py [--write]

Prints, per regime that holds at least ``ftplan.bands.MIN_CASES`` cases, the signed error quantiles of
the memory model (graded published runs, ``memory_accuracy.py``) and of the time model (held-out published
throughput cases, ``throughput_accuracy.py``). ``--write`` regenerates ``catalogs/error_bands.yaml``, which
``ftplan memory``, ``fit``, ``plan`` and ``check`` read; ``tests/test_bands.py`` checks the file equals what
this script derives from the benchmarks today.

The measured grid (``measured_accuracy.py``, tiny models on a CPU) is not part of the bands: it measures
the tensors PyTorch holds, which it matches within 3.2% (0.08% for saved activations; README), while a
published run adds what a real GPU run adds (the allocator, the CUDA context, the framework's own habits).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import throughput_accuracy as ta  # noqa: E402  (a sibling script)

from ftplan.bands import (  # noqa: E402
    LEVELS,
    MEMORY_DIMS,
    MIN_CASES,
    TIME_DIMS,
    ErrorBands,
    quantile,
    time_regime,
)
from ftplan.catalog import default_catalog_dir, load_catalog  # noqa: E402
from ftplan.io import write_text_atomic  # noqa: E402
from ftplan.report.tables import render_table  # noqa: E402
from ftplan.validation import run_cases  # noqa: E402

OUT = default_catalog_dir() / "error_bands.yaml"

HEADER = """\
# Error bands: ftplan's signed errors (estimate / measured - 1) on its own validation cases, by regime.
# Written by `python benchmarks/error_bands.py --write`; do not edit by hand (tests/test_bands.py checks it
# equals what the benchmarks give today). ftplan reads `cases`; `regimes` restates their quantiles.
#
# memory: the graded published runs of benchmarks/memory_cases.yaml (benchmarks/memory_accuracy.py): the
#   peak each run allocated, reserved or took from its GPU against ftplan's estimate of the same statistic.
# time: the held-out cases of benchmarks/throughput_public.yaml and throughput_finetune_public.yaml
#   (benchmarks/throughput_accuracy.py), tokens/s per GPU; llm-foundry's and Qwen's runs are left out because the
#   catalog's GPU efficiencies and the per-operation dispatch time were fitted on them.
# A regime is a prefix of the dimensions listed; an estimate uses the deepest prefix of its own regime with
# at least min_cases cases. Quantiles are empirical (inverted CDF): p01 of fewer than 100 cases is the lowest.
"""


def memory_cases() -> list[tuple[str, tuple[str, ...], float]]:
    catalog = load_catalog()
    results = run_cases(HERE / "memory_cases.yaml", catalog)
    return [(r.case, r.regime, round(r.rel_error, 4)) for r in results]


def time_cases() -> list[tuple[str, tuple[str, ...], float]]:
    catalog = load_catalog()
    cases, _ = ta.load_cases(catalog)
    out = []
    for c in cases:
        if c["source"] in ta.FITTED_SOURCES:
            continue
        err = ta.predict(c, catalog) / c["measured"] - 1
        out.append((c["id"], time_regime(c["training"], c["pp"], c["nodes"], c["arch"].is_moe), round(err, 4)))
    return out


def derive() -> dict:
    """The data file's content."""
    bands = ErrorBands(cases={"memory": tuple(memory_cases()), "time": tuple(time_cases())})
    data: dict = {"schema_version": 1, "min_cases": MIN_CASES}
    for kind, dims in (("memory", MEMORY_DIMS), ("time", TIME_DIMS)):
        regimes = []
        for key, n in bands.regimes(kind):
            errors, _ = bands.errors_of(kind, key)
            regimes.append({
                "regime": " · ".join(key) if key else "all", "cases": n,
                "quantiles": {f"p{round(q * 100):02d}": quantile(errors, q) for q in LEVELS},
            })  # fmt: skip
        rows = sorted(bands.cases[kind])
        data[kind] = {
            "dimensions": list(dims),
            "cases": [{"case": c, "error": e, "regime": dict(zip(dims, key, strict=True))} for c, key, e in rows],
            "regimes": regimes,
        }
    return data


def render(data: dict) -> str:
    import yaml

    return HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def main(argv: list[str]) -> None:
    data = derive()
    for kind in ("memory", "time"):
        rows = [[r["regime"], str(r["cases"]), *(f"{v:+.1%}" for v in r["quantiles"].values())]
                for r in data[kind]["regimes"]]  # fmt: skip
        heads = ["regime", "cases", *(f"p{round(q * 100):02d}" for q in LEVELS)]
        print(f"{kind}: signed error (estimate / measured − 1) by regime, ≥ {MIN_CASES} cases")
        print(render_table(heads, rows, right=set(range(1, len(heads)))))
        print()
    if "--write" in argv:
        write_text_atomic(OUT, render(data))
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
