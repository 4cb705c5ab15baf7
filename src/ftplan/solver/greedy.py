"""Greedy list scheduling: a first plan that warm-starts CP-SAT and that the benchmark compares with.

Runs are taken in dependency order (higher priority, then longer first); each takes the candidate
that is cheapest (objective ``cost``) or ends earliest (objective ``time``) among those that can
start, at their earliest start after their dependencies, on the first nodes (or instances) with
room, and that meet their deadlines (optionally tightened, see ``slack``).

Each node (and each cloud pool's instance count) keeps its use as a step function over time
(:class:`Timeline`), so finding a start is a walk over the steps from the run's ready time, not a
pass over every run placed so far. A run's candidates are tried in the order of their bound on the
choice (cost, or the earliest possible end) and the search stops at the first bound that cannot beat
the best found, so a run usually looks at a handful of its candidates; candidates that differ only
in layout share one search for a start. A thousand runs with ~90 candidates each take seconds.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right

from ftplan.candidates import Candidate
from ftplan.scenario import Campaign, Run, purchase_charge
from ftplan.solver.model import Placement, modelled_nodes, pin_of, release_minute
from ftplan.units import deadline_minutes, usd_to_units


class Timeline:
    """Use of one resource over time (GPUs of a node, instances of a cloud pool): a step function.

    ``levels[i]`` is the use on ``[times[i], times[i + 1])``; the last step lasts for ever and is
    zero once every interval added has ended."""

    __slots__ = ("levels", "times")

    def __init__(self) -> None:
        self.times: list[int] = [0]
        self.levels: list[int] = [0]

    def earliest(self, ready: int, minutes: int, demand: int, capacity: int) -> int | None:
        """Earliest start ≥ ``ready`` at which ``demand`` more fits under ``capacity`` for ``minutes``."""
        if demand > capacity:
            return None
        times, levels, room = self.times, self.levels, capacity - demand
        start = ready
        i = bisect_right(times, start) - 1
        j = i
        while j < len(times) and times[j] < start + minutes:
            if levels[j] > room:  # full somewhere in the window: try again where this step ends
                start, j = times[j + 1], j + 1  # the last step is empty, so j + 1 exists
            else:
                j += 1
        return start

    def add(self, start: int, end: int, demand: int) -> None:
        """Take ``demand`` over ``[start, end)``."""
        first, last = self._split(start), self._split(end)
        for i in range(first, last):
            self.levels[i] += demand

    def _split(self, t: int) -> int:
        """Index of the step that begins at ``t``, splitting the step that holds it if need be."""
        i = bisect_right(self.times, t) - 1
        if self.times[i] == t:
            return i
        self.times.insert(i + 1, t)
        self.levels.insert(i + 1, self.levels[i])
        return i + 1


class Inventory:
    """What is taken so far: a timeline per named node of each placed pool and per cloud pool."""

    def __init__(self, campaign: Campaign, named: dict[str, int]) -> None:
        self.pools = {p.id: p for p in campaign.pools}
        self.nodes = {p.id: [Timeline() for _ in range(named[p.id])] for p in campaign.pools if p.placed}
        self.cloud = {p.id: Timeline() for p in campaign.pools if not p.placed}
        h = campaign.history
        if h is not None:  # a lost node is full from now on
            for pool_id, lost in h.lost.items():
                for k in lost:
                    if k < len(self.nodes[pool_id]):
                        self.nodes[pool_id][k].add(h.now, FOREVER, self.pools[pool_id].gpus_per_node)

    def fits_at(self, c: Candidate, start: int, nodes: tuple[int, ...]) -> bool:
        """Whether ``c`` fits at ``start`` on these nodes (a run in progress going on where it is)."""
        pool = self.pools[c.pool_id]
        if not pool.placed:
            return self.cloud[pool.id].earliest(start, c.minutes, c.nodes, pool.nodes) == start
        timelines = self.nodes[pool.id]
        demand = c.demand_per_node(pool.gpus_per_node)
        return all(timelines[k].earliest(start, c.minutes, demand, pool.gpus_per_node) == start for k in nodes)

    def earliest(self, c: Candidate, ready: int) -> tuple[int, tuple[int, ...]] | None:
        """Earliest start ≥ ready with room for ``c`` on its pool, and the nodes it takes (the lowest
        numbered with room; none for a cloud pool)."""
        pool = self.pools[c.pool_id]
        if not pool.placed:
            start = self.cloud[pool.id].earliest(ready, c.minutes, c.nodes, pool.nodes)
            return None if start is None else (start, ())
        timelines = self.nodes[pool.id]
        demand, need = c.demand_per_node(pool.gpus_per_node), (c.nodes if c.whole_nodes else 1)
        if need > len(timelines):
            return None
        start = ready
        while True:
            fits = [tl.earliest(start, c.minutes, demand, pool.gpus_per_node) for tl in timelines]
            if any(f is None for f in fits):
                return None
            nth = sorted(fits)[need - 1]  # type: ignore[type-var]
            if nth == start:  # no feasible start lies before the need-th node's earliest
                return start, tuple(k for k, f in enumerate(fits) if f == start)[:need]
            start = nth  # type: ignore[assignment]

    def take(self, c: Candidate, place: Placement) -> None:
        pool = self.pools[c.pool_id]
        end = place.start + c.minutes
        if pool.placed:
            for k in place.nodes:
                self.nodes[pool.id][k].add(place.start, end, c.demand_per_node(pool.gpus_per_node))
        else:
            self.cloud[pool.id].add(place.start, end, c.nodes)


FOREVER = 2**62  # the end of a lost node's unavailability (minutes)


def run_order(campaign: Campaign, cands: dict[str, list[Candidate]]) -> list[Run]:
    """Dependency order: of the runs whose dependencies are placed, the highest priority, then the
    longest (its fastest candidate), then the first listed; runs in progress first of all."""
    pins = campaign.history.pins if campaign.history is not None else {}
    rank = sorted(campaign.runs, key=lambda r: (r.id not in pins, -r.spec.priority,
                                                -min((c.minutes for c in cands[r.id]), default=0)))  # fmt: skip
    position = {r.id: i for i, r in enumerate(rank)}
    waiting = {r.id: len(r.depends_on) for r in rank}
    after: dict[str, list[str]] = {r.id: [] for r in rank}
    for r in rank:
        for d in r.depends_on:
            after[d].append(r.id)
    ready = [position[r.id] for r in rank if not r.depends_on]
    heapq.heapify(ready)
    order: list[Run] = []
    while ready:
        run = rank[heapq.heappop(ready)]
        order.append(run)
        for nxt in after[run.id]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, position[nxt])
    if len(order) != len(rank):  # a cycle: rejected when the scenario is resolved
        raise AssertionError("dependency cycle")
    return order


def greedy_plan(
    campaign: Campaign,
    cands: dict[str, list[Candidate]],
    minimise: str,
    slack: float = 1.0,
    time_price: float = 0.0,
) -> dict[str, Placement] | None:
    """A complete plan, or None when some run finds no candidate that meets its deadline.

    ``slack`` < 1 makes every run aim to end by that fraction of its deadlines, which leaves room for
    the runs after it when cheapest-first would fill the inventory too late. ``time_price`` (money
    units per minute, objective ``cost``) charges each choice for when it ends as well: cheapest-first
    at 0, earliest-end first as it grows, and between the two a run pays for speed only where speed
    is cheap, which keeps the inventory free for the runs after it.
    """
    pools = {p.id: p for p in campaign.pools}
    held = Inventory(campaign, modelled_nodes(campaign, cands))
    bought: dict[str, int] = dict(campaign.history.bought) if campaign.history is not None else {}
    ends: dict[str, int] = {}
    plan: dict[str, Placement] = {}
    now = release_minute(campaign)
    campaign_deadline = campaign.scenario.objective.deadline_h
    capex = campaign.scenario.objective.capex_usd
    charge = {p.id: usd_to_units(purchase_charge(p, campaign_deadline)) for p in campaign.pools if p.kind == "purchase"}
    for run in run_order(campaign, cands):
        cs = cands[run.id]
        ready = max((ends[d] for d in run.depends_on), default=now)
        limits = [deadline_minutes(x) for x in (run.deadline_h, campaign_deadline) if x is not None]
        limit = int(min(limits) * slack) if limits else None
        # each candidate's bound on its key: its cost (a purchase only adds), or its end if it could start at once
        if minimise == "cost":
            bound = [c.cost_units + time_price * (ready + c.minutes) for c in cs]
        else:
            bound = [ready + c.minutes for c in cs]
        best: tuple[tuple, Placement] | None = None
        starts: dict[tuple, tuple[int, tuple[int, ...]] | None] = {}  # one search per pool, size and duration
        for i in sorted(range(len(cs)), key=lambda i: (bound[i], i)):
            c = cs[i]
            if best is not None and bound[i] > best[0][0]:
                break  # no later candidate can beat the best
            if limit is not None and ready + c.minutes > limit:
                continue
            pin = pin_of(campaign, run.id, i)
            if pin is not None:
                nodes = pin.nodes if pools[c.pool_id].placed else ()
                found = (pin.start, nodes) if held.fits_at(c, pin.start, pin.nodes) else None
            else:
                shape = (c.pool_id, c.gpus, c.nodes, c.whole_nodes, c.minutes)
                if shape not in starts:
                    starts[shape] = held.earliest(c, ready)
                found = starts[shape]
            if found is None:
                continue
            start, nodes = found
            if limit is not None and start + c.minutes > limit:
                continue
            pool = pools[c.pool_id]
            extra = 0
            if pool.kind == "purchase":
                new = max(0, max(nodes) + 1 - bought.get(pool.id, 0) if nodes else 0)
                extra = new * charge[pool.id]
                spent = sum(n * pools[p].purchase_usd_per_node for p, n in bought.items())
                if capex is not None and spent + new * pool.purchase_usd_per_node > capex:
                    continue  # buying these nodes would exceed the capital budget
            key = (
                (c.cost_units + extra + time_price * (start + c.minutes), start + c.minutes, i)
                if minimise == "cost"
                else (start + c.minutes, c.cost_units + extra, i)
            )
            if best is None or key < best[0]:
                best = (key, Placement(i, start, nodes))
        if best is None:
            return None
        place = best[1]
        c = cs[place.cand]
        held.take(c, place)
        if pools[c.pool_id].kind == "purchase" and place.nodes:
            bought[c.pool_id] = max(bought.get(c.pool_id, 0), max(place.nodes) + 1)
        ends[run.id] = place.start + c.minutes
        plan[run.id] = place
    return plan
