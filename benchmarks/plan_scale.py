"""Planner scale: synthetic campaigns of 10–1,000 jobs over 6–20 pools, CP-SAT against greedy first-fit.
"CP-SAT bound" is the search's own lower bound (the cheapest candidates' where the greedy plan is kept), "LP
bound" the linear relaxation's (ftplan.solver.bound), both in USD; the gap is to the higher of the two.

Jobs are drawn (fixed seed) from 12 templates (models 0.5B–14B; full, LoRA, QLoRA) with three data
sizes, some with dependencies on earlier jobs; pools mix owned A100/H100 nodes and cloud instance
types with quotas. The objective is cost under a campaign deadline that greedy first-fit meets.

Usage: python benchmarks/plan_scale.py [--sizes 10,50,200,500,1000] [--time-limit 60] [--workers 2] [--gap 0.02]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from ftplan.candidates import build_candidates
from ftplan.catalog import load_catalog
from ftplan.plan import build_plan
from ftplan.report.tables import render_table
from ftplan.scenario import resolve_scenario
from ftplan.schema.scenario import Scenario
from ftplan.solver import solve_campaign
from ftplan.units import MONEY_UNITS_PER_USD
from ftplan.verify import verify_plan

TEMPLATES = [
    ("qwen2.5-0.5b", "full"), ("qwen2.5-1.5b", "full"), ("llama-3.2-3b", "lora"), ("qwen2.5-7b", "lora"),
    ("llama-3.1-8b", "lora"), ("llama-3.1-8b", "full"), ("mistral-7b-v0.3", "qlora"), ("gemma-2-9b", "lora"),
    ("qwen2.5-14b", "lora"), ("qwen2.5-14b", "qlora"), ("phi-3-mini-4k", "full"), ("llama-3.2-1b", "full"),
]  # fmt: skip
POOLS = [
    {"id": "lab-a100", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 4, "usd_per_node_h": 6.0, "network_gbps": 800},
    {"id": "lab-h100", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 2, "usd_per_node_h": 9.0},
    {"id": "p5", "kind": "cloud", "instance": "aws/p5.48xlarge", "quota_nodes": 2},
    {"id": "p4de", "kind": "cloud", "instance": "aws/p4de.24xlarge", "quota_nodes": 4},
    {"id": "runpod-h100", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 8},
    {"id": "lambda-a100", "kind": "cloud", "instance": "lambda/gpu_8x_a100_80gb_sxm4", "quota_nodes": 2},
    {"id": "g6e", "kind": "cloud", "instance": "aws/g6e.48xlarge", "quota_nodes": 2},
    {"id": "lab-l40s", "kind": "owned", "gpu": "l40s-48gb", "nodes": 2, "usd_per_node_h": 3.0},
    {"id": "a3", "kind": "cloud", "instance": "gcp/a3-highgpu-8g", "quota_nodes": 2},
    {"id": "nd-a100", "kind": "cloud", "instance": "azure/Standard_ND96amsr_A100_v4", "quota_nodes": 2},
    {"id": "p5-spot", "kind": "cloud", "instance": "aws/p5.48xlarge", "pricing": "spot", "quota_nodes": 2},
    {"id": "p5en", "kind": "cloud", "instance": "aws/p5en.48xlarge", "quota_nodes": 2},
    {"id": "p4d", "kind": "cloud", "instance": "aws/p4d.24xlarge", "quota_nodes": 4},
    {"id": "a2-8g", "kind": "cloud", "instance": "gcp/a2-highgpu-8g", "quota_nodes": 2},
    {"id": "g6e-spot", "kind": "cloud", "instance": "aws/g6e.48xlarge", "pricing": "spot", "quota_nodes": 4},
    {"id": "lab2-a100", "kind": "owned", "gpu": "a100-sxm-80gb", "nodes": 2, "usd_per_node_h": 6.5},
    {"id": "lab2-h100", "kind": "owned", "gpu": "h100-sxm-80gb", "nodes": 2, "usd_per_node_h": 9.5},
    {"id": "p4de-spot", "kind": "cloud", "instance": "aws/p4de.24xlarge", "pricing": "spot", "quota_nodes": 2},
    {"id": "g5-48", "kind": "cloud", "instance": "aws/g5.48xlarge", "quota_nodes": 2},
    {"id": "runpod-h100-b", "kind": "cloud", "instance": "runpod/1x_H100-SXM_SECURE", "quota_nodes": 4},
]  # fmt: skip


def campaign_data(n_jobs: int, n_pools: int, seed: int) -> dict:
    rng = random.Random(seed)
    jobs = []
    for i in range(n_jobs):
        model, method = rng.choice(TEMPLATES)
        job = {"id": f"job{i:03d}", "model": model, "method": method, "seq_len": 2048,
               "tokens": rng.choice([50_000_000, 200_000_000, 500_000_000]), "global_batch": 32}  # fmt: skip
        if i and rng.random() < 0.15:
            job["depends_on"] = [f"job{rng.randrange(i):03d}"]
        jobs.append(job)
    return {"name": f"scale-{n_jobs}", "jobs": jobs, "pools": POOLS[:n_pools], "objective": {"minimise": "cost"}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,50,200,500,1000")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.02, help="stop when proven within this relative gap")
    args = ap.parse_args()
    catalog = load_catalog()
    rows, savings = [], []
    for n in (int(x) for x in args.sizes.split(",")):
        n_pools = 6 if n <= 50 else 8 if n <= 200 else 10 if n <= 500 else 20
        data = campaign_data(n, n_pools, seed=n)
        probe = resolve_scenario(Scenario.model_validate(data), catalog, data["name"])
        t0 = time.perf_counter()
        table = build_candidates(probe)
        t_cands = time.perf_counter() - t0
        # a deadline at half the makespan of the cheapest-first greedy plan: capacity binds
        from ftplan.solver.greedy import greedy_plan

        cands = {r.id: table.by_job[r.job_id] for r in probe.runs}
        g = greedy_plan(probe, cands, "cost")
        span_h = max(p.start + cands[r][p.cand].minutes for r, p in g.items()) / 60 if g else None
        data["objective"] = {"minimise": "cost", "deadline_h": round(0.5 * span_h, 2) if span_h else None}
        data["solver"] = {"time_limit_s": args.time_limit, "relative_gap": args.gap, "seed": 0, "workers": args.workers}
        campaign = resolve_scenario(Scenario.model_validate(data), catalog, data["name"])
        marks: dict[str, float] = {}  # when each phase of the solve began

        def mark(message: str, marks: dict[str, float] = marks) -> None:
            marks.setdefault(message.split(" (")[0], time.perf_counter())

        sol = solve_campaign(campaign, table, phases=mark)
        greedy_s = marks["CP-SAT: cost"] - marks["greedy warm start"]
        plan = build_plan(campaign, sol)
        ok = not verify_plan(campaign, plan)
        greedy_usd = plan.solver.greedy_cost_usd
        g_obj = sol.greedy_objective
        saving = (g_obj - sol.objective_value) / g_obj if g_obj else float("nan")
        assert g_obj is None or sol.objective_value <= g_obj, "worse than greedy"
        savings.append(saving)
        rows.append([
            str(n), str(n_pools), str(sum(len(c) for c in cands.values())), f"{t_cands:.1f}", f"{greedy_s:.1f}",
            f"{sol.wall_s:.1f}",
            sol.status, f"{plan.totals.cost_usd:,.2f}", f"{sol.search_bound / MONEY_UNITS_PER_USD:,.2f}",
            f"{plan.solver.lp_bound:,.2f}" if plan.solver.lp_bound is not None else "—", f"{100 * sol.gap:.2f}%",
            f"{greedy_usd:,.2f}" if greedy_usd else "—", f"{100 * saving:.1f}%", "yes" if ok else "NO",
        ])  # fmt: skip
    print(render_table(["jobs", "pools", "candidates", "cand s", "greedy s", "solve s", "status", "cost USD",
                        "CP-SAT bound", "LP bound", "gap", "greedy USD", "saving", "verified"], rows,
                       right=set(range(0, 14)) - {6}))  # fmt: skip
    print(f"\nmedian saving over greedy first-fit: {100 * statistics.median(savings):.1f}%")


if __name__ == "__main__":
    main()
