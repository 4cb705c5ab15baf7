"""The plan as a terminal table: one row per run, then totals, pools and solver quality."""

from __future__ import annotations

from ftplan.report.tables import render_table
from ftplan.schema.plan import Plan, PlanMemoryPolicy, PlanTiming
from ftplan.units import GIB


def plan_table(plan: Plan) -> str:
    rows = []
    for r in plan.runs:
        lay = r.layout
        nodes = ",".join(n.split("/", 1)[1] for n in r.nodes)
        stages = "".join(f" {n}{v}" for n, v in (("pp", lay.pp), ("cp", lay.cp), ("ep", lay.ep)) if v > 1)
        shard = f"/{lay.dp_shard}" if lay.dp_shard else ""
        offload = f" off:{lay.offload}" if lay.offload != "none" else ""
        rows.append([
            f"{r.run} (ran)" if r.state == "done" else r.run, r.pool, nodes, str(r.gpu_count),
            f"{r.start_h:.2f}", f"{r.end_h:.2f}",
            f"dp{lay.dp} tp{lay.tp}{stages} Z{lay.zero}{shard}{offload}",
            lay.recompute, f"{lay.micro_batch}×{lay.grad_accum}", lay.optimizer,
            f"{r.memory_per_gpu_bytes / GIB:.1f}", f"{100 * r.fit_probability:.0f}%", f"{r.tokens_per_s:,.0f}",
            f"{r.usd:,.2f}",
        ])  # fmt: skip
    headers = ["run", "pool", "nodes", "GPUs", "start h", "end h", "layout", "recompute", "mb×acc", "optimizer",
               "GiB/GPU", "P(fit)", "tokens/s", "USD"]  # fmt: skip
    title = f"plan for {plan.scenario}"
    if plan.replan is not None:
        lost = f", nodes lost: {', '.join(plan.replan.nodes_lost)}" if plan.replan.nodes_lost else ""
        title += (f", re-planned at {plan.replan.now_h:g} h from {plan.replan.previous}{lost}; (ran): parts done "
                  "before then, as they ran")  # fmt: skip
    out = [title, "", render_table(headers, rows, right={3, 4, 5, 10, 11, 12, 13})]
    policies = dict.fromkeys(policy_label(r.memory_policy) for r in plan.runs)
    out.append(f"memory headroom: {'; '.join(policies)} (P(fit): share of the memory band's published runs that fit)")
    tm = plan.timing
    odds = (f"; chance every deadline holds: {100 * tm.deadline_probability:.0f}%"
            if tm.deadline_probability is not None else "")  # fmt: skip
    out.append(f"time: runs planned {planned_at(tm)}{odds}; {spread(tm)}")
    t = plan.totals
    out.append(f"\ncost ${t.cost_usd:,.2f} · makespan {t.makespan_h:.2f} h · {t.gpu_hours:,.1f} GPU-hours")
    pools = [
        [u.pool, f"{u.gpu_hours_used:,.1f}", f"{100 * u.utilisation:.0f}%",
         str(u.nodes_bought) if u.nodes_bought else "", f"{u.purchase_usd:,.0f}" if u.purchase_usd else ""]
        for u in t.pools
    ]  # fmt: skip
    out.append(render_table(["pool", "GPU-hours", "utilisation", "bought", "purchase USD"], pools, right={1, 2, 3, 4}))
    s = plan.solver
    fmt = (lambda v: f"${v:,.2f}") if s.objective == "cost" else (lambda v: f"{v:,.2f} h")
    lp = f" (LP relaxation {fmt(s.lp_bound)})" if s.lp_bound is not None else ""
    line = (f"\nsolver: {s.status} · {s.objective} {fmt(s.objective_value)} · bound {fmt(s.bound)}{lp} · "
            f"gap {100 * s.gap:.2f}% · {s.wall_s:.2f} s · seed {s.seed} · {s.workers} worker(s)")  # fmt: skip
    if s.source == "greedy":
        line += "\nthe greedy warm start's plan: CP-SAT found none as good within its time limit"
    if s.then is not None:
        then = (lambda v: f"${v:,.2f}") if s.then == "cost" else (lambda v: f"{v:,.2f} h")
        if s.then_value is None or s.then_bound is None or s.then_gap is None:
            line += f"\nthen {s.then}: {s.then_status} (the first objective's plan is kept)"
        else:
            line += (f"\nthen {s.then}: {s.then_status} · {s.then} {then(s.then_value)} · bound {then(s.then_bound)} · "
                     f"gap {100 * s.then_gap:.2f}%")  # fmt: skip
    if s.greedy_cost_usd is not None:
        line += f"\ngreedy first-fit: ${s.greedy_cost_usd:,.2f}, makespan {s.greedy_makespan_h:.2f} h"
    if s.stopped_early:
        line += "\nstopped by Ctrl-C: the best plan found so far"
    out.append(line)
    return "\n".join(out)


def policy_label(policy: PlanMemoryPolicy) -> str:
    """A run's headroom policy as the command line states it."""
    return " ".join(f"{k} {v}" for k, v in policy.model_dump().items() if v is not None)


def planned_at(tm: PlanTiming) -> str:
    return f"at the {tm.time_confidence:g} quantile of their durations" if tm.time_confidence else "at their estimates"


def spread(tm: PlanTiming) -> str:
    """The makespan's median and 90th percentile, and what they were drawn from."""
    return (f"makespan {tm.makespan_p50_h:.2f} h median, {tm.makespan_p90_h:.2f} h 90th percentile ({tm.draws:,} "
            f"draws of the time model's error on published runs, seed {tm.seed})")  # fmt: skip
