"""The greedy warm start's timelines and run order against plain re-implementations that check every
time point, and its plans under a price on time."""

from __future__ import annotations

import random
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from ftplan.candidates import Candidate
from ftplan.solver.greedy import Inventory, Placement, Timeline, run_order

intervals = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 30), st.integers(1, 8)), max_size=12)


def _peak(items, start, end):
    points = {start, *(s for s, _, _ in items if start < s < end)}
    return max(sum(d for s, e, d in items if s <= t < e) for t in points)


def _naive_earliest(items, ready, minutes, demand, capacity):
    for t in sorted({ready, *(e for _, e, _ in items if e > ready)}):
        if _peak(items, t, t + minutes) + demand <= capacity:
            return t
    raise AssertionError("the last end always has room")


@settings(max_examples=300, deadline=None)
@given(intervals, st.integers(0, 80), st.integers(1, 40), st.integers(1, 8))
def test_timeline_start_is_the_first_that_fits(taken, ready, minutes, demand):
    tl, items = Timeline(), []
    for start, length, d in taken:
        if _peak(items, start, start + length) + d <= 8:  # only what fits is ever placed
            tl.add(start, start + length, d)
            items.append((start, start + length, d))
    assert tl.earliest(ready, minutes, demand, 8) == _naive_earliest(items, ready, minutes, demand, 8)
    assert tl.levels[-1] == 0 and tl.times == sorted(set(tl.times))


def test_timeline_refuses_more_than_capacity():
    assert Timeline().earliest(0, 10, 9, 8) is None


def _cand(**fields):
    """The fields of a candidate the inventory reads, with the candidate's own GPUs-per-node rule."""
    c = SimpleNamespace(**fields)
    c.demand_per_node = lambda per: Candidate.demand_per_node(c, per)
    return c


def _inventory(nodes: int):
    pool = SimpleNamespace(id="p", placed=True, nodes=nodes, gpus_per_node=8, kind="owned")
    return Inventory(SimpleNamespace(pools=[pool], history=None), {"p": nodes}), pool


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(1, 30), st.integers(1, 8)), max_size=10),
    st.integers(1, 4), st.integers(1, 40), st.integers(0, 40),
)  # fmt: skip
def test_multi_node_start_is_the_first_with_enough_whole_nodes(taken, need, minutes, ready):
    held, _ = _inventory(4)
    use: dict[int, list] = {k: [] for k in range(4)}
    for k, start, length, d in taken:
        if _peak(use[k], start, start + length) + d <= 8:
            c = _cand(pool_id="p", minutes=length, gpus=d, nodes=1, whole_nodes=False)
            held.take(c, Placement(0, start, (k,)))
            use[k].append((start, start + length, d))
    c = _cand(pool_id="p", minutes=minutes, gpus=8 * need, nodes=need, whole_nodes=True)
    start, nodes = held.earliest(c, ready)
    every = sorted({ready, *(e for items in use.values() for _, e, _ in items if e > ready)})
    expected = next(
        t for t in every if sum(_peak(use[k], t, t + minutes) == 0 for k in range(4)) >= need
    )  # the first time point with `need` idle nodes
    assert start == expected
    assert nodes == tuple(k for k in range(4) if _peak(use[k], start, start + minutes) == 0)[:need]


def test_more_nodes_than_the_pool_has_is_no_start():
    held, _ = _inventory(2)
    c = _cand(pool_id="p", minutes=5, gpus=24, nodes=3, whole_nodes=True)
    assert held.earliest(c, 0) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 9), st.sets(st.integers(0, 30), max_size=3)), max_size=14))
def test_run_order_takes_the_first_ready_run_in_rank(rows):
    runs = [
        SimpleNamespace(id=f"r{i}", spec=SimpleNamespace(priority=p), depends_on=[f"r{d}" for d in deps if d < i])
        for i, (p, _, deps) in enumerate(rows)
    ]  # dependencies on earlier runs only: no cycle
    cands = {f"r{i}": [SimpleNamespace(minutes=m)] for i, (_, m, _) in enumerate(rows)}
    order = run_order(SimpleNamespace(runs=runs, history=None), cands)
    pending = sorted(runs, key=lambda r: (-r.spec.priority, -cands[r.id][0].minutes))
    done: list[str] = []
    while pending:  # the rule, spelled out: rescan the ranked list for its first run whose dependencies are placed
        run = next(r for r in pending if set(r.depends_on) <= set(done))
        pending.remove(run)
        done.append(run.id)
    assert [r.id for r in order] == done


def test_a_price_on_time_plans_what_cheapest_first_cannot_for_less_than_earliest_end(catalog):
    """Under a deadline at a third of the cheapest-first makespan, cheapest-first finishes some run too late;
    the priced greedy meets the deadline for well under what earliest-end first costs."""
    from ftplan.candidates import build_candidates
    from ftplan.scenario import resolve_scenario
    from ftplan.schema.scenario import Scenario
    from ftplan.solver.greedy import greedy_plan
    from ftplan.solver.model import build_model
    from ftplan.solver.solve import _best_greedy, _greedy_objective, _priced_greedy

    rng = random.Random(50)
    kinds = [("qwen2.5-0.5b", "full"), ("qwen2.5-1.5b", "full"), ("llama-3.2-3b", "lora"), ("qwen2.5-7b", "lora"),
             ("llama-3.1-8b", "lora"), ("llama-3.1-8b", "full"), ("mistral-7b-v0.3", "qlora"), ("gemma-2-9b", "lora"),
             ("qwen2.5-14b", "lora"), ("qwen2.5-14b", "qlora"), ("phi-3-mini-4k", "full"),
             ("llama-3.2-1b", "full")]  # fmt: skip
    jobs = []
    for i in range(50):
        model, method = rng.choice(kinds)
        jobs.append({"id": f"j{i}", "model": model, "method": method, "seq_len": 2048, "global_batch": 32,
                     "tokens": rng.choice([50_000_000, 200_000_000, 500_000_000])})  # fmt: skip
        if i and rng.random() < 0.15:
            jobs[-1]["depends_on"] = [f"j{rng.randrange(i)}"]
    pools = [
        {"id": "lab-a100", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 4, "usd_per_node_h": 6.0,
         "network_gbps": 800},
        {"id": "lab-h100", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 2, "usd_per_node_h": 9.0},
        {"id": "p5", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": 2},
        {"id": "p4de", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 4},
        {"id": "runpod-h100", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 8},
        {"id": "lambda-a100", "kind": "cloud", "instance": "lambda/gpu_8x_a100_80gb_sxm4", "quota_nodes": 2},
    ]  # fmt: skip
    data = {"jobs": jobs, "pools": pools, "objective": {"minimise": "cost"}}
    probe = resolve_scenario(Scenario.model_validate(data), catalog, "t")
    table = build_candidates(probe)
    cands = {r.id: table.by_job[r.job_id] for r in probe.runs}
    cheapest = greedy_plan(probe, cands, "cost")
    span = max(p.start + cands[r][p.cand].minutes for r, p in cheapest.items())
    data["objective"]["deadline_h"] = round(span / 60 / 3, 2)
    campaign = resolve_scenario(Scenario.model_validate(data), catalog, "t")
    m = build_model(campaign, table)
    assert greedy_plan(campaign, cands, "cost") is None
    fastest = greedy_plan(campaign, cands, "time")
    priced = _priced_greedy(m, campaign)
    assert priced
    best = min(priced, key=lambda p: _greedy_objective(m, p, "cost"))
    assert _best_greedy(m, campaign, "cost") is not None
    assert _greedy_objective(m, best, "cost") < 0.9 * _greedy_objective(m, fastest, "cost")
    assert max(p.start + cands[r][p.cand].minutes for r, p in best.items()) <= 60 * data["objective"]["deadline_h"]
