"""Greedy list scheduling: a first plan that warm-starts CP-SAT and that the benchmark compares with.

Runs are taken in dependency order (higher priority, then longer first); each takes the candidate
that is cheapest (objective ``cost``) or ends earliest (objective ``time``) among those that can
start, at their earliest start after their dependencies, on the first nodes (or instances) with
room, and that meet their deadlines (optionally tightened, see ``slack``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplan.candidates import Candidate
from ftplan.scenario import Campaign, Run, purchase_charge
from ftplan.solver.model import modelled_nodes
from ftplan.units import deadline_minutes, usd_to_units


@dataclass(frozen=True)
class Placement:
    """Where and when one run goes: candidate index, start minute, nodes of its pool."""

    cand: int
    start: int
    nodes: tuple[int, ...]  # node indices for owned/purchase pools; empty for cloud pools


Usage = list[tuple[int, int, int]]  # (start, end, demand)


def peak_usage(items: Usage, start: int, end: int) -> int:
    """Largest total demand of ``items`` at any minute of [start, end)."""
    points = sorted({start, *(s for s, _, _ in items if start < s < end)})
    return max((sum(d for s, e, d in items if s <= t < e) for t in points), default=0)


def _order(campaign: Campaign, cands: dict[str, list[Candidate]]) -> list[Run]:
    done: set[str] = set()
    pending = sorted(campaign.runs, key=lambda r: (-r.spec.priority, -min((c.minutes for c in cands[r.id]), default=0)))
    order: list[Run] = []
    while pending:
        for i, run in enumerate(pending):
            if all(d in done for d in run.depends_on):
                order.append(run)
                done.add(run.id)
                pending.pop(i)
                break
        else:  # a cycle: rejected when the scenario is resolved
            raise AssertionError("dependency cycle")
    return order


def greedy_plan(
    campaign: Campaign, cands: dict[str, list[Candidate]], minimise: str, slack: float = 1.0
) -> dict[str, Placement] | None:
    """A complete plan, or None when some run finds no candidate that meets its deadline.

    ``slack`` < 1 makes every run aim to end by that fraction of its deadlines, which leaves room for
    the runs after it when cheapest-first would fill the inventory too late.
    """
    pools = {p.id: p for p in campaign.pools}
    named = modelled_nodes(campaign, cands)
    node_use: dict[tuple[str, int], Usage] = {}
    cloud_use: dict[str, Usage] = {}
    bought: dict[str, int] = {}
    ends: dict[str, int] = {}
    plan: dict[str, Placement] = {}
    campaign_deadline = campaign.scenario.objective.deadline_h
    capex = campaign.scenario.objective.capex_usd
    for run in _order(campaign, cands):
        ready = max((ends[d] for d in run.depends_on), default=0)
        limits = [deadline_minutes(x) for x in (run.deadline_h, campaign_deadline) if x is not None]
        limit = int(min(limits) * slack) if limits else None
        best: tuple[tuple, Placement] | None = None
        for i, c in enumerate(cands[run.id]):
            pool = pools[c.pool_id]
            found = _earliest(c, pool, named[pool.id], ready, node_use, cloud_use)
            if found is None:
                continue
            start, nodes = found
            if limit is not None and start + c.minutes > limit:
                continue
            extra = 0
            if pool.kind == "purchase":
                new = max(0, max(nodes) + 1 - bought.get(pool.id, 0) if nodes else 0)
                extra = new * usd_to_units(purchase_charge(pool, campaign_deadline))
                spent = sum(n * pools[p].purchase_usd_per_node for p, n in bought.items())
                if capex is not None and spent + new * pool.purchase_usd_per_node > capex:
                    continue  # buying these nodes would exceed the capital budget
            key = (
                (c.cost_units + extra, start + c.minutes, i)
                if minimise == "cost"
                else (start + c.minutes, c.cost_units + extra, i)
            )
            if best is None or key < best[0]:
                best = (key, Placement(i, start, nodes))
        if best is None:
            return None
        place = best[1]
        c = cands[run.id][place.cand]
        pool = pools[c.pool_id]
        end = place.start + c.minutes
        if pool.placed:
            demand = pool.gpus_per_node if c.whole_nodes else c.gpus
            for k in place.nodes:
                node_use.setdefault((pool.id, k), []).append((place.start, end, demand))
            if pool.kind == "purchase":
                bought[pool.id] = max(bought.get(pool.id, 0), max(place.nodes) + 1)
        else:
            cloud_use.setdefault(pool.id, []).append((place.start, end, c.nodes))
        ends[run.id] = end
        plan[run.id] = place
    return plan


def _earliest(c: Candidate, pool, nodes: int, ready: int, node_use, cloud_use) -> tuple[int, tuple[int, ...]] | None:
    """Earliest start ≥ ready with room for ``c`` on its pool (of which ``nodes`` are named), and the
    nodes it takes."""
    if not pool.placed:
        items = cloud_use.get(pool.id, [])
        for t in sorted({ready, *(e for _, e, _ in items if e > ready)}):
            if peak_usage(items, t, t + c.minutes) + c.nodes <= pool.nodes:
                return t, ()
        return None
    cap = pool.gpus_per_node
    demand = cap if c.whole_nodes else c.gpus
    need = c.nodes if c.whole_nodes else 1
    all_items = [it for k in range(nodes) for it in node_use.get((pool.id, k), [])]
    for t in sorted({ready, *(e for _, e, _ in all_items if e > ready)}):
        free = [
            k for k in range(nodes)
            if peak_usage(node_use.get((pool.id, k), []), t, t + c.minutes) + demand <= cap
        ]  # fmt: skip
        if len(free) >= need:
            return t, tuple(free[:need])
    return None
