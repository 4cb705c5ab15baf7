"""CP-SAT model of a campaign: choose one candidate per run, place it on nodes, schedule it.

Sets
  R runs (a job with ``count: k`` has k runs); C_r candidates of run r (pool, GPU count, layout,
  duration d_c minutes, cost k_c money units); P pools; N_p nodes of pool p (owned nodes, the most
  nodes one may buy) — cloud pools are not placed on named nodes: their instances are rented.

Variables
  x_c ∈ {0,1}: run r uses candidate c;  s_r, e_r ∈ [0, H]: start and end of run r (minutes);
  a_{c,k} ∈ {0,1}: candidate c occupies node k of its (owned or purchase) pool;
  b_{p,k} ∈ {0,1}: node k of purchase pool p is bought; B_p = Σ_k b_{p,k};  M: makespan.

Constraints
  choice       Σ_{c∈C_r} x_c = 1
  duration     x_c ⇒ e_r = s_r + d_c
  placement    single-node c: Σ_k a_{c,k} = x_c;  multi-node c: Σ_k a_{c,k} = n_c·x_c
  capacity     per node k: cumulative of intervals [s_r, s_r + d_c) present when a_{c,k}, demand
               g_c (single-node) or the whole node (multi-node) ≤ GPUs per node
  quota        per cloud pool: cumulative of intervals present when x_c, demand n_c (instances)
               ≤ quota
  purchase     b_{p,k} ≥ b_{p,k+1};  a_{c,k} ≤ b_{p,k}
  deadlines    e_r ≤ D_r;  e_r ≤ D (campaign deadline)
  dependencies s_r ≥ e_q for every q that r depends on
  makespan     M ≥ e_r
  budget       cost ≤ budget (money units)
  capex        Σ_p B_p·price_p ≤ capex (list prices of the nodes bought)
  energy       per pool, Σ x_c·g_c·d_c ≤ GPUs of the pool × H (bought nodes for purchase pools;
               instances × H for cloud pools): implied by capacity, it tightens the LP bound

Objective
  cost = Σ x_c·k_c + Σ_p B_p·purchase_p (money units), or time = M, or one then the other
  (lexicographic: the first optimum becomes a constraint of the second solve).

A campaign under way (``Campaign.history``, see ``ftplan.replan``) adds: s_r ≥ now; a run in progress
keeps its continuation's start and nodes (x_c ⇒ s_r = its start, a_{c,k} = x_c on its nodes); a lost
node is full from now to H; nodes bought already stay bought (b_{p,k} = 1).

Time is in whole minutes and money in hundredths of a cent (``ftplan.units``). The horizon H is the
campaign deadline, or now plus the sum of every run's slowest candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ortools.sat.python import cp_model

from ftplan.candidates import Candidate, CandidateTable, run_candidates
from ftplan.scenario import Campaign, Pin, PoolSpec, purchase_charge
from ftplan.units import budget_units, deadline_minutes, usd_to_units


@dataclass(frozen=True)
class Placement:
    """Where and when one run goes: candidate index, start minute, nodes of its pool."""

    cand: int
    start: int
    nodes: tuple[int, ...]  # node indices for owned/purchase pools; empty for cloud pools


@dataclass
class Model:
    """The CP-SAT model and its variables (a container the constraints and the plan read)."""

    cp: cp_model.CpModel
    campaign: Campaign
    cands: dict[str, list[Candidate]]  # run id → candidates
    x: dict[tuple[str, int], cp_model.IntVar] = field(default_factory=dict)
    start: dict[str, cp_model.IntVar] = field(default_factory=dict)
    end: dict[str, cp_model.IntVar] = field(default_factory=dict)
    place: dict[tuple[str, int, int], cp_model.IntVar] = field(default_factory=dict)  # (run, cand, node)
    bought: dict[tuple[str, int], cp_model.IntVar] = field(default_factory=dict)  # (pool, node)
    makespan: cp_model.IntVar | None = None
    cost: cp_model.LinearExpr | None = None
    horizon: int = 0
    purchase_units: dict[str, int] = field(default_factory=dict)

    nodes: dict[str, int] = field(default_factory=dict)  # pool → nodes modelled (see modelled_nodes)

    def pool(self, pool_id: str) -> PoolSpec:
        return self.pools[pool_id]

    @cached_property
    def pools(self) -> dict[str, PoolSpec]:
        return {p.id: p for p in self.campaign.pools}


def modelled_nodes(campaign: Campaign, cands: dict[str, list[Candidate]]) -> dict[str, int]:
    """Nodes of each placed pool that the model names: the pool's nodes, but never more than all
    runs together could occupy at once (each run's largest candidate on the pool). Nodes of a pool
    are identical, so any plan can be relabelled onto this many: a pool of 10,000 nodes costs no
    more than the runs need, and the plan is the same."""
    need: dict[str, int] = {}
    for cs in cands.values():
        most: dict[str, int] = {}
        for c in cs:
            most[c.pool_id] = max(most.get(c.pool_id, 0), c.nodes)
        for pid, n in most.items():
            need[pid] = need.get(pid, 0) + n
    h = campaign.history
    if h is not None:  # lost nodes are not there to use; runs in progress and bought nodes keep their numbers
        for pid, lost in h.lost.items():
            need[pid] = need.get(pid, 0) + len(lost)
        for rid, (_, pin) in h.pins.items():
            pid = cands[rid][0].pool_id
            need[pid] = max(need.get(pid, 0), max(pin.nodes, default=-1) + 1)
        for pid, n in h.bought.items():
            need[pid] = max(need.get(pid, 0), n)
    return {p.id: min(p.nodes, need.get(p.id, 0)) for p in campaign.pools}


def release_minute(campaign: Campaign) -> int:
    """The earliest any run may start: 0, or a campaign under way's now."""
    return campaign.history.now if campaign.history is not None else 0


def pin_of(campaign: Campaign, rid: str, i: int) -> Pin | None:
    """Where candidate ``i`` of run ``rid`` must run: a run in progress's continuation (its first)."""
    h = campaign.history
    if h is None or i != 0 or rid not in h.pins:
        return None
    return h.pins[rid][1]


def earliest_starts(campaign: Campaign, cands: dict[str, list[Candidate]]) -> dict[str, int]:
    """Each run's earliest start (minutes): the longest chain of its predecessors at their fastest candidates,
    in dependency order without recursion (a campaign may chain a thousand runs)."""
    fastest = {rid: min((c.minutes for c in cs), default=0) for rid, cs in cands.items()}
    deps = {r.id: list(r.depends_on) for r in campaign.runs}
    after: dict[str, list[str]] = {rid: [] for rid in deps}
    waiting = {rid: len(ds) for rid, ds in deps.items()}
    for rid, ds in deps.items():
        for d in ds:
            after[d].append(rid)
    start = dict.fromkeys(deps, release_minute(campaign))
    ready = [rid for rid, n in waiting.items() if n == 0]
    while ready:
        rid = ready.pop()
        for nxt in after[rid]:
            start[nxt] = max(start[nxt], start[rid] + fastest[rid])
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    return start


def horizon_minutes(campaign: Campaign, cands: dict[str, list[Candidate]]) -> int:
    deadline = campaign.scenario.objective.deadline_h
    serial = release_minute(campaign) + sum(max(c.minutes for c in cs) for cs in cands.values())
    if deadline is not None:
        return min(serial, deadline_minutes(deadline))
    return serial


def build_model(campaign: Campaign, table: CandidateTable) -> Model:
    cp = cp_model.CpModel()
    cands = run_candidates(campaign, table)
    m = Model(cp=cp, campaign=campaign, cands=cands, nodes=modelled_nodes(campaign, cands))
    m.horizon = horizon_minutes(campaign, cands)
    h = m.horizon
    now = release_minute(campaign)
    for run in campaign.runs:
        m.start[run.id] = cp.new_int_var(now, h, f"s[{run.id}]")
        m.end[run.id] = cp.new_int_var(0, h, f"e[{run.id}]")
        for i, _ in enumerate(cands[run.id]):
            m.x[run.id, i] = cp.new_bool_var(f"x[{run.id},{i}]")
    for p in campaign.pools:
        if p.kind == "purchase":
            m.purchase_units[p.id] = usd_to_units(purchase_charge(p, campaign.scenario.objective.deadline_h))
            for k in range(m.nodes[p.id]):
                m.bought[p.id, k] = cp.new_bool_var(f"b[{p.id},{k}]")
                if campaign.history is not None and k < campaign.history.bought.get(p.id, 0):
                    cp.add(m.bought[p.id, k] == 1)  # bought already
    _choice_and_duration(m)
    _placement_and_capacity(m)
    _quota(m)
    _purchase(m)
    _deadlines_and_dependencies(m)
    _energy(m)
    _objective_terms(m)
    return m


def _choice_and_duration(m: Model) -> None:
    for rid, cs in m.cands.items():
        m.cp.add_exactly_one(m.x[rid, i] for i in range(len(cs)))
        for i, c in enumerate(cs):
            m.cp.add(m.end[rid] == m.start[rid] + c.minutes).only_enforce_if(m.x[rid, i])
            pin = pin_of(m.campaign, rid, i)
            if pin is not None:
                m.cp.add(m.start[rid] == pin.start).only_enforce_if(m.x[rid, i])


def _placement_and_capacity(m: Model) -> None:
    per_node: dict[tuple[str, int], list[tuple[cp_model.IntervalVar, int]]] = {}
    for rid, cs in m.cands.items():
        for i, c in enumerate(cs):
            pool = m.pool(c.pool_id)
            if not pool.placed:
                continue
            lits = []
            pin = pin_of(m.campaign, rid, i)
            for k in range(m.nodes[pool.id]) if pin is None else pin.nodes:
                lit = m.cp.new_bool_var(f"a[{rid},{i},{k}]")
                m.place[rid, i, k] = lit
                lits.append(lit)
                iv = m.cp.new_optional_fixed_size_interval_var(m.start[rid], c.minutes, lit, f"iv[{rid},{i},{k}]")
                per_node.setdefault((pool.id, k), []).append((iv, c.demand_per_node(pool.gpus_per_node)))
            m.cp.add(sum(lits) == (c.nodes if c.whole_nodes else 1) * m.x[rid, i])
    h = m.campaign.history
    if h is not None:  # a lost node is full from now on
        for pool_id, lost in h.lost.items():
            for k in sorted(lost):
                if k < m.nodes[pool_id] and m.horizon > h.now:
                    iv = m.cp.new_fixed_size_interval_var(h.now, m.horizon - h.now, f"lost[{pool_id},{k}]")
                    per_node.setdefault((pool_id, k), []).append((iv, m.pool(pool_id).gpus_per_node))
    for (pool_id, _), items in per_node.items():
        cap = m.pool(pool_id).gpus_per_node
        m.cp.add_cumulative([iv for iv, _ in items], [d for _, d in items], cap)


def _quota(m: Model) -> None:
    per_pool: dict[str, list[tuple[cp_model.IntervalVar, int]]] = {}
    for rid, cs in m.cands.items():
        for i, c in enumerate(cs):
            pool = m.pool(c.pool_id)
            if pool.placed:
                continue
            iv = m.cp.new_optional_fixed_size_interval_var(m.start[rid], c.minutes, m.x[rid, i], f"q[{rid},{i}]")
            per_pool.setdefault(pool.id, []).append((iv, c.nodes))
    for pool_id, items in per_pool.items():
        m.cp.add_cumulative([iv for iv, _ in items], [d for _, d in items], m.pool(pool_id).nodes)


def _purchase(m: Model) -> None:
    for p in m.campaign.pools:
        if p.kind != "purchase":
            continue
        for k in range(m.nodes[p.id] - 1):
            m.cp.add_implication(m.bought[p.id, k + 1], m.bought[p.id, k])
    for (rid, i, k), lit in m.place.items():
        pool = m.pool(m.cands[rid][i].pool_id)
        if pool.kind == "purchase":
            m.cp.add_implication(lit, m.bought[pool.id, k])


def _deadlines_and_dependencies(m: Model) -> None:
    obj = m.campaign.scenario.objective
    for run in m.campaign.runs:
        if run.deadline_h is not None:
            m.cp.add(m.end[run.id] <= deadline_minutes(run.deadline_h))
        if obj.deadline_h is not None:
            m.cp.add(m.end[run.id] <= deadline_minutes(obj.deadline_h))
        for dep in run.depends_on:
            m.cp.add(m.start[run.id] >= m.end[dep])


def _energy(m: Model) -> None:
    for p in m.campaign.pools:
        terms = []
        for rid, cs in m.cands.items():
            for i, c in enumerate(cs):
                if c.pool_id == p.id:
                    terms.append((c.nodes if not p.placed else c.gpus) * c.minutes * m.x[rid, i])
        if not terms:
            continue
        if p.kind == "purchase":
            bought = sum(m.bought[p.id, k] for k in range(m.nodes[p.id]))
            m.cp.add(sum(terms) <= p.gpus_per_node * m.horizon * bought)
        else:
            unit = p.gpus_per_node if p.placed else 1
            m.cp.add(sum(terms) <= unit * p.nodes * m.horizon)


def _objective_terms(m: Model) -> None:
    m.makespan = m.cp.new_int_var(0, m.horizon, "makespan")
    m.cp.add_max_equality(m.makespan, list(m.end.values()))
    terms = [c.cost_units * m.x[rid, i] for rid, cs in m.cands.items() for i, c in enumerate(cs)]
    terms += [m.purchase_units[p] * b for (p, _), b in m.bought.items()]
    m.cost = sum(terms)
    capex = m.campaign.scenario.objective.capex_usd
    if capex is not None:  # list prices of the nodes bought
        spend = [
            usd_to_units(p.purchase_usd_per_node) * m.bought[p.id, k]
            for p in m.campaign.pools if p.kind == "purchase" for k in range(m.nodes[p.id])
        ]  # fmt: skip
        m.cp.add(sum(spend) <= budget_units(capex))
    budget = m.campaign.scenario.objective.budget_usd
    if budget is not None:
        m.cp.add(m.cost <= budget_units(budget))


def stay_literals(m: Model) -> list[cp_model.IntVar]:
    """For a re-plan: one literal per run planned again that holds when the run keeps its previous pool and
    nodes (a cloud run: its pool); the search after the objectives maximises their sum, so a re-plan moves
    only what it must."""
    h = m.campaign.history
    lits = []
    for rid, (pool_id, nodes) in h.previous.items() if h is not None else ():
        if rid not in m.cands:
            continue
        stay = m.cp.new_bool_var(f"stay[{rid}]")
        same = [i for i, c in enumerate(m.cands[rid]) if c.pool_id == pool_id]
        if m.pool(pool_id).placed:
            same = [i for i in same if m.cands[rid][i].nodes == len(nodes)]
            held = [m.place[rid, i, k] for i in same for k in nodes if (rid, i, k) in m.place]
            if len(held) < len(nodes) or not same:
                continue
            m.cp.add(sum(held) >= len(nodes)).only_enforce_if(stay)
        else:
            if not same:
                continue
            m.cp.add(sum(m.x[rid, i] for i in same) >= 1).only_enforce_if(stay)
        lits.append(stay)
    return lits


def hint_runs(cp: cp_model.CpModel, m: Model, plan: dict[str, Placement]) -> None:
    """Hint ``cp`` (``m.cp`` or a copy of it) with each run's candidate, start, end and nodes in ``plan``."""
    for rid, place in plan.items():
        cs = m.cands[rid]
        for i in range(len(cs)):
            cp.add_hint(m.x[rid, i], i == place.cand)
        cp.add_hint(m.start[rid], place.start)
        cp.add_hint(m.end[rid], place.start + cs[place.cand].minutes)
        for i, c in enumerate(cs):
            for k in range(m.nodes.get(c.pool_id, 0)):
                if (rid, i, k) in m.place:
                    cp.add_hint(m.place[rid, i, k], i == place.cand and k in place.nodes)


def placement_of(m: Model, solver: cp_model.CpSolver, rid: str) -> Placement:
    """Run ``rid``'s candidate, start and nodes in the solver's solution (of ``m.cp`` or a copy of it)."""
    cs = m.cands[rid]
    i = next(i for i in range(len(cs)) if solver.value(m.x[rid, i]))
    nodes = tuple(k for k in range(m.nodes.get(cs[i].pool_id, 0))
                  if (rid, i, k) in m.place and solver.value(m.place[rid, i, k]))  # fmt: skip
    return Placement(i, solver.value(m.start[rid]), nodes)
