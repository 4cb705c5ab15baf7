"""The campaign solver: CP-SAT model, greedy warm start, solve loop."""

from ftplan.solver.solve import InfeasibleError, Progress, Solution, solve_campaign

__all__ = ["InfeasibleError", "Progress", "Solution", "solve_campaign"]
