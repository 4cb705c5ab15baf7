"""Record the golden plans of the bundled scenarios (tests/golden/scenario_plans.yaml): run from the repository
root after a deliberate change to the models or the catalogs.

Each scenario is solved as tests/test_planner.py solves it (seed 0, one worker) and its status, objective, the
objective's value and the makespan are written; the test holds every later solve to them.
"""

from __future__ import annotations

from pathlib import Path

from ftplan.catalog import load_catalog
from ftplan.io import write_text_atomic
from ftplan.plan import build_plan
from ftplan.scenario import load_scenario, resolve_scenario
from ftplan.solver import solve_campaign

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/golden/scenario_plans.yaml"
HEADER = """\
# Golden results of the bundled scenarios (seed 0, 1 worker). The primary objective must match
# within the solver's reported gap; regenerate deliberately when the models or catalogs change
# (python tests/golden/record_plans.py).
"""


def main() -> None:
    catalog = load_catalog()
    lines = []
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        campaign = resolve_scenario(load_scenario(path), catalog, str(path))
        plan = build_plan(campaign, solve_campaign(campaign))
        s = plan.solver
        value = float(f"{s.objective_value:.7g}")  # (seven significant figures; the makespan to the test's 1e-3 h)
        makespan = round(plan.totals.makespan_h, 4)
        fields = f"status: {s.status}, objective: {s.objective}, value: {value}, makespan_h: {makespan}"
        lines.append(f"{path.stem}: {{{fields}}}")
        print(lines[-1])
    write_text_atomic(OUT, HEADER + "\n".join(lines) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
