"""Re-planning a campaign under way: facts kept, runs in progress in place, lost nodes avoided, the
new plan verified; bad status files named in one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ftplan.cli.app import app, run
from ftplan.plan import load_plan, verified_plan, write_plan
from ftplan.replan import StatusError, replan_campaign
from ftplan.scenario import resolve_scenario
from ftplan.schema.scenario import Scenario
from ftplan.schema.status import CampaignStatus
from ftplan.solver import solve_campaign
from ftplan.verify import verify_plan

SMALL = {"model": "qwen2.5-0.5b", "method": "full", "seq_len": 2048, "global_batch": 32}
DATA = {
    "name": "replan-test",
    "jobs": [SMALL | {"id": "a", "tokens": 600_000_000}, SMALL | {"id": "b", "tokens": 400_000_000},
             SMALL | {"id": "c", "tokens": 300_000_000, "depends_on": ["a"]},
             SMALL | {"id": "d", "tokens": 200_000_000}],
    "pools": [{"id": "lab", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 2, "usd_per_node_h": 4.0},
              {"id": "cloud", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 1}],
    "objective": {"minimise": "cost", "then": "time"},
    "solver": {"time_limit_s": 10, "seed": 0, "workers": 1},
}  # fmt: skip


@pytest.fixture(scope="module")
def first(catalog):
    campaign = resolve_scenario(Scenario.model_validate(DATA), catalog, "t")
    return campaign, verified_plan(campaign, solve_campaign(campaign))


def _mid(plan):
    """A time when some run has finished and another is still running."""
    ends = sorted({r.end_h for r in plan.runs})
    return round((ends[0] + ends[1]) / 2, 2)


def test_node_loss_keeps_facts_and_runs_in_progress_and_avoids_the_node(first):
    campaign, plan = first
    now = _mid(plan)
    running = [r for r in plan.runs if r.start_h < now < r.end_h]
    finished = [r for r in plan.runs if r.end_h <= now]
    assert running and finished
    lab = [r for r in running if r.pool == "lab"]
    lost = lab[0].nodes[0] if lab else "lab/node1"
    status = CampaignStatus(now_h=now, nodes_lost=[lost])
    out = replan_campaign(campaign, plan, status)
    new = out.plan
    assert verify_plan(campaign, new) == []
    assert new.replan.now_h == now and new.replan.nodes_lost == [lost]
    for r in finished:  # facts, as planned
        part = next(p for p in new.runs if p.run == r.run)
        assert part.state == "done" and (part.start_h, part.end_h, part.nodes) == (r.start_h, r.end_h, r.nodes)
    for r in running:
        parts = [p for p in new.runs if p.run == r.run]
        assert parts[0].state == "done" and parts[0].end_h == now
        later = [p for p in parts if p.state == "planned"]
        assert len(later) == 1 and abs(sum(p.work for p in parts) - 1) < 1e-9
        if lost not in r.nodes:  # in progress on a live node: it goes on where it is, from now
            assert (later[0].nodes, later[0].gpus) == (r.nodes, r.gpus)
            assert later[0].start_h == pytest.approx(now, abs=1 / 60)
        else:  # failed with its node, no checkpoint stated: its part starts again
            assert later[0].work == pytest.approx(1.0) and lost not in later[0].nodes
    for p in new.runs:
        if p.state == "planned":
            assert p.start_h >= now - 1e-9 and lost not in p.nodes
    assert any("failed at now" in a for a in out.assumed) == bool(lab)


def test_a_checkpoint_shortens_the_restart_and_migration_verifies(first):
    campaign, plan = first
    now = _mid(plan)
    running = next(r for r in plan.runs if r.start_h < now < r.end_h)
    status = CampaignStatus(now_h=now, runs={running.run: {"state": "failed", "checkpointed": 0.25}})
    new = replan_campaign(campaign, plan, status).plan
    parts = [p for p in new.runs if p.run == running.run]
    assert [p.state for p in parts] == ["done", "planned"]
    assert parts[0].work == pytest.approx(0.25) and parts[1].work == pytest.approx(0.75)
    assert verify_plan(campaign, new) == []
    moved = replan_campaign(campaign, plan, CampaignStatus(now_h=now, runs={running.run: {
        "state": "running", "progress": 0.4, "checkpointed": 0.3}}), allow_migrate=True).plan  # fmt: skip
    assert verify_plan(campaign, moved) == [] and moved.replan.migrate


def test_the_verifier_refuses_a_replan_that_breaks_its_facts(first):
    campaign, plan = first
    now = _mid(plan)
    new = replan_campaign(campaign, plan, CampaignStatus(now_h=now, nodes_lost=["lab/node1"])).plan
    planned = next(i for i, p in enumerate(new.runs) if p.state == "planned" and p.start_h > now)
    early = new.runs[planned].model_copy(update={"start_h": 0.0})
    bad = new.model_copy(update={"runs": [*new.runs[:planned], early, *new.runs[planned + 1 :]]})
    assert any("before now" in e for e in verify_plan(campaign, bad))
    half = new.runs[planned].model_copy(update={"work": 0.5})
    bad = new.model_copy(update={"runs": [*new.runs[:planned], half, *new.runs[planned + 1 :]]})
    assert any("not all of it" in e or "recomputed" in e for e in verify_plan(campaign, bad))
    on_lost = new.model_copy(
        update={"replan": new.replan.model_copy(update={"nodes_lost": ["lab/node0", "lab/node1"]})}
    )
    assert any("lost node" in e for e in verify_plan(campaign, on_lost)) or not any(
        "lab/node0" in p.nodes for p in new.runs if p.state == "planned"
    )


def test_status_errors_name_the_field(first):
    campaign, plan = first
    with pytest.raises(StatusError, match=r"runs\.zzz: not a run of plan; its runs: a, b, c, d"):
        replan_campaign(campaign, plan, CampaignStatus(now_h=1.0, runs={"zzz": {"state": "finished"}}))
    with pytest.raises(StatusError, match=r"nodes_lost\[0\]: 'cloud/i0' is a cloud instance"):
        replan_campaign(campaign, plan, CampaignStatus(now_h=1.0, nodes_lost=["cloud/i0"]))
    with pytest.raises(StatusError, match=r"nodes_lost\[0\]: 'lab/node7' is not a node"):
        replan_campaign(campaign, plan, CampaignStatus(now_h=1.0, nodes_lost=["lab/node7"]))
    late = max(r.end_h for r in plan.runs) + 1
    with pytest.raises(StatusError, match="nothing is left to plan"):
        replan_campaign(campaign, plan, CampaignStatus(now_h=late))


def test_cli_replan_writes_a_plan_check_accepts(first, tmp_path, capsys):
    _, plan = first
    sc = tmp_path / "s.yaml"
    import yaml

    sc.write_text(yaml.safe_dump(DATA))
    old = tmp_path / "plan.yaml"
    write_plan(plan, old)
    st = tmp_path / "status.yaml"
    st.write_text(f"now_h: {_mid(plan)}\nnodes_lost: [lab/node1]\n")
    new = tmp_path / "new.yaml"
    runner = CliRunner()
    res = runner.invoke(app, ["replan", str(sc), str(old), "--status", str(st), "-o", str(new), "-q"])
    assert res.exit_code == 0, res.output
    assert "change: cost $" in res.output and "re-planned at" in res.output
    res = runner.invoke(app, ["check", str(sc), str(new)])
    assert res.exit_code == 0 and "valid for" in res.output
    # planned at a looser-than-default time quantile: what is left runs longer, and check holds it to that
    res = runner.invoke(app, ["replan", str(sc), str(old), "--status", str(st), "-o", str(new), "-q",
                              "--time-confidence", "0.9"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "runs planned at the 0.9 quantile" in res.output
    assert runner.invoke(app, ["check", str(sc), str(new), "--time-confidence", "0.9"]).exit_code == 0
    import ftplan

    from_python = ftplan.replan(sc, old, st, time_confidence=0.9).plan  # the same from Python
    assert from_python.totals.cost_usd == pytest.approx(load_plan(new).totals.cost_usd)
    assert ftplan.check(sc, from_python, time_confidence=0.9) == []
    st.write_text("now_h: -1\n")
    assert run(["replan", str(sc), str(old), "--status", str(st)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "status.yaml: field 'now_h'" in err and err.count("\n") == 1


def _swapped(plan):
    """The plan with the lab's two nodes exchanged: as valid and as good (nodes of a pool are alike)."""
    swap = {"lab/node0": "lab/node1", "lab/node1": "lab/node0"}
    runs = [
        r.model_copy(
            update={"nodes": [swap.get(n, n) for n in r.nodes], "gpus": {swap.get(n, n): g for n, g in r.gpus.items()}}
        )
        for r in plan.runs
    ]
    return plan.model_copy(update={"runs": runs})


@pytest.mark.parametrize("mirror", [False, True])
def test_a_replan_with_nothing_changed_moves_nothing(first, mirror):
    """Nodes of a pool are interchangeable for cost and time; the search after the objectives keeps every run
    planned again on its previous nodes when the objectives allow it, whichever of equal plans it was."""
    campaign, plan = first
    plan = _swapped(plan) if mirror else plan
    assert verify_plan(campaign, plan) == []
    now = round(min(r.end_h for r in plan.runs) / 2, 2)
    out = replan_campaign(campaign, plan, CampaignStatus(now_h=now))
    assert not [c for c in out.changes if "moved" in c], out.changes
    assert out.plan.totals.cost_usd == pytest.approx(plan.totals.cost_usd, abs=0.5)
