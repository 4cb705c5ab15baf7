"""The catalog's time-model efficiencies and the per-operation dispatch time are what
benchmarks/throughput_accuracy.py --fit gets from the published llm-foundry and Qwen runs (the fit is reproducible
from the data in the repository)."""

from __future__ import annotations

import pytest

from ftplan.timing import dispatch


def test_the_catalogs_efficiencies_are_the_fit_on_llm_foundrys_runs(catalog, benchmark_script):
    bench = benchmark_script("throughput_accuracy")
    cases, skipped = bench.load_cases(catalog)
    fitted, per_op = bench.fit_efficiencies(cases, catalog)
    assert pytest.approx(per_op, abs=0.05e-6) == dispatch.SECONDS_PER_OP  # (the constant, to 0.1 µs)
    for family, gpus in bench.FAMILIES.items():
        matmuls, attention, errs = fitted[family]
        for gpu in gpus:
            assert catalog.gpus[gpu].efficiency == pytest.approx(matmuls, abs=5e-4)
            assert catalog.gpus[gpu].attention_efficiency == pytest.approx(attention, abs=5e-4)
        assert attention < matmuls  # attention kernels run below the matmuls' efficiency
        assert len(errs) >= 15 and sorted(errs)[len(errs) // 2] < 0.10  # the fit's median error on its cases
    h200, h100 = catalog.gpus["h200-sxm-141gb"], catalog.gpus["h100-sxm-80gb"]  # (the H100's compute)
    assert (h200.efficiency, h200.attention_efficiency) == (h100.efficiency, h100.attention_efficiency)
    assert sum(skipped.values()) + len(cases) > 200 and len(cases) > 100
