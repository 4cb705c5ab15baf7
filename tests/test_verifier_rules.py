"""Each rule of the verifier, one edit at a time, on a plan that uses them all (tests/verifier).

Every edit's complete list of violations is held exactly (tests/verifier/expected.json, reviewed when
recorded), so a check that stops firing, fires on a valid plan, or says something else fails here;
the boundary cases (a run ending exactly at its deadline, numbers one step inside a tolerance)
must pass. This is what keeps benchmarks/mutation.sh's verifier mutants dead.
Record after a deliberate change: ``python tests/test_verifier_rules.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ftplan.catalog import load_catalog
from ftplan.scenario import load_scenario, resolve_scenario
from ftplan.schema.plan import Plan
from ftplan.units import MONEY_UNITS_PER_USD
from ftplan.verify import BYTES_TOL, REL_TOL, differ, verify_plan

HERE = Path(__file__).resolve().parent / "verifier"
PLAN = json.loads((HERE / "rich_plan.json").read_text())
EXPECTED = HERE / "expected.json"
MAKESPAN = PLAN["totals"]["makespan_h"]


def _campaign(**objective):
    sc = load_scenario(HERE / "rich.yaml")
    if objective:
        sc = sc.model_copy(update={"objective": sc.objective.model_copy(update=objective)})
    return resolve_scenario(sc, load_catalog(), str(HERE / "rich.yaml"))


def run(p: dict, rid: str) -> dict:
    return next(r for r in p["runs"] if r["run"] == rid)


def pool(p: dict, pid: str) -> dict:
    return next(u for u in p["totals"]["pools"] if u["pool"] == pid)


def setter(where: Callable[[dict], dict], **fields) -> Callable[[dict], None]:
    return lambda p: where(p).update(fields)


def layout(rid: str, **fields) -> Callable[[dict], None]:
    return lambda p: run(p, rid)["layout"].update(fields)


def scale(where: Callable[[dict], dict], key: str, factor: float) -> Callable[[dict], None]:
    def edit(p: dict) -> None:
        where(p)[key] *= factor

    return edit


def add(where: Callable[[dict], dict], key: str, delta: float) -> Callable[[dict], None]:
    def edit(p: dict) -> None:
        where(p)[key] += delta

    return edit


def both(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(p: dict) -> None:
        for e in edits:
            e(p)

    return edit


def shift(rid: str, hours: float) -> Callable[[dict], None]:
    return both(add(lambda p: run(p, rid), "start_h", hours), add(lambda p: run(p, rid), "end_h", hours))


def drop_run(rid: str) -> Callable[[dict], None]:
    return lambda p: p["runs"].remove(run(p, rid))


def dup_run(rid: str) -> Callable[[dict], None]:
    return lambda p: p["runs"].append(copy.deepcopy(run(p, rid)))


R = run
TP, Z3, OFF, S1, S2, S3 = "tpjob", "z3", "offl", "sweep#1", "sweep#2", "sweep#3"

EDITS: dict[str, Callable[[dict], None]] = {
    # runs known, placed once, on known pools
    "two unknown runs": both(setter(lambda p: R(p, S2), run="zz1"), setter(lambda p: R(p, S3), run="zz2")),
    "placed twice": dup_run(S2),
    "missing": drop_run(S3),
    "unknown run before a bad one": both(setter(lambda p: R(p, TP), run="zz"), layout(Z3, precision="fp32")),
    "two unknown pools": both(setter(lambda p: R(p, S2), pool="p1"), setter(lambda p: R(p, S3), pool="p2")),
    "job renamed": setter(lambda p: R(p, S2), job="z3"),
    "precision": layout(Z3, precision="fp32"),
    "optimizer not allowed": layout(Z3, optimizer="adamw"),
    "zero not allowed": layout(Z3, zero=2),
    "recompute not allowed": layout(Z3, recompute="none"),
    "offload not allowed": layout(Z3, offload="optimizer"),
    "max gpus": both(setter(lambda p: R(p, OFF), gpu_count=2, gpus={"rp/i0": [0, 1]}), layout(OFF, dp=2)),
    # shapes and placement
    "dp x tp": layout(TP, dp=1),
    "dp x tp x pp": layout(TP, pp=2),
    "dp x tp x cp": layout(TP, cp=2),
    "expert parallelism on a dense model": layout(Z3, ep=2),
    "batch": layout(Z3, micro_batch=2),
    "gpu index beyond the node": setter(lambda p: R(p, S1), gpus={"buy/node0": [0, 1, 2, 4]}),
    "gpu index twice": setter(lambda p: R(p, S1), gpus={"buy/node0": [0, 1, 2, 2]}),
    "multi-node run not whole": setter(lambda p: R(p, TP), gpus={"lab/node0": [0, 1, 2, 3, 0], "lab/node1": [0, 1, 2]}),
    "single-node run on two nodes": setter(
        lambda p: R(p, S1),
        nodes=["lab/node0", "lab/node1"],
        gpus={"lab/node0": [0, 1], "lab/node1": [0, 1]},
        pool="lab",
    ),
    "node named twice": setter(lambda p: R(p, TP), nodes=["lab/node0", "lab/node0"]),
    "gpus on other nodes": setter(lambda p: R(p, S1), gpus={"buy/node1": [0, 1, 2, 3]}),
    "node beyond the pool": setter(lambda p: R(p, S1), nodes=["buy/node1"], gpus={"buy/node1": [0, 1, 2, 3]}),
    "node of another pool": setter(lambda p: R(p, S2), nodes=["lab/node0"], gpus={"lab/node0": [0]}),
    "instance beyond the quota": setter(lambda p: R(p, S2), nodes=["rp/i2"], gpus={"rp/i2": [0]}),
    "node id not a number": setter(lambda p: R(p, S1), nodes=["buy/nodeX"], gpus={"buy/nodeX": [0, 1, 2, 3]}),
    "node id with a leading zero": setter(lambda p: R(p, S1), nodes=["buy/node00"], gpus={"buy/node00": [0, 1, 2, 3]}),
    "node id of the wrong kind": setter(lambda p: R(p, S2), nodes=["rp/node0"], gpus={"rp/node0": [0]}),
    "node id of another pool's name": setter(lambda p: R(p, S2), nodes=["rpx/i0"], gpus={"rpx/i0": [0]}),
    "spans instances without a network": both(
        setter(lambda p: R(p, S2), nodes=["rp/i0", "rp/i1"], gpus={"rp/i0": [0], "rp/i1": [0]}, gpu_count=2),
        layout(S2, dp=2, grad_accum=4),
    ),
    "purchase not listed": lambda p: p["totals"]["pools"].remove(pool(p, "buy")),
    # the models' numbers
    "memory 3 bytes off": add(lambda p: R(p, Z3), "memory_per_gpu_bytes", BYTES_TOL + 1),
    "headroom 3 bytes off": add(lambda p: R(p, Z3), "headroom_bytes", -(BYTES_TOL + 1)),
    "does not fit": layout(TP, tp=1, dp=8, micro_batch=1),
    "impossible layout": layout(TP, tp=8, dp=1, micro_batch=8),
    "hours": scale(lambda p: R(p, TP), "hours", 1 + 2 * REL_TOL),
    "tokens per second": scale(lambda p: R(p, TP), "tokens_per_s", 1 - 2 * REL_TOL),
    "ends before it starts": setter(lambda p: R(p, S2), start_h=0.2),
    "zero-length interval": lambda p: R(p, S2).update(end_h=R(p, S2)["start_h"]),
    "interval too short": setter(lambda p: R(p, TP), end_h=0.13),
    "usd": scale(lambda p: R(p, TP), "usd", 1 + 2e-6),
    "cloud usd": scale(lambda p: R(p, OFF), "usd", 1 - 1e-5),
    # time and capacity
    "gpu overlap": shift(S1, -0.01),
    "instance shared": setter(lambda p: R(p, S3), nodes=["rp/i0"], gpus={"rp/i0": [0]}),
    "dependency": shift(S2, -0.01),
    "run deadline": shift(S2, 50),
    "campaign deadline": shift(TP, 100),
    # totals
    "pool missing": lambda p: p["totals"]["pools"].remove(pool(p, "rp")),
    "pool unknown": lambda p: p["totals"]["pools"].append(pool(p, "rp") | {"pool": "nowhere"}),
    "pool unknown before a wrong one": both(
        lambda p: p["totals"]["pools"].insert(0, pool(p, "rp") | {"pool": "nowhere"}),
        scale(lambda p: pool(p, "lab"), "utilisation", 0.5),
    ),
    "gpu-hours": scale(lambda p: p["totals"], "gpu_hours", 1 + 2e-9),
    "makespan": add(lambda p: p["totals"], "makespan_h", 1e-6),
    "cost": add(lambda p: p["totals"], "cost_usd", 1e-5),
    "used": scale(lambda p: pool(p, "lab"), "gpu_hours_used", 1 + 2e-9),
    "available": scale(lambda p: pool(p, "rp"), "gpu_hours_available", 1 - 1e-8),
    "utilisation": scale(lambda p: pool(p, "buy"), "utilisation", 1 + 2e-9),
    "purchase usd": add(lambda p: pool(p, "buy"), "purchase_usd", 1e-6),
    "bought from an owned pool": setter(lambda p: pool(p, "lab"), nodes_bought=1),
    "bought too many": setter(lambda p: pool(p, "buy"), nodes_bought=3),
    "bought more than used": setter(lambda p: pool(p, "buy"), nodes_bought=2),
    # the solver block
    "scenario": setter(lambda p: p, scenario="other"),
    "value": add(lambda p: p["solver"], "objective_value", 1 / 60),
    "bound above": setter(lambda p: p["solver"], bound=0.16, gap=1 / 15),
    "gap": setter(lambda p: p["solver"], gap=1e-6),
    "lp bound above the best": setter(lambda p: p["solver"], lp_bound=0.5),
    "optimal with a gap": setter(lambda p: p["solver"], bound=0.12, gap=0.2),
    "then repeats": setter(lambda p: p["solver"], then="time"),
    "then value": add(lambda p: p["solver"], "then_value", 0.01),
    "then bound above": add(lambda p: p["solver"], "then_bound", 0.01),
    "then gap": setter(lambda p: p["solver"], then_gap=0.5),
    "then gap just beyond": setter(lambda p: p["solver"], then_gap=2e-9),
    "then value a unit below the plan": lambda p: p["solver"].update(
        then_value=_cost_units(p, -1), then_bound=_cost_units(p, -1)
    ),
    "then value beyond the rounding": lambda p: p["solver"].update(
        then_value=_cost_units(p, 8), then_bound=_cost_units(p, 8)
    ),
    "then optimal with a gap": both(
        setter(lambda p: p["solver"], then_bound=0.0), setter(lambda p: p["solver"], then_gap=1.0)
    ),
    "then not run with values": setter(lambda p: p["solver"], then_status="NOT RUN"),
    "then without status": setter(lambda p: p["solver"], then_status=None),
    "then without value": setter(lambda p: p["solver"], then_value=None),
    "results without then": setter(lambda p: p["solver"], then=None),
    "a status without then": setter(lambda p: p["solver"], then=None, then_value=None, then_bound=None, then_gap=None),
}

# inside every tolerance, or exactly on a boundary: the plan stays valid
VALID: dict[str, Callable[[dict], None]] = {
    "lp bound at the best bound": lambda p: p["solver"].update(lp_bound=p["solver"]["bound"]),
    "memory 2 bytes off": add(lambda p: R(p, Z3), "memory_per_gpu_bytes", BYTES_TOL),
    "headroom 2 bytes off": add(lambda p: R(p, Z3), "headroom_bytes", -BYTES_TOL),
    "longer interval": setter(lambda p: R(p, TP), start_h=0.0),
    "then value at the plan's cost": lambda p: p["solver"].update(
        then_value=_cost_units(p, 0), then_bound=_cost_units(p, 0)
    ),
    "then value at the rounding's edge": lambda p: p["solver"].update(
        then_value=_cost_units(p, 7), then_bound=_cost_units(p, 7)
    ),
    "then gap within": setter(lambda p: p["solver"], then_gap=1e-9),
    "value within its minute": setter(
        lambda p: p["solver"], objective_value=MAKESPAN + 0.001, gap=0.001 / (MAKESPAN + 0.001)
    ),
    "then not run": setter(
        lambda p: p["solver"], then_status="NOT RUN", then_value=None, then_bound=None, then_gap=None
    ),
    "no then": setter(
        lambda p: p["solver"], then=None, then_status=None, then_value=None, then_bound=None, then_gap=None
    ),
    "feasible with a gap": setter(
        lambda p: p["solver"], status="FEASIBLE", bound=0.8 * MAKESPAN, lp_bound=0.8 * MAKESPAN, gap=0.2
    ),
}


def _cost_units(p: dict, extra: int) -> float:
    """The plan's cost in whole money units, plus ``extra`` (the solver may round each of the 6 runs
    and the 1 bought node up by less than a unit: 7 in all)."""
    return (round(p["totals"]["cost_usd"] * MONEY_UNITS_PER_USD) + extra) / MONEY_UNITS_PER_USD


def violations(edit: Callable[[dict], None], campaign=None) -> list[str]:
    data = copy.deepcopy(PLAN)
    edit(data)
    return verify_plan(campaign or _campaign(), Plan.model_validate(data))


@pytest.fixture(scope="module")
def expected() -> dict[str, list[str]]:
    return json.loads(EXPECTED.read_text())


def test_the_plan_uses_every_mechanism():
    runs = {r["run"]: r for r in PLAN["runs"]}
    assert runs[TP]["layout"]["tp"] > 1 and len(runs[TP]["nodes"]) == 2
    assert runs[Z3]["layout"]["zero"] == 3 and runs[Z3]["layout"]["recompute"] == "full"
    assert runs[Z3]["layout"]["optimizer"] == "adafactor" and runs[OFF]["layout"]["offload"] != "none"
    assert {r["pool"] for r in PLAN["runs"]} == {"lab", "rp", "buy"} and pool(PLAN, "buy")["nodes_bought"] == 1
    assert runs[S1]["start_h"] == runs[Z3]["end_h"]  # a dependant starting as its dependency ends
    assert verify_plan(_campaign(), Plan.model_validate(PLAN)) == []


@pytest.mark.parametrize("name", list(EDITS))
def test_each_edit_gets_exactly_its_violations(name, expected):
    assert violations(EDITS[name]) == expected[name]


@pytest.mark.parametrize("name", list(VALID))
def test_edits_inside_the_tolerances_are_valid(name):
    assert violations(VALID[name]) == []


def test_deadlines_and_limits_met_exactly():
    end = max(r["end_h"] for r in PLAN["runs"])  # (a deadline also sets the purchases' amortised share)
    assert not [v for v in verify_plan(_campaign(deadline_h=end), Plan.model_validate(PLAN)) if "deadline" in v]
    assert verify_plan(_campaign(budget_usd=PLAN["totals"]["cost_usd"]), Plan.model_validate(PLAN)) == []
    assert verify_plan(_campaign(capex_usd=1000.0), Plan.model_validate(PLAN)) == []  # one node at $1,000
    sc = load_scenario(HERE / "rich.yaml")
    jobs = [j.model_copy(update={"deadline_h": 0.15}) if j.id == "sweep" else j for j in sc.jobs]
    tight = resolve_scenario(sc.model_copy(update={"jobs": jobs}), load_catalog(), str(HERE / "rich.yaml"))
    assert verify_plan(tight, Plan.model_validate(PLAN)) == []


def test_limits_broken_by_a_cent_or_a_minute(expected):
    end = max(r["end_h"] for r in PLAN["runs"])
    cases = {
        "campaign deadline a minute early": _campaign(deadline_h=end - 1 / 60),
        "budget a cent short": _campaign(budget_usd=PLAN["totals"]["cost_usd"] - 0.01),
        "capex a dollar short": _campaign(capex_usd=999.0),
    }
    for name, campaign in cases.items():
        assert verify_plan(campaign, Plan.model_validate(PLAN)) == expected[name], name


def test_differ_holds_its_tolerance_exactly():
    assert not differ(1.5, 1.0, 0.5) and differ(1.5, 1.0, 0.25)
    assert not differ(0.5, 1.0, 0.5) and differ(0.5, -1.0, 0.5)
    assert not differ(0.0, 0.0, 0.0) and differ(1e-300, 0.0, 0.5)


def test_a_spot_pool_of_multi_gpu_instances_verifies(catalog):
    """Cloud runs pay whole instances (1 GPU of an 8-GPU instance pays for 8) and a spot pool's
    hours carry its time factor: a plan made that way verifies, and its numbers are those."""
    from dataclasses import replace

    from ftplan.plan import build_plan
    from ftplan.schema.scenario import Scenario
    from ftplan.solver import solve_campaign

    data = {"name": "spot", "jobs": [{"id": "a", "model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024,
                                      "tokens": 10**7, "global_batch": 8, "allow": {"max_gpus": 1}}],
            "pools": [{"id": "p4", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 1}]}  # fmt: skip
    campaign = resolve_scenario(Scenario.model_validate(data), catalog, "spot.yaml")
    campaign = replace(campaign, pools=[replace(campaign.pools[0], time_factor=1.25)])
    plan = build_plan(campaign, solve_campaign(campaign))
    assert verify_plan(campaign, plan) == []
    r = plan.runs[0]
    assert r.gpu_count == 1 and r.usd == pytest.approx(r.hours * campaign.pools[0].usd_per_node_h)
    plain = replace(campaign, pools=[replace(campaign.pools[0], time_factor=1.0)])
    assert any("h stated" in v for v in verify_plan(plain, plan))


def test_a_free_campaign_verifies(catalog):
    """Owned nodes at no running cost: a campaign of $0, whose cost objective has no gap."""
    from ftplan.plan import build_plan
    from ftplan.schema.scenario import Scenario
    from ftplan.solver import solve_campaign

    data = {"name": "free", "jobs": [{"id": "a", "model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024,
                                      "tokens": 10**7, "global_batch": 8}],
            "pools": [{"id": "lab", "kind": "owned", "gpu": "h100", "nodes": 1}]}  # fmt: skip
    campaign = resolve_scenario(Scenario.model_validate(data), catalog, "free.yaml")
    plan = build_plan(campaign, solve_campaign(campaign))
    assert plan.totals.cost_usd == 0 and plan.solver.objective == "cost" and plan.solver.gap == 0
    assert verify_plan(campaign, plan) == []


def test_an_unnamed_scenario_is_matched_by_file_name(tmp_path):
    text = (HERE / "rich.yaml").read_text().replace("name: rich\n", "")
    path = tmp_path / "rich-copy.yaml"
    path.write_text(text)
    campaign = resolve_scenario(load_scenario(path), load_catalog(), str(path))
    data = copy.deepcopy(PLAN) | {"scenario": "elsewhere/rich-copy.yaml"}
    assert verify_plan(campaign, Plan.model_validate(data)) == []
    data["scenario"] = "rich.yaml"
    assert verify_plan(campaign, Plan.model_validate(data)) == [
        "scenario: the plan is for 'rich.yaml', this scenario is 'rich-copy.yaml'"
    ]


def test_offloaded_states_must_fit_in_the_nodes_ram():
    """A pool's host_memory_gib bounds what offloaded states take per node: the plan's offloading run
    is valid while its pool's RAM is unknown, and a violation once the pool has less than it needs."""
    offl = run(PLAN, OFF)
    campaign = _campaign()
    assert verify_plan(campaign, Plan.model_validate(PLAN)) == []  # the instance's catalog RAM holds it
    pools = [
        dataclasses.replace(p, pool=dataclasses.replace(p.pool, host_memory_bytes=2**30)) if p.id == offl["pool"] else p
        for p in campaign.pools
    ]
    small = dataclasses.replace(campaign, pools=pools)
    found = verify_plan(small, Plan.model_validate(PLAN))
    assert len(found) == 1 and found[0].startswith(f"{OFF}: needs ") and "GiB of host memory per node" in found[0]


def _record() -> None:
    out = {name: violations(edit) for name, edit in EDITS.items()}
    end = max(r["end_h"] for r in PLAN["runs"])
    for name, campaign in {
        "campaign deadline a minute early": _campaign(deadline_h=end - 1 / 60),
        "budget a cent short": _campaign(budget_usd=PLAN["totals"]["cost_usd"] - 0.01),
        "capex a dollar short": _campaign(capex_usd=999.0),
    }.items():
        out[name] = verify_plan(campaign, Plan.model_validate(PLAN))
    EXPECTED.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    _record()
