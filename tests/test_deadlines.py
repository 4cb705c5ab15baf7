"""Deadlines you can trust: durations at a quantile of the time model's error, and the chance deadlines hold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ftplan
from ftplan import bands
from ftplan.bands import ErrorBands, load_bands
from ftplan.candidates import build_candidates
from ftplan.timing import deadlines
from ftplan.timing.deadlines import deadline_odds, duration_factor, time_band

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios/quickstart.yaml"


@pytest.fixture(scope="module")
def training():
    return ftplan.job(ROOT / "scenarios/jobs/llama-8b-lora-h100.yaml").training


@given(
    lo=st.floats(0.01, 0.99), hi=st.floats(0.01, 0.99), pp=st.sampled_from([1, 4]), nodes=st.integers(1, 64),
    moe=st.booleans(),
)  # fmt: skip
def test_durations_grow_with_the_confidence(training, lo, hi, pp, nodes, moe):
    lo, hi = sorted((lo, hi))
    assert duration_factor(training, pp, nodes, lo, moe) <= duration_factor(training, pp, nodes, hi, moe)
    band = time_band(training, pp, nodes, moe)
    assert duration_factor(training, pp, nodes, hi, moe) == 1 + band.error(hi)
    assert duration_factor(training, pp, nodes, None, moe) == 1.0


def test_a_moe_jobs_band_holds_moe_runs_only_and_a_dense_jobs_none(training):
    """The time bands' first dimension: a MoE's routed experts, all-to-alls and expert GEMMs are mechanisms a
    dense model's published runs say nothing of, and the other way round."""
    moe, dense = (time_band(training, 1, 8, flag) for flag in (True, False))
    assert moe.regime[0] == "MoE" and dense.regime[0] == "dense"
    moe_ids = ("gpt_oss", "gpt-oss", "deepseek", "qwen3_", "qwen3-30b")  # (the MoE cases' ids, by source)
    assert moe.n >= 8 and all(any(m in c for m in moe_ids) for c in moe.cases)
    assert not any(any(m in c for m in moe_ids) for c in dense.cases)


def _hours(campaign) -> dict[tuple, float]:
    table = build_candidates(campaign)
    return {(c.job_id, c.pool_id, c.gpus, c.tp, c.pp, c.zero, c.offload, c.recompute, c.micro_batch): c.hours
            for cs in table.by_job.values() for c in cs}  # fmt: skip


def test_planning_at_a_confidence_stretches_each_candidate_by_its_regimes_quantile():
    plain = ftplan.campaign(QUICKSTART)
    sure = replace(plain, time_confidence=0.9)
    before, after = _hours(plain), _hours(sure)
    common = before.keys() & after.keys()
    assert common
    for key in common:
        job = plain.jobs[key[0]]
        nodes = -(-key[2] // next(p for p in plain.pools if p.id == key[1]).gpus_per_node)
        assert after[key] == pytest.approx(
            before[key] * duration_factor(job.training, key[4], nodes, 0.9, job.arch.is_moe), rel=1e-9
        )


def test_the_chance_deadlines_hold_is_reproducible_and_verified(tmp_path):
    plan = ftplan.plan(QUICKSTART)
    t = plan.timing
    assert t.time_confidence is None and 0 <= t.deadline_probability <= 1 and t.draws == deadlines.DRAWS
    assert t.makespan_p50_h <= t.makespan_p90_h
    again = deadline_odds(ftplan.campaign(QUICKSTART), plan.runs, None, seed=t.seed)
    assert again.probability == t.deadline_probability and again.makespan_p90_h == pytest.approx(t.makespan_p90_h)
    forged = plan.model_copy(update={"timing": t.model_copy(update={"makespan_p90_h": t.makespan_p50_h})})
    assert any("makespan_p90_h" in v for v in ftplan.check(QUICKSTART, forged))
    # a plan made at the estimates is looser than a check that asks for the 0.9 quantile
    sure = replace(ftplan.campaign(QUICKSTART), time_confidence=0.9)
    from ftplan.verify import verify_plan

    assert any("looser than the 0.9 asked for" in v for v in verify_plan(sure, plan))


def _bands_with_time_error(error: float) -> ErrorBands:
    real = load_bands()
    return ErrorBands({"memory": real.cases["memory"], "time": (("one", ("full",) * 5, error),)})


@pytest.mark.parametrize(("error", "holds"), [(0.0, True), (1.0, False)])
def test_late_runs_push_what_follows_them(monkeypatch, error, holds):
    """With every duration exact, the replay ends with the plan; twice as long, a run that waits for another (on
    its GPUs or through a dependency) starts late, and the makespan doubles or more."""
    plan = ftplan.plan(QUICKSTART)
    campaign = ftplan.campaign(QUICKSTART)
    monkeypatch.setattr(bands, "load_bands", lambda: _bands_with_time_error(error))
    odds = deadline_odds(campaign, plan.runs, None, seed=0, draws=50)
    planned = max(r.start_h + r.hours for r in plan.runs)
    if holds:
        assert odds.makespan_p50_h == pytest.approx(planned)
        assert odds.probability == 1.0
    else:
        chained = max(2 * (a.hours + b.hours) for a in plan.runs for b in plan.runs
                      if a.run != b.run and a.end_h <= b.start_h and set(a.nodes) & set(b.nodes))  # fmt: skip
        assert odds.makespan_p50_h >= chained - 1e-9
        assert odds.probability == 0.0


def test_a_scenario_or_the_command_line_asks_for_the_confidence():
    sc = ftplan.io.read_yaml(QUICKSTART)
    sc["objective"] = {"minimise": "cost", "time_confidence": 0.9}
    plan = ftplan.plan(sc)
    assert plan.timing.time_confidence == 0.9 and plan.timing.deadline_probability is None
    assert ftplan.check(sc, plan) == []
    plain = ftplan.plan(QUICKSTART, time_confidence=None)
    assert plain.timing.time_confidence is None
    tighter = ftplan.check(sc, plan, time_confidence=0.95)
    assert tighter == ["timing: durations planned at time_confidence 0.9, looser than the 0.95 asked for"]
    longer = {r.run: r.hours for r in plan.runs}
    assert sum(longer.values()) > sum(r.hours for r in plain.runs)
