"""Error bands (catalogs/error_bands.yaml) and the memory headroom policy, from the data file to the verifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import ftplan
from ftplan.bands import (
    MEMORY_DIMS,
    MIN_CASES,
    Band,
    ErrorBands,
    HeadroomPolicy,
    layout_memory_regime,
    load_bands,
    parse_margin,
    quantile,
)
from ftplan.cli.app import app
from ftplan.errors import FtplanError
from ftplan.units import GIB

ROOT = Path(__file__).resolve().parents[1]
BANDS = load_bands()
runner = CliRunner()


def test_the_data_file_is_what_the_benchmarks_give_today(benchmark_script):
    """`python benchmarks/error_bands.py --write` regenerates it; any model change that moves an error shows here."""
    script = benchmark_script("error_bands")
    assert (ROOT / "catalogs/error_bands.yaml").read_text() == script.render(script.derive())


def test_the_file_lists_every_regime_the_loader_derives():
    raw = ftplan.io.read_yaml(ROOT / "catalogs/error_bands.yaml")
    for kind in ("memory", "time"):
        listed = {r["regime"]: r["cases"] for r in raw[kind]["regimes"]}
        derived = {(" · ".join(k) or "all"): n for k, n in BANDS.regimes(kind)}
        assert listed == derived
        assert all(n >= MIN_CASES for n in listed.values())


def test_quantiles_are_the_empirical_distribution_without_interpolation():
    errors = (-0.08, -0.02, 0.0, 0.05, 0.3)
    assert quantile(errors, 0.01) == -0.08
    assert quantile(errors, 0.2) == -0.08  # 1 of 5 at or below
    assert quantile(errors, 0.21) == -0.02
    assert quantile(errors, 0.5) == 0.0
    assert quantile(errors, 0.99) == 0.3


def test_band_arithmetic_is_exact():
    band = Band("memory", ("LoRA",), (-0.1, 0.0, 0.25), ("a", "b", "c"))
    # true peak = estimate / (1 + e): the 0.9-quantile of the peak uses the 0.1-quantile of the error
    assert band.value(90.0, 0.9) == pytest.approx(100.0)
    assert band.value(90.0, 0.1) == pytest.approx(72.0)
    assert band.fit_probability(90.0, 100.0) == 1.0
    assert band.fit_probability(90.0, 99.0) == pytest.approx(2 / 3)
    assert band.fit_probability(90.0, 72.0) == pytest.approx(1 / 3)
    time = Band("time", (), (-0.1, 0.0, 0.5), ("a", "b", "c"))
    assert time.value(10.0, 0.95) == pytest.approx(15.0)  # duration = estimate · (1 + e)
    assert HeadroomPolicy(confidence=0.9).required(90.0, band) == pytest.approx(100.0)
    assert HeadroomPolicy(confidence=None, margin=0.1).required(90.0, band) == pytest.approx(100.0)
    assert HeadroomPolicy(confidence=None, margin_bytes=6 * GIB).required(GIB, band) == 7 * GIB


@given(
    kind=st.sampled_from(["memory", "time"]),
    case=st.integers(0, 200),
    lo=st.floats(0.01, 0.99),
    hi=st.floats(0.01, 0.99),
    estimate=st.floats(1e6, 1e12),
)
def test_bands_are_monotone_in_the_confidence(kind, case, lo, hi, estimate):
    rows = BANDS.cases[kind]
    band = BANDS.band(kind, rows[case % len(rows)][1])
    lo, hi = sorted((lo, hi))
    assert band.value(estimate, lo) <= band.value(estimate, hi)
    if kind == "memory":
        assert HeadroomPolicy(confidence=lo).required(estimate, band) <= HeadroomPolicy(confidence=hi).required(
            estimate, band
        )


@given(
    case=st.integers(0, 200),
    ratios=st.lists(st.floats(0.5, 2.0), min_size=1, max_size=20),
    edge=st.integers(0, 200),
)
def test_fit_probabilities_of_an_array_are_each_peaks_fit_probability(case, ratios, edge):
    rows = BANDS.cases["memory"]
    band = BANDS.band("memory", rows[case % len(rows)][1])
    capacity = 80 * GIB
    # (a peak whose need equals one case's error exactly: the case counts as fitting in both)
    peaks = [capacity * r for r in ratios] + [capacity * (1 + band.errors[edge % band.n])]
    assert band.fit_probabilities(np.array(peaks), capacity).tolist() == [
        band.fit_probability(p, capacity) for p in peaks
    ]


def test_a_thin_regime_falls_back_to_its_parent_and_says_so():
    cases = {
        "memory": tuple((f"wide{i}", ("LoRA", "1 GPU"), -0.01 * i) for i in range(MIN_CASES))
        + tuple((f"thin{i}", ("LoRA", "ZeRO-3"), -0.5) for i in range(2)),
        "time": (("t", ("full",), 0.0),),
    }
    bands = ErrorBands(cases)
    thin = bands.band("memory", ("LoRA", "ZeRO-3"))
    assert thin.regime == ("LoRA",) and thin.n == MIN_CASES + 2
    assert thin.narrower == "LoRA · ZeRO-3" and thin.narrower_cases == 2
    assert "2 of LoRA · ZeRO-3: too few" in thin.source()
    wide = bands.band("memory", ("LoRA", "1 GPU"))
    assert wide.regime == ("LoRA", "1 GPU") and wide.narrower == ""


def test_every_published_run_fits_under_the_default_policy():
    """The default's claim (bands.DEFAULT_CONFIDENCE): planned on a card of exactly the memory it asks for, no
    graded published run would have run out of memory (benchmarks/memory_accuracy.py prints the table)."""
    from ftplan.catalog import load_catalog
    from ftplan.validation import run_cases

    for r in run_cases(ROOT / "benchmarks/memory_cases.yaml", load_catalog()):
        assert len(r.regime) == len(MEMORY_DIMS)
        need = HeadroomPolicy().required(r.estimate_gib, BANDS.band("memory", r.regime))
        assert need >= r.measured_gib * (1 - 1e-9), r.case


def test_margins_parse_as_fractions_or_amounts():
    assert parse_margin(0.1, "x").margin == 0.1
    assert parse_margin("6 GiB", "x").margin_bytes == 6 * GIB
    assert parse_margin("512MiB", "x").margin_bytes == 512 * 2**20
    assert parse_margin("2 GB", "x").margin_bytes == 2 * 10**9
    for bad in (1.0, -0.1, "six GiB", "6 GiB per GPU", "6 TB"):
        with pytest.raises(FtplanError, match="memory_margin"):
            parse_margin(bad, "x")


LLAMA70B = ROOT / "scenarios/jobs/llama-70b-full-fit.yaml"


KEY = ["pool", "gpus", "tp", "pp", "cp", "ep", "zero", "dp_shard", "offload", "recompute", "micro_batch"]


def _keys_of(frame) -> list[tuple]:
    return list(frame[KEY].itertuples(index=False, name=None))


def _keys(result) -> set[tuple]:
    return set(_keys_of(result.result.layouts))


def test_a_layout_that_fits_at_the_median_but_not_at_the_90th_percentile_is_excluded_at_0_9():
    kw = {"instances": ["aws/p5.48xlarge"], "nodes": 4}
    median = ftplan.fit(LLAMA70B, policy=HeadroomPolicy(confidence=0.5), **kw)
    strict = ftplan.fit(LLAMA70B, policy=HeadroomPolicy(confidence=0.9), **kw)
    assert _keys(strict) < _keys(median)
    job = median.result.job
    frame = median.result.layouts
    left_out = frame[[k not in _keys(strict) for k in _keys_of(frame)]]
    assert len(left_out) > 0
    for r in left_out.itertuples():
        cap = r.device_bytes + r.headroom_bytes
        regime = layout_memory_regime(job.arch, job.training, r.gpus, r.zero, r.offload, r.nodes)
        band = BANDS.band("memory", regime)
        assert HeadroomPolicy(confidence=0.5).required(r.device_bytes, band) <= cap
        assert HeadroomPolicy(confidence=0.9).required(r.device_bytes, band) > cap


def test_the_job_file_policy_applies_and_the_command_line_overrides_it(tmp_path):
    job = ftplan.io.read_yaml(LLAMA70B)
    loose = tmp_path / "loose.yaml"
    loose.write_text(json.dumps(job | {"memory_confidence": 0.5}))
    kw = {"instances": ["aws/p5.48xlarge"], "nodes": 4}
    from_file = ftplan.fit(loose, **kw)
    assert from_file.result.policy == HeadroomPolicy(confidence=0.5)
    assert _keys(from_file) == _keys(ftplan.fit(LLAMA70B, policy=HeadroomPolicy(confidence=0.5), **kw))
    overridden = ftplan.fit(loose, policy=HeadroomPolicy(), **kw)
    assert _keys(overridden) == _keys(ftplan.fit(LLAMA70B, **kw))


CAMPAIGN = ROOT / "scenarios/llama70b-campaign.yaml"


def test_the_verifier_rejects_a_plan_made_under_a_looser_policy_than_the_scenario_asks():
    plan = ftplan.plan(CAMPAIGN, policy=HeadroomPolicy(confidence=0.5))
    assert {r.memory_policy.memory_confidence for r in plan.runs} == {0.5}
    violations = ftplan.check(CAMPAIGN, plan)
    assert violations and all("a looser policy" in v for v in violations)
    assert ftplan.check(CAMPAIGN, plan, policy=HeadroomPolicy(confidence=0.5)) == []
    strict = ftplan.plan(CAMPAIGN)
    assert ftplan.check(CAMPAIGN, strict) == []
    assert strict.totals.makespan_h > plan.totals.makespan_h  # the headroom costs time on this campaign


def test_a_scenario_policy_reaches_every_job_unless_the_job_states_its_own():
    sc = ftplan.io.read_yaml(ROOT / "scenarios/quickstart.yaml")
    sc["memory_margin"] = "4 GiB"
    sc["jobs"][0]["memory_confidence"] = 0.9
    c = ftplan.campaign(sc)
    first, *rest = [j.id for j in c.scenario.jobs]
    assert c.policy(first) == HeadroomPolicy(confidence=0.9)
    assert all(c.policy(j) == HeadroomPolicy(confidence=None, margin_bytes=4 * GIB) for j in rest)
    plan = ftplan.plan(sc)
    for r in plan.runs:
        want = {"memory_confidence": 0.9} if r.job == first else {"memory_margin": "4 GiB"}
        assert {k: v for k, v in r.memory_policy.model_dump().items() if v is not None} == want
        assert r.memory_required_bytes >= r.memory_per_gpu_bytes or r.job == first


def test_memory_prints_the_band_and_json_carries_the_quantiles():
    job = str(ROOT / "scenarios/jobs/llama-8b-lora-h100.yaml")
    out = runner.invoke(app, ["memory", job])
    assert out.exit_code == 0, out.output
    assert "90% band" in out.output and "published runs of LoRA" in out.output
    assert "under memory_confidence 0.99 it needs" in out.output
    data = json.loads(runner.invoke(app, ["memory", job, "--format", "json", "--memory-confidence", "0.9"]).output)
    mem = data["memory"]
    assert mem["policy"] == {"memory_confidence": 0.9}
    q = list(mem["band"]["quantiles_bytes"].values())
    assert q == sorted(q)
    assert mem["band"]["low_bytes"] <= data["device_total_bytes"] <= mem["band"]["high_bytes"]
    assert mem["required_bytes"] == mem["band"]["quantiles_bytes"]["p90"]
    assert data["fits"] == (mem["required_bytes"] <= data["gpu_memory_bytes"])


def test_bad_policy_flags_are_usage_errors():
    job = str(ROOT / "scenarios/jobs/llama-8b-lora-h100.yaml")
    for flags in (["--memory-confidence", "1"], ["--memory-margin", "lots"],
                  ["--memory-confidence", "0.9", "--memory-margin", "0.1"]):  # fmt: skip
        out = runner.invoke(app, ["memory", job, *flags])
        assert out.exit_code == 2, (flags, out.output)
        assert "Traceback" not in out.output
